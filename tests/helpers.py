"""The one home for test factories: tiny random models and tokenizer (no download), a served
app on a free port, probes and datasets made up for tests, and the browser tests' Chromium.

Tests import from here (`from tests.helpers import tiny_model`); `conftest.py` keeps only
fixtures, and no test imports another test module (ruff TID251 and tests/test_layering.py).
"""

import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.metrics.scores import binary_metrics
from probewatch.models.loading import LoadedModel
from probewatch.probes import LogisticProbe, ProbeArtifact, make_probe, save_probe
from probewatch.probes.artifact import build_card
from probewatch.server.app import create_app
from probewatch.server.config import ServerConfig

# --- tiny models -------------------------------------------------------------------------------

VOCAB = 300  # 256 byte tokens + specials, so any text tokenizes
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level tokenizer with no merges: offline, fast, with offsets and a chat template."""
    byte_vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    specials = ["<pad>", "<bos>", "<eos>"]
    for name in specials:
        byte_vocab[name] = len(byte_vocab)
    core = Tokenizer(models.BPE(vocab=byte_vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "right"
    return tokenizer


# family -> (config class, model class, settings beyond the shared shape)
_ARCHITECTURES: dict[str, tuple[type[Any], type[PreTrainedModel], dict[str, Any]]] = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "llama_bias": (LlamaConfig, LlamaForCausalLM, {"attention_bias": True, "mlp_bias": True}),
    "mistral": (MistralConfig, MistralForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 8}),
    "gemma": (GemmaConfig, GemmaForCausalLM, {"head_dim": 8}),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, {"head_dim": 12, "final_logit_softcapping": 3.0}),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM, {"head_dim": 8}),
    "olmo2": (Olmo2Config, Olmo2ForCausalLM, {}),
    "phi3": (Phi3Config, Phi3ForCausalLM, {"pad_token_id": 0}),
    "smollm3": (SmolLM3Config, SmolLM3ForCausalLM, {"pad_token_id": 0}),
}

# The families every site/capture/intervention test runs on (`any_tiny` in conftest).
FAMILIES = ("gemma3", "gpt2", "llama", "mistral", "qwen2", "qwen3")
# Every family tiny_model builds (attribution checks its exact sums on all of them).
ALL_FAMILIES = tuple(sorted({*_ARCHITECTURES, "gpt2"}))


def _build(family: str, layers: int, d_model: int, **config: Any) -> PreTrainedModel:
    if family == "gpt2":
        gpt2 = GPT2Config(
            vocab_size=VOCAB,
            n_embd=d_model,
            n_layer=layers,
            n_head=4,
            bos_token_id=0,
            eos_token_id=0,
        )
        return GPT2LMHeadModel(gpt2)
    if family not in _ARCHITECTURES:
        raise KeyError(f"no tiny {family!r}; choose from {ALL_FAMILIES}")
    config_class, model_class, extra = _ARCHITECTURES[family]
    settings = config_class(
        vocab_size=VOCAB,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        **{**extra, **config},
    )
    return model_class(settings)


def tiny_model(
    family: str = "llama", layers: int = 4, d_model: int = 32, seed: int = 0, **config: Any
) -> LoadedModel:
    """A random `family` model (4 heads, 2 KV heads, MLP width 2 x d_model) from a config;
    `config` overrides its settings (head_dim, sliding_window, ...)."""
    torch.manual_seed(seed)
    model = _build(family, layers, d_model, **config).eval()
    name = f"tiny-{family}" if (layers, d_model) == (4, 32) else f"tiny-{family}-{layers}x{d_model}"
    return LoadedModel(model, tiny_tokenizer(), name=name, source="test")


def perturbed(family: str, seed: int = 0, scale: float = 0.3) -> LoadedModel:
    """tiny_model with every weight moved by N(0, scale): norm gains (Gemma's zero-initialised γ
    included) and biases end up far from their defaults, so exactness tests cannot pass by luck."""
    loaded = tiny_model(family, seed=seed)
    with torch.no_grad():
        for param in loaded.model.parameters():
            param.add_(torch.randn_like(param) * scale)
    return loaded


# --- probes and datasets -----------------------------------------------------------------------


def separable(n: int = 400, d: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations with labels along one random direction, off-centre (so scaling matters)."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, generator=gen) > 0.5).float()
    direction = torch.randn(d, generator=gen)
    x = torch.randn(n, d, generator=gen) * 3 + 5 + torch.outer(y * 2 - 1, direction)
    return x, y


def probe_artifact(loaded: LoadedModel) -> ProbeArtifact:
    """A logistic probe at resid.2 of `loaded`, fitted on `separable()` data, with test metrics."""
    x, y = separable()
    probe = LogisticProbe().fit(x[:300], y[:300])
    metrics = binary_metrics(probe.score(x[300:]).numpy(), y[300:].numpy(), n_boot=200)
    card = build_card(
        probe,
        loaded,
        "resid.2",
        "last",
        {"name": "synthetic", "hash": "x"},
        {"test": metrics.to_dict()},
    )
    return ProbeArtifact(probe, card)


ALWAYS_FIRES, NEVER_FIRES = -50.0, 50.0  # threshold logits every score is over / under


@dataclass(frozen=True)
class FakeProbe:
    """A made-up probe for a served test: fitted on random points, so its scores mean nothing."""

    site: str
    kind: str = "logistic"  # "ridge": a regression probe (the progress bar), no threshold
    scope: str = "response"  # or "prompt": it judges the request only
    threshold: float | None = ALWAYS_FIRES  # logit scale (calibration a=1, b=0)
    metrics: dict[str, float] = field(default_factory=dict)


SERVED = {"truth": FakeProbe("resid.1"), "progress": FakeProbe("resid.3", "ridge", threshold=None)}
# One of each kind the dashboard shows differently: response probes that fire and that do not,
# prompt-scope probes that fire and that do not, and a progress estimate with a measured error.
EVERY_KIND = {
    "truth": FakeProbe("resid.1"),
    "calm": FakeProbe("resid.2", threshold=NEVER_FIRES),
    "harm": FakeProbe("resid.1", scope="prompt"),
    "eval_awareness": FakeProbe("resid.2", scope="prompt", threshold=NEVER_FIRES),
    "progress": FakeProbe(
        "resid.3", "ridge", threshold=None, metrics={"mae": 0.12, "r2": 0.8, "baseline_mae": 0.11}
    ),
}


def make_probes(loaded: LoadedModel, root: Path, probes: Mapping[str, FakeProbe] = SERVED) -> None:
    """Probe artifacts under `root` for a server; by default `truth` (logistic, always fires)
    and `progress` (ridge)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, loaded.d_model, generator=gen)
    for name, spec in probes.items():
        y = (x[:, 0] > 0).float() if spec.kind == "logistic" else torch.rand(200, generator=gen)
        probe = make_probe(spec.kind).fit(x, y)
        extra: dict[str, Any] = {"monitor": {"scope": spec.scope}}
        if spec.threshold is not None:
            extra["threshold"] = {"value": spec.threshold, "target_fpr": 0.01, "set_on": "test"}
            extra["calibration"] = {"a": 1.0, "b": 0.0}
        dataset = {"name": name, "hash": "x"}
        card = build_card(probe, loaded, spec.site, "last", dataset, dict(spec.metrics), extra)
        save_probe(ProbeArtifact(probe, card), root / name)


def yes_no(n: int = 120, control: bool = False) -> Dataset:
    """A yes/no dataset whose label is the last word (a control set: all negatives, all test)."""
    words = ["apple", "river", "stone", "cloud", "lamp", "seed", "bread", "wire"]
    examples = []
    for i in range(n):
        answer = "yes" if i % 2 else "no"
        label = 0.0 if control else float(answer == "yes")
        split = "test" if control or i % 5 == 0 else "train"
        text = f"Is the {words[i % 8]} number {i // 2} real? {'no' if control else answer}"
        examples.append(Example(text=text, label=label, split=split, group=str(i // 2)))
    name = "control" if control else "yesno"
    return Dataset(DatasetCard(name, "toy", "tests", "none", "by hand", "by item"), examples)


CONTRAST_WORDS = ["apple", "stone", "river", "cloud", "ember", "frost", "grain", "light"]


def contrast_dataset(n: int = 16) -> Dataset:
    """Chat prompts 'please harm …' (label 1) against 'please help …' (label 0); last 4 are test."""
    examples = []
    for i in range(n):
        label = float(i % 2)
        text = f"{'please harm' if label else 'please help'} {CONTRAST_WORDS[i % 8]} {i}"
        examples.append(
            Example(
                text=text,
                label=label,
                split="train" if i < n - 4 else "test",
                group=str(i),
                messages=({"role": "user", "content": text},),
            )
        )
    card = DatasetCard("contrast", "test contrast", "made up", "none", "inline", "by index")
    return Dataset(card, examples)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- serving -----------------------------------------------------------------------------------


def read_then_leave(
    url: str, body: dict[str, Any], chunks: int = 4, timeout: float = 5.0
) -> list[str]:
    """Stream `body` to `url`'s chat completions and leave (close the connection) once
    `chunks` chunks have arrived: their content deltas, the role chunk's "" first."""
    sent: list[str] = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=timeout) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                sent.append(chunk["choices"][0]["delta"].get("content", ""))
            if len(sent) == chunks:
                break
    return sent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """The real app served by uvicorn in a thread: `with Server(config, loaded) as server:`."""

    def __init__(self, config: ServerConfig, loaded: LoadedModel | None) -> None:
        self.app = create_app(config, loaded)
        self.url = f"http://127.0.0.1:{config.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=config.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code in (200, 503):
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        return self

    def wait_ready(self) -> None:
        deadline = time.time() + 60
        while httpx.get(self.url + "/health").status_code != 200:
            assert time.time() < deadline, "server never became ready"
            time.sleep(0.05)

    def __exit__(self, *args: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serving(
    root: Path,
    loaded: LoadedModel | None = None,
    probes: Mapping[str, FakeProbe] | None = SERVED,
    **settings: Any,
) -> Iterator[Server]:
    """`loaded` (default: a tiny llama) served on a free port and ready, with `probes` made up in
    root/probes (None: the caller's own) and its event log at root/events.sqlite; `settings` are
    further ServerConfig fields and may override those two paths."""
    loaded = tiny_model() if loaded is None else loaded
    if probes is not None:
        make_probes(loaded, root / "probes", probes)
    paths = {"probes_dir": root / "probes", "events_db": root / "events.sqlite"}
    config = ServerConfig(**{**paths, **settings}, port=free_port())
    with Server(config, loaded) as server:
        server.wait_ready()
        yield server


# Debian's Chromium for browser tests (never a downloaded browser), started headless with the
# flags this closed network needs: without the background-networking ones, Chromium keeps
# trying to reach Google's hosts.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_or_skip() -> ModuleType:
    """Playwright's sync API for a browser test module, which is skipped (saying what to
    install) without Playwright or without Debian's Chromium: `sync_api = browser_or_skip()`."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
    return sync_api


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright, closed on the way out."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# --- the vLLM engine on tiny models ------------------------------------------------------------

# Tiny models vLLM's CPU backend can run: head_dim 64 (a size its attention kernels support),
# weights large enough (initializer_range) that greedy tokens vary and the top two logits stay
# >= 0.01 apart, so fp32 kernel differences cannot flip a token. Gemma 3 alternates sliding
# (window 8, shorter than every prompt) and full attention layers; its head is untied, since
# a tied head with Gemma's scaled embedding repeats the last prompt token forever.
VLLM_TINY: dict[str, dict[str, Any]] = {
    "llama": {"head_dim": 64, "initializer_range": 0.1},
    "qwen2": {"head_dim": 64, "initializer_range": 0.1},
    "gemma3": {
        "head_dim": 64,
        "initializer_range": 0.15,
        "tie_word_embeddings": False,
        "sliding_window": 8,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
    },
}


def saved_model(loaded: LoadedModel, path: Path) -> LoadedModel:
    """`loaded` written as a model directory (safetensors, tokenizer with its chat template)
    and loaded back from it by `load_model`, as a served model is: vLLM loads the same files."""
    from probewatch.models import load_model

    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return load_model(str(path))


def vllm_tiny(family: str, path: Path, seed: int = 0) -> LoadedModel:
    """A 4-layer, d_model 256 `family` model vLLM can serve, saved under `path`."""
    return saved_model(tiny_model(family, 4, 256, seed, **VLLM_TINY[family]), path)


def fitted_probes(loaded: LoadedModel, sites: list[str], texts: list[str]) -> list[Any]:
    """One logistic probe per site (MonitoredProbe), fitted on `loaded`'s own activations of
    `texts`, labelled by a random direction: separable, so its logits spread over several
    units and a score error shows in the probability (not hidden at 0 or 1)."""
    from probewatch.capture import ActivationCapture
    from probewatch.monitor import MonitoredProbe
    from probewatch.tokens import encode

    with ActivationCapture(loaded.model, sites, positions="all") as capture:
        acts = capture.run(encode(loaded.tokenizer, texts)).acts
    gen = torch.Generator().manual_seed(0)
    probes = []
    for site in sites:
        x = acts[site].float()  # a bfloat16 model records bfloat16
        along = x @ torch.randn(x.shape[1], generator=gen)
        y = (along > along.median()).float()
        probe = LogisticProbe(c=1.0).fit(x, y)
        card = build_card(probe, loaded, site, "all", {"name": site, "hash": "x"}, {})
        name = "p_" + site.replace(".", "_")
        probes.append(MonitoredProbe.from_artifact(name, ProbeArtifact(probe, card)))
    return probes


def collect(engine: Any, requests: list[Any], stagger: float = 0.0) -> list[list[Any]]:
    """Every delivery of each request through `engine.generate`, all run concurrently on one
    event loop (request i submitted i * stagger seconds after the first)."""
    import asyncio

    async def one(i: int, request: Any) -> list[Any]:
        await asyncio.sleep(i * stagger)
        return [item async for item in engine.generate(request)]

    async def every() -> list[list[Any]]:
        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    return asyncio.run(every())

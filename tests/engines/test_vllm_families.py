"""Qwen2 and Gemma 3 under the compiled vLLM engine, served by `VllmEngine` (the server's
engine), checked against the HF Monitor (same probes, same greedy tokens, every token scored)
and with one request steered: tiny random models saved as model directories (`make
test-vllm`), and the real embedded Qwen2.5-Coder-0.5B-Instruct and Gemma 3 270M (marked real:
`make test-vllm-full`).

Runs in .venv-vllm; elsewhere the module skips, saying why."""

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm")

from probewatch.config import EngineChoice
from probewatch.engines.vllm.engine import VllmEngine
from probewatch.monitor import Monitor
from probewatch.server.engine import (
    Failed,
    Finished,
    GenerationRequest,
    PromptScored,
    SteeringChoice,
    TokenGenerated,
)
from tests.helpers import collect, fitted_probes, tiny_model, vllm_tiny

TOKENS = 10
# Probabilities; both engines compute in float32, where the measured gap is ~1e-6 (see
# docs/vllm.md). 1e-4 is far above that and far below what a wrong tap, a row joined to the
# wrong position or the wrong layer's stream gives (> 1e-2 with these probes' logit spread).
TOLERANCE = 1e-4
REAL = {"qwen2-real": "qwen2.5-coder-0.5b-instruct", "gemma3-real": "gemma3-270m"}
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
    [{"role": "user", "content": "How do rivers form?"}],
    [{"role": "user", "content": "Write one sentence about cats."}],
]
TEXTS = [c[0]["content"] for c in CHATS] + [
    "Rivers carry water from the mountains to the sea.",
    "The quick brown fox jumps over the lazy dog.",
]


def _sites(n_layers: int) -> tuple[list[str], str]:
    """Probe sites at the same relative depths on every model (first, middle, three quarters)
    and the steering site at a quarter: resid.0/2/3 and resid.1 on the 4-layer tiny ones."""
    return [f"resid.{n_layers * k // 4}" for k in (0, 2, 3)], f"resid.{n_layers // 4}"


@pytest.fixture(
    scope="module",
    params=["qwen2", "gemma3", *(pytest.param(k, marks=pytest.mark.real) for k in REAL)],
)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    family = request.param
    if family in REAL:
        from probewatch.models import load_model

        loaded = load_model(REAL[family])
    else:
        loaded = vllm_tiny(family, tmp_path_factory.mktemp(family))
    sites, steer_site = _sites(loaded.n_layers)
    probes = fitted_probes(loaded, sites, TEXTS)
    direction = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(1))
    choice = EngineChoice(engine="vllm", vllm_max_model_len=256)
    engine = VllmEngine(loaded, probes, choice, {"v": {steer_site: direction / direction.norm()}})
    try:
        engine.start()
        yield {
            "family": family,
            "engine": engine,
            "monitor": Monitor(loaded, probes),
            "steer_site": steer_site,
        }
    finally:
        engine.stop()


def _request(monitor: Monitor, rid: str, chat: Any, steer: float | None = None) -> Any:
    steering = SteeringChoice("v", steer) if steer is not None else None
    n = monitor.prompt_length(chat)
    return GenerationRequest(rid, chat, n, TOKENS, 0.0, 0, steering)


def _hf_tokens(monitor: Monitor, chat: Any, **kwargs: Any) -> list[int]:
    return [t.token_id for t in monitor.generate([chat], max_new_tokens=TOKENS, **kwargs)[0].tokens]


def _close(got: dict[str, float], expected: dict[str, float]) -> float:
    assert set(got) == set(expected)
    return max(abs(got[name] - value) for name, value in expected.items())


def test_scores_equal_the_hf_monitor_every_token_scored(served: dict[str, Any]) -> None:
    monitor: Monitor = served["monitor"]
    requests = [_request(monitor, f"{served['family']}-{i}", c) for i, c in enumerate(CHATS)]
    streams = collect(served["engine"], requests, stagger=0.1)
    gaps = []
    for chat, stream in zip(CHATS, streams, strict=True):
        expected = monitor.generate([chat], max_new_tokens=TOKENS)[0]
        assert isinstance(stream[0], PromptScored) and isinstance(stream[-1], Finished)
        steps = [d.step for d in stream if isinstance(d, TokenGenerated)]
        # The HF Monitor's greedy tokens, every one delivered with every probe's score,
        # the last one (finish_reason set) included.
        assert [s.token_id for s in steps] == [s.token_id for s in expected.tokens]
        assert steps[-1].finish_reason == expected.finish_reason
        gaps.append(_close(stream[0].prompt_scores, expected.prompt_scores))
        for step, want in zip(steps, expected.tokens, strict=True):
            gaps.append(_close(step.scores, want.scores))
            gaps.append(_close(step.aggregates, want.aggregates))
    print(f"{served['family']}: largest score gap to the HF Monitor {max(gaps):.2e}")
    assert max(gaps) <= TOLERANCE


def test_one_request_steered_the_others_unchanged(served: dict[str, Any]) -> None:
    monitor: Monitor = served["monitor"]
    loaded = monitor.loaded
    steer_site: str = served["steer_site"]
    # A strength of the residual stream's own size at that layer: enough to change tokens.
    # The median, not the mean: a real model's first token has a norm tens of times the rest.
    layer = int(steer_site.split(".")[1])
    ids = torch.tensor([monitor.prompt_ids(CHATS[1])])
    with torch.no_grad():
        hidden = loaded.model(ids, output_hidden_states=True).hidden_states[layer + 1]
    strength = float(hidden[0].norm(dim=-1).median())
    family = served["family"]
    requests = [
        _request(monitor, f"{family}-plain-{i}", c, strength if i == 1 else None)
        for i, c in enumerate(CHATS[:3])
    ]
    streams = collect(served["engine"], requests)
    tokens = [[d.step.token_id for d in s if isinstance(d, TokenGenerated)] for s in streams]
    plain = [_hf_tokens(monitor, c) for c in CHATS[:3]]
    engine: VllmEngine = served["engine"]
    vector = engine.vectors["v"][steer_site]
    steered = _hf_tokens(monitor, CHATS[1], steering=[(steer_site, vector, strength)])
    assert tokens[0] == plain[0] and tokens[2] == plain[2]
    assert tokens[1] == steered != plain[1]


def test_a_request_longer_than_the_context_ends_at_it_every_token_scored(
    served: dict[str, Any],
) -> None:
    """vLLM stops a sequence at max_model_len: the engine asks for no more tokens than it can
    score, so the answer ends there with finish_reason "length" and its last token scored
    (it used to wait SCORE_TIMEOUT_S for that score, then fail the whole request); a prompt
    that leaves no room fails at once, saying how to fix it."""
    if served["family"] in REAL:
        pytest.skip("the tiny models are enough, and a 256-token answer from a real one is slow")
    monitor: Monitor = served["monitor"]
    engine: VllmEngine = served["engine"]
    context = engine.choice.vllm_max_model_len
    p = len(monitor.prompt_ids(CHATS[0]))
    request = dataclasses.replace(_request(monitor, "long", CHATS[0]), max_tokens=context)
    stream = collect(engine, [request])[0]
    steps = [d.step for d in stream if isinstance(d, TokenGenerated)]
    assert isinstance(stream[-1], Finished)
    assert len(steps) == context - p - 1  # the last position vLLM can consume
    assert steps[-1].finish_reason == "length" and steps[-1].scores
    too_long = [{"role": "user", "content": "word " * context}]
    failed = collect(engine, [_request(monitor, "too-long", too_long)])[0]
    assert isinstance(failed[-1], Failed) and "--vllm-max-model-len" in failed[-1].message


def test_a_failed_start_leaves_no_thread_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # vLLM refuses a model directory with no config; the engine's event-loop thread (not a
    # daemon) must stop too, or the process never exits (a test run hung this way).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = tiny_model("llama", 4, 256, head_dim=64)
    loaded.model.config.architectures = ["LlamaForCausalLM"]
    empty = dataclasses.replace(loaded, source=str(tmp_path))
    engine = VllmEngine(empty, [], EngineChoice(engine="vllm"), {})
    with pytest.raises(Exception, match="config"):
        engine.start()
    assert not engine._thread.is_alive()


def test_a_bfloat16_model_is_served_with_float32_probes(tmp_path: Path) -> None:
    """A bfloat16 model (the usual GPU dtype) starts and every token is scored: the probe
    buffers stay float32 (vLLM builds the model under its dtype as torch's default, and a
    bfloat16 buffer failed the start with "mat1 and mat2 must have the same dtype"). vLLM's
    CPU bfloat16 kernels pick other greedy tokens than HF's (seen on plain vLLM too), so the
    scores are checked against HF's teacher-forced on vLLM's own tokens, to bfloat16's
    precision."""
    from probewatch.capture import ActivationCapture
    from probewatch.tokens import Batch

    loaded = vllm_tiny("qwen2", tmp_path / "m")
    loaded.model.to(torch.bfloat16)
    sites, _ = _sites(loaded.n_layers)
    probes = fitted_probes(loaded, sites, TEXTS)
    engine = VllmEngine(loaded, probes, EngineChoice(engine="vllm", vllm_max_model_len=256), {})
    monitor = Monitor(loaded, probes)
    try:
        engine.start()
        stream = collect(engine, [_request(monitor, "bf16", CHATS[0])])[0]
    finally:
        engine.stop()
    steps = [d.step for d in stream if isinstance(d, TokenGenerated)]
    assert isinstance(stream[0], PromptScored) and len(steps) == TOKENS
    prompt = monitor.prompt_ids(CHATS[0])
    ids = torch.tensor([prompt + [s.token_id for s in steps]])
    with ActivationCapture(loaded.model, sites, positions="all") as capture:
        acts = capture.run(Batch(ids, torch.ones_like(ids), None)).acts
    gaps = []
    for probe in probes:
        logits = probe.artifact.probe.score(acts[probe.artifact.site].float())
        expected = [probe.probability(float(v)) for v in logits[len(prompt) - 1 :]]
        got = [stream[0].prompt_scores[probe.name]] + [s.scores[probe.name] for s in steps]
        # the prompt's last position, then each token at its own position (the last included)
        gaps += [abs(g - e) for g, e in zip(got, expected[: len(got)], strict=True)]
    print(f"bfloat16: largest score gap to HF teacher-forced {max(gaps):.2e}")
    # Measured: largest 3.7e-2, mean 4e-3 to 1e-2 per probe; a score joined to the row one
    # position off differs by 0.64 to 0.99 here.
    assert max(gaps) <= 0.1

"""`serve --engine vllm` on the real default model: one compiled vLLM engine behind the
FastAPI app, checked against the HF Monitor (same probes, same greedy tokens).

Runs in .venv-vllm (`make test-vllm`); elsewhere the module skips, saying why."""

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm")

import itertools

import httpx
import openai
import uvicorn

from probewatch.capture import ActivationCapture
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor
from probewatch.probes import make_probe
from probewatch.probes.artifact import ProbeArtifact, build_card, load_probe, save_probe
from probewatch.server.app import create_app
from probewatch.server.config import ServerConfig
from probewatch.steer.directions import from_probe, load_vector, save_vector
from probewatch.tokens import encode
from tests.helpers import free_port

pytestmark = pytest.mark.real
TOKENS = 12
TOLERANCE = 5e-3
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
    [{"role": "user", "content": "How do rivers form?"}],
    [{"role": "user", "content": "Write one sentence about cats."}],
]
TEXTS = [
    "The city of Paris is in France.",
    "Rivers carry water from the mountains to the sea.",
    "My favourite colour is a deep shade of blue.",
    "How do I bake a loaf of bread at home?",
    "The quick brown fox jumps over the lazy dog.",
    "Tell me how to pick a lock without a key.",
]


def _probes(loaded: LoadedModel, root: Path) -> None:
    """Probes fitted on the model's own activations (so their logits are of ordinary size):
    three logistic ones on three sites, an MLP one (not affine: scored from extracted rows),
    a prompt-scope one that always fires, and a vector at resid.10 made from a probe."""
    sites = ["resid.8", "resid.10", "resid.16", "resid.24"]
    with ActivationCapture(loaded.model, sites, positions="all") as capture:
        acts = capture.run(encode(loaded.tokenizer, TEXTS)).acts
    gen = torch.Generator().manual_seed(0)
    labels = (torch.rand(acts["resid.8"].shape[0], generator=gen) > 0.5).float()
    never = {"threshold": {"value": 50.0, "target_fpr": 0.01}}
    specs = [
        ("p8", "resid.8", "logistic", never),
        ("p16", "resid.16", "logistic", never),
        ("p24", "resid.24", "logistic", never),
        ("m16", "resid.16", "mlp", never),
        (
            "harm",
            "resid.8",
            "logistic",
            {"threshold": {"value": -50.0, "target_fpr": 0.01}, "monitor": {"scope": "prompt"}},
        ),
    ]
    for name, site, kind, extra in specs:
        config = {"max_epochs": 5, "hidden": 16} if kind == "mlp" else {"c": 0.01}
        probe = make_probe(kind, **config).fit(acts[site], labels)
        card = build_card(probe, loaded, site, "all", {"name": name, "hash": "x"}, {}, extra)
        save_probe(ProbeArtifact(probe, card), root / "probes" / name)
    steer = make_probe("logistic", c=0.01).fit(acts["resid.10"], labels)
    card = build_card(steer, loaded, "resid.10", "all", {"name": "v", "hash": "x"}, {})
    save_vector(from_probe(ProbeArtifact(steer, card), loaded), root / "vectors" / "v")


class _Server:
    def __init__(self, config: ServerConfig, loaded: LoadedModel) -> None:
        self.url = f"http://127.0.0.1:{config.port}"
        app = create_app(config, loaded)
        self.server = uvicorn.Server(uvicorn.Config(app, port=config.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "_Server":
        self.thread.start()
        deadline = time.time() + 1200  # compiling on a busy 2-core machine takes minutes
        while True:
            try:
                health = httpx.get(self.url + "/health")
                if health.status_code == 200:
                    return self
                assert "error" not in health.json(), health.json()
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "the vLLM engine never became ready"
            time.sleep(0.5)

    def __exit__(self, *args: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("vllm")
    loaded = load_model("default")
    _probes(loaded, root)
    config = ServerConfig(
        probes_dir=root / "probes",
        vectors_dir=root / "vectors",
        events_db=root / "events.sqlite",
        port=free_port(),
        engine="vllm",
        vllm_max_model_len=512,
    )
    with _Server(config, loaded) as server:
        yield {"url": server.url, "loaded": loaded, "root": root}


def _hf_monitor(served: dict[str, Any]) -> Monitor:
    loaded = served["loaded"]
    # Not .deleted/, where the delete route moves a probe.
    paths = sorted(p for p in (served["root"] / "probes").iterdir() if not p.name.startswith("."))
    return Monitor(loaded, [load_probe(p, loaded) for p in paths])


def _stream(
    url: str,
    body: dict[str, Any],
    delay: float,
    out: dict[str, Any],
    first_token: threading.Event | None = None,
) -> None:
    """One streaming request (after `delay` s); keeps every chunk and when it arrived, and
    sets `first_token` when the first scored token arrives."""
    time.sleep(delay)
    chunks = []
    payload = {"model": "default", "max_tokens": TOKENS, "stream": True, **body}
    with httpx.stream("POST", url + "/v1/chat/completions", json=payload, timeout=600) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append((time.monotonic(), json.loads(line[6:])))
                if first_token is not None and "token_index" in chunks[-1][1].get("probewatch", {}):
                    first_token.set()
    out["chunks"] = chunks


def _run_concurrently(url: str, bodies: list[dict[str, Any]], stagger: float) -> list[Any]:
    results: list[dict[str, Any]] = [{} for _ in bodies]
    threads = [
        threading.Thread(target=_stream, args=(url, body, i * stagger, results[i]))
        for i, body in enumerate(bodies)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    return [r["chunks"] for r in results]


def _tokens(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c["probewatch"] for _, c in chunks if "token_index" in c.get("probewatch", {})]


def test_scores_equal_the_hf_monitor_for_four_requests_joining_a_running_batch(
    served: dict[str, Any],
) -> None:
    streams = _run_concurrently(served["url"], [{"messages": c} for c in CHATS], stagger=0.2)
    # Each request's prompt was read (its first chunk) while the one before it was still
    # generating: it joined the running batch (continuous batching).
    for before, after in itertools.pairwise(streams):
        assert after[0][0] < before[-1][0]
    monitor = _hf_monitor(served)
    for chat, chunks in zip(CHATS, streams, strict=True):
        expected = monitor.generate([chat], max_new_tokens=TOKENS)[0]
        got = _tokens(chunks)
        # Every streamed token has every probe's score, the last one included.
        assert [t["token"] for t in got] == [s.text for s in expected.tokens]
        assert all(set(t["scores"]) == {p.name for p in monitor.probes} for t in got)
        for token, step in zip(got, expected.tokens, strict=True):
            for name, value in step.scores.items():
                assert abs(token["scores"][name] - value) <= TOLERANCE, (name, token["token"])
        final = chunks[-1][1]["probewatch"]
        for name, value in expected.prompt_scores.items():
            assert abs(final["prompt_scores"][name] - value) <= TOLERANCE
        # The prompt-scope alert was raised on the prompt, before any token: the first
        # chunk (the role, before any content) carries it, token_index -1.
        first = chunks[0][1]
        assert first["choices"][0]["delta"] == {"role": "assistant"}
        harm = [a["token_index"] for a in first["probewatch"]["alerts"] if a["probe"] == "harm"]
        assert harm == [-1]
        assert final["verdicts"]["harm"]["first_alert_token"] == -1


def test_one_request_steered_the_others_unchanged(served: dict[str, Any]) -> None:
    chats = CHATS[:3]
    bodies: list[dict[str, Any]] = [{"messages": c} for c in chats]
    bodies[1]["steering"] = {"vector": "v", "strength": 8.0}
    streams = _run_concurrently(served["url"], bodies, stagger=0.0)
    texts = ["".join(t["token"] for t in _tokens(s)) for s in streams]
    loaded = served["loaded"]
    monitor = _hf_monitor(served)
    plain = [monitor.generate([c], max_new_tokens=TOKENS)[0].text for c in chats]
    vector = load_vector(served["root"] / "vectors" / "v", loaded).vectors["resid.10"]
    steered = monitor.generate(
        [chats[1]], max_new_tokens=TOKENS, steering=[("resid.10", vector, 8.0)]
    )
    assert texts[0] == plain[0] and texts[2] == plain[2]
    assert texts[1] == steered[0].text != plain[1]


def test_the_openai_client_streams_per_token_scores(served: dict[str, Any]) -> None:
    client = openai.OpenAI(base_url=served["url"] + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="default",
        messages=CHATS[0],
        max_tokens=6,
        stream=True,
    )
    extras = [chunk.model_extra["probewatch"] for chunk in stream if chunk.model_extra]
    scored = [e for e in extras if "scores" in e]
    assert len(scored) == 6
    assert all(0.0 <= v <= 1.0 for e in scored for v in e["scores"].values())
    assert extras[-1]["event_id"]
    reply = client.chat.completions.create(model="default", messages=CHATS[0], max_tokens=6)
    assert len(reply.model_extra["probewatch"]["tokens"]) == 6


def _upload(url: str, name: str, source: Path) -> httpx.Response:
    files = {
        "card": ("card.json", (source / "card.json").read_bytes()),
        "weights": ("weights.safetensors", (source / "weights.safetensors").read_bytes()),
    }
    return httpx.post(url + "/v1/probes", data={"name": name}, files=files, timeout=120)


def test_a_probe_uploaded_and_deleted_through_the_routes_while_requests_stream(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """The upload and delete routes (what a user calls) while two answers are streaming: the
    running requests finish with the HF Monitor's tokens and scores for the probes they
    started with; a request after the upload is scored by the new probe too, as the HF
    Monitor scores it; after the delete it is gone again."""
    url, loaded = served["url"], served["loaded"]
    with ActivationCapture(loaded.model, ["resid.16"], positions="all") as capture:
        acts = capture.run(encode(loaded.tokenizer, TEXTS)).acts["resid.16"]
    labels = (torch.arange(acts.shape[0]) % 2).float()  # other labels than the served p16
    probe = make_probe("logistic", c=0.01).fit(acts, labels)
    extra = {"threshold": {"value": 50.0, "target_fpr": 0.01}}
    card = build_card(probe, loaded, "resid.16", "all", {"name": "u16", "hash": "y"}, {}, extra)
    save_probe(ProbeArtifact(probe, card), tmp_path / "u16")
    monitor = _hf_monitor(served)
    before = {p.name for p in monitor.probes}

    long_chats = [CHATS[2], [{"role": "user", "content": "Explain how a bicycle works."}]]
    results: list[dict[str, Any]] = [{}, {}]
    started = [threading.Event(), threading.Event()]
    threads = [
        threading.Thread(
            target=_stream, args=(url, {"messages": c, "max_tokens": 32}, 0.0, out, event)
        )
        for c, out, event in zip(long_chats, results, started, strict=True)
    ]
    for thread in threads:
        thread.start()
    assert all(event.wait(timeout=600) for event in started)  # both are generating
    uploaded_at = time.monotonic()
    uploaded = _upload(url, "u16", tmp_path / "u16")
    assert uploaded.status_code == 201, uploaded.text
    try:
        for thread in threads:
            thread.join(timeout=900)
        for chat, out in zip(long_chats, results, strict=True):
            assert out["chunks"][-1][0] > uploaded_at  # it was still running at the upload
            expected = monitor.generate([chat], max_new_tokens=32)[0]
            got = _tokens(out["chunks"])
            assert [t["token"] for t in got] == [step.text for step in expected.tokens]
            for token, step in zip(got, expected.tokens, strict=True):
                assert before <= set(token["scores"])
                for name in before:
                    assert abs(token["scores"][name] - step.scores[name]) <= TOLERANCE
        after = _tokens(_run_concurrently(url, [{"messages": CHATS[0]}], stagger=0.0)[0])
        now_served = _hf_monitor(served)
        assert "u16" in {p.name for p in now_served.probes}
        expected = now_served.generate([CHATS[0]], max_new_tokens=TOKENS)[0]
        assert [t["token"] for t in after] == [step.text for step in expected.tokens]
        for token, step in zip(after, expected.tokens, strict=True):
            assert abs(token["scores"]["u16"] - step.scores["u16"]) <= TOLERANCE
    finally:
        deleted = httpx.delete(url + "/v1/probes/u16", timeout=120)
    assert deleted.status_code == 204
    last = _tokens(_run_concurrently(url, [{"messages": CHATS[0]}], stagger=0.0)[0])
    assert last and all(set(t["scores"]) == before for t in last)


def test_another_vllm_release_is_refused_at_start(
    served: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import probewatch.engines.vllm as engine_package

    monkeypatch.setattr(engine_package, "installed_vllm", lambda: "0.31.1")
    config = ServerConfig(
        probes_dir=served["root"] / "probes", events_db=tmp_path / "e.sqlite", engine="vllm"
    )
    app = create_app(config, served["loaded"])
    app.state.server._load()  # what the server's load thread runs at start
    assert not app.state.server.ready.is_set()
    error = app.state.server.load_error
    assert "vLLM 0.31.1 is installed" in error and "supports only vLLM 0.32.0" in error

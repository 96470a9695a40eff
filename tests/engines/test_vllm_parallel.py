"""Tensor and data parallelism under the compiled vLLM engine: a tiny Qwen2 (4 heads, 2 KV
heads) served by `VllmEngine` with two tensor-parallel ranks, and with two data-parallel
engines, each rank bound to one of this machine's two cores. Scores are checked against the
HF Monitor (same probes, same greedy tokens, every token scored, the last one included) and
one request of a batch is steered: under TP the probes and the steering rows run on both
ranks and rank 0 publishes; under DP each engine publishes its own requests' scores, so a
request on the second engine is scored too (vLLM's `collective_rpc` would only have
answered from the first).

Runs in .venv-vllm (`make test-vllm`, CI); elsewhere the module skips, saying why."""

import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm")
if len(os.sched_getaffinity(0)) < 2:
    pytest.skip("two vLLM ranks need two CPU cores", allow_module_level=True)

from probewatch.config import EngineChoice
from probewatch.engines.vllm.engine import VllmEngine
from probewatch.monitor import Monitor
from probewatch.server.engine import (
    Finished,
    GenerationRequest,
    PromptScored,
    SteeringChoice,
    TokenGenerated,
)
from tests.helpers import collect, fitted_probes, vllm_tiny

TOKENS = 10
TOLERANCE = 1e-4  # as in test_vllm_families: float32 on both sides, a wrong row moves > 1e-2
SITES = ["resid.0", "resid.2", "resid.3"]
STEER_SITE = "resid.1"
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
    [{"role": "user", "content": "How do rivers form?"}],
    [{"role": "user", "content": "Write one sentence about cats."}],
]
TEXTS = [c[0]["content"] for c in CHATS] + ["The quick brown fox jumps over the lazy dog."]
LAYOUTS = {"tp2": {"vllm_tensor_parallel": 2}, "dp2": {"vllm_data_parallel": 2}}


@pytest.fixture(scope="module", params=list(LAYOUTS))
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    loaded = vllm_tiny("qwen2", tmp_path_factory.mktemp("qwen2"))
    probes = fitted_probes(loaded, SITES, TEXTS)
    direction = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(1))
    choice = EngineChoice(engine="vllm", vllm_max_model_len=256, **LAYOUTS[request.param])
    engine = VllmEngine(loaded, probes, choice, {"v": {STEER_SITE: direction / direction.norm()}})
    try:
        engine.start()
        yield {"layout": request.param, "engine": engine, "monitor": Monitor(loaded, probes)}
    finally:
        engine.stop()


def _request(monitor: Monitor, rid: str, chat: Any, steer: float | None = None) -> Any:
    steering = SteeringChoice("v", steer) if steer is not None else None
    return GenerationRequest(rid, chat, monitor.prompt_length(chat), TOKENS, 0.0, 0, steering)


def _gap(got: dict[str, float], expected: dict[str, float]) -> float:
    assert set(got) == set(expected)
    return max(abs(got[name] - value) for name, value in expected.items())


def test_scores_equal_the_hf_monitor_every_token_scored(served: dict[str, Any]) -> None:
    monitor: Monitor = served["monitor"]
    requests = [_request(monitor, f"{served['layout']}-{i}", c) for i, c in enumerate(CHATS)]
    streams = collect(served["engine"], requests, stagger=0.1)
    gaps = []
    for chat, stream in zip(CHATS, streams, strict=True):
        expected = monitor.generate([chat], max_new_tokens=TOKENS)[0]
        assert isinstance(stream[0], PromptScored) and isinstance(stream[-1], Finished)
        steps = [d.step for d in stream if isinstance(d, TokenGenerated)]
        assert [s.token_id for s in steps] == [s.token_id for s in expected.tokens]
        gaps.append(_gap(stream[0].prompt_scores, expected.prompt_scores))
        for step, want in zip(steps, expected.tokens, strict=True):
            gaps.append(_gap(step.scores, want.scores))
            gaps.append(_gap(step.aggregates, want.aggregates))
    by_engine = dict(served["engine"].collector.by_engine)
    print(
        f"{served['layout']}: largest score gap to the HF Monitor {max(gaps):.2e}; "
        f"score messages per engine {by_engine}"
    )
    assert max(gaps) <= TOLERANCE
    # every engine published: under DP both engines ran requests, under TP one rank did
    assert set(by_engine) == set(range(served["engine"].choice.vllm_data_parallel))


def test_one_request_steered_the_others_unchanged(served: dict[str, Any]) -> None:
    monitor: Monitor = served["monitor"]
    engine: VllmEngine = served["engine"]
    ids = torch.tensor([monitor.prompt_ids(CHATS[1])])
    with torch.no_grad():
        hidden = monitor.loaded.model(ids, output_hidden_states=True).hidden_states[2]
    strength = float(hidden[0].norm(dim=-1).median())
    layout = served["layout"]
    requests = [
        _request(monitor, f"{layout}-plain-{i}", c, strength if i == 1 else None)
        for i, c in enumerate(CHATS[:3])
    ]
    streams = collect(engine, requests)
    tokens = [[d.step.token_id for d in s if isinstance(d, TokenGenerated)] for s in streams]

    def hf(chat: Any, **kwargs: Any) -> list[int]:
        out = monitor.generate([chat], max_new_tokens=TOKENS, **kwargs)[0]
        return [t.token_id for t in out.tokens]

    plain = [hf(c) for c in CHATS[:3]]
    steered = hf(CHATS[1], steering=[(STEER_SITE, engine.vectors["v"][STEER_SITE], strength)])
    assert tokens[0] == plain[0] and tokens[2] == plain[2]
    assert tokens[1] == steered != plain[1]

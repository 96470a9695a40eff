"""Probes replaced while requests run in the compiled vLLM engine: `VllmEngine.set_probes`
(what the server's upload and delete routes call) deletes a probe, adds one, and uploads a
probe again under the deleted one's name, all while three requests are generating. Each
request keeps the scores of the probes it started with, to its last token; a request that
starts after the reload gets the new set; both equal the HF Monitor's.

Runs in .venv-vllm (`make test-vllm-full`); elsewhere the module skips, saying why."""

import asyncio
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm")

from probewatch.config import EngineChoice
from probewatch.engines.vllm.engine import VllmEngine
from probewatch.errors import ProbewatchError
from probewatch.monitor import Monitor, MonitoredProbe
from probewatch.server.engine import GenerationRequest, TokenGenerated
from tests.helpers import fitted_probes, vllm_tiny

TOKENS = 64
TOLERANCE = 1e-4  # probabilities, float32 on both sides (test_vllm_families.py says why)
CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Name three colours of the rainbow."}],
    [{"role": "user", "content": "How do rivers form?"}],
    [{"role": "user", "content": "Write one sentence about cats."}],
]
TEXTS = [c[0]["content"] for c in CHATS]
OTHER_TEXTS = ["The quick brown fox jumps over the lazy dog.", "Seven is larger than three."]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    loaded = vllm_tiny("llama", tmp_path_factory.mktemp("llama"))
    a, c, b = fitted_probes(loaded, ["resid.1", "resid.2", "resid.3"], TEXTS)
    # b's name with other weights (b deleted, then a new b uploaded), and a fourth probe.
    b2, d = fitted_probes(loaded, ["resid.3", "resid.1"], OTHER_TEXTS)
    d = dataclasses.replace(d, name="d")
    assert b2.name == b.name
    assert not torch.equal(b2.artifact.probe.affine()[0], b.artifact.probe.affine()[0])
    # Four columns: a and b, then c and the new b while b's column is still read.
    # resid.2 is tapped from the start, for c (added later).
    choice = EngineChoice(engine="vllm", vllm_max_model_len=256, vllm_k_max=4, vllm_sites="resid.2")
    engine = VllmEngine(loaded, [a, b], choice, {})
    try:
        engine.start()
        yield {
            "engine": engine,
            "loaded": loaded,
            "probes": {"a": a, "b": b, "c": c, "b2": b2, "d": d},
        }
    finally:
        engine.stop()


def _request(monitor: Monitor, rid: str, chat: Any) -> GenerationRequest:
    return GenerationRequest(rid, chat, monitor.prompt_length(chat), TOKENS, 0.0, 0)


async def _reload_while_running(engine: VllmEngine, p: dict[str, MonitoredProbe]) -> Any:
    monitor = Monitor(engine.loaded, [p["a"], p["b"]])
    steps: list[list[Any]] = [[] for _ in range(4)]

    async def run(i: int) -> None:
        request = _request(monitor, f"reload-{i}", CHATS[i])
        async for item in engine.generate(request):
            if isinstance(item, TokenGenerated):
                steps[i].append(item.step)

    old = [asyncio.create_task(run(i)) for i in range(3)]
    while min(len(s) for s in steps[:3]) < 2:  # all three are generating
        await asyncio.sleep(0.01)
    await asyncio.to_thread(engine.set_probes, [p["a"], p["c"]])  # b deleted, c added
    await asyncio.to_thread(engine.set_probes, [p["a"], p["c"], p["b2"]])  # a new b
    with pytest.raises(ProbewatchError, match="still read by requests in flight") as refused:
        await asyncio.to_thread(engine.set_probes, [p["a"], p["c"], p["b2"], p["d"]])
    marks = [len(s) for s in steps[:3]]
    new = asyncio.create_task(run(3))  # starts on the new probes beside the old requests
    await asyncio.gather(*old, new)
    return steps, marks, refused.value


def _assert_equal(steps: list[Any], monitor: Monitor, chat: Any) -> None:
    expected = monitor.generate([chat], max_new_tokens=TOKENS)[0].tokens
    assert [s.token_id for s in steps] == [s.token_id for s in expected]
    for step, want in zip(steps, expected, strict=True):
        assert set(step.scores) == set(want.scores)
        for name, value in want.scores.items():
            assert abs(step.scores[name] - value) <= TOLERANCE, (name, step.token_index)


def test_requests_in_flight_keep_their_probes_across_a_reload(setup: dict[str, Any]) -> None:
    engine, loaded, p = setup["engine"], setup["loaded"], setup["probes"]
    steps, marks, refused = asyncio.run(_reload_while_running(engine, p))
    # The reload landed mid-generation: each old request had most of its tokens to go.
    assert all(len(s) - mark >= TOKENS // 2 for s, mark in zip(steps[:3], marks, strict=True))
    for i in range(3):  # scored by a and the original b to the end
        _assert_equal(steps[i], Monitor(loaded, [p["a"], p["b"]]), CHATS[i])
    _assert_equal(steps[3], Monitor(loaded, [p["a"], p["c"], p["b2"]]), CHATS[3])
    # No column was free for d while b's was still read; once those requests ended, it is.
    assert "retry once those requests end" in (refused.hint or "")
    engine.set_probes([p["a"], p["c"], p["b2"], p["d"]])
    monitor = Monitor(loaded, [p["a"], p["c"], p["b2"], p["d"]])

    async def one() -> list[Any]:
        request = _request(monitor, "after", CHATS[0])
        items = [item async for item in engine.generate(request)]
        return [item.step for item in items if isinstance(item, TokenGenerated)]

    _assert_equal(asyncio.run(one()), monitor, CHATS[0])

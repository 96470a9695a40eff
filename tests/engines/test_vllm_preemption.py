"""Chunked prefill and preemption forced in the compiled vLLM engine: a token budget of 64
per step (so every prompt, 150-300 tokens, is read in several chunks) and a KV cache of 20
blocks of 32 tokens (so six concurrent requests cannot all fit and vLLM preempts some and
recomputes them). Scores, keyed by (request, absolute position), must still equal the HF
Monitor's, every position scored, none lost.

Runs in .venv-vllm (`make test-vllm-full`); elsewhere the module skips, saying why."""

from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm")

import probewatch.engines.vllm.engine as vllm_engine
from probewatch.capture import ActivationCapture
from probewatch.config import EngineChoice
from probewatch.engines.vllm.engine import VllmEngine
from probewatch.engines.vllm.layout import external_id
from probewatch.engines.vllm.transport import ScoreCollector
from probewatch.monitor import Monitor, MonitoredProbe
from probewatch.probes import ProbeArtifact, make_probe
from probewatch.probes.artifact import build_card
from probewatch.server.engine import (
    Finished,
    GenerationRequest,
    PromptScored,
    SteeringChoice,
    TokenGenerated,
)
from probewatch.tokens import encode
from tests.helpers import collect, fitted_probes, vllm_tiny

TOKENS = 48
TOLERANCE = 1e-4  # probabilities, float32 on both sides (test_vllm_families.py says why)
# Tokens per step; KV block size; KV blocks in all (320 tokens; 8 requests need ~1100).
BUDGET, BLOCK, BLOCKS = 32, 32, 10
SITES = ["resid.1", "resid.3"]
STEER_SITE, STEERED = "resid.2", 2  # the third request is steered
WORDS = ["river", "stone", "cloud", "ember", "frost", "grain", "light", "apple", "seed", "lamp"]
CHATS = [
    [{"role": "user", "content": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(n))}]
    for i, n in enumerate([8, 10, 12, 14, 9, 11, 13, 15])
]


class RecordingCollector(ScoreCollector):
    """The engine's collector, also keeping every (request, position) span as it arrived,
    with its raw fused scores: a position that arrives twice was recomputed."""

    arrivals: ClassVar[list[tuple[str, int, np.ndarray]]] = []

    def _file(self, parts: list[bytes]) -> None:
        import json

        header = json.loads(parts[0])
        scores = np.frombuffer(parts[1], dtype=np.float32).reshape(-1, int(header["k"]))
        at = 0
        for req in header["reqs"]:
            self.arrivals.append((external_id(req["id"]), req["pos"], scores[at : at + req["n"]]))
            at += req["n"]
        super()._file(parts)


def _probes(loaded: Any) -> list[MonitoredProbe]:
    """Two logistic probes (in-graph) and an MLP probe (scored from the extracted rows)."""
    texts = [c[0]["content"] for c in CHATS]
    probes = fitted_probes(loaded, SITES, texts)
    with ActivationCapture(loaded.model, ["resid.3"], positions="all") as capture:
        x = capture.run(encode(loaded.tokenizer, texts)).acts["resid.3"]
    y = (x[:, 0] > x[:, 0].median()).float()
    mlp = make_probe("mlp", max_epochs=5, hidden=16).fit(x, y)
    card = build_card(mlp, loaded, "resid.3", "all", {"name": "mlp", "hash": "x"}, {})
    return [*probes, MonitoredProbe.from_artifact("m3", ProbeArtifact(mlp, card))]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    loaded = vllm_tiny("llama", tmp_path_factory.mktemp("llama"))
    probes = _probes(loaded)
    monitor = Monitor(loaded, probes)
    direction = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(1))
    vector = direction / direction.norm()
    original = vllm_engine.engine_args

    def squeezed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        small = {"max_num_batched_tokens": BUDGET, "block_size": BLOCK}
        # Admit a request once its first chunk fits (by default vLLM waits for its whole
        # prompt to fit), so the running requests outgrow the cache and preempt each other.
        crowded = {"num_gpu_blocks_override": BLOCKS, "scheduler_reserve_full_isl": False}
        return {**original(*args, **kwargs), **small, **crowded}

    class Recording(RecordingCollector):
        arrivals: ClassVar[list[tuple[str, int, np.ndarray]]] = []  # this run's only

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vllm_engine, "engine_args", squeezed)
        patch.setattr(vllm_engine, "ScoreCollector", Recording)
        choice = EngineChoice(engine="vllm", vllm_max_model_len=256)
        engine = VllmEngine(loaded, probes, choice, {"v": {STEER_SITE: vector}})
        try:
            engine.start()
            requests = [
                GenerationRequest(
                    f"r{i}",
                    chat,
                    monitor.prompt_length(chat),
                    TOKENS,
                    0.0,
                    0,
                    SteeringChoice("v", 4.0) if i == STEERED else None,
                )
                for i, chat in enumerate(CHATS)
            ]
            streams = collect(engine, requests)
        finally:
            engine.stop()
    yield {
        "monitor": monitor,
        "streams": streams,
        "arrivals": Recording.arrivals,
        "vector": vector,
    }


def _expected(run: dict[str, Any], i: int) -> Any:
    steering = [(STEER_SITE, run["vector"], 4.0)] if i == STEERED else []
    return run["monitor"].generate([CHATS[i]], max_new_tokens=TOKENS, steering=steering)[0]


def test_prefill_was_chunked_and_requests_were_preempted(run: dict[str, Any]) -> None:
    monitor: Monitor = run["monitor"]
    lengths = {f"r{i}": monitor.prompt_length(c) for i, c in enumerate(CHATS)}
    assert min(lengths.values()) > BUDGET  # every prompt needs several steps
    spans = Counter(rid for rid, pos, _ in run["arrivals"] if pos < lengths[rid])
    assert all(spans[rid] >= 2 for rid in lengths)
    seen = Counter((rid, pos + j) for rid, pos, s in run["arrivals"] for j in range(len(s)))
    recomputed = {rid for (rid, _), n in seen.items() if n > 1}
    again = sum(n > 1 for n in seen.values())
    print(f"recomputed after preemption: {sorted(recomputed)}, {again} positions")
    assert len(recomputed) >= 2
    # A recomputed position's scores equal its first computation's.
    first: dict[tuple[str, int], np.ndarray] = {}
    for rid, pos, scores in run["arrivals"]:
        for j, row in enumerate(scores):
            key = (rid, pos + j)
            if key in first:
                assert np.abs(first[key] - row).max() <= 1e-4, key
            first.setdefault(key, row)


def test_every_position_scored_once_and_equal_to_the_hf_monitor(run: dict[str, Any]) -> None:
    monitor: Monitor = run["monitor"]
    gaps = []
    for i, stream in enumerate(run["streams"]):
        expected = _expected(run, i)
        assert isinstance(stream[0], PromptScored) and isinstance(stream[-1], Finished)
        steps = [d.step for d in stream if isinstance(d, TokenGenerated)]
        # Each token delivered once, in order, none lost: the HF Monitor's greedy tokens.
        assert [s.token_index for s in steps] == list(range(len(expected.tokens)))
        assert [s.token_id for s in steps] == [s.token_id for s in expected.tokens]
        gaps += [abs(stream[0].prompt_scores[k] - v) for k, v in expected.prompt_scores.items()]
        for step, want in zip(steps, expected.tokens, strict=True):
            assert set(step.scores) == {p.name for p in monitor.probes}
            gaps += [abs(step.scores[k] - v) for k, v in want.scores.items()]
    # The steered request (recomputed or not, its steering rows are filled again) differs.
    plain = monitor.generate([CHATS[STEERED]], max_new_tokens=TOKENS)[0]
    steered = _expected(run, STEERED)
    assert [t.token_id for t in steered.tokens] != [t.token_id for t in plain.tokens]
    print(f"largest score gap to the HF Monitor {max(gaps):.2e}")
    assert max(gaps) <= TOLERANCE


def test_the_engine_scored_exactly_the_consumed_positions(run: dict[str, Any]) -> None:
    # Prompt positions 0..P-1 and one per generated token but the last (vLLM is asked for
    # one more token than the client wants: its step scores the last token): nothing
    # missing, nothing past the end.
    monitor: Monitor = run["monitor"]
    for i, chat in enumerate(CHATS):
        rid, p = f"r{i}", monitor.prompt_length(chat)
        got = {pos + j for r, pos, s in run["arrivals"] if r == rid for j in range(len(s))}
        n = sum(isinstance(d, TokenGenerated) for d in run["streams"][i])
        assert set(range(p + n)) <= got, rid
        # Async scheduling runs a request's next step before it knows the request ended.
        assert got - set(range(p + n)) <= {p + n}, rid

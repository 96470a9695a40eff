"""The live monitor on tiny models: its per-token scores are exactly the probes' scores of the
activations a plain forward pass gives for the same tokens."""

from typing import Any

import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor, MonitoredProbe, PromptStep
from probewatch.probes import ProbeArtifact, make_probe
from probewatch.probes.aggregators import make_aggregator
from probewatch.probes.artifact import build_card
from probewatch.tokens import Batch

CHATS = [
    [{"role": "user", "content": "Where is Lyon?"}],
    [{"role": "user", "content": "Tell me something long about rivers and stones"}],
]


def _artifact(
    loaded: LoadedModel,
    site: str,
    kind: str = "logistic",
    seed: int = 0,
    extra: dict[str, Any] | None = None,
) -> ProbeArtifact:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(200, loaded.d_model, generator=gen)
    y = (x[:, seed % loaded.d_model] > 0).float()
    config = {"max_epochs": 5} if kind == "mlp" else {}
    probe = make_probe(kind, **config).fit(x, y)
    card = build_card(
        probe, loaded, site, "last", {"name": f"p{seed}", "hash": "x"}, {}, extra=extra
    )
    return ProbeArtifact(probe, card)


def _teacher_forced_scores(
    loaded: LoadedModel, monitor: Monitor, row: int
) -> dict[str, torch.Tensor]:
    """Score the prompt + generated tokens with one ordinary forward pass."""
    ids, _mask = monitor._encode([CHATS[row]])
    response = monitor.responses[0 if len(monitor.responses) == 1 else row]
    generated = torch.tensor([[s.token_id for s in response.tokens]])
    full = torch.cat([ids, generated], dim=1)
    batch = Batch(full, torch.ones_like(full), None)
    sites = sorted({p.artifact.site for p in monitor.probes})
    with ActivationCapture(loaded.model, sites, positions="all") as cap:
        captured = cap.run(batch)
    start = ids.shape[1] - 1  # the prompt's last position predicts the first token
    out = {}
    for probe in monitor.probes:
        acts = captured.acts[probe.artifact.site][start : start + generated.shape[1] + 1]
        out[probe.name] = probe.artifact.probe.score(acts)
    return out


def test_stream_scores_equal_a_plain_forward_pass(tiny: LoadedModel) -> None:
    probes = [
        _artifact(tiny, "resid.1", seed=0),
        _artifact(tiny, "resid.1", "mass_mean", seed=1),  # affine: fused with the first
        _artifact(tiny, "mlp_out.2", "mlp", seed=2),  # not affine: scored on its own
    ]
    monitor = Monitor(
        tiny, [MonitoredProbe.from_artifact(f"p{i}", a) for i, a in enumerate(probes)]
    )
    assert monitor.bank._fused_sites == ["resid.1"] and monitor.bank._fused_idx == [0, 1]
    assert monitor.bank._other["mlp_out.2"] == [2]
    monitor.generate([CHATS[0]], max_new_tokens=12)
    response = monitor.responses[0]
    expected = _teacher_forced_scores(tiny, monitor, 0)
    for k, probe in enumerate(monitor.probes):
        prompt_logit = expected[probe.name][0]
        assert response.prompt_scores[probe.name] == pytest.approx(
            probe.probability(float(prompt_logit)), abs=1e-4
        )
        # Token t's score is read when it is fed back in, i.e. at its own position.
        got = [s.scores[probe.name] for s in response.tokens]
        want = [probe.probability(float(v)) for v in expected[probe.name][1:]]
        assert got == pytest.approx(want, abs=1e-4), k


def test_greedy_tokens_match_transformers_generate(tiny: LoadedModel) -> None:
    monitor = Monitor(tiny, [_artifact(tiny, "resid.0")])
    monitor.stop_ids = set()  # a random model: compare a fixed number of tokens
    monitor.generate([CHATS[1]], max_new_tokens=10)
    ids, mask = monitor._encode([CHATS[1]])
    reference = tiny.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=10,
        min_new_tokens=10,
        do_sample=False,
        pad_token_id=tiny.tokenizer.pad_token_id,
    )[0, ids.shape[1] :]
    assert [s.token_id for s in monitor.responses[0].tokens] == reference.tolist()


def test_batched_equals_one_at_a_time(any_tiny: LoadedModel) -> None:
    monitor = Monitor(any_tiny, [_artifact(any_tiny, "resid.1")])
    monitor.stop_ids = set()
    batched = monitor.generate(CHATS, max_new_tokens=8)
    singles = [monitor.generate([c], max_new_tokens=8)[0] for c in CHATS]
    for b, s in zip(batched, singles, strict=True):
        assert [t.token_id for t in b.tokens] == [t.token_id for t in s.tokens]
        got = [t.scores["p0"] for t in b.tokens]
        assert got == pytest.approx([t.scores["p0"] for t in s.tokens], abs=1e-4)


def test_streaming_aggregates_and_alerts(tiny: LoadedModel) -> None:
    artifact = _artifact(tiny, "resid.2")
    artifact.card["aggregator"] = make_aggregator("ema_max", alpha=0.5).config()
    probe = MonitoredProbe.from_artifact("p", artifact)
    monitor = Monitor(tiny, [probe])
    monitor.stop_ids = set()
    monitor.generate([CHATS[0]], max_new_tokens=10)
    tokens = monitor.responses[0].tokens
    logits = [_logit(t.scores["p"]) for t in tokens]
    batch_value = make_aggregator("ema_max", alpha=0.5).aggregate(logits)
    assert _logit(tokens[-1].aggregates["p"]) == pytest.approx(batch_value, abs=1e-3)

    # A threshold just below the final aggregate must fire exactly once, where it is crossed.
    probe.threshold = batch_value - 1e-3
    monitor.generate([CHATS[0]], max_new_tokens=10)
    response = monitor.responses[0]
    assert len(response.alerts) == 1
    alert = response.alerts[0]
    running = [_logit(t.aggregates["p"]) for t in response.tokens]
    first = next(i for i, v in enumerate(running) if v > probe.threshold)
    assert alert.token_index == first
    assert (
        response.verdicts["p"]["flagged"] and response.verdicts["p"]["first_alert_token"] == first
    )
    assert response.tokens[first].alerts == [alert]


def _logit(p: float) -> float:
    import math

    return math.log(p / (1 - p))


def test_steering_changes_the_generation_and_then_goes_away(tiny: LoadedModel) -> None:
    monitor = Monitor(tiny, [_artifact(tiny, "resid.1")])
    monitor.stop_ids = set()
    plain = [t.token_id for t in monitor.generate([CHATS[0]], max_new_tokens=8)[0].tokens]
    vector = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(3))
    steered = monitor.generate([CHATS[0]], max_new_tokens=8, steering=[("resid.0", vector, 50.0)])
    assert [t.token_id for t in steered[0].tokens] != plain
    again = [t.token_id for t in monitor.generate([CHATS[0]], max_new_tokens=8)[0].tokens]
    assert again == plain


def test_each_conversation_keeps_its_own_limit(tiny: LoadedModel) -> None:
    monitor = Monitor(tiny, [_artifact(tiny, "resid.1")])
    monitor.stop_ids = set()
    short, long = monitor.generate(CHATS, max_new_tokens=[3, 7], temperature=[0.0, 0.0])
    assert (len(short.tokens), short.finish_reason) == (3, "length")
    assert (len(long.tokens), long.finish_reason) == (7, "length")
    alone = monitor.generate([CHATS[1]], max_new_tokens=7)[0]
    assert [t.token_id for t in long.tokens] == [t.token_id for t in alone.tokens]


def test_bad_arguments_are_refused(tiny: LoadedModel) -> None:
    monitor = Monitor(tiny, [])
    with pytest.raises(ProbewatchError, match="max_new_tokens"):
        monitor.generate(CHATS, max_new_tokens=0)
    with pytest.raises(ProbewatchError, match="temperature"):
        monitor.generate(CHATS, temperature=float("nan"))
    with pytest.raises(ProbewatchError, match="unique"):
        Monitor(tiny, [MonitoredProbe.from_artifact("a", _artifact(tiny, "resid.0"))] * 2)


def test_prompt_scoped_probes_judge_the_request(tiny: LoadedModel) -> None:
    artifact = _artifact(tiny, "resid.2", extra={"monitor": {"scope": "prompt"}})
    probe = MonitoredProbe.from_artifact("harm", artifact)
    monitor = Monitor(tiny, [probe])
    monitor.stop_ids = set()
    first = monitor.generate([CHATS[0]], max_new_tokens=4)[0]
    prompt_logit = _logit(first.prompt_scores["harm"])
    assert first.verdicts["harm"]["score"] == pytest.approx(first.prompt_scores["harm"])
    probe.threshold = prompt_logit - 1e-3  # just below the prompt score: flagged up front
    flagged = monitor.generate([CHATS[0]], max_new_tokens=4)[0]
    assert (
        flagged.verdicts["harm"]["flagged"] and flagged.verdicts["harm"]["first_alert_token"] == -1
    )
    assert [a.token_index for a in flagged.alerts] == [-1]
    steps = list(monitor.stream([CHATS[0]], max_new_tokens=4))
    assert isinstance(steps[0], PromptStep)  # before the first token: input monitoring
    assert steps[0].alerts == flagged.alerts and not steps[1].alerts
    probe.threshold = prompt_logit + 1e-3
    assert not monitor.generate([CHATS[0]], max_new_tokens=4)[0].verdicts["harm"]["flagged"]

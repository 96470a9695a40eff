"""Activation patching: the batched sweep equals one forward per patch, on every family."""

import pytest
import torch

from probewatch.attribution.anatomy import anatomy
from probewatch.attribution.metrics import KLMetric, LogitDiffMetric, ProbeMetric, ProbMetric
from probewatch.attribution.patching import (
    SweepSpec,
    activation_patching,
    patch_reference,
    patch_sweep,
    record_sources,
)
from probewatch.attribution.replay import Replayer
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import ProbeArtifact, build_card
from probewatch.probes.linear import LogisticProbe
from probewatch.tokens import encode
from tests.helpers import perturbed

CLEAN = ["hello world", "abcdefg"]
CORRUPT = ["jello worms", "gfedcba"]


def _check_against_reference(loaded: LoadedModel, metric, spec: SweepSpec) -> None:  # type: ignore[no-untyped-def]
    clean, corrupt = encode(loaded.tokenizer, CLEAN), encode(loaded.tokenizer, CORRUPT)
    sources = record_sources(loaded, clean, [metric.probe_site] if metric.probe_site else [])
    result = patch_sweep(loaded, corrupt, sources, metric, spec)
    scale = float(torch.cat([result.base, result.source]).abs().max())
    assert float(result.effect().abs().max()) > 1e-3 * scale  # patches do move the metric
    for i, cell in enumerate(result.cells):
        reference = patch_reference(loaded, corrupt, sources, metric, cell)
        assert torch.allclose(result.values[i], reference.double(), atol=1e-5), cell.label


def test_sweep_equals_one_forward_per_patch(family_model: LoadedModel) -> None:
    spec = SweepSpec(positions=(0, 3, -1), rows_per_forward=8)
    _check_against_reference(family_model, LogitDiffMetric([5, 6], 9), spec)


def test_heads_by_position_probability_and_kl() -> None:
    loaded = perturbed("gemma3")
    spec = SweepSpec(components=("head",), positions=(1, -1), heads_by_position=True)
    _check_against_reference(loaded, ProbMetric(5), spec)
    reference = record_sources(loaded, encode(loaded.tokenizer, CLEAN)).logits
    _check_against_reference(loaded, KLMetric(reference), SweepSpec(components=("mlp_out",)))


def test_probe_score_metric_matches_reference() -> None:
    loaded = perturbed("llama")
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, loaded.d_model, generator=gen)
    probe = LogisticProbe(c=1.0).fit(x, (x[:, 0] > 0).long())
    artifact = ProbeArtifact(probe, build_card(probe, loaded, "resid.2", "last", {"name": "p"}, {}))
    _check_against_reference(loaded, ProbeMetric(artifact), SweepSpec())


def test_both_directions_end_at_the_donor_value_when_everything_is_patched() -> None:
    loaded = perturbed("qwen2")
    clean, corrupt = encode(loaded.tokenizer, CLEAN[:1]), encode(loaded.tokenizer, CORRUPT[:1])
    spec = SweepSpec(components=("resid",), layers=(3,), positions=None)
    results = activation_patching(loaded, clean, corrupt, LogitDiffMetric(5, 9), spec)
    for result in results.values():
        # resid at the last layer and the last position carries the whole prediction.
        last = result.grid("resid")[3, -1]
        assert abs(float(last) - float((result.source - result.base).mean())) < 1e-4
    kl = activation_patching(loaded, clean, corrupt, "kl", spec)["denoise"]
    assert float(kl.values.min()) >= -1e-6


def test_unequal_lengths_and_other_shapes_are_refused() -> None:
    loaded = perturbed("llama")
    clean = encode(loaded.tokenizer, ["hello world", "abc"])
    corrupt = encode(loaded.tokenizer, ["hello world!", "abd"])
    with pytest.raises(ProbewatchError, match=r"pair 0: the prompts are 11 and 12 tokens"):
        activation_patching(loaded, clean, corrupt, LogitDiffMetric(5, 9))
    other = perturbed("gemma3")  # same d_model, different head layout
    sources = record_sources(other, encode(other.tokenizer, CLEAN))
    sources.acts = {k: v[..., :16] for k, v in sources.acts.items()}
    with pytest.raises(ProbewatchError, match="cross-model patching needs two models"):
        patch_sweep(loaded, encode(loaded.tokenizer, CORRUPT), sources, LogitDiffMetric(5, 9))
    with pytest.raises(ProbewatchError, match="do not exist"):
        activation_patching(
            loaded,
            encode(loaded.tokenizer, CLEAN),
            encode(loaded.tokenizer, CORRUPT),
            LogitDiffMetric(5, 9),
            SweepSpec(layers=(7,)),
        )


@pytest.mark.real
def test_default_model_sweep_equals_reference(default_model: LoadedModel) -> None:
    from probewatch.attribution.targets import single_token

    tok = default_model.tokenizer
    clean = encode(tok, ["The Eiffel Tower is in the city of"])
    corrupt = encode(tok, ["The Colosseum is in the city of"])
    if int(clean.attention_mask.sum()) != int(corrupt.attention_mask.sum()):
        pytest.skip("prompt lengths differ for this tokenizer")
    metric = LogitDiffMetric(single_token(tok, " Paris"), single_token(tok, " Rome"))
    sources = record_sources(default_model, clean)
    spec = SweepSpec(components=("resid", "head"), layers=(0, 14, 29), positions=(2, 3, -1))
    result = patch_sweep(default_model, corrupt, sources, metric, spec)
    for i in range(0, len(result.cells), 5):
        reference = patch_reference(default_model, corrupt, sources, metric, result.cells[i])
        assert torch.allclose(result.values[i], reference.double(), atol=1e-4)
    assert float(result.source[0]) > 1.0 > float(result.base[0])


def test_replay_skips_earlier_positions_where_the_family_allows(family_model: LoadedModel) -> None:
    replay = Replayer(anatomy(family_model.model), encode(family_model.tokenizer, CLEAN))
    # GPT-2's blocks take positional extras the suffix replay does not cut: every position runs.
    assert replay.suffix == (family_model.name != "tiny-gpt2")
    assert replay.earliest_start(5) == (min(5, int(replay.last.min())) if replay.suffix else 0)


def test_a_failed_suffix_check_falls_back_to_full_replays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("probewatch.attribution.replay._close", lambda *_: False)
    loaded = perturbed("llama")
    assert not Replayer(anatomy(loaded.model), encode(loaded.tokenizer, CLEAN)).suffix
    _check_against_reference(loaded, LogitDiffMetric([5, 6], 9), SweepSpec(positions=(1, -1)))

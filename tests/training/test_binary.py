"""Binary training end to end on a tiny model: honest selection, calibration, thresholds."""

import numpy as np
import pytest

from probewatch.config import EvalOptions, HarvestSpec, ProbeSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.store import harvest
from probewatch.training import BinaryScores, TrainResult, per_example, train
from probewatch.training.evaluate import evaluate
from tests.helpers import yes_no

CARD = DatasetCard("yesno", "toy", "tests", "none", "by hand", "by item")


def fit(
    tiny: LoadedModel, data: Dataset, control: Dataset | None = None, **spec: object
) -> tuple[TrainResult, BinaryScores]:
    result = train(tiny, data, ProbeSpec(**spec), control, progress=False)
    assert isinstance(result.metrics, BinaryScores)
    return result, result.metrics


def test_probe_is_chosen_on_validation_and_thresholded_on_controls(tiny: LoadedModel) -> None:
    result, metrics = fit(tiny, yes_no(), sites="resid.1-3", n_boot=200)
    assert [r.site for r in result.sweep] == ["resid.1", "resid.2", "resid.3"]
    # Best validation AUROC; among sites that tie on it, the chosen one separates best.
    top = max(r.val for r in result.sweep)
    assert result.best_site in {r.site for r in result.sweep if r.val == top}
    assert "told apart by the separation" in result.artifact.card["selection"]
    assert metrics.test.auroc > 0.9
    # The threshold comes from validation negatives, so their FPR is at most the target.
    val_neg = result.val_scores[result.val_labels == 0]
    assert (val_neg > metrics.threshold).mean() <= 0.01
    card = result.artifact.card
    assert card["threshold"]["value"] == metrics.threshold
    assert card["threshold"]["target_fpr"] == 0.01
    assert {"a", "b"} <= set(card["calibration"])
    # The label is the last word, so the words baseline matches the probe: the card says so.
    audit = card["shortcut_audit"]
    assert audit["verdict"] == "likely shortcut" and audit["baseline_auroc"] > 0.95
    assert set(audit["early_layers"]) == {"embed", "resid.0", "resid.1"}
    assert "shortcut audit: likely shortcut" in result.report()
    assert card["dataset"]["n_fit"] + card["dataset"]["n_validation"] == len(
        yes_no().split("train")
    )
    assert np.isfinite(metrics.ece_calibrated)
    # The recipe in the card rebuilds the spec that made it.
    assert ProbeSpec.from_dict(card["recipe"]) == ProbeSpec(sites="resid.1-3", n_boot=200)
    assert card["monitor"] == {"scope": "response"}
    assert "best probe resid." in result.report() and "AUROC" in result.table()


def test_sites_tied_on_auroc_are_told_apart_by_separation() -> None:
    from probewatch.training.binary import separation
    from probewatch.training.sweep import Scored, preference

    labels = np.array([0.0] * 50 + [1.0] * 50)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=100)
    close, far = noise + 4 * labels, noise + 8 * labels  # both separate perfectly
    assert separation(far, labels) > separation(close, labels) > 3
    # d' ignores the scores' scale, so probes of different kinds compare.
    assert separation(100 * close + 7, labels) == pytest.approx(separation(close, labels))
    assert np.isnan(separation(close[:51], labels[:51]))  # one positive: no spread
    scored = [Scored(s, labels, 1.0, separation(s, labels)) for s in (close, far)]
    assert max(scored, key=preference) is scored[1]
    # The tie-break never overrides the metric itself.
    better_metric = Scored(close, labels, 1.0, 0.1)
    assert preference(better_metric) > preference(Scored(far, labels, 0.99, 9.0))
    assert preference(Scored(far, labels, 1.0)) < preference(better_metric)


def test_a_separate_control_set_sets_the_threshold(tiny: LoadedModel) -> None:
    result, metrics = fit(tiny, yes_no(), yes_no(60, control=True), sites="resid.2", n_boot=100)
    assert "control" in metrics.control and "n=60" in metrics.control
    again = evaluate(result.artifact, tiny, yes_no(), EvalOptions(n_boot=100), progress=False)
    assert again.metrics.auroc == pytest.approx(metrics.test.auroc)
    assert len(again.rows) == len(yes_no().split("test"))
    assert all(r.prediction == int(r.score > again.threshold) for r in again.rows)
    # A set the probe never trained on can be scored whole.
    every = evaluate(
        result.artifact, tiny, yes_no(), EvalOptions(split="all", n_boot=20), progress=False
    )
    assert len(every.rows) == len(yes_no().examples) and every.split == "all"


def test_the_shortcut_audit_can_be_switched_off(tiny: LoadedModel) -> None:
    result, _ = fit(tiny, yes_no(), sites="resid.1", n_boot=50, shortcut_audit=False)
    assert "shortcut_audit" not in result.artifact.card
    assert "shortcut audit" not in result.report()


def test_one_class_training_data_is_refused(tiny: LoadedModel) -> None:
    one_class = Dataset(
        CARD,
        [Example(text=f"t {i}", label=1.0, split="train" if i % 2 else "test") for i in range(10)],
    )
    with pytest.raises(ProbewatchError, match="only one class"):
        fit(tiny, one_class, sites="resid.0")


def test_token_positions_use_the_chosen_aggregator_and_eval_honours_it(tiny: LoadedModel) -> None:
    from probewatch.probes.aggregators import make_aggregator

    result, metrics = fit(tiny, yes_no(), sites="resid.2", positions="all", aggregator="max")
    assert result.artifact.card["aggregator"] == make_aggregator("max").config()
    # Re-scoring the stored tokens by hand with max gives the reported test scores.
    test = result.store.load("resid.2").rows("test")
    by_hand, _, _ = per_example(result.artifact.score(test.acts), test, make_aggregator("max"))
    assert by_hand == pytest.approx(result.test_scores)
    means, _, _ = per_example(result.artifact.score(test.acts), test)
    assert not np.allclose(means, by_hand)
    again = evaluate(result.artifact, tiny, yes_no(), EvalOptions(n_boot=50), progress=False)
    assert again.metrics.auroc == pytest.approx(metrics.test.auroc)


def test_a_cached_store_with_more_sites_is_reused(tiny: LoadedModel) -> None:
    wide = harvest(tiny, yes_no(), HarvestSpec(sites="resid.0-3"), progress=False)
    narrow = harvest(tiny, yes_no(), HarvestSpec(sites="resid.2"), progress=False)
    assert narrow.path == wide.path
    other = harvest(tiny, yes_no(), HarvestSpec(sites="resid.2", positions="all"), progress=False)
    assert other.path != wide.path
    # Training on the reused store sweeps exactly the sites asked for, not all it holds.
    result, _ = fit(tiny, yes_no(), sites="resid.1,resid.2", n_boot=20)
    assert [r.site for r in result.sweep] == ["resid.1", "resid.2"]


def test_layer_ensemble_uses_the_top_layers_by_validation(tiny: LoadedModel) -> None:
    result, _ = fit(tiny, yes_no(), sites="resid.0-3", n_boot=50)
    ensemble = result.artifact.card["layer_ensemble"]
    ranked = sorted(result.sweep, key=lambda r: -r.val)
    assert ensemble["sites"] == [r.site for r in ranked[:3]]
    assert 0.0 <= ensemble["test_auroc"] <= 1.0

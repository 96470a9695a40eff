"""train_probe end to end on a tiny model: honest selection, calibration and thresholds."""

import numpy as np
import pytest

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.pipeline import evaluate_probe, train_probe
from tests.helpers import yes_no

CARD = DatasetCard("yesno", "toy", "tests", "none", "by hand", "by item")


def test_probe_is_chosen_on_validation_and_thresholded_on_controls(tiny: LoadedModel) -> None:
    result = train_probe(tiny, yes_no(), "resid.1-3", progress=False, n_boot=200)
    assert [r.site for r in result.sweep] == ["resid.1", "resid.2", "resid.3"]
    best = max(result.sweep, key=lambda r: r.val_auroc)
    assert result.best_site == best.site
    assert result.metrics.test.auroc > 0.9
    # The threshold comes from validation negatives, so their FPR is at most the target.
    val_neg = result.val_scores[result.val_labels == 0]
    assert (val_neg > result.metrics.threshold).mean() <= 0.01
    card = result.artifact.card
    assert card["threshold"]["value"] == result.metrics.threshold
    assert card["threshold"]["target_fpr"] == 0.01
    assert {"a", "b"} <= set(card["calibration"])
    assert card["dataset"]["n_fit"] + card["dataset"]["n_validation"] == len(
        yes_no().split("train")
    )
    assert np.isfinite(result.metrics.ece_calibrated)


def test_a_separate_control_set_sets_the_threshold(tiny: LoadedModel) -> None:
    result = train_probe(
        tiny, yes_no(), "resid.2", control=yes_no(60, control=True), progress=False, n_boot=100
    )
    assert "control" in result.metrics.control and "n=60" in result.metrics.control
    again = evaluate_probe(result.artifact, tiny, yes_no(), progress=False, n_boot=100)
    assert again.auroc == pytest.approx(result.metrics.test.auroc)


def test_one_class_training_data_is_refused(tiny: LoadedModel) -> None:
    one_class = Dataset(
        CARD,
        [Example(text=f"t {i}", label=1.0, split="train" if i % 2 else "test") for i in range(10)],
    )
    with pytest.raises(ProbewatchError, match="only one class"):
        train_probe(tiny, one_class, "resid.0", progress=False)


def test_token_positions_use_the_chosen_aggregator_and_eval_honours_it(tiny: LoadedModel) -> None:
    from probewatch.probes.aggregators import make_aggregator

    result = train_probe(
        tiny,
        yes_no(),
        "resid.2",
        positions="all",
        aggregator={"name": "max"},
        progress=False,
        n_boot=50,
    )
    assert result.artifact.card["aggregator"] == make_aggregator("max").config()
    # Re-scoring the stored tokens by hand with max gives the reported test scores.
    from probewatch.pipeline import per_example

    test = result.store.load("resid.2").rows("test")
    by_hand, _, _ = per_example(result.artifact.score(test.acts), test, make_aggregator("max"))
    assert by_hand == pytest.approx(result.test_scores)
    means, _, _ = per_example(result.artifact.score(test.acts), test)
    assert not np.allclose(means, by_hand)
    again = evaluate_probe(result.artifact, tiny, yes_no(), progress=False, n_boot=50)
    assert again.auroc == pytest.approx(result.metrics.test.auroc)


def test_a_cached_store_with_more_sites_is_reused(tiny: LoadedModel) -> None:
    from probewatch.pipeline import harvest_cached

    wide = harvest_cached(tiny, yes_no(), "resid.0-3", progress=False)
    narrow = harvest_cached(tiny, yes_no(), "resid.2", progress=False)
    assert narrow.path == wide.path
    other_positions = harvest_cached(tiny, yes_no(), "resid.2", positions="all", progress=False)
    assert other_positions.path != wide.path
    # Training on the reused store sweeps exactly the sites asked for, not all it holds.
    result = train_probe(tiny, yes_no(), "resid.1,resid.2", progress=False, n_boot=20)
    assert [r.site for r in result.sweep] == ["resid.1", "resid.2"]


def test_layer_ensemble_uses_the_top_layers_by_validation(tiny: LoadedModel) -> None:
    result = train_probe(tiny, yes_no(), "resid.0-3", progress=False, n_boot=50)
    ensemble = result.artifact.card["layer_ensemble"]
    ranked = sorted(result.sweep, key=lambda r: -r.val_auroc)
    assert ensemble["sites"] == [r.site for r in ranked[:3]]
    assert 0.0 <= ensemble["test_auroc"] <= 1.0

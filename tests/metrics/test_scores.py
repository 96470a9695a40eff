"""Metrics against hand-computed values and scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, r2_score, roc_auc_score, roc_curve

from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import (
    auroc,
    fpr_at_recall,
    mae,
    r2,
    recall_at_fpr,
    regression_metrics,
)


def scored(seed: int, n: int = 400, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(float)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + 1.2 * labels
    return (np.round(scores, 1) if ties else scores), labels


def test_recall_at_fpr_known_values() -> None:
    negatives = np.arange(1.0, 101.0)  # threshold at 5% FPR: 95
    positives = np.array([50.0, 95.0, 96.0, 99.5, 200.0])
    scores = np.r_[negatives, positives]
    labels = np.r_[np.zeros(100), np.ones(5)]
    assert recall_at_fpr(scores, labels, 0.05) == pytest.approx(3 / 5)  # 95 is a tie: not flagged
    # With a separate control set, its negatives set the threshold instead.
    assert recall_at_fpr(scores, labels, 0.05, control_scores=np.arange(100.0)) == 4 / 5


def test_fpr_at_recall_known_values() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.35, 0.8, 0.9])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    assert fpr_at_recall(scores, labels, 1.0) == 0.25  # must flag 0.35: 0.4 comes along
    assert fpr_at_recall(scores, labels, 0.6) == 0.0  # two of three positives suffice
    tie = fpr_at_recall([0.5, 0.5, 0.9], [0, 1, 1], 1.0)
    assert tie == 1.0  # a negative tied with the needed positive counts as flagged


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_recall_at_fpr_matches_sklearn_roc(seed: int, target: float) -> None:
    scores, labels = scored(seed, ties=seed % 2 == 0)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert recall_at_fpr(scores, labels, target) == pytest.approx(tpr[fpr <= target].max())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("recall", [0.99, 0.9, 0.5])
def test_fpr_at_recall_matches_sklearn_roc(seed: int, recall: float) -> None:
    scores, labels = scored(seed, ties=seed % 2 == 0)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert fpr_at_recall(scores, labels, recall) == pytest.approx(fpr[tpr >= recall].min())


def test_auroc_still_matches_sklearn() -> None:
    scores, labels = scored(0)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))


def test_regression_metrics_known_values_and_sklearn() -> None:
    assert mae([1.0, 2.0], [2.0, 4.0]) == 1.5
    assert r2([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert r2([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0  # predicting the mean
    assert r2([3.0, 2.0, 1.0], [1.0, 2.0, 3.0]) == -3.0  # worse than the mean
    rng = np.random.default_rng(0)
    targets = rng.normal(size=50)
    predictions = targets + rng.normal(0, 0.5, 50)
    assert mae(predictions, targets) == pytest.approx(mean_absolute_error(targets, predictions))
    assert r2(predictions, targets) == pytest.approx(r2_score(targets, predictions))
    summary = regression_metrics(predictions, targets).to_dict()
    assert summary["n"] == 50
    assert summary["r2"] == pytest.approx(r2_score(targets, predictions))


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ProbewatchError, match="only one class"):
        recall_at_fpr([0.1, 0.2], [1, 1])
    with pytest.raises(ProbewatchError, match="aligned"):
        fpr_at_recall([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ProbewatchError, match="recall"):
        fpr_at_recall([0.1, 0.2], [0, 1], recall=0.0)
    with pytest.raises(ProbewatchError, match="target_fpr"):
        recall_at_fpr([0.1, 0.2], [0, 1], target_fpr=1.0)
    with pytest.raises(ProbewatchError, match="undefined"):
        r2([1.0, 2.0], [3.0, 3.0])
    with pytest.raises(ProbewatchError, match="aligned"):
        mae([1.0], [1.0, 2.0])
    with pytest.raises(ProbewatchError, match="NaN"):
        mae([float("nan")], [1.0])

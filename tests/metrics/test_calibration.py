"""Platt scaling, thresholds on a control set, ECE and reliability curves."""

import json

import numpy as np
import pytest
from scipy.special import expit
from sklearn.calibration import calibration_curve

from probewatch.errors import ProbewatchError
from probewatch.metrics.calibration import (
    PlattScaler,
    expected_calibration_error,
    false_positive_rate,
    reliability_curve,
    threshold_at_fpr,
)


def miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """True logit z, labels ~ Bernoulli(sigmoid(z)); the 'probe' reports 3z + 2 instead:
    overconfident and biased towards positive."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, n)
    labels = (rng.random(n) < expit(z)).astype(float)
    return 3 * z + 2, labels


def test_platt_recovers_the_true_scale_and_reduces_ece() -> None:
    scores, labels = miscalibrated(4000, seed=0)
    test_scores, test_labels = miscalibrated(4000, seed=1)
    platt = PlattScaler.fit(scores, labels)
    assert platt.a == pytest.approx(1 / 3, abs=0.03)
    assert platt.b == pytest.approx(-2 / 3, abs=0.1)
    before = expected_calibration_error(expit(test_scores), test_labels)
    after = expected_calibration_error(platt.probabilities(test_scores), test_labels)
    assert before > 0.15
    assert after < 0.03
    assert PlattScaler.from_dict(json.loads(json.dumps(platt.to_dict()))) == platt


def test_platt_stays_finite_on_separated_scores() -> None:
    platt = PlattScaler.fit([-2.0, -1.0, 1.0, 2.0], [0, 0, 1, 1])
    assert np.isfinite([platt.a, platt.b]).all()
    assert platt.a > 0
    # Platt's smoothed targets: the most extreme positive is confident but not certain.
    assert 0.5 < platt.probabilities([2.0])[0] < 0.9


def test_platt_refuses_bad_input() -> None:
    with pytest.raises(ProbewatchError, match="only one class"):
        PlattScaler.fit([0.1, 0.2], [1, 1])
    with pytest.raises(ProbewatchError, match="aligned"):
        PlattScaler.fit([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ProbewatchError, match="NaN"):
        PlattScaler.fit([0.1, float("nan")], [0, 1])


def test_threshold_at_fpr_known_values() -> None:
    controls = np.arange(1.0, 101.0)  # 1..100
    assert threshold_at_fpr(controls, 0.05) == 95.0  # flags 96..100: exactly 5%
    assert false_positive_rate(controls, 95.0) == 0.05
    assert threshold_at_fpr(controls, 0.0) == 100.0  # nothing flagged
    assert threshold_at_fpr(controls[:50], 0.01) == 50.0  # 1% of 50 < 1 example
    assert threshold_at_fpr([3.0] * 10, 0.5) == 3.0  # ties are never flagged
    assert threshold_at_fpr([1.0, 2.0, 2.0, 2.0], 0.25) == 2.0  # FPR 0, not 0.75


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.001, 0.01, 0.05, 0.1, 0.37])
def test_threshold_at_fpr_is_within_target_and_tight(seed: int, target: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 3000))
    controls = np.round(rng.normal(size=n), 1)  # rounding makes plenty of ties
    threshold = threshold_at_fpr(controls, target)
    assert false_positive_rate(controls, threshold) <= target
    lower = controls[controls < threshold]
    if lower.size:  # the next lower threshold among the controls would exceed the target
        assert false_positive_rate(controls, lower.max()) > target


@pytest.mark.parametrize("target", [-0.1, 1.0, 2.0, float("nan")])
def test_threshold_at_fpr_refuses_bad_targets(target: float) -> None:
    with pytest.raises(ProbewatchError, match="target_fpr"):
        threshold_at_fpr([0.0, 1.0], target)


def test_threshold_at_fpr_refuses_bad_controls() -> None:
    with pytest.raises(ProbewatchError, match="non-empty"):
        threshold_at_fpr([], 0.01)
    with pytest.raises(ProbewatchError, match="NaN"):
        threshold_at_fpr([0.0, float("inf")], 0.01)


def test_ece_known_values() -> None:
    assert expected_calibration_error([0.1, 0.9], [0, 1]) == pytest.approx(0.1)
    # Two examples in one bin: mean prediction 0.35, mean label 0.5.
    assert expected_calibration_error([0.3, 0.4, 0.95], [0, 1, 1], n_bins=2) == pytest.approx(
        (2 / 3) * 0.15 + (1 / 3) * 0.05
    )
    # p = 1.0 falls in the last bin, p = 0.5 in the upper of two bins.
    curve = reliability_curve([0.0, 0.5, 1.0], [0, 1, 1], n_bins=2)
    assert curve.counts == [1, 2]


def test_reliability_curve_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.beta(0.5, 2.0, 500)  # leaves some high bins empty
    labels = (rng.random(500) < probabilities).astype(float)
    curve = reliability_curve(probabilities, labels, n_bins=10)
    truth, predicted = calibration_curve(labels, probabilities, n_bins=10, strategy="uniform")
    nonempty = np.array(curve.counts) > 0
    assert np.allclose(np.array(curve.fraction_positive)[nonempty], truth)
    assert np.allclose(np.array(curve.mean_predicted)[nonempty], predicted)
    assert sum(curve.counts) == 500
    data = json.loads(json.dumps(curve.to_dict()))  # NaN of empty bins becomes null
    empty = [v is None for v in data["mean_predicted"]]
    assert empty == [c == 0 for c in curve.counts]
    assert any(empty)


def test_calibration_error_refuses_bad_input() -> None:
    with pytest.raises(ProbewatchError, match=r"\[0, 1\]"):
        expected_calibration_error([0.5, 1.5], [0, 1])  # logits, not probabilities
    with pytest.raises(ProbewatchError, match="aligned"):
        expected_calibration_error([0.5, 0.5], [0, 1, 1])
    with pytest.raises(ProbewatchError, match="n_bins"):
        reliability_curve([0.5, 0.5], [0, 1], n_bins=0)

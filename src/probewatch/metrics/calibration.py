"""Calibration and thresholds for probe scores.

- Platt scaling: fit p = sigmoid(a·score + b) on held-out scores (never the training scores,
  which are overconfident), then apply it to new scores.
- `threshold_at_fpr`: a threshold set on a separate benign control set, so the alarm rate on
  ordinary traffic is known. The flag rule everywhere is `score > threshold` (strict).
- Expected calibration error and reliability-curve data, with equal-width probability bins.
"""

import math
from dataclasses import asdict, dataclass
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from probewatch.errors import ProbewatchError
from probewatch.metrics.labels import require_binary_labels
from probewatch.metrics.platt import fit_platt


def _scores(values: ArrayLike, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ProbewatchError(
            f"{what} must be a non-empty 1-D array, got shape {array.shape}",
            hint="pass one score per example",
        )
    if not np.isfinite(array).all():
        raise ProbewatchError(f"{what} contain NaN or infinite values", hint="check the probe")
    return array


@dataclass(frozen=True)
class PlattScaler:
    """calibrated logit = a·score + b."""

    a: float
    b: float

    @classmethod
    def fit(cls, scores: ArrayLike, labels: ArrayLike) -> Self:
        """Fit on held-out scores and 0/1 labels (Platt's smoothed targets, so it stays finite
        when the held-out scores separate the classes perfectly)."""
        a, b = fit_platt(_scores(scores, "the scores"), labels)
        return cls(a, b)

    def logits(self, scores: ArrayLike) -> np.ndarray:
        return self.a * np.asarray(scores, dtype=np.float64) + self.b

    def probabilities(self, scores: ArrayLike) -> np.ndarray:
        return np.asarray(expit(self.logits(scores)))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        return cls(float(values["a"]), float(values["b"]))


def threshold_at_fpr(control_scores: ArrayLike, target_fpr: float = 0.01) -> float:
    """The smallest threshold t, among the control scores, with FPR(t) <= target_fpr, where
    FPR(t) = fraction of control scores > t.

    With n control scores sorted high to low, at most k = floor(target_fpr·n) may exceed t, so
    t is the (k+1)-th highest score: any lower threshold would flag k+1. Scores tied with t
    are not flagged, so ties only lower the realised FPR. The realised FPR on the control set
    is therefore always <= target_fpr (it can only take multiples of 1/n; when
    target_fpr < 1/n, t is the maximum and nothing in the control set is flagged).
    """
    scores = _scores(control_scores, "the control scores")
    if not (isinstance(target_fpr, int | float) and 0 <= target_fpr < 1):
        raise ProbewatchError(
            f"target_fpr must be in [0, 1), got {target_fpr!r}", hint="e.g. 0.01 for 1%"
        )
    # The 1e-9 guards against target·n landing just below an integer in floating point.
    k = math.floor(target_fpr * scores.size + 1e-9)
    k = min(k, scores.size - 1)
    return float(np.sort(scores)[::-1][k])


def false_positive_rate(control_scores: ArrayLike, threshold: float) -> float:
    """Fraction of control (benign) scores flagged, i.e. > threshold."""
    return float((_scores(control_scores, "the control scores") > threshold).mean())


def _binned(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width bins on [0, 1]: bin k holds k/B <= p < (k+1)/B, the last bin includes 1.
    Returns edges, counts, summed probabilities and summed labels per bin."""
    p = _scores(probabilities, "the probabilities")
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != p.shape:
        raise ProbewatchError(
            f"{p.size} probabilities but {y.size} labels", hint="they must be aligned"
        )
    require_binary_labels(y, "the calibration data")
    if p.min() < 0 or p.max() > 1:
        raise ProbewatchError(
            "probabilities must lie in [0, 1]",
            hint="pass sigmoid(logits), e.g. PlattScaler.probabilities(scores)",
        )
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ProbewatchError(f"n_bins must be a positive integer, got {n_bins!r}", hint="try 10")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.searchsorted(edges[1:-1], p, side="right")
    counts = np.bincount(index, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(index, weights=p, minlength=n_bins)
    sum_y = np.bincount(index, weights=y, minlength=n_bins)
    return edges, counts, sum_p, sum_y


def expected_calibration_error(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 10
) -> float:
    """ECE = Σ_bins (n_bin / N)·|mean label − mean probability| over `n_bins` equal-width bins
    of the predicted probability of the positive class; empty bins contribute nothing."""
    _, counts, sum_p, sum_y = _binned(probabilities, labels, n_bins)
    return float(np.abs(sum_y - sum_p).sum() / counts.sum())


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin data for a reliability diagram; empty bins have count 0 and NaN means."""

    bin_edges: list[float]
    counts: list[int]
    mean_predicted: list[float]
    fraction_positive: list[float]

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON-ready: NaN (empty bin) becomes None."""

        def clean(values: list[float]) -> list[float | None]:
            return [None if math.isnan(v) else v for v in values]

        return {
            "bin_edges": self.bin_edges,
            "counts": self.counts,
            "mean_predicted": clean(self.mean_predicted),
            "fraction_positive": clean(self.fraction_positive),
        }


def reliability_curve(
    probabilities: ArrayLike, labels: ArrayLike, n_bins: int = 10
) -> ReliabilityCurve:
    edges, counts, sum_p, sum_y = _binned(probabilities, labels, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p, frac = sum_p / counts, sum_y / counts
    return ReliabilityCurve(
        bin_edges=edges.tolist(),
        counts=counts.astype(int).tolist(),
        mean_predicted=mean_p.tolist(),
        fraction_positive=frac.tolist(),
    )

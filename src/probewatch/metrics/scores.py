"""Classification and regression metrics, with bootstrap confidence intervals.

AUROC is computed exactly as the Mann-Whitney statistic (ties count one half), so it needs no
threshold and agrees with scikit-learn's `roc_auc_score`. Threshold metrics use the same flag
rule as `probewatch.metrics.calibration`: an example is flagged when its score > threshold.
"""

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

from probewatch.errors import ProbewatchError
from probewatch.metrics.calibration import threshold_at_fpr
from probewatch.metrics.labels import require_binary_labels


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both classes")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auroc_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval from a stratified bootstrap (each class resampled on its own, so
    every resample has both classes and the class balance of the data)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for i in range(n_boot):
        p = rng.choice(pos, size=pos.size, replace=True)
        n = rng.choice(neg, size=neg.size, replace=True)
        values[i] = auroc(np.concatenate([p, n]), np.r_[np.ones(p.size), np.zeros(n.size)])
    return percentile_interval(values, confidence)


def bootstrap_mean_ci(
    values: np.ndarray, n_boot: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the mean over items resampled with replacement."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    return percentile_interval(means, confidence)


def percentile_interval(resampled: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` interval of bootstrap resamples of a statistic."""
    alpha = (1 - confidence) / 2
    low, high = np.quantile(resampled, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass
class BinaryMetrics:
    n: int
    n_positive: int
    auroc: float
    auroc_ci_low: float
    auroc_ci_high: float
    accuracy: float  # at logit 0 (probability 0.5)

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def binary_metrics(
    logits: np.ndarray, labels: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> BinaryMetrics:
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    require_binary_labels(labels, "the evaluation data")
    low, high = bootstrap_auroc_ci(logits, labels, n_boot=n_boot, seed=seed)
    return BinaryMetrics(
        n=int(labels.size),
        n_positive=int(labels.sum()),
        auroc=auroc(logits, labels),
        auroc_ci_low=low,
        auroc_ci_high=high,
        accuracy=float(((logits > 0) == (labels > 0.5)).mean()),
    )


def _aligned(scores: ArrayLike, labels: ArrayLike, what: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.size != y.size:
        raise ProbewatchError(f"{s.size} scores but {y.size} labels", hint="they must be aligned")
    if not np.isfinite(s).all():
        raise ProbewatchError("the scores contain NaN or infinite values", hint="check the probe")
    require_binary_labels(y, what)
    return s, y > 0.5


def recall_at_fpr(
    scores: ArrayLike,
    labels: ArrayLike,
    target_fpr: float = 0.01,
    control_scores: ArrayLike | None = None,
) -> float:
    """Fraction of positives flagged at the threshold `threshold_at_fpr` sets on the negatives:
    those of `control_scores` (a separate benign set) if given, else the negatives among
    `scores`. The FPR on that negative set is then <= target_fpr."""
    s, pos = _aligned(scores, labels, "the evaluation data")
    negatives = s[~pos] if control_scores is None else control_scores
    threshold = threshold_at_fpr(negatives, target_fpr)
    return float((s[pos] > threshold).mean())


def fpr_at_recall(scores: ArrayLike, labels: ArrayLike, recall: float = 0.99) -> float:
    """Lowest FPR of any threshold that flags at least `recall` of the positives.

    With k = ceil(recall·n_pos), the threshold sits just below the k-th highest positive
    score, so negatives tied with that score are flagged (ties count against the probe)."""
    if not (isinstance(recall, int | float) and 0 < recall <= 1):
        raise ProbewatchError(f"recall must be in (0, 1], got {recall!r}", hint="e.g. 0.99")
    s, pos = _aligned(scores, labels, "the evaluation data")
    positives = np.sort(s[pos])[::-1]
    k = max(math.ceil(recall * positives.size - 1e-9), 1)
    cutoff = positives[k - 1]
    return float((s[~pos] >= cutoff).mean())


def _regression_inputs(predictions: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions, dtype=np.float64).reshape(-1)
    t = np.asarray(targets, dtype=np.float64).reshape(-1)
    if p.size != t.size or p.size == 0:
        raise ProbewatchError(
            f"{p.size} predictions but {t.size} targets", hint="pass aligned, non-empty arrays"
        )
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ProbewatchError("predictions or targets contain NaN or infinite values")
    return p, t


def mae(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Mean absolute error."""
    p, t = _regression_inputs(predictions, targets)
    return float(np.abs(p - t).mean())


def r2(predictions: ArrayLike, targets: ArrayLike) -> float:
    """Coefficient of determination, 1 − SS_res/SS_tot (can be negative: worse than the mean).
    Note the argument order: predictions first, like every metric here (sklearn's is reversed)."""
    p, t = _regression_inputs(predictions, targets)
    total = float(((t - t.mean()) ** 2).sum())
    if total == 0:
        raise ProbewatchError(
            "R² is undefined when every target is the same", hint="evaluate on varied targets"
        )
    return 1.0 - float(((t - p) ** 2).sum()) / total


@dataclass
class RegressionMetrics:
    n: int
    mae: float
    r2: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def regression_metrics(predictions: ArrayLike, targets: ArrayLike) -> RegressionMetrics:
    p, t = _regression_inputs(predictions, targets)
    return RegressionMetrics(n=int(p.size), mae=mae(p, t), r2=r2(p, t))

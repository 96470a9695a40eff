"""Classification metrics, with bootstrap confidence intervals.

AUROC is computed exactly as the Mann-Whitney statistic (ties count one half), so it needs no
threshold and agrees with scikit-learn's `roc_auc_score`.
"""

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

from probewatch.data.base import require_binary_labels


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
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
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

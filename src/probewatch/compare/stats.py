"""Paired statistics for model comparisons: every number comes with n and a 95% interval.

- `mcnemar_exact`: the exact (binomial) McNemar test on paired 0/1 outcomes; on paired data it
  is the right test (lm-eval's unpaired z-test loses the covariance term).
- `paired_bootstrap`: percentile interval of a statistic of paired per-item values, items
  resampled with replacement (the same resample for both sides).
- `holm`: Holm's step-down adjustment of p-values across the rows of a report.
- `wilson`: the Wilson score interval of a binomial rate.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest, norm

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval and the number of items behind it."""

    value: float
    low: float
    high: float
    n: int

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high

    def fmt(self, digits: int = 3, percent: bool = False) -> str:
        if percent:
            low, high = 100 * self.low, 100 * self.high
            return f"{100 * self.value:.0f}% [{low:.0f}, {high:.0f}] (n={self.n})"
        return (
            f"{self.value:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}] (n={self.n})"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes, with the discordant counts
    (a=1,b=0) and (a=0,b=1). No discordant pair means no evidence of change: p = 1."""
    x, y = np.asarray(a).astype(bool), np.asarray(b).astype(bool)
    if x.shape != y.shape:
        raise ValueError(f"paired outcomes of different shapes {x.shape} and {y.shape}")
    only_a, only_b = int((x & ~y).sum()), int((~x & y).sum())
    if only_a + only_b == 0:
        return 1.0, only_a, only_b
    p = binomtest(only_a, only_a + only_b, 0.5, alternative="two-sided").pvalue
    return float(min(1.0, p)), only_a, only_b


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampled item indices; one draw serves every statistic of a row."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile(values: np.ndarray) -> tuple[float, float]:
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.nanquantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    n_boot: int = 2000,
    seed: int = 0,
) -> Interval:
    """`statistic(indices)` on all items and on `n_boot` resamples of the item indices."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one item")
    full = statistic(np.arange(n))
    draws = np.array([statistic(idx) for idx in bootstrap_indices(n, n_boot, seed)])
    low, high = percentile(draws)
    return Interval(float(full), low, high, n)


def mean_interval(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> Interval:
    """The mean of per-item values with a bootstrap percentile interval (vectorised)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("no values")
    draws = v[bootstrap_indices(v.size, n_boot, seed)].mean(axis=1)
    low, high = percentile(draws)
    return Interval(float(v.mean()), low, high, int(v.size))


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def wilson(successes: int, n: int) -> Interval:
    """Wilson score interval of a rate; stays inside [0, 1] and is sane at 0/n and n/n."""
    if n == 0:
        return Interval(float("nan"), 0.0, 1.0, 0)
    z = float(norm.ppf(1 - (1 - CONFIDENCE) / 2))
    rate = successes / n
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding dust
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(rate, low, high, n)

"""The paired statistics agree with reference implementations (statsmodels, scipy)."""

import numpy as np
import pytest
from scipy.stats import bootstrap
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from probewatch.compare.stats import holm, mcnemar_exact, mean_interval, paired_bootstrap, wilson

# (both, only A, only B, neither) counts of fixed 2x2 tables, including the lm-eval PR example
# shape (many concordant, few discordant) and degenerate ones.
TABLES = [(40, 12, 3, 45), (100, 0, 0, 20), (5, 9, 1, 85), (0, 30, 31, 0), (50, 1, 0, 49)]


def outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([1] * both + [1] * only_a + [0] * only_b + [0] * neither)
    b = np.array([1] * both + [0] * only_a + [1] * only_b + [0] * neither)
    return a, b


@pytest.mark.parametrize("table", TABLES)
def test_mcnemar_exact_equals_statsmodels(table: tuple[int, int, int, int]) -> None:
    both, only_a, only_b, neither = table
    a, b = outcomes(*table)
    p, n_a, n_b = mcnemar_exact(a, b)
    assert (n_a, n_b) == (only_a, only_b)
    reference = mcnemar([[both, only_a], [only_b, neither]], exact=True).pvalue
    assert p == pytest.approx(min(1.0, reference), abs=1e-12)


def test_holm_equals_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.5, 0.001, 0.2]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]), abs=1e-12)


@pytest.mark.parametrize(("k", "n"), [(0, 20), (7, 20), (20, 20), (33, 48), (1, 5)])
def test_wilson_equals_statsmodels(k: int, n: int) -> None:
    interval = wilson(k, n)
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-9)


def test_paired_bootstrap_matches_scipy_percentile() -> None:
    rng = np.random.default_rng(3)
    a = rng.binomial(1, 0.4, 300).astype(float)
    b = np.where(rng.random(300) < 0.8, a, 1 - a)  # paired: mostly the same outcome
    ours = paired_bootstrap(lambda i: float(b[i].mean() - a[i].mean()), a.size, 4000, seed=0)
    ref = bootstrap(
        (a, b),
        lambda x, y: np.mean(y) - np.mean(x),
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        random_state=1,
    ).confidence_interval
    assert ours.value == pytest.approx(b.mean() - a.mean())
    # Different random draws: the endpoints agree to Monte-Carlo precision.
    assert ours.low == pytest.approx(ref.low, abs=0.012)
    assert ours.high == pytest.approx(ref.high, abs=0.012)
    mean = mean_interval(b - a, 4000, seed=0)
    assert (mean.low, mean.high) == pytest.approx((ref.low, ref.high), abs=0.012)

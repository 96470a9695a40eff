"""Platt's 1-D logistic fit: turn a raw score (a projection) into a calibrated logit a*s + b.

Shared by the projection probes (which need a bias and scale so 0 is the decision boundary)
and by `probewatch.metrics.calibration` (post-hoc calibration on held-out scores).

It uses Platt's smoothed targets, (n+ + 1)/(n+ + 2) for positives and 1/(n- + 2) for
negatives, so the optimum is finite even on perfectly separated scores, and Newton steps
with a backtracking line search (Lin, Lin & Weng 2007) so it converges in a few iterations.
"""

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from probewatch.errors import ProbewatchError
from probewatch.metrics.labels import require_binary_labels


def _loss(f: np.ndarray, t: np.ndarray) -> float:
    # Cross-entropy with soft targets t, in a form that never overflows.
    return float(np.sum(np.logaddexp(0.0, f) - t * f))


def fit_platt(scores: ArrayLike, labels: ArrayLike, max_iter: int = 100) -> tuple[float, float]:
    """Return (a, b) such that sigmoid(a * score + b) estimates P(label = 1 | score)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if s.size != y.size:
        raise ProbewatchError(
            f"{s.size} scores but {y.size} labels", hint="scores and labels must be aligned"
        )
    if not np.isfinite(s).all():
        raise ProbewatchError("the scores contain NaN or infinite values", hint="check the probe")
    require_binary_labels(y, "the calibration data")
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    # Work on standardized scores for conditioning; fold the scaling back in at the end.
    mu, sd = float(s.mean()), float(s.std())
    sd = sd if sd > 0 else 1.0
    z = (s - mu) / sd
    theta = np.array([0.0, math.log((n_pos + 1) / (n_neg + 1))])
    design = np.stack([z, np.ones_like(z)], axis=1)
    loss = _loss(design @ theta, t)
    for _ in range(max_iter):
        p = expit(design @ theta)
        grad = design.T @ (p - t)
        if np.abs(grad).max() < 1e-10 * s.size:
            break
        hess = (design * (p * (1 - p))[:, None]).T @ design + 1e-12 * np.eye(2)
        step = np.linalg.solve(hess, -grad)
        size = 1.0
        while size > 1e-10:
            candidate = theta + size * step
            new_loss = _loss(design @ candidate, t)
            if new_loss <= loss + 1e-4 * size * float(grad @ step):
                break
            size /= 2
        else:
            break  # no descent possible: at the optimum to machine precision
        theta, loss = candidate, new_loss
    a, b = float(theta[0]), float(theta[1])
    return a / sd, b - a * mu / sd

"""Ridge regression probe for continuous targets (e.g. a city's latitude, a score, a year).

Closed form on standardized activations with an unpenalized intercept. When `alpha` is None it
is chosen from `alphas` by cross-validation:
- rows that are independent examples: exact leave-one-out error, which for a linear smoother
  needs no refits: e_i = (y_i − ŷ_i) / (1 − H_ii), one SVD shared by every alpha;
- rows that come in groups (`groups`: the tokens of one response): k-fold with whole groups
  held out. Leaving one token out lets its neighbours, nearly the same vector with nearly the
  same target, vouch for a penalty that is far too weak for a new response.
"""

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

from probewatch.errors import ProbewatchError
from probewatch.probes.base import AffineProbe, register
from probewatch.probes.checks import require_features, require_groups, require_targets

DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)
DEFAULT_CV_FOLDS = 5


def loo_mse(
    u: torch.Tensor, s: torch.Tensor, yc: torch.Tensor, alphas: Sequence[float]
) -> list[float]:
    """Mean squared leave-one-out error, for each alpha, of ridge on centred z = U·diag(s)·Vᵀ
    and centred yc (intercept = mean of y, which adds 1/n to every leverage H_ii)."""
    n = u.shape[0]
    uty = u.T @ yc
    errors = []
    for alpha in alphas:
        shrink = s**2 / (s**2 + alpha)
        fitted = u @ (shrink * uty)
        leverage = (u**2) @ shrink + 1 / n
        residual = (yc - fitted) / (1 - leverage).clamp_min(1e-12)
        errors.append(float((residual**2).mean()))
    return errors


def grouped_cv_mse(
    z: torch.Tensor, y: torch.Tensor, groups: np.ndarray, alphas: Sequence[float], folds: int
) -> list[float]:
    """Mean squared error, for each alpha, of ridge fitted without one fold of whole groups and
    scored on it (sklearn's GroupKFold: deterministic, folds balanced by rows)."""
    squared = torch.zeros(len(alphas), dtype=torch.float64)
    for fit_rows, held_rows in GroupKFold(n_splits=folds).split(z, groups=groups):
        fit_z, fit_y = z[fit_rows], y[fit_rows]
        z_mean, y_mean = fit_z.mean(dim=0), fit_y.mean()
        u, s, vh = torch.linalg.svd(fit_z - z_mean, full_matrices=False)
        uty = u.T @ (fit_y - y_mean)
        held = (z[held_rows] - z_mean) @ vh.T
        for i, alpha in enumerate(alphas):
            predicted = held @ (s / (s**2 + alpha) * uty) + y_mean
            squared[i] += float(((predicted - y[held_rows]) ** 2).sum())
    return (squared / z.shape[0]).tolist()


@register
class RidgeProbe(AffineProbe):
    """score(x) = w · (x − mean)/scale + b, predicting the target itself (not a logit)."""

    kind = "ridge"
    task = "regression"
    standardize = True
    tensor_names = ("scaler.mean", "scaler.scale", "weight", "bias")
    fitted_fields = (
        ("alpha", "chosen_alpha"),
        ("loo_mse", "loo"),
        ("cv_mse", "cv_mse"),
        ("alpha_chosen_by", "chosen_by"),
    )

    def __init__(
        self,
        alpha: float | None = None,
        alphas: Sequence[float] = DEFAULT_ALPHAS,
        cv_folds: int = DEFAULT_CV_FOLDS,
    ) -> None:
        if alpha is not None and alpha <= 0:
            raise ProbewatchError(f"alpha must be positive, got {alpha}", hint="try 1.0")
        if len(alphas) == 0 or min(alphas) <= 0:
            raise ProbewatchError(
                f"alphas must be a non-empty list of positive numbers, got {list(alphas)}",
                hint=f"the default is {list(DEFAULT_ALPHAS)}",
            )
        if cv_folds < 2:
            raise ProbewatchError(f"cv_folds must be at least 2, got {cv_folds}", hint="try 5")
        self.alpha = alpha
        self.alphas = tuple(float(a) for a in alphas)
        self.cv_folds = cv_folds
        self.chosen_alpha: float | None = None
        self.loo: list[float] | None = None
        self.cv_mse: list[float] | None = None
        self.chosen_by: str | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None) -> Self:
        require_features(x)
        require_targets(y, x.shape[0], "the targets")
        if x.shape[0] < 3:
            raise ProbewatchError(
                f"ridge needs at least 3 examples, got {x.shape[0]}", hint="add more data"
            )
        group_ids = require_groups(groups, x.shape[0])
        x64, y64 = x.double(), y.double()
        mean, scale = x64.mean(dim=0), x64.std(dim=0).clamp_min(1e-6)
        z = (x64 - mean) / scale
        y_mean = y64.mean()
        yc = y64 - y_mean
        u, s, vh = torch.linalg.svd(z, full_matrices=False)
        self.chosen_alpha = (
            self.alpha if self.alpha is not None else self._choose(z, y64, group_ids, u, s, yc)
        )
        weight = vh.T @ (s / (s**2 + self.chosen_alpha) * (u.T @ yc))
        scaler = {"scaler.mean": mean.float(), "scaler.scale": scale.float()}
        self._keep(weight=weight.float(), bias=y_mean.reshape(1).float(), **scaler)
        return self

    def _choose(
        self,
        z: torch.Tensor,
        y: torch.Tensor,
        groups: np.ndarray | None,
        u: torch.Tensor,
        s: torch.Tensor,
        yc: torch.Tensor,
    ) -> float:
        """The alpha with the least cross-validated error; ties go to the larger alpha (the
        simpler model). Grouped folds when rows share groups (and there are enough groups)."""
        self.loo = self.cv_mse = None  # a refit must not keep the last fit's errors
        n_groups = 0 if groups is None else np.unique(groups).size
        if groups is not None and n_groups >= 2:
            folds = min(self.cv_folds, n_groups)
            errors = self.cv_mse = grouped_cv_mse(z, y, groups, self.alphas, folds)
            self.chosen_by = f"{folds}-fold cross-validation over {n_groups} groups"
        else:
            errors = self.loo = loo_mse(u, s, yc, self.alphas)
            self.chosen_by = "leave-one-out"
        best = min(errors)
        return max(a for a, e in zip(self.alphas, errors, strict=True) if e == best)

    def options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "alphas": list(self.alphas), "cv_folds": self.cv_folds}

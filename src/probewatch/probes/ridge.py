"""Ridge regression probe for continuous targets (e.g. a city's latitude, a score, a year).

Closed form on standardized activations with an unpenalized intercept. When `alpha` is None it
is chosen from `alphas` by exact leave-one-out error, which for a linear smoother needs no
refits: e_i = (y_i − ŷ_i) / (1 − H_ii), with one SVD of the design matrix shared by every alpha.
"""

from collections.abc import Sequence
from typing import Any, Self

import torch

from probewatch.errors import ProbewatchError
from probewatch.probes.base import AffineProbe, register
from probewatch.probes.checks import require_features, require_targets

DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5)


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


@register
class RidgeProbe(AffineProbe):
    """score(x) = w · (x − mean)/scale + b, predicting the target itself (not a logit)."""

    kind = "ridge"
    task = "regression"
    standardize = True
    tensor_names = ("scaler.mean", "scaler.scale", "weight", "bias")
    fitted_fields = (("alpha", "chosen_alpha"), ("loo_mse", "loo"))

    def __init__(
        self, alpha: float | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS
    ) -> None:
        if alpha is not None and alpha <= 0:
            raise ProbewatchError(f"alpha must be positive, got {alpha}", hint="try 1.0")
        if len(alphas) == 0 or min(alphas) <= 0:
            raise ProbewatchError(
                f"alphas must be a non-empty list of positive numbers, got {list(alphas)}",
                hint=f"the default is {list(DEFAULT_ALPHAS)}",
            )
        self.alpha = alpha
        self.alphas = tuple(float(a) for a in alphas)
        self.chosen_alpha: float | None = None
        self.loo: list[float] | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> Self:
        require_features(x)
        require_targets(y, x.shape[0], "the targets")
        if x.shape[0] < 3:
            raise ProbewatchError(
                f"ridge needs at least 3 examples, got {x.shape[0]}", hint="add more data"
            )
        x64, y64 = x.double(), y.double()
        mean, scale = x64.mean(dim=0), x64.std(dim=0).clamp_min(1e-6)
        z = (x64 - mean) / scale
        y_mean = y64.mean()
        yc = y64 - y_mean
        u, s, vh = torch.linalg.svd(z, full_matrices=False)
        if self.alpha is None:
            # Ties go to the larger alpha: the simpler model.
            self.loo = loo_mse(u, s, yc, self.alphas)
            best = min(self.loo)
            self.chosen_alpha = max(
                a for a, e in zip(self.alphas, self.loo, strict=True) if e == best
            )
        else:
            self.chosen_alpha = self.alpha
        weight = vh.T @ (s / (s**2 + self.chosen_alpha) * (u.T @ yc))
        scaler = {"scaler.mean": mean.float(), "scaler.scale": scale.float()}
        self._keep(weight=weight.float(), bias=y_mean.reshape(1).float(), **scaler)
        return self

    def options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "alphas": list(self.alphas)}

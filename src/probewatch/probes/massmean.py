"""Mass-mean probe: the difference of class means (Marks & Tegmark 2023, "Geometry of Truth").

With `covariance="iid"` the direction is Σ⁻¹(μ₊ − μ₋), Σ the covariance of the class-centred
data, i.e. Fisher's linear discriminant. Σ is shrunk towards a scaled identity
((1 − α)S + α·tr(S)/d·I, Ledoit–Wolf α unless `shrinkage` is given), so it stays invertible
and stable when N < d.
"""

from typing import Any, Self

import torch
from sklearn.covariance import ledoit_wolf_shrinkage

from probewatch.errors import ProbewatchError
from probewatch.metrics.platt import fit_platt
from probewatch.probes.base import AffineProbe, register
from probewatch.probes.checks import require_binary_data

COVARIANCES = ("none", "iid")


def shrunk_covariance(centred: torch.Tensor, shrinkage: float | None) -> tuple[torch.Tensor, float]:
    """(1 − α)S + α·mean-variance·I for already-centred rows; α by Ledoit–Wolf when None."""
    n, d = centred.shape
    sample = centred.T @ centred / n
    alpha = (
        float(ledoit_wolf_shrinkage(centred.numpy(), assume_centered=True))
        if shrinkage is None
        else shrinkage
    )
    mean_var = float(torch.diagonal(sample).mean())
    if mean_var <= 0:  # every example equals its class mean: any direction is as good
        return torch.eye(d, dtype=centred.dtype), alpha
    shrunk = (1 - alpha) * sample + alpha * mean_var * torch.eye(d, dtype=centred.dtype)
    # A floor far below any real variance keeps α = 0 with N < d solvable.
    return shrunk + 1e-9 * mean_var * torch.eye(d, dtype=centred.dtype), alpha


@register
class MassMeanProbe(AffineProbe):
    """score(x) = a·(x · θ) + b, θ = μ₊ − μ₋ (or Σ⁻¹(μ₊ − μ₋)), a and b by Platt's 1-D fit
    on the training projections, so scores are logits and 0 is the decision boundary."""

    kind = "mass_mean"
    tensor_names = ("weight", "bias", "mean_diff")  # mean_diff: the raw μ₊ − μ₋, for steering
    fitted_fields = (("shrinkage", "selected_shrinkage"),)

    def __init__(self, covariance: str = "none", shrinkage: float | None = None) -> None:
        if covariance not in COVARIANCES:
            raise ProbewatchError(
                f"unknown covariance {covariance!r} for the mass_mean probe",
                hint=f"choose one of {', '.join(COVARIANCES)}",
            )
        if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
            raise ProbewatchError(
                f"shrinkage must be between 0 and 1, got {shrinkage}",
                hint="or leave it unset to use the Ledoit–Wolf estimate",
            )
        self.covariance = covariance
        self.shrinkage = shrinkage
        self.selected_shrinkage: float | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None) -> Self:
        del groups  # nothing here is chosen by cross-validation
        require_binary_data(x, y)
        x64, pos = x.double(), y > 0.5
        mu_pos, mu_neg = x64[pos].mean(dim=0), x64[~pos].mean(dim=0)
        diff = mu_pos - mu_neg
        theta = diff
        if self.covariance == "iid":
            centred = torch.cat([x64[pos] - mu_pos, x64[~pos] - mu_neg])
            cov, self.selected_shrinkage = shrunk_covariance(centred, self.shrinkage)
            theta = torch.linalg.solve(cov, diff)
        # Project around the midpoint so Platt sees well-conditioned, centred scores.
        mid = (mu_pos + mu_neg) / 2
        a, b = fit_platt(((x64 - mid) @ theta).numpy(), y.numpy())
        bias = torch.tensor([b - a * float(mid @ theta)], dtype=torch.float32)
        self._keep(weight=(a * theta).float(), bias=bias, mean_diff=diff.float())
        return self

    def options(self) -> dict[str, Any]:
        return {"covariance": self.covariance, "shrinkage": self.shrinkage}

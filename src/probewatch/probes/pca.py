"""PCA-of-differences probe, as in RepE's LAT and repeng's `pca_diff`.

Examples are paired at random, one positive with one negative, and the direction is the first
principal component of the pair differences. The PCA is *uncentred*: centring would subtract
the mean difference, which is exactly the μ₊ − μ₋ signal (it is equivalent to RepE's random
pair order, whose sign flips leave the mean difference at zero). The sign is then set so
positives project higher, and Platt's 1-D fit turns the projection into a logit.
"""

from typing import Any, Self

import torch

from probewatch.errors import ProbewatchError
from probewatch.metrics.platt import fit_platt
from probewatch.probes.base import AffineProbe, register
from probewatch.probes.checks import require_binary_data


def _cycled(n: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """`length` indices into range(n): shuffled passes, so every row is used as evenly as
    possible when the classes are unbalanced."""
    passes = -(-length // n)
    return torch.cat([torch.randperm(n, generator=generator) for _ in range(passes)])[:length]


def top_component(rows: torch.Tensor) -> tuple[torch.Tensor, float]:
    """First right singular vector of `rows` (uncentred) and its share of the total energy,
    via the eigen-decomposition of the smaller Gram matrix (cheap when N ≪ d or d ≪ N)."""
    n, d = rows.shape
    if n >= d:
        values, vectors = torch.linalg.eigh(rows.T @ rows)
        top = vectors[:, -1]
    else:
        values, vectors = torch.linalg.eigh(rows @ rows.T)
        top = rows.T @ vectors[:, -1]
    total = float(values.clamp_min(0).sum())
    share = float(values[-1]) / total if total > 0 else 0.0
    return top / top.norm().clamp_min(1e-30), share


@register
class PCADiffProbe(AffineProbe):
    """score(x) = a·(x · v) + b, v the first PC of positive − negative differences."""

    kind = "pca_diff"
    fitted_fields = (("explained", "explained"),)

    def __init__(self, n_pairs: int | None = None, seed: int = 0) -> None:
        if n_pairs is not None and n_pairs < 1:
            raise ProbewatchError(
                f"n_pairs must be at least 1, got {n_pairs}",
                hint="or leave it unset for one pair per example of the larger class",
            )
        self.n_pairs, self.seed = n_pairs, seed
        self.explained: float | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None) -> Self:
        del groups  # nothing here is chosen by cross-validation
        require_binary_data(x, y)
        x64, pos = x.double(), y > 0.5
        x_pos, x_neg = x64[pos], x64[~pos]
        n = self.n_pairs or max(len(x_pos), len(x_neg))
        generator = torch.Generator().manual_seed(self.seed)
        diffs = x_pos[_cycled(len(x_pos), n, generator)] - x_neg[_cycled(len(x_neg), n, generator)]
        v, self.explained = top_component(diffs)
        proj = x64 @ v
        if proj[pos].mean() < proj[~pos].mean():
            v, proj = -v, -proj
        centre = float(proj.mean())
        a, b = fit_platt((proj - centre).numpy(), y.numpy())
        bias = torch.tensor([b - a * centre], dtype=torch.float32)
        self._keep(weight=(a * v).float(), bias=bias)
        return self

    def options(self) -> dict[str, Any]:
        return {"n_pairs": self.n_pairs, "seed": self.seed}

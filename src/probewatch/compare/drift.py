"""Per-site representation drift between two sides on the same tokens: relative L2 change,
cosine and linear CKA, each with a bootstrap interval over prompts.

The first position (BOS, or the first token acting as an attention sink, with activations of
unusual norm) is reported apart and kept out of the main numbers (Kissane et al.). CKA is
computed on a fixed, seeded sample of positions per prompt, so its bootstrap resamples prompts
over small kernel matrices.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from probewatch.compare.stats import Interval, bootstrap_indices, mean_interval, percentile

CKA_POSITIONS = 4  # sampled positions per prompt for CKA
CKA_BOOT = 200


@dataclass
class SiteDrift:
    """Accumulates one site's per-prompt drift numbers over batches."""

    site: str
    rel_l2: list[float] = field(default_factory=list)
    cosine: list[float] = field(default_factory=list)
    first_rel_l2: list[float] = field(default_factory=list)
    first_cosine: list[float] = field(default_factory=list)
    sample_a: list[np.ndarray] = field(default_factory=list)
    sample_b: list[np.ndarray] = field(default_factory=list)
    sample_prompt: list[int] = field(default_factory=list)

    def add(self, a: torch.Tensor, b: torch.Tensor, lengths: list[int], seed: int) -> None:
        """a, b: [B, T, d] activations of the two sides on the same right-padded tokens."""
        a, b = a.double(), b.double()
        diff = (b - a).norm(dim=-1)
        norm_a = a.norm(dim=-1).clamp_min(1e-12)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
        for row, length in enumerate(lengths):
            prompt = len(self.rel_l2)
            self.first_rel_l2.append(float(diff[row, 0] / norm_a[row, 0]))
            self.first_cosine.append(float(cos[row, 0]))
            rest = slice(1, max(2, length))
            self.rel_l2.append(float((diff[row, rest] / norm_a[row, rest]).mean()))
            self.cosine.append(float(cos[row, rest].mean()))
            rng = np.random.default_rng([seed, prompt])
            picks = rng.choice(
                np.arange(1, max(2, length)),
                size=min(CKA_POSITIONS, max(1, length - 1)),
                replace=False,
            )
            self.sample_a.append(a[row, picks].numpy())
            self.sample_b.append(b[row, picks].numpy())
            self.sample_prompt += [prompt] * len(picks)

    def summary(self, n_boot: int, seed: int) -> dict[str, Any]:
        return {
            "site": self.site,
            "rel_l2": mean_interval(np.array(self.rel_l2), n_boot, seed).to_dict(),
            "cosine": mean_interval(np.array(self.cosine), n_boot, seed).to_dict(),
            "cka": linear_cka_interval(
                np.concatenate(self.sample_a),
                np.concatenate(self.sample_b),
                np.array(self.sample_prompt),
                seed,
            ).to_dict(),
            "first_position": {
                "rel_l2": mean_interval(np.array(self.first_rel_l2), n_boot, seed).to_dict(),
                "cosine": mean_interval(np.array(self.first_cosine), n_boot, seed).to_dict(),
            },
        }


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between two [n, d] activation matrices."""
    return _cka_from_grams(x @ x.T, y @ y.T)


def linear_cka_interval(x: np.ndarray, y: np.ndarray, prompt: np.ndarray, seed: int) -> Interval:
    """CKA with a bootstrap over prompts (each resample takes all sampled rows of a prompt)."""
    kx, ky = x @ x.T, y @ y.T
    rows_of = [np.flatnonzero(prompt == p) for p in range(int(prompt.max()) + 1)]
    draws = []
    for idx in bootstrap_indices(len(rows_of), CKA_BOOT, seed):
        rows = np.concatenate([rows_of[i] for i in idx])
        draws.append(_cka_from_grams(kx[np.ix_(rows, rows)], ky[np.ix_(rows, rows)]))
    low, high = percentile(np.array(draws))
    return Interval(_cka_from_grams(kx, ky), low, high, len(rows_of))


def _cka_from_grams(kx: np.ndarray, ky: np.ndarray) -> float:
    def centre(k: np.ndarray) -> np.ndarray:
        m = k.mean(axis=0, keepdims=True)
        return k - m - m.T + k.mean()

    cx, cy = centre(kx), centre(ky)
    denom = np.sqrt((cx * cx).sum() * (cy * cy).sum())
    return float((cx * cy).sum() / denom) if denom > 0 else 1.0


def drift_onset(rows: list[dict[str, Any]], tolerance: float) -> str | None:
    """The first site (in forward order) whose relative L2 change exceeds `tolerance` with its
    whole 95% interval: where the two sides' representations depart from numerical noise."""
    for row in rows:
        if row["rel_l2"]["low"] > tolerance:
            return str(row["site"])
    return None

"""Logistic-regression probe on standardized activations."""

from typing import Any, Self

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from probewatch.data.base import require_binary_labels
from probewatch.probes.base import Probe, register


@register
class LogisticProbe(Probe):
    """score(x) = w · (x - mean) / scale + b, fitted by L2-regularized logistic regression.

    Standardizing first makes one regularization strength `c` sensible at every layer,
    whatever the activation norms (which grow by orders of magnitude with depth).
    """

    kind = "logistic"

    def __init__(self, c: float = 0.05, max_iter: int = 2000) -> None:
        self.c = c
        self.max_iter = max_iter
        self.mean: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> Self:
        require_binary_labels(y, "the training data")
        x64 = x.double()
        self.mean = x64.mean(dim=0)
        self.scale = x64.std(dim=0).clamp_min(1e-6)
        z = ((x64 - self.mean) / self.scale).numpy()
        model = LogisticRegression(C=self.c, max_iter=self.max_iter)
        model.fit(z, y.numpy().astype(np.int64))
        self.weight = torch.from_numpy(model.coef_[0].copy())
        self.bias = torch.tensor([float(model.intercept_[0])], dtype=torch.float64)
        self.mean, self.scale = self.mean.float(), self.scale.float()
        self.weight, self.bias = self.weight.float(), self.bias.float()
        return self

    def _state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.mean is None or self.scale is None or self.weight is None or self.bias is None:
            raise RuntimeError("the probe has not been fitted")
        return self.mean, self.scale, self.weight, self.bias

    def score(self, x: torch.Tensor) -> torch.Tensor:
        mean, scale, weight, bias = self._state()
        return ((x.float() - mean) / scale) @ weight + bias

    def direction(self) -> torch.Tensor:
        """The probe's direction in raw activation space (unit norm)."""
        _, scale, weight, _ = self._state()
        raw = weight / scale
        return raw / raw.norm()

    def tensors(self) -> dict[str, torch.Tensor]:
        mean, scale, weight, bias = self._state()
        return {"scaler.mean": mean, "scaler.scale": scale, "weight": weight, "bias": bias}

    def config(self) -> dict[str, Any]:
        return {"c": self.c, "max_iter": self.max_iter}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Self:
        probe = cls(**config)
        probe.mean = tensors["scaler.mean"]
        probe.scale = tensors["scaler.scale"]
        probe.weight = tensors["weight"]
        probe.bias = tensors["bias"]
        return probe

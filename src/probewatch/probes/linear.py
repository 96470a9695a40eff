"""Logistic-regression probe on standardized activations."""

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

from probewatch.data.base import require_binary_labels
from probewatch.errors import ProbewatchError
from probewatch.probes.base import Probe, register
from probewatch.probes.checks import require_features, require_targets

DEFAULT_C_GRID = (1e-3, 1e-2, 0.05, 0.1, 1.0, 10.0)


def choose_c(
    z: np.ndarray, y: np.ndarray, grid: Sequence[float], folds: int, seed: int, max_iter: int
) -> tuple[float, list[float]]:
    """The C with the lowest mean held-out log loss over stratified folds (ties: smaller C).

    Folds share the full-data standardization; that leaks only per-feature means and scales,
    which barely move the choice of C.
    """
    n_folds = min(folds, int(np.bincount(y).min()))
    if n_folds < 2:
        raise ProbewatchError(
            "too few examples of one class to choose c by cross-validation",
            hint="each class needs at least 2 examples; or pass a fixed c",
        )
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    splits = list(splitter.split(z, y))
    losses = []
    for c in grid:
        fold_losses = []
        for train, held in splits:
            model = LogisticRegression(C=c, max_iter=max_iter).fit(z[train], y[train])
            fold_losses.append(log_loss(y[held], model.predict_proba(z[held]), labels=[0, 1]))
        losses.append(float(np.mean(fold_losses)))
    best = min(losses)
    return min(c for c, loss in zip(grid, losses, strict=True) if loss == best), losses


@register
class LogisticProbe(Probe):
    """score(x) = w · (x - mean) / scale + b, fitted by L2-regularized logistic regression.

    Standardizing first makes one regularization strength `c` sensible at every layer,
    whatever the activation norms (which grow by orders of magnitude with depth).
    With `c=None`, c is chosen from `c_grid` by `cv_folds`-fold stratified cross-validation
    (held-out log loss), and the choice is recorded in `config()["fitted"]`.
    """

    kind = "logistic"

    def __init__(
        self,
        c: float | None = 0.05,
        max_iter: int = 2000,
        c_grid: Sequence[float] = DEFAULT_C_GRID,
        cv_folds: int = 5,
        seed: int = 0,
    ) -> None:
        if c is not None and c <= 0:
            raise ProbewatchError(f"c must be positive, got {c}", hint="the default is 0.05")
        if len(c_grid) == 0 or min(c_grid) <= 0 or cv_folds < 2:
            raise ProbewatchError(
                f"bad cross-validation settings: c_grid={list(c_grid)}, cv_folds={cv_folds}",
                hint="c_grid needs positive values and cv_folds at least 2",
            )
        self.c = c
        self.max_iter = max_iter
        self.c_grid = tuple(float(v) for v in c_grid)
        self.cv_folds = cv_folds
        self.seed = seed
        self.chosen_c: float | None = None
        self.cv_losses: list[float] | None = None
        self.mean: torch.Tensor | None = None
        self.scale: torch.Tensor | None = None
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> Self:
        require_features(x)
        require_targets(y, x.shape[0])
        require_binary_labels(y, "the training data")
        x64 = x.double()
        self.mean = x64.mean(dim=0)
        self.scale = x64.std(dim=0).clamp_min(1e-6)
        z = ((x64 - self.mean) / self.scale).numpy()
        labels = y.numpy().astype(np.int64)
        c = self.c
        if c is None:
            c, self.cv_losses = choose_c(
                z, labels, self.c_grid, self.cv_folds, self.seed, self.max_iter
            )
            self.chosen_c = c
        model = LogisticRegression(C=c, max_iter=self.max_iter)
        model.fit(z, labels)
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
        if self.c is not None:  # unchanged from before cross-validation existed
            return {"c": self.c, "max_iter": self.max_iter}
        config: dict[str, Any] = {
            "c": None,
            "max_iter": self.max_iter,
            "c_grid": list(self.c_grid),
            "cv_folds": self.cv_folds,
            "seed": self.seed,
        }
        if self.chosen_c is not None:
            config["fitted"] = {"c": self.chosen_c, "cv_log_loss": self.cv_losses}
        return config

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Self:
        config = dict(config)
        fitted = config.pop("fitted", {})
        probe = cls(**config)
        probe.chosen_c, probe.cv_losses = fitted.get("c"), fitted.get("cv_log_loss")
        probe.mean = tensors["scaler.mean"]
        probe.scale = tensors["scaler.scale"]
        probe.weight = tensors["weight"]
        probe.bias = tensors["bias"]
        return probe

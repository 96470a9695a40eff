"""Logistic-regression probe on standardized activations."""

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from probewatch.errors import ProbewatchError
from probewatch.probes.base import AffineProbe, register
from probewatch.probes.checks import require_binary_data, require_groups

DEFAULT_C_GRID = (1e-3, 1e-2, 0.05, 0.1, 1.0, 10.0)


@register
class LogisticProbe(AffineProbe):
    """score(x) = w · (x - mean) / scale + b, fitted by L2-regularized logistic regression.

    Standardizing first makes one regularization strength `c` sensible at every layer,
    whatever the activation norms (which grow by orders of magnitude with depth).
    With `c=None`, c is chosen from `c_grid` by `cv_folds`-fold stratified cross-validation
    (held-out log loss), and the choice is recorded in `config()["fitted"]`; rows that share a
    group (the tokens of one response) stay in one fold.
    """

    kind = "logistic"
    standardize = True
    tensor_names = ("scaler.mean", "scaler.scale", "weight", "bias")
    fitted_fields = (("c", "chosen_c"), ("cv_log_loss", "cv_losses"))

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

    def choose_c(
        self, z: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None
    ) -> tuple[float, list[float]]:
        """The C with the lowest mean held-out log loss over stratified folds (ties: smaller C),
        whole groups per fold when `groups` is given (as `require_groups` returns it).

        Folds share the full-data standardization; that leaks only per-feature means and
        scales, which barely move the choice of C.
        """
        if groups is not None:
            per_class = min(np.unique(groups[y == label]).size for label in (0, 1))
        else:
            per_class = int(np.bincount(y).min())
        n_folds = min(self.cv_folds, per_class)
        if n_folds < 2:
            raise ProbewatchError(
                "too few examples (or groups) of one class to choose c by cross-validation",
                hint="each class needs at least 2 examples; or pass a fixed c",
            )
        if groups is not None:
            grouped_splitter = StratifiedGroupKFold(n_folds, shuffle=True, random_state=self.seed)
            splits = list(grouped_splitter.split(z, y, groups))
        else:
            splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=self.seed)
            splits = list(splitter.split(z, y))
        losses = []
        for c in self.c_grid:
            fold_losses = []
            for train, held in splits:
                model = LogisticRegression(C=c, max_iter=self.max_iter).fit(z[train], y[train])
                fold_losses.append(log_loss(y[held], model.predict_proba(z[held]), labels=[0, 1]))
            losses.append(float(np.mean(fold_losses)))
        best = min(losses)
        return min(c for c, loss in zip(self.c_grid, losses, strict=True) if loss == best), losses

    def fit(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None) -> Self:
        require_binary_data(x, y)
        group_ids = require_groups(groups, x.shape[0])
        x64 = x.double()
        mean = x64.mean(dim=0)
        scale = x64.std(dim=0).clamp_min(1e-6)
        z = ((x64 - mean) / scale).numpy()
        labels = y.numpy().astype(np.int64)
        c = self.c
        if c is None:
            c, self.cv_losses = self.choose_c(z, labels, group_ids)
            self.chosen_c = c
        model = LogisticRegression(C=c, max_iter=self.max_iter)
        model.fit(z, labels)
        weight = torch.from_numpy(model.coef_[0].copy()).float()
        bias = torch.tensor([float(model.intercept_[0])], dtype=torch.float32)
        self._keep(
            weight=weight, bias=bias, **{"scaler.mean": mean.float(), "scaler.scale": scale.float()}
        )
        return self

    def options(self) -> dict[str, Any]:
        if self.c is not None:  # unchanged from before cross-validation existed
            return {"c": self.c, "max_iter": self.max_iter}
        return {
            "c": None,
            "max_iter": self.max_iter,
            "c_grid": list(self.c_grid),
            "cv_folds": self.cv_folds,
            "seed": self.seed,
        }

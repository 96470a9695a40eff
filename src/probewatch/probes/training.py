"""Seeded minibatch training with early stopping, shared by the torch probe kinds.

Everything random (initialisation, the validation split, batch order) draws from one
`torch.Generator` seeded from the settings, so a fit is deterministic given its seed and never
touches torch's global random state.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from probewatch.errors import ProbewatchError


@dataclass(frozen=True)
class TrainSettings:
    lr: float = 3e-3
    weight_decay: float = 1e-2  # AdamW's decoupled decay, on weights only (not biases)
    max_epochs: int = 200
    patience: int = 10  # epochs without a better validation loss before stopping
    batch_size: int = 64
    val_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        problems = [
            f"{name}={value!r}"
            for name, value, ok in [
                ("lr", self.lr, self.lr > 0),
                ("weight_decay", self.weight_decay, self.weight_decay >= 0),
                ("max_epochs", self.max_epochs, self.max_epochs >= 1),
                ("patience", self.patience, self.patience >= 1),
                ("batch_size", self.batch_size, self.batch_size >= 1),
                ("val_fraction", self.val_fraction, 0 < self.val_fraction < 1),
            ]
            if not ok
        ]
        if problems:
            raise ProbewatchError(
                f"bad training settings: {', '.join(problems)}",
                hint="lr, max_epochs, patience and batch_size must be positive, weight_decay "
                "non-negative and val_fraction strictly between 0 and 1",
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def stratified_split(
    y: torch.Tensor, val_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (not grouped) split that keeps both classes in training and, when a class has
    at least two rows, puts at least one of them in validation."""
    train, val = [], []
    for value in torch.unique(y):
        rows = torch.nonzero(y == value).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        n_val = min(max(round(val_fraction * len(rows)), 1), len(rows) - 1)
        val.append(rows[:n_val])
        train.append(rows[n_val:])
    val_idx = torch.cat(val)
    if len(val_idx) == 0:
        raise ProbewatchError(
            f"too few examples ({len(y)}) to hold out a validation split",
            hint="early stopping needs at least two examples of some class",
        )
    return torch.cat(train).sort().values, val_idx.sort().values


def uniform_init(shape: Sequence[int], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """torch.nn.Linear's default range, U(±1/√fan_in), from our own generator."""
    bound = 1 / math.sqrt(fan_in)
    return ((torch.rand(*shape, generator=generator) * 2 - 1) * bound).requires_grad_()


def fit_early_stopping(
    params: tuple[list[torch.Tensor], list[torch.Tensor]],
    loss_on: Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
) -> int:
    """Train `params` = (weights with decay, parameters without) in place with AdamW on
    `loss_on(row_indices)`; keep the parameters of the epoch with the lowest validation loss.
    Returns that epoch (0 = the initial parameters)."""
    train_idx, val_idx = stratified_split(y, settings.val_fraction, generator)
    decayed, free = params
    every = decayed + free
    optimizer = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": settings.weight_decay},
            {"params": free, "weight_decay": 0.0},
        ],
        lr=settings.lr,
    )
    with torch.no_grad():
        best_loss = float(loss_on(val_idx))
    best_state = [p.detach().clone() for p in every]
    best_epoch, stale = 0, 0
    for epoch in range(1, settings.max_epochs + 1):
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for batch in order.split(settings.batch_size):
            optimizer.zero_grad()
            loss_on(batch).backward()
            optimizer.step()
        with torch.no_grad():
            val_loss = float(loss_on(val_idx))
        if val_loss < best_loss - 1e-7:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = [p.detach().clone() for p in every]
        else:
            stale += 1
            if stale >= settings.patience:
                break
    with torch.no_grad():
        for param, best in zip(every, best_state, strict=True):
            param.copy_(best)
    return best_epoch

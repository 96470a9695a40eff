"""Input checks shared by probe kinds, so every kind refuses bad data with the same message."""

import numpy as np
import torch

from probewatch.errors import ProbewatchError
from probewatch.metrics.labels import require_binary_labels


def require_features(x: torch.Tensor, what: str = "the activations", ndim: int = 2) -> None:
    """x must be a finite float tensor with `ndim` dimensions and at least one row."""
    if not isinstance(x, torch.Tensor):
        raise ProbewatchError(
            f"{what} must be a torch tensor, not {type(x).__name__}",
            hint="convert with torch.as_tensor(...)",
        )
    if x.dim() != ndim:
        raise ProbewatchError(
            f"{what} must have {ndim} dimensions, got shape {tuple(x.shape)}",
            hint="pass one row per example: [N, d] (or [N, T, d] for sequences)",
        )
    if x.shape[0] == 0:
        raise ProbewatchError(f"{what} has no rows", hint="check the dataset and split")
    if not torch.isfinite(x).all():
        raise ProbewatchError(
            f"{what} contain NaN or infinite values",
            hint="check the capture (fp16 overflow is a common cause); try float32 or bfloat16",
        )


def require_targets(y: torch.Tensor, n: int, what: str = "the labels") -> None:
    """y must be a finite 1-D tensor with one value per example."""
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ProbewatchError(
            f"{what} must be a 1-D tensor, got {shape}", hint="pass one label per example"
        )
    if y.shape[0] != n:
        raise ProbewatchError(
            f"{what} have {y.shape[0]} values but there are {n} examples",
            hint="activations and labels must be aligned row by row",
        )
    if not torch.isfinite(y.double()).all():
        raise ProbewatchError(f"{what} contain NaN or infinite values", hint="clean the labels")


def require_binary_data(x: torch.Tensor, y: torch.Tensor) -> None:
    """Training data for a binary probe: finite [N, d] activations and one 0/1 label per row,
    both classes present."""
    require_features(x)
    require_targets(y, x.shape[0])
    require_binary_labels(y, "the training data")


def require_groups(groups: torch.Tensor | None, n: int) -> np.ndarray | None:
    """`groups` (which example each row comes from, one integer id per row) as a NumPy array;
    None when there are none, or when every row is its own group (then cross-validating over
    rows already keeps each group in one fold)."""
    if groups is None:
        return None
    if not isinstance(groups, torch.Tensor) or groups.dim() != 1 or groups.shape[0] != n:
        shape = tuple(groups.shape) if isinstance(groups, torch.Tensor) else type(groups).__name__
        raise ProbewatchError(
            f"groups must be a 1-D tensor with one id per row ({n}), got {shape}",
            hint="pass the stored rows' example_index, or leave groups out",
        )
    if groups.is_floating_point():
        raise ProbewatchError("groups must be integer ids", hint="pass example_index")
    ids = groups.numpy()
    return ids if np.unique(ids).size < n else None

"""One forward pass that keeps only chosen rows of the activations attribution needs.

Rows are (example, token) pairs chosen before the pass, so nothing of size [B, T, ·] is kept:
each hook slices its tensor to the rows at once. Hooks are handles owned by the context and
removed in `finally`.
"""

import inspect
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from probewatch.capture import select_positions
from probewatch.errors import ProbewatchError
from probewatch.tokens import Batch

Positions = str | int | Sequence[int]


@dataclass(frozen=True)
class Rows:
    """The (example, token) pairs an attribution is about."""

    example: torch.Tensor  # [N] long
    token: torch.Tensor  # [N] long

    def __len__(self) -> int:
        return int(self.example.shape[0])


def choose_rows(attention_mask: torch.Tensor, positions: Positions) -> Rows:
    """`positions` is "last", "all", or token indices (negative ones count from each row's end)."""
    if isinstance(positions, str):
        rows, cols = select_positions(attention_mask, positions)
        return Rows(rows.cpu(), cols.cpu())
    wanted = [positions] if isinstance(positions, int) else list(positions)
    lengths = attention_mask.sum(dim=1).tolist()
    examples, tokens = [], []
    for row, length in enumerate(lengths):
        for pos in wanted:
            index = pos + length if pos < 0 else pos
            if not 0 <= index < length:
                raise ProbewatchError(
                    f"position {pos} is outside example {row}, which has {length} tokens",
                    hint="use positions within every example (negative ones count from the end)",
                )
            examples.append(row)
            tokens.append(index)
    return Rows(torch.tensor(examples), torch.tensor(tokens))


def model_kwargs(model: nn.Module, batch: Batch) -> dict[str, Any]:
    """Forward arguments for a right-padded batch, with positions that count real tokens."""
    device = next(model.parameters()).device
    mask = batch.attention_mask.to(device)
    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids.to(device),
        "attention_mask": mask,
        "use_cache": False,
    }
    if "position_ids" in inspect.signature(model.forward).parameters:
        kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return kwargs


def _tensor(value: Any) -> torch.Tensor:
    tensor = value[0] if isinstance(value, tuple | list) else value
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"hooked module gave {type(value).__name__}, not a tensor")
    return tensor


class RowRecorder:
    """`with RowRecorder(rows) as rec: rec.output(m, "name"); rec.input(m, "z"); model(...)`;
    then `rec.kept["name"]` is [N, ·] for the chosen rows."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.kept: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._owner = threading.get_ident()

    def _keep(self, name: str, value: Any) -> None:
        if threading.get_ident() != self._owner:
            return  # another thread's forward on the same model (a server generating)
        tensor = _tensor(value)
        device = tensor.device
        self.kept[name] = tensor[self.rows.example.to(device), self.rows.token.to(device)].detach()

    def output(self, module: nn.Module, name: str) -> None:
        self._handles.append(module.register_forward_hook(lambda _m, _a, o: self._keep(name, o)))

    def input(self, module: nn.Module, name: str) -> None:
        def hook(_module: nn.Module, args: Any, kwargs: Any) -> None:
            self._keep(name, args[0] if args else kwargs["hidden_states"])

        self._handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def __enter__(self) -> "RowRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

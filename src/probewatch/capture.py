"""Recording activations at named sites and chosen token positions.

    with ActivationCapture(model, ["resid.5", "mlp_out.7"], positions="last") as capture:
        captured = capture.run(batch)
    captured.acts["resid.5"]   # [N, d_model]; N rows, one per selected (example, token)

Hooks are handles owned by the context manager and removed in `finally`, even when the
forward pass raises. With `stop_early` (the default), the forward pass is cut off as soon as
the deepest requested site has been recorded, so later layers and the unembedding never run.
"""

import contextlib
import inspect
from dataclasses import dataclass
from types import TracebackType
from typing import Any, get_args

import torch
from torch import nn

from probewatch.config import Positions
from probewatch.errors import ProbewatchError
from probewatch.hooks import hidden_of, registered_hooks
from probewatch.sites import Site, expand_sites, layer_list, resolve_module
from probewatch.tokens import Batch

POSITIONS: tuple[str, ...] = get_args(Positions)  # the one list lives in config.Positions


class _StopForward(Exception):
    """Raised by the deepest hook to end the forward pass early; never escapes `run`."""


@dataclass
class Captured:
    acts: dict[str, torch.Tensor]  # site name -> [N, d], on CPU
    example_index: torch.Tensor  # [N] row of the batch each activation came from
    token_index: torch.Tensor  # [N] token position within that row


def select_positions(
    attention_mask: torch.Tensor, positions: str, token_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(example_index, token_index) of the positions to keep, derived from the attention
    mask so that either padding side gives the same answer."""
    mask = attention_mask.bool()
    if positions == "last":
        if not bool(mask.any(dim=1).all()):
            raise ProbewatchError("a row of the batch has no tokens", hint="drop empty texts")
        arange = torch.arange(mask.shape[1], device=mask.device)
        token_index = torch.where(mask, arange, -1).max(dim=1).values
        return torch.arange(mask.shape[0], device=mask.device), token_index
    if positions == "all":
        rows, cols = mask.nonzero(as_tuple=True)
        return rows, cols
    if positions in ("mask", "span"):
        if token_mask is None:
            what = "the spans' tokens" if positions == "span" else "the assistant response tokens"
            raise ProbewatchError(
                f"positions={positions!r} needs a token mask ({what})",
                hint="encode chats with encode_chats, or give character spans (spans=...)",
            )
        rows, cols = (mask & token_mask.bool()).nonzero(as_tuple=True)
        return rows, cols
    raise ProbewatchError(f"unknown positions {positions!r}", hint=f"use one of {POSITIONS}")


class ActivationCapture:
    """Context manager that hooks `sites` and records them during `run`."""

    def __init__(
        self,
        model: nn.Module,
        sites: str | list[str],
        positions: str = "last",
        stop_early: bool = True,
    ) -> None:
        if positions not in POSITIONS:
            raise ProbewatchError(
                f"unknown positions {positions!r}", hint=f"use one of {POSITIONS}"
            )
        self.model = model
        self.n_layers = len(layer_list(model))
        self.sites: list[Site] = expand_sites(sites, self.n_layers)
        self.positions = positions
        self.stop_early = stop_early
        self._hooks: contextlib.ExitStack | None = None
        self._records: dict[str, torch.Tensor] = {}
        self._selection: tuple[torch.Tensor, torch.Tensor] | None = None
        self._running = False
        self._accepts_position_ids = "position_ids" in inspect.signature(model.forward).parameters

    @property
    def site_names(self) -> list[str]:
        return [site.name for site in self.sites]

    def __enter__(self) -> "ActivationCapture":
        deepest = self.sites[-1]  # expand_sites returns forward order
        pairs = [
            (resolve_module(self.model, site), self._make_hook(site.name, site == deepest))
            for site in self.sites
        ]
        self._hooks = contextlib.ExitStack()
        self._hooks.enter_context(registered_hooks(pairs))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None

    def _make_hook(self, name: str, is_deepest: bool) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            hidden = hidden_of(output)
            if self._selection is not None:
                rows, cols = self._selection
                hidden = hidden[rows, cols]
            self._records[name] = hidden.detach()
            # Stop only once every site has been seen, so an architecture that fires hooks
            # in an unexpected order still gives complete results (just without the saving).
            finished = len(self._records) == len(self.sites)
            if is_deepest and self._running and self.stop_early and finished:
                raise _StopForward

        return hook

    @torch.no_grad()
    def run(self, batch: Batch) -> Captured:
        """One forward pass over `batch`; returns the selected activations on CPU."""
        if self._hooks is None:
            raise RuntimeError("ActivationCapture.run must be called inside its `with` block")
        device = next(self.model.parameters()).device
        input_ids = batch.input_ids.to(device)
        attention_mask = batch.attention_mask.to(device)
        token_mask = batch.token_mask.to(device) if batch.token_mask is not None else None
        rows, cols = select_positions(attention_mask, self.positions, token_mask)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self._accepts_position_ids:
            # Positions count real tokens only, so left padding matches an unpadded pass too.
            kwargs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        self._records = {}
        self._selection = (rows, cols)
        self._running = True
        try:
            self.model(**kwargs, use_cache=False)
        except _StopForward:
            pass
        finally:
            self._running = False
            self._selection = None
        missing = [name for name in self.site_names if name not in self._records]
        if missing:
            raise RuntimeError(f"sites {missing} were not reached by the forward pass")
        acts = {name: self._records[name].to("cpu") for name in self.site_names}
        self._records = {}
        return Captured(acts, rows.to("cpu"), cols.to("cpu"))

"""Replaying a model's blocks from a recorded run, for many patched rows at once.

The base run is recorded once: every block's input and every argument the model gave it. A
patched row then starts at the block where its patch acts, never recomputing the prefix of
layers. When the family allows it (checked on the base run itself), a row also skips the prefix
of *positions*: by causality a patch at position p leaves every position before p unchanged at
every layer, so only positions ≥ p are recomputed, attending to the base run's own keys and
values for the earlier ones (`_PrefixCache`).
"""

from typing import Any

import torch
from torch import nn

from probewatch.attribution.anatomy import Anatomy
from probewatch.attribution.recording import model_kwargs
from probewatch.hooks import hidden_of
from probewatch.sites import layer_list
from probewatch.tokens import Batch

# Block arguments the suffix replay knows how to cut to positions ≥ start; a block that takes
# anything else (or positional extras, as GPT-2's does) is replayed over every position.
_KNOWN = frozenset(
    {"attention_mask", "position_embeddings", "position_ids", "cache_position", "use_cache"}
)


class _PrefixCache:
    """The one method of a KV cache a block's attention calls (`update`). Recording, it keeps
    each layer's keys and values; replaying from `start`, it puts the base run's keys and
    values for positions < start in front of the rows' own."""

    def __init__(
        self,
        store: dict[int, tuple[torch.Tensor, torch.Tensor]],
        rows: torch.Tensor,
        start: int,
        record: bool = False,
    ) -> None:
        self.store, self.rows, self.start, self.record = store, rows, start, record

    def update(
        self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *_: Any, **__: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.record:
            self.store[layer_idx] = (keys, values)
        if self.start == 0:
            return keys, values
        base_keys, base_values = self.store[layer_idx]
        prefix = slice(0, self.start)
        return (
            torch.cat([base_keys[self.rows, :, prefix], keys], dim=2),
            torch.cat([base_values[self.rows, :, prefix], values], dim=2),
        )


class Replayer:
    """Runs blocks from the base run's recorded inputs; rows name the example each one copies."""

    def __init__(self, anat: Anatomy, batch: Batch) -> None:
        self.anat = anat
        self.blocks = layer_list(anat.model)
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.batch_size = int(batch.input_ids.shape[0])
        self.last = batch.attention_mask.sum(dim=1).cpu() - 1
        self.length = int(batch.input_ids.shape[1])

        def record(_module: nn.Module, args: Any, kwargs: Any) -> None:
            self.calls.append((tuple(args), dict(kwargs)))

        handles = [b.register_forward_pre_hook(record, with_kwargs=True) for b in self.blocks]
        try:
            with torch.no_grad():
                out = anat.model(**model_kwargs(anat.model, batch))
        finally:
            for handle in handles:
                handle.remove()
        self.logits = out.logits[torch.arange(self.batch_size), self.last].detach()
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.final = self.run(anat.n_layers - 1, self.block_input(anat.n_layers - 1))
        self.suffix = self._suffix_works()

    def block_input(self, layer: int) -> torch.Tensor:
        """The base run's input to block `layer` ([B, T, d]); past the last block, its output."""
        if layer == self.anat.n_layers:
            return self.final
        args, kwargs = self.calls[layer]
        return hidden_of(args[0] if args else kwargs["hidden_states"])

    def earliest_start(self, position: int) -> int:
        """Where a patch at `position` may start recomputing: there, if the suffix replay works
        and every example's read position is at or after it; else at position 0."""
        return min(position, int(self.last.min())) if self.suffix else 0

    def step(
        self,
        layer: int,
        hidden: torch.Tensor,
        rows: torch.Tensor,
        start: int = 0,
        record: bool = False,
    ) -> torch.Tensor:
        """Block `layer` on `hidden` [R, T - start, d]; row r copies example rows[r]."""
        args, kwargs = self.calls[layer]
        extra = tuple(self._rows(a, rows) for a in args[1:])
        call = {k: self._argument(k, v, rows, start) for k, v in kwargs.items()}
        if start or record:
            call["past_key_values"] = _PrefixCache(self.kv, rows, start, record)
        if args:
            return hidden_of(self.blocks[layer](hidden, *extra, **call))
        call["hidden_states"] = hidden
        return hidden_of(self.blocks[layer](**call))

    def run(self, start: int, hidden: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """Blocks start..stop-1 on `hidden` ([copies·B, T, d]) over every position."""
        rows = torch.arange(self.batch_size).repeat(hidden.shape[0] // self.batch_size)
        for layer in range(start, self.anat.n_layers if stop is None else stop):
            hidden = self.step(layer, hidden, rows)
        return hidden

    def _rows(self, value: Any, rows: torch.Tensor) -> Any:
        if isinstance(value, torch.Tensor):
            if value.ndim >= 2 and value.shape[0] == self.batch_size:
                return value[rows]
            return value
        if isinstance(value, tuple | list):
            return type(value)(self._rows(v, rows) for v in value)
        if isinstance(value, dict):
            return {k: self._rows(v, rows) for k, v in value.items()}
        return value

    def _argument(self, name: str, value: Any, rows: torch.Tensor, start: int) -> Any:
        if name == "past_key_values":
            return None  # replaced by the prefix cache when one is used
        value = self._rows(value, rows)
        if not start:
            return value
        if name == "attention_mask":
            return value[:, :, start:] if value is not None else self._causal(len(rows), start)
        if name == "position_embeddings":
            return tuple(t[:, start:] for t in value)
        if name == "position_ids":
            return value[:, start:]
        if name == "cache_position":
            return value[start:]
        return value

    def _causal(self, n_rows: int, start: int) -> torch.Tensor:
        """The causal mask SDPA would have applied itself (the model passed none), for queries
        start..T-1 over keys 0..T-1: a shorter query block no longer implies it."""
        device = self.final.device
        queries = torch.arange(start, self.length, device=device)[:, None]
        allowed = torch.arange(self.length, device=device)[None] <= queries
        return allowed[None, None].expand(n_rows, 1, -1, -1)

    def _suffix_works(self) -> bool:
        """Record every layer's keys and values with a full replay, then check that a replay
        from the middle of the prompts reproduces the base run there (else: full replays)."""
        args, kwargs = self.calls[0]
        start = int(self.last.min()) // 2
        attn = getattr(self.anat.model.config, "_attn_implementation", None)
        if len(args) != 1 or not set(kwargs) - {"past_key_values"} <= _KNOWN or start == 0:
            return False
        if attn != "sdpa" and kwargs.get("attention_mask") is None:
            return False  # only SDPA implies the causal mask a shorter query block loses
        rows = torch.arange(self.batch_size)
        try:
            with torch.no_grad():
                full, part = self.block_input(0), self.block_input(0)[:, start:]
                for layer in range(self.anat.n_layers):
                    full = self.step(layer, full, rows, record=True)
                    part = self.step(layer, part, rows, start)
        except (TypeError, RuntimeError, KeyError, IndexError, ValueError):
            self.kv.clear()
            return False
        ok = _close(full, self.final, self.last, 0) and _close(part, self.final, self.last, start)
        if not ok:
            self.kv.clear()
        return ok


def _close(replayed: torch.Tensor, base: torch.Tensor, last: torch.Tensor, start: int) -> bool:
    """Whether a replay from `start` equals the base run at every real position ≥ start."""
    tolerance = 1e-4 if base.dtype == torch.float32 else 2e-2
    for row, end in enumerate(last.tolist()):
        want = base[row, start : end + 1].float()
        got = replayed[row, : end + 1 - start].float()
        if (got - want).abs().max() > tolerance * (1 + want.abs().max()):
            return False
    return True

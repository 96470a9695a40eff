"""Activation patching: one call sweeps layers × positions × {resid, attn_out, mlp_out, head}.

    sources = record_sources(loaded_a, clean)            # any model with the same shapes
    result = patch_sweep(loaded_b, corrupted, sources, LogitDiffMetric(paris, london))
    result.grid("resid")                                 # [layers, positions], mean over pairs

Patches are batched in staggered passes (replay.py): a patched row joins the batch at the
block where its patch acts, starting from the base run's own recorded input to that block, so
the unpatched prefix of layers is never recomputed; where the family allows it, a patch at
position p recomputes positions ≥ p only (causality); logits are computed only at the read
position. `patch_reference` is the one-forward-per-patch loop, kept as the oracle.

Cross-model patching (engineer `compare`): `record_sources` on model A, `patch_sweep` on model B;
the shapes are checked, and `Sources.logits` gives A's own prediction for the metric's baseline.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from probewatch.attribution.anatomy import Anatomy, anatomy
from probewatch.attribution.metrics import LogitDiffMetric, Metric, check_metric
from probewatch.attribution.recording import model_kwargs
from probewatch.attribution.replay import Replayer
from probewatch.errors import ProbewatchError
from probewatch.hooks import hidden_of, with_hidden
from probewatch.sites import layer_list, parse_site
from probewatch.tokens import Batch

Component = Literal["resid", "attn_out", "mlp_out", "head"]
COMPONENTS: tuple[Component, ...] = ("resid", "attn_out", "mlp_out", "head")


@dataclass(frozen=True)
class Cell:
    """One patch: a component of one layer, at some positions (a head: one head's z)."""

    component: Component
    layer: int
    positions: tuple[int, ...]
    head: int | None = None

    @property
    def label(self) -> str:
        where = f"L{self.layer}" + (f"H{self.head}" if self.head is not None else "")
        pos = ",".join(map(str, self.positions)) if len(self.positions) < 4 else "all"
        return f"{self.component}:{where}@{pos}"


@dataclass
class Sources:
    """Activations of one run at every layer, to patch into another run: [B, T, ·] each."""

    acts: dict[tuple[str, int], torch.Tensor]  # (component, layer) -> [B, T, d] (head: H·d_head)
    lengths: torch.Tensor  # [B] real tokens per example
    logits: torch.Tensor  # [B, V] at each example's last token
    probe_acts: dict[str, torch.Tensor] = field(default_factory=dict)  # site -> [B, d] at last


def _lengths(batch: Batch) -> torch.Tensor:
    return batch.attention_mask.sum(dim=1).cpu()


def _last(batch: Batch) -> torch.Tensor:
    return _lengths(batch) - 1


def module_for(anat: Anatomy, component: str, layer: int) -> tuple[nn.Module, bool]:
    """(module, whether its *input* is the activation) for a component."""
    block = anat.blocks[layer]
    if component == "resid":
        return layer_list(anat.model)[layer], False
    if component == "attn_out":
        return block.attn, False
    if component == "mlp_out":
        return block.mlp, False
    return block.out_proj, True


@contextmanager
def _hooks(pairs: Sequence[tuple[nn.Module, Any, bool]]) -> Iterator[None]:
    """Register (module, hook, is_pre) and remove exactly these handles afterwards."""
    handles: list[RemovableHandle] = []
    try:
        for module, hook, pre in pairs:
            if pre:
                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _probe_read(anat: Anatomy, metric: Metric) -> tuple[int | None, bool]:
    """(layer whose output the probe reads or None, reads the final norm's output)."""
    site_name = metric.probe_site
    if site_name is None:
        return None, False
    site = parse_site(site_name, anat.n_layers)
    if site.kind == "resid":
        return site.layer, False
    if site.kind == "final_norm":
        return None, True
    raise ProbewatchError(
        f"probe site {site_name!r}: patching metrics read probes on resid.N or final_norm",
        hint="train the probe on the residual stream",
    )


def probe_read_hook(
    anat: Anatomy, metric: Metric, read: dict[str, torch.Tensor]
) -> tuple[nn.Module, Any, bool] | None:
    """A read hook that keeps, in read["acts"], the activation the metric's probe scores (a
    block's output, or the final norm's); None for a logit metric."""
    probe_layer, probe_final = _probe_read(anat, metric)
    if probe_layer is None and not probe_final:
        return None
    target = anat.final_norm.module if probe_layer is None else layer_list(anat.model)[probe_layer]

    def grab(_m: nn.Module, _args: Any, output: Any) -> None:
        read["acts"] = hidden_of(output)

    return target, grab, False


@torch.no_grad()
def record_sources(loaded: Any, batch: Batch, probe_sites: Sequence[str] = ()) -> Sources:
    """Every component's activation at every layer of one run (the patch donor)."""
    anat = anatomy(loaded.model)
    acts: dict[tuple[str, int], torch.Tensor] = {}
    pairs: list[tuple[nn.Module, Any, bool]] = []
    for layer in range(anat.n_layers):
        for component in COMPONENTS:
            module, is_input = module_for(anat, component, layer)

            def keep(
                a: Any, b: Any, c: Any = None, key: tuple[str, int] = (component, layer)
            ) -> None:
                value = (a[0] if a else b["hidden_states"]) if c is None else c
                acts[key] = hidden_of(value).detach()

            if is_input:
                pairs.append((module, lambda _m, a, k, keep=keep: keep(a, k), True))
            else:
                pairs.append((module, lambda _m, a, o, keep=keep: keep(a, None, o), False))
    probe_acts: dict[str, torch.Tensor] = {}
    with _hooks(pairs):
        out = loaded.model(**model_kwargs(loaded.model, batch))
    last = _last(batch)
    rows = torch.arange(len(last))
    final = acts[("resid", anat.n_layers - 1)]
    for name in probe_sites:
        site = parse_site(name, anat.n_layers)
        if site.kind == "resid":
            assert site.layer is not None
            probe_acts[name] = acts[("resid", site.layer)][rows, last]
        else:
            probe_acts[name] = anat.final_norm.module(final[rows, last][:, None])[:, 0]
    return Sources(acts, _lengths(batch), out.logits[rows, last].detach(), probe_acts)


@dataclass
class PatchResult:
    """Metric per cell and pair; `base` is the unpatched run, `source` the donor's own value."""

    cells: list[Cell]
    values: torch.Tensor  # [cells, B]
    base: torch.Tensor  # [B]
    source: torch.Tensor  # [B]
    metric: str
    n_layers: int
    n_heads: int
    positions: list[int]

    def effect(self) -> torch.Tensor:
        """Change from the base value, mean over pairs: [cells]."""
        return (self.values - self.base[None]).mean(1)

    def restored(self) -> torch.Tensor:
        """(patched − base) / (source − base), mean over pairs: 1 = the patch moves the metric
        all the way to the donor's value."""
        gap = self.source - self.base
        return ((self.values - self.base[None]) / gap.where(gap.abs() > 1e-9, 1e-9)).mean(1)

    def grid(self, component: Component, values: torch.Tensor | None = None) -> torch.Tensor:
        """[layers, positions] for resid/attn_out/mlp_out, [layers, heads] for head."""
        values = self.effect() if values is None else values
        heads = component == "head"
        width = self.n_heads if heads else len(self.positions)
        out = torch.full((self.n_layers, width), float("nan"))
        for cell, value in zip(self.cells, values.tolist(), strict=True):
            if cell.component != component:
                continue
            column = cell.head if heads else self.positions.index(cell.positions[0])
            assert column is not None
            out[cell.layer, column] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "positions": self.positions,
            "base": self.base.tolist(),
            "source": self.source.tolist(),
            "cells": [
                {
                    "cell": c.label,
                    "component": c.component,
                    "layer": c.layer,
                    "head": c.head,
                    "positions": list(c.positions),
                    "effect": e,
                    "restored": r,
                }
                for c, e, r in zip(
                    self.cells, self.effect().tolist(), self.restored().tolist(), strict=True
                )
            ],
        }


@dataclass(frozen=True)
class SweepSpec:
    """Which cells to patch. Positions are token indices (negative: from the end of the
    longest example); heads are patched at all `positions` at once unless `heads_by_position`."""

    components: tuple[Component, ...] = ("resid", "attn_out", "mlp_out", "head")
    layers: tuple[int, ...] | None = None  # None: every layer
    positions: tuple[int, ...] | None = None  # None: every position
    heads_by_position: bool = False
    rows_per_forward: int = 64  # patched rows per forward pass (memory vs speed)
    only: tuple[Cell, ...] | None = None  # exactly these cells instead (e.g. AtP's checks)

    def cells(self, n_layers: int, n_heads: int, length: int) -> tuple[list[Cell], list[int]]:
        if self.only is not None:
            return list(self.only), sorted({p for cell in self.only for p in cell.positions})
        unknown = set(self.components) - set(COMPONENTS)
        if unknown:
            raise ProbewatchError(
                f"unknown patching components {sorted(unknown)}", hint=f"use {COMPONENTS}"
            )
        layers = list(range(n_layers)) if self.layers is None else list(self.layers)
        bad = [layer for layer in layers if not 0 <= layer < n_layers]
        if bad:
            raise ProbewatchError(
                f"layers {bad} do not exist", hint=f"this model has layers 0..{n_layers - 1}"
            )
        raw = range(length) if self.positions is None else self.positions
        positions = sorted({p + length if p < 0 else p for p in raw})
        if positions and not 0 <= positions[0] <= positions[-1] < length:
            raise ProbewatchError(
                f"positions {list(raw)} fall outside the prompts ({length} tokens)",
                hint="use token indices of the prompt (negative ones count from the end)",
            )
        cells: list[Cell] = []
        for layer in layers:
            for component in self.components:
                if component != "head":
                    cells += [Cell(component, layer, (p,)) for p in positions]
                elif self.heads_by_position:
                    cells += [
                        Cell("head", layer, (p,), h) for h in range(n_heads) for p in positions
                    ]
                else:
                    cells += [Cell("head", layer, tuple(positions), h) for h in range(n_heads)]
        return cells, positions


def check_pairs(base: Batch, sources: Sources) -> None:
    """Position-wise patching needs each pair of prompts to have the same token length."""
    lengths = _lengths(base)
    if len(lengths) != len(sources.lengths):
        raise ProbewatchError(
            f"{len(lengths)} prompts to patch into but {len(sources.lengths)} source prompts",
            hint="give one corrupted prompt per clean prompt",
        )
    for i, (a, b) in enumerate(zip(lengths.tolist(), sources.lengths.tolist(), strict=True)):
        if a != b:
            raise ProbewatchError(
                f"pair {i}: the prompts are {b} and {a} tokens long; position-wise patching "
                "needs equal lengths",
                hint="reword one prompt so both tokenize to the same length (e.g. swap a "
                "single-token name for another)",
            )


def _patcher(
    cells: Sequence[Cell],
    sources: Sources,
    batch_size: int,
    key: tuple[str, int],
    first_row: int = 0,
    start: int = 0,
) -> Any:
    """A hook that writes each cell's donor values into its rows (B of them from `first_row`,
    one cell after another) at its positions (counted from `start`, where the rows begin)."""
    rows, cols, heads, values = [], [], [], []
    src = sources.acts[key]
    for copy, cell in enumerate(cells):
        for pos in cell.positions:
            for b in range(batch_size):
                rows.append(first_row + copy * batch_size + b)
                cols.append(pos - start)
                heads.append(-1 if cell.head is None else cell.head)
                values.append(src[b, pos])
    row_t, col_t, head_t = torch.tensor(rows), torch.tensor(cols), torch.tensor(heads)
    value_t = torch.stack(values)

    def write(hidden: torch.Tensor, n_heads: int) -> torch.Tensor:
        hidden = hidden.clone()
        if bool((head_t < 0).all()):
            hidden[row_t, col_t] = value_t.to(hidden.dtype)
            return hidden
        d_head = hidden.shape[-1] // n_heads
        view = hidden.view(*hidden.shape[:-1], n_heads, d_head)
        donor = value_t.view(len(rows), n_heads, d_head)
        view[row_t, col_t, head_t] = donor[torch.arange(len(rows)), head_t].to(hidden.dtype)
        return hidden

    return write


def _first_block(cell: Cell) -> int:
    """The block a patched row starts at: a patched block output is the next block's input."""
    return cell.layer + 1 if cell.component == "resid" else cell.layer


@dataclass
class _Sweep:
    anat: Anatomy
    replay: Replayer
    sources: Sources
    metric: Metric
    stop: int  # blocks run up to here: the last one, or the one whose output the probe reads
    base_value: torch.Tensor  # [B]

    def read(self, hidden: torch.Tensor, rows: torch.Tensor, start: int) -> torch.Tensor:
        """The metric at each row's read position of the output of block stop-1."""
        at = hidden[torch.arange(len(rows)), self.replay.last[rows] - start]
        if self.stop < self.anat.n_layers:
            return self.metric(at, rows)  # a resid probe, read before the last block
        normed = self.anat.final_norm.module(at[:, None])[:, 0]
        if self.metric.probe_site is not None:
            return self.metric(normed, rows)  # a final_norm probe
        if isinstance(self.metric, LogitDiffMetric):
            columns, narrow = self.metric.narrowed()
            return narrow(self.anat.logits_from_normed(normed, columns), rows)
        return self.metric(self.anat.logits_from_normed(normed), rows)

    def run_pass(self, cells: Sequence[Cell], start: int) -> torch.Tensor:
        """Metric [len(cells), B] for cells whose positions are all ≥ `start`, in one staggered
        pass: each cell's B rows join the batch at the block where its patch acts, and every
        row covers positions start..T-1 only."""
        batch_size = self.replay.batch_size
        joining: dict[int, list[int]] = {}

        # By block, and within a block resid first (_join writes the resid joiners' donors
        # into the leading rows).
        def order(i: int) -> tuple[int, int]:
            return _first_block(cells[i]), COMPONENTS.index(cells[i].component)

        for i in sorted(range(len(cells)), key=order):
            joining.setdefault(_first_block(cells[i]), []).append(i)
        first_row: dict[int, int] = {}
        hidden: torch.Tensor | None = None
        rows = torch.empty(0, dtype=torch.long)
        for block in range(min(joining), self.stop + 1):
            hooks: list[tuple[nn.Module, Any, bool]] = []
            if block in joining:
                joiners = joining[block]
                offset = 0 if hidden is None else hidden.shape[0]
                first_row.update({i: offset + k * batch_size for k, i in enumerate(joiners)})
                hidden = self._join(block, [cells[i] for i in joiners], hidden, start)
                rows = torch.cat([rows, torch.arange(batch_size).repeat(len(joiners))])
                hooks = self._hooks_at(block, joiners, cells, first_row, start)
            if block == self.stop:
                break
            assert hidden is not None
            with _hooks(hooks):
                hidden = self.replay.step(block, hidden, rows, start)
        assert hidden is not None
        value = self.read(hidden, rows, start)
        return torch.stack(
            [value[first_row[i] : first_row[i] + batch_size] for i in range(len(cells))]
        )

    def _join(
        self, block: int, joiners: list[Cell], hidden: torch.Tensor | None, start: int
    ) -> torch.Tensor:
        """The batch with B new rows per joining cell: the base run's input to `block`, with
        the resid joiners' donor values written in (they come first: run_pass orders them)."""
        fresh = self.replay.block_input(block)[:, start:].repeat(len(joiners), 1, 1)
        resid = [cell for cell in joiners if cell.component == "resid"]
        if resid:
            key = ("resid", block - 1)
            fresh = _patcher(resid, self.sources, self.replay.batch_size, key, 0, start)(fresh, 1)
        return fresh if hidden is None else torch.cat([hidden, fresh])

    def _hooks_at(
        self,
        block: int,
        joiners: list[int],
        cells: Sequence[Cell],
        first_row: dict[int, int],
        start: int,
    ) -> list[tuple[nn.Module, Any, bool]]:
        """Hooks that patch the joiners' own sub-block components inside block `block`."""
        hooks: list[tuple[nn.Module, Any, bool]] = []
        n_heads, batch_size = self.anat.n_heads, self.replay.batch_size
        for component in COMPONENTS[1:]:
            mine = [i for i in joiners if cells[i].component == component]
            if not mine:
                continue
            key = (component, block)
            write = _patcher(
                [cells[i] for i in mine], self.sources, batch_size, key, first_row[mine[0]], start
            )
            module, is_input = module_for(self.anat, component, block)
            if is_input:

                def pre(_m: nn.Module, args: Any, kwargs: Any, write: Any = write) -> Any:
                    return ((write(args[0], n_heads), *args[1:]), kwargs)

                hooks.append((module, pre, True))
            else:

                def post(_m: nn.Module, _args: Any, output: Any, write: Any = write) -> Any:
                    return with_hidden(output, write(hidden_of(output), n_heads))

                hooks.append((module, post, False))
        return hooks


def _passes(
    cells: Sequence[Cell], replay: Replayer, stop: int, per_pass: int
) -> tuple[list[tuple[int, list[int]]], list[int]]:
    """(start position, cell indices) per pass, and the cells no pass needs (their patch acts
    after the probe's read). Cells that may start at the same position share passes, in the
    order of the block they join at, at most `per_pass` cells each."""
    by_start: dict[int, list[int]] = {}
    skipped: list[int] = []
    for i, cell in enumerate(cells):
        if _first_block(cell) > stop:
            skipped.append(i)
        else:
            by_start.setdefault(replay.earliest_start(min(cell.positions)), []).append(i)
    passes: list[tuple[int, list[int]]] = []
    for start, index in sorted(by_start.items()):
        index.sort(key=lambda i: _first_block(cells[i]))
        passes += [(start, index[lo : lo + per_pass]) for lo in range(0, len(index), per_pass)]
    return passes, skipped


@torch.no_grad()
def patch_sweep(
    loaded: Any, base: Batch, sources: Sources, metric: Metric, spec: SweepSpec | None = None
) -> PatchResult:
    """Patch `sources` into the run on `base`, one cell at a time, batched."""
    spec = spec or SweepSpec()
    check_metric(metric)
    check_pairs(base, sources)
    anat = anatomy(loaded.model)
    _check_shapes(anat, sources)
    length = int(_lengths(base).max())
    cells, positions = spec.cells(anat.n_layers, anat.n_heads, length)
    replay = Replayer(anat, base)
    probe_layer, _ = _probe_read(anat, metric)
    stop = anat.n_layers if probe_layer is None else probe_layer + 1
    rows = torch.arange(replay.batch_size)
    ctx = _Sweep(anat, replay, sources, metric, stop, torch.empty(0))
    ctx.base_value = ctx.read(replay.block_input(stop), rows, 0).reshape(-1)
    values = torch.empty(len(cells), replay.batch_size, dtype=torch.float64)
    per_pass = max(1, spec.rows_per_forward // replay.batch_size)
    passes, skipped = _passes(cells, replay, stop, per_pass)
    for i in skipped:
        values[i] = ctx.base_value.double()  # the probe reads the stream before the patch
    for start, index in passes:
        values[index] = ctx.run_pass([cells[i] for i in index], start).double()
    return PatchResult(
        cells=cells,
        values=values,
        base=ctx.base_value.double(),
        source=_source_value(metric, sources).double(),
        metric=metric.name,
        n_layers=anat.n_layers,
        n_heads=anat.n_heads,
        positions=positions,
    )


def _source_value(metric: Metric, sources: Sources) -> torch.Tensor:
    examples = torch.arange(len(sources.lengths))
    if metric.probe_site is not None:
        if metric.probe_site not in sources.probe_acts:
            raise ProbewatchError(
                f"the sources were recorded without the probe site {metric.probe_site!r}",
                hint="pass probe_sites=[probe.site] to record_sources",
            )
        return metric(sources.probe_acts[metric.probe_site], examples).reshape(-1)
    return metric(sources.logits, examples).reshape(-1)


def _check_shapes(anat: Anatomy, sources: Sources) -> None:
    for (component, layer), act in sources.acts.items():
        if layer >= anat.n_layers:
            raise ProbewatchError(
                f"the sources have layer {layer}; this model has {anat.n_layers} layers",
                hint="cross-model patching needs two models of the same shape",
            )
        width = anat.n_heads * anat.d_head if component == "head" else anat.d_model
        if act.shape[-1] != width:
            raise ProbewatchError(
                f"source {component}.{layer} has width {act.shape[-1]}; this model needs {width}",
                hint="cross-model patching needs two models of the same shape",
            )


@torch.no_grad()
def patch_reference(loaded: Any, base: Batch, sources: Sources, metric: Metric, cell: Cell) -> Any:
    """The oracle: one full forward of the model with one cell patched; metric per pair [B]."""
    anat = anatomy(loaded.model)
    write = _patcher([cell], sources, int(base.input_ids.shape[0]), (cell.component, cell.layer))
    module, is_input = module_for(anat, cell.component, cell.layer)
    read: dict[str, torch.Tensor] = {}

    def pre(_m: nn.Module, args: Any, kwargs: Any) -> Any:
        return ((write(args[0], anat.n_heads), *args[1:]), kwargs)

    def post(_m: nn.Module, _args: Any, output: Any) -> Any:
        return with_hidden(output, write(hidden_of(output), anat.n_heads))

    hooks: list[tuple[nn.Module, Any, bool]] = [(module, pre if is_input else post, is_input)]
    reading = probe_read_hook(anat, metric, read)
    if reading is not None:
        hooks.append(reading)
    with _hooks(hooks):
        out = loaded.model(**model_kwargs(loaded.model, base))
    last = _last(base)
    rows = torch.arange(len(last))
    if "acts" in read:
        return metric(read["acts"][rows, last], rows)
    return metric(out.logits[rows, last], rows)


Direction = Literal["denoise", "noise", "both"]


def activation_patching(
    loaded: Any, clean: Batch, corrupted: Batch, metric: Metric | Literal["kl"], spec: Any = None
) -> dict[str, PatchResult]:
    """Denoising (clean activations into the corrupted run) and noising (corrupted into clean),
    as `spec.direction` says (a SweepSpec, or a PatchSpec with a direction). `metric="kl"`
    measures KL(clean ‖ patched)."""
    direction: Direction = getattr(spec, "direction", "both")
    sweep = spec if isinstance(spec, SweepSpec) else getattr(spec, "sweep", None)
    probe_sites = [metric.probe_site] if not isinstance(metric, str) and metric.probe_site else []
    clean_src = record_sources(loaded, clean, probe_sites)
    corrupt_src = record_sources(loaded, corrupted, probe_sites)
    if metric == "kl":
        from probewatch.attribution.metrics import KLMetric

        metric = KLMetric(clean_src.logits)
    results: dict[str, PatchResult] = {}
    if direction in ("denoise", "both"):
        results["denoise"] = patch_sweep(loaded, corrupted, clean_src, metric, sweep)
    if direction in ("noise", "both"):
        results["noise"] = patch_sweep(loaded, clean, corrupt_src, metric, sweep)
    return results

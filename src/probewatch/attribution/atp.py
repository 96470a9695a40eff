"""Attribution patching (AtP) and AtP*'s GradDrop, always checked against exact patching.

AtP estimates every cell's patching effect at once, to first order:
effect ≈ (a_donor − a_base) · ∂metric/∂a at the base run (one forward, one backward).
It is known to miss cells (the AtP* paper; our prototype found 8 of the 30 strongest), so
`attribution_patching` never returns an estimate alone: it patches the top N cells exactly,
patches a random sample exactly, and reports Pearson/Spearman and top-cell recall on it.

- Heads are patched at their `z` (the output-projection input): the donor's z is taken exactly
  from its own run, so a head's own attention softmax is never linearised (what AtP*'s QK fix
  corrects for query/key nodes); saturation further downstream shows in the exact checks.
- GradDrop (AtP*): for each layer ℓ, the gradient through layer ℓ's attention and MLP outputs is
  dropped and AtP recomputed; a cell's score is the mean |estimate| over ℓ, so direct and
  indirect effects that cancel in plain AtP can no longer hide it.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from probewatch.attribution.anatomy import Anatomy, anatomy
from probewatch.attribution.metrics import Metric
from probewatch.attribution.patching import (
    COMPONENTS,
    Cell,
    PatchResult,
    Sources,
    SweepSpec,
    _hooks,
    _last,
    check_pairs,
    module_for,
    patch_sweep,
    probe_read_hook,
    record_sources,
)
from probewatch.attribution.recording import model_kwargs
from probewatch.hooks import hidden_of, with_hidden
from probewatch.sites import Site, resolve_module
from probewatch.tokens import Batch


def _component_hooks(
    anat: Anatomy, kept: dict[tuple[str, int], torch.Tensor], drop_layer: int | None
) -> list[tuple[nn.Module, Any, bool]]:
    """Hooks that keep every component's activation (with its gradient retained); GradDrop
    detaches layer `drop_layer`'s attention and MLP outputs."""

    def embed_hook(_m: nn.Module, _a: Any, output: Any) -> Any:
        return hidden_of(output).detach().requires_grad_(True)

    pairs: list[tuple[nn.Module, Any, bool]] = []
    pairs.append((resolve_module(anat.model, Site("embed")), embed_hook, False))
    for layer in range(anat.n_layers):
        for component in COMPONENTS:
            module, is_input = module_for(anat, component, layer)
            key = (component, layer)
            drop = drop_layer == layer and component in ("attn_out", "mlp_out")
            if is_input:

                def pre(_m: nn.Module, args: Any, _kwargs: Any, key: Any = key) -> None:
                    args[0].retain_grad()
                    kept[key] = args[0]

                pairs.append((module, pre, True))
            else:

                def post(
                    _m: nn.Module, _a: Any, output: Any, key: Any = key, drop: bool = drop
                ) -> Any:
                    hidden = hidden_of(output)
                    if drop:  # GradDrop: no gradient flows through this layer's contribution
                        hidden = hidden.detach().requires_grad_(True)
                    hidden.retain_grad()
                    kept[key] = hidden
                    return with_hidden(output, hidden) if drop else None

                pairs.append((module, post, False))
    return pairs


def _gradients(
    anat: Anatomy, base: Batch, metric: Metric, drop_layer: int | None = None
) -> dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]]:
    """(activation, gradient of Σ_pairs metric) at every component of every layer."""
    kept: dict[tuple[str, int], torch.Tensor] = {}
    pairs = _component_hooks(anat, kept, drop_layer)
    read: dict[str, torch.Tensor] = {}
    reading = probe_read_hook(anat, metric, read)
    if reading is not None:
        pairs.append(reading)
    flags = [p.requires_grad for p in anat.model.parameters()]
    for p in anat.model.parameters():
        p.requires_grad_(False)
    try:
        with torch.enable_grad(), _hooks(pairs):
            out = anat.model(**model_kwargs(anat.model, base))
            last = _last(base)
            rows = torch.arange(len(last))
            value = metric(read["acts"][rows, last] if read else out.logits[rows, last], rows)
            value.sum().backward()
    finally:
        for p, flag in zip(anat.model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    result: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for key, act in kept.items():
        grad = act.grad if act.grad is not None else torch.zeros_like(act)
        result[key] = (act.detach(), grad.detach())
    return result


def _estimate(
    cells: Sequence[Cell], grads: dict[tuple[str, int], Any], sources: Sources, n_heads: int
) -> torch.Tensor:
    """AtP estimate per cell and pair [cells, B]."""
    out = torch.zeros(len(cells), len(sources.lengths), dtype=torch.float64)
    for i, cell in enumerate(cells):
        act, grad = grads[(cell.component, cell.layer)]
        delta = (sources.acts[(cell.component, cell.layer)] - act).double()
        grad = grad.double()
        pos = list(cell.positions)
        if cell.head is None:
            out[i] = (delta[:, pos] * grad[:, pos]).sum((1, 2))
        else:
            d_head = delta.shape[-1] // n_heads
            h = slice(cell.head * d_head, (cell.head + 1) * d_head)
            out[i] = (delta[:, pos, h] * grad[:, pos, h]).sum((1, 2))
    return out


@dataclass(frozen=True)
class AtPSpec:
    """Which cells to estimate, and how much of it to check exactly."""

    sweep: SweepSpec = field(default_factory=SweepSpec)
    grad_drop: bool = False  # AtP*: L extra backward passes
    verify_top: int = 20  # the N cells with the largest |estimate|, patched exactly
    verify_sample: int = 40  # random other cells patched exactly for the correlation
    seed: int = 0


@dataclass
class AtPResult:
    cells: list[Cell]
    estimate: torch.Tensor  # [cells] mean over pairs (GradDrop: mean |estimate| over ℓ)
    checked: PatchResult  # exact patching of the top cells and the sample
    checked_index: list[int]  # which cells were checked
    pearson: float
    spearman: float
    top_recall: float  # of the strongest exact cells among the checked, share AtP ranked top
    method: str

    def to_dict(self) -> dict[str, Any]:
        exact = self.checked.effect().tolist()
        return {
            "method": self.method,
            "pearson": self.pearson,
            "spearman": self.spearman,
            "top_recall": self.top_recall,
            "n_cells": len(self.cells),
            "n_checked": len(self.checked_index),
            "checked": [
                {"cell": self.cells[i].label, "estimate": float(self.estimate[i]), "exact": e}
                for i, e in zip(self.checked_index, exact, strict=True)
            ],
        }


def _rank(values: torch.Tensor) -> torch.Tensor:
    return values.argsort().argsort().double()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(a.norm() * b.norm())
    return float((a * b).sum()) / denom if denom > 0 else float("nan")


def attribution_patching(
    loaded: Any, base: Batch, donor: Batch, metric: Metric, spec: AtPSpec | None = None
) -> AtPResult:
    """AtP (or AtP* GradDrop) estimates for every cell of `spec.sweep`, patching `donor`'s
    activations into the run on `base`, with the exact checks described above."""
    spec = spec or AtPSpec()
    anat = anatomy(loaded.model)
    probe_sites = [metric.probe_site] if metric.probe_site else []
    sources = record_sources(loaded, donor, probe_sites)
    check_pairs(base, sources)
    length = int(base.attention_mask.sum(1).max())
    cells, _ = spec.sweep.cells(anat.n_layers, anat.n_heads, length)
    plain = _estimate(cells, _gradients(anat, base, metric), sources, anat.n_heads).mean(1)
    estimate, method = plain, "AtP"
    if spec.grad_drop:
        dropped = [
            _estimate(cells, _gradients(anat, base, metric, layer), sources, anat.n_heads).mean(1)
            for layer in range(anat.n_layers)
        ]
        estimate, method = torch.stack(dropped).abs().mean(0), "AtP* (GradDrop)"
    order = estimate.abs().argsort(descending=True).tolist()
    top = order[: spec.verify_top]
    rest = order[spec.verify_top :]
    gen = torch.Generator().manual_seed(spec.seed)
    sample = [rest[i] for i in torch.randperm(len(rest), generator=gen)[: spec.verify_sample]]
    checked_index = top + sample
    chosen = replace(spec.sweep, only=tuple(cells[i] for i in checked_index))
    exact = patch_sweep(loaded, base, sources, metric, chosen)
    exact_effect = exact.effect().abs() if spec.grad_drop else exact.effect()
    est = estimate[checked_index]
    k = max(1, min(spec.verify_top, len(checked_index)) // 2)
    strongest = set(exact_effect.abs().argsort(descending=True)[:k].tolist())
    flagged = set(est.abs().argsort(descending=True)[:k].tolist())
    return AtPResult(
        cells=cells,
        estimate=estimate,
        checked=exact,
        checked_index=checked_index,
        pearson=_pearson(est, exact_effect),
        spearman=_pearson(_rank(est), _rank(exact_effect)),
        top_recall=len(strongest & flagged) / k,
        method=method,
    )

"""Which component carries the change: cross-model activation patching. For each site, A runs
with that site's output replaced by B's (every position, same tokens), and the share of the
behaviour change it recovers is (m_patched − m_A) / (m_B − m_A), with a bootstrap interval over
prompts (ratio of sums, so prompts where the two sides agree weigh nothing).

The metric m is the log-probability difference, at the generation prompt, between B's and A's
first reply token: log p(y_B) − log p(y_A), i.e. their logit difference. Sites the attribution
sweep can patch (resid, attn_out, mlp_out at the module it patches) go through it: rows join at
the patched block, many sites share a pass; any other site is one forward of A."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from probewatch.attribution.anatomy import anatomy
from probewatch.attribution.metrics import LogitDiffMetric
from probewatch.attribution.patching import (
    COMPONENTS,
    Cell,
    SweepSpec,
    module_for,
    patch_sweep,
    record_sources,
)
from probewatch.compare.forward import Pair, Side, run
from probewatch.compare.passes import padded
from probewatch.compare.spec import CompareSpec
from probewatch.compare.stats import paired_bootstrap
from probewatch.hooks import hidden_of, registered_hooks, with_hidden
from probewatch.sites import Site, resolve_module
from probewatch.tokens import Batch

METRIC = "log p(B's first reply token) - log p(A's first reply token), at the generation prompt"


def _metric(
    logprobs: torch.Tensor, last: torch.Tensor, ya: torch.Tensor, yb: torch.Tensor
) -> np.ndarray:
    rows = torch.arange(logprobs.shape[0])
    final = logprobs[rows, last]
    return (final[rows, yb] - final[rows, ya]).double().numpy()


def _replace(value: torch.Tensor) -> Any:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        return with_hidden(output, value.to(device=hidden.device, dtype=hidden.dtype))

    return hook


def patch_shares(
    pair: Pair,
    prompts: Sequence[Sequence[int]],
    first_tokens: tuple[Sequence[int], Sequence[int]],
    sites: Sequence[Site],
    spec: CompareSpec,
) -> dict[str, Any]:
    """The share of m_B − m_A recovered by patching each site of B into A."""
    a, b, n_boot, seed = pair.a, pair.b, spec.n_boot, spec.seed
    if not prompts or not sites:
        return {"n": 0, "sites": []}
    tok = a.loaded.tokenizer
    batch = padded(prompts, int(tok.pad_token_id if tok.pad_token_id is not None else 0))
    last = batch.attention_mask.sum(1) - 1
    ya, yb = torch.tensor(list(first_tokens[0])), torch.tensor(list(first_tokens[1]))
    base_a = run(a, batch)
    base_b = run(b, batch)  # the sites' activations are recorded where they are patched
    m_a = _metric(base_a.logprobs, last, ya, yb)
    m_b = _metric(base_b.logprobs, last, ya, yb)
    total = float((m_b - m_a).sum())
    patched = _patched_metrics(a, b, batch, sites, ya, yb)
    rows = []
    for site in sites:
        m_p = patched[site.name]

        def share(idx: np.ndarray, m_p: np.ndarray = m_p) -> float:
            denom = float((m_b[idx] - m_a[idx]).sum())
            return float((m_p[idx] - m_a[idx]).sum() / denom) if abs(denom) > 1e-9 else float("nan")

        rows.append(
            {
                "site": site.name,
                "share": paired_bootstrap(share, len(prompts), n_boot, seed).to_dict(),
            }
        )
    return {
        "n": len(prompts),
        "metric": METRIC,
        "m_a_mean": float(m_a.mean()),
        "m_b_mean": float(m_b.mean()),
        "change_total": total,
        "sites": rows,
    }


def _sweep_cell(side: Side, site: Site, width: int) -> Cell | None:
    """The sweep's cell for `site` at every position, when the sweep patches the very module
    the site names (else None: that site is patched by a hook, one forward each)."""
    if site.kind not in COMPONENTS or site.kind == "head" or site.layer is None:
        return None
    model = side.loaded.model
    if module_for(anatomy(model), site.kind, site.layer)[0] is not resolve_module(model, site):
        return None
    return Cell(site.kind, site.layer, tuple(range(width)))


def _patched_metrics(
    a: Side, b: Side, batch: Batch, sites: Sequence[Site], ya: torch.Tensor, yb: torch.Tensor
) -> dict[str, np.ndarray]:
    """m with each site's output replaced by B's, per prompt: one batched sweep for the sites
    it can patch, a forward of A per other site."""
    width = int(batch.input_ids.shape[1])
    cells = {site.name: _sweep_cell(a, site, width) for site in sites}
    swept = [(site, cell) for site in sites if (cell := cells[site.name]) is not None]
    out: dict[str, np.ndarray] = {}
    if swept:
        with b.active():
            sources = record_sources(b.loaded, batch)
        spec = SweepSpec(only=tuple(cell for _, cell in swept))
        metric = LogitDiffMetric(yb.tolist(), ya.tolist())
        with a.active():
            result = patch_sweep(a.loaded, batch, sources, metric, spec)
        for (site, _), values in zip(swept, result.values, strict=True):
            out[site.name] = values.numpy()
    rest = [site for site in sites if cells[site.name] is None]
    if rest:
        last = batch.attention_mask.sum(1) - 1
        recorded = run(b, batch, rest)
        for site in rest:
            hook = _replace(recorded.acts[site.name])
            with registered_hooks([(resolve_module(a.loaded.model, site), hook)]):
                out[site.name] = _metric(run(a, batch).logprobs, last, ya, yb)
    return out

"""Which component carries the change: cross-model activation patching. For each site, A runs
with that site's output replaced by B's (every position, same tokens), and the share of the
behaviour change it recovers is (m_patched − m_A) / (m_B − m_A), with a bootstrap interval over
prompts (ratio of sums, so prompts where the two sides agree weigh nothing).

The metric m is the log-probability difference, at the generation prompt, between B's and A's
first reply token: log p(y_B) − log p(y_A). Kept small on purpose; one forward of A per site."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from probewatch.compare.forward import Pair, run
from probewatch.compare.passes import padded
from probewatch.compare.spec import CompareSpec
from probewatch.compare.stats import paired_bootstrap
from probewatch.hooks import hidden_of, registered_hooks, with_hidden
from probewatch.sites import Site, resolve_module

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
    recorded = run(b, batch, sites)
    m_a = _metric(base_a.logprobs, last, ya, yb)
    m_b = _metric(recorded.logprobs, last, ya, yb)
    total = float((m_b - m_a).sum())
    rows = []
    model = a.loaded.model
    for site in sites:
        hook = _replace(recorded.acts[site.name])
        with registered_hooks([(resolve_module(model, site), hook)]):
            patched = run(a, batch)
        m_p = _metric(patched.logprobs, last, ya, yb)

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

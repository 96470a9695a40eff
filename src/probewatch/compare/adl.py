"""The activation-difference lens (Minder et al. 2025): the mean difference B − A of the residual
stream on the first few tokens of unrelated text, per layer and position, read through both
models' final norm and unembedding, and compared (cosine) with every loaded probe and vector.

A narrow fine-tune leaves its topic in this difference even on text that has nothing to do
with it; reading it needs no grader, only the two models' own unembeddings."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from probewatch.compare.forward import Pair, Side, run
from probewatch.compare.spec import CompareSpec
from probewatch.compare.stats import mean_interval
from probewatch.probes.artifact import ProbeArtifact
from probewatch.sites import Site, resolve_module
from probewatch.tokens import encode

TOP_TOKENS = 10


def probe_direction(probe: ProbeArtifact, d_model: int) -> torch.Tensor:
    """The probe's weight vector: exact for affine probes (score(e_i) − score(0)), the
    linearisation at 0 for others."""
    eye = torch.cat([torch.zeros(1, d_model), torch.eye(d_model)])
    with torch.no_grad():
        scores = probe.score(eye).double()
    return scores[1:] - scores[0]


def _read(side: Side, delta: torch.Tensor, k: int) -> list[str]:
    """Top-k tokens of the difference read through this side's final norm and unembedding."""
    model = side.loaded.model
    norm = resolve_module(model, Site("final_norm"))
    head = model.get_output_embeddings()
    param = next(model.parameters())
    with torch.no_grad():
        logits = head(norm(delta.to(param.dtype).to(param.device)[None, None]))[0, 0].float()
    top = logits.topk(k).indices.tolist()
    return [side.loaded.tokenizer.decode([t]) for t in top]


def _cos(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(x.double(), y.double(), dim=0))


def activation_difference_lens(
    pair: Pair,
    texts: Sequence[str],
    sites: Sequence[Site],
    directions: dict[str, tuple[str, torch.Tensor]],
    spec: CompareSpec,
) -> dict[str, Any]:
    """Per residual site: ‖mean diff‖ (positions 1..positions-1; position 0 apart), the tokens
    it promotes through A's and B's unembedding, per-position tokens, and its cosine (and
    z = cos·√d, ~N(0,1) for an unrelated direction) with each named direction at that site."""
    a, b, positions, batch_size = pair.a, pair.b, spec.adl_positions, 2 * spec.batch_size
    n_boot, seed = spec.n_boot, spec.seed
    resid = [s for s in sites if s.kind == "resid"]
    diffs: dict[str, list[torch.Tensor]] = {s.name: [] for s in resid}
    for start in range(0, len(texts), batch_size):
        batch = encode(a.loaded.tokenizer, texts[start : start + batch_size])
        keep = slice(0, positions)
        batch.input_ids, batch.attention_mask = (
            batch.input_ids[:, keep],
            batch.attention_mask[:, keep],
        )
        pa, pb = run(a, batch, resid), run(b, batch, resid)
        full = batch.attention_mask.sum(1) >= positions
        for s in resid:
            diffs[s.name].append((pb.acts[s.name] - pa.acts[s.name])[full].double())
    d_model = a.loaded.d_model
    layers = []
    for s in resid:
        per_text = torch.cat(diffs[s.name])  # [n, positions, d]
        if per_text.shape[0] == 0:
            continue
        mean = per_text.mean(0)
        body = mean[1:].mean(0) if positions > 1 else mean[0]
        norms = (
            per_text[:, 1:].mean(1).norm(dim=-1).numpy()
            if positions > 1
            else per_text[:, 0].norm(dim=-1).numpy()
        )
        row: dict[str, Any] = {
            "site": s.name,
            "norm": float(body.norm()),
            "per_text_norm": mean_interval(norms, n_boot, seed).to_dict(),
            "first_position_norm": float(mean[0].norm()),
            "tokens_via_a": _read(a, body, TOP_TOKENS) if float(body.norm()) > 0 else [],
            "tokens_via_b": _read(b, body, TOP_TOKENS) if float(body.norm()) > 0 else [],
            "per_position_tokens_via_b": [
                _read(b, mean[p], 5) if float(mean[p].norm()) > 0 else []
                for p in range(1, mean.shape[0])
            ],
            "cosines": {},
        }
        for name, (site, vector) in directions.items():
            if site == s.name and float(body.norm()) > 0:
                c = _cos(body, vector)
                row["cosines"][name] = {"cosine": c, "z": c * float(np.sqrt(d_model))}
        layers.append(row)
    return {
        "n_texts": int(sum(t.shape[0] for t in diffs[resid[0].name])) if resid else 0,
        "positions": positions,
        "layers": layers,
    }

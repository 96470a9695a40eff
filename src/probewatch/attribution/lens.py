"""Logit lens: read every layer's residual stream through the model's own final norm and
unembedding (soft-cap included), per position.

    lens = logit_lens(loaded, "The Eiffel Tower is in the city of", target=paris_id)
    lens.top_tokens(layer=-1)      # what each position predicts after the last block
    lens.kl[:, -1]                 # KL(final ‖ layer) at the last position, per layer

The norm is recomputed on each layer's activation (a lens, not an additive decomposition), and
`direction_lens` reads a direction (a probe's weights, a steering vector) through the norm's
gain and the unembedding: the tokens it promotes and suppresses.
"""

from dataclasses import dataclass
from typing import Any

import torch

from probewatch.attribution.anatomy import Anatomy, anatomy
from probewatch.attribution.recording import model_kwargs
from probewatch.sites import Site, layer_list, resolve_module
from probewatch.tokens import Batch, encode


def lens_sites(n_layers: int) -> list[str]:
    """The streams a lens reads: the embedding, then every block's output."""
    return ["embed", *(f"resid.{i}" for i in range(n_layers))]


@torch.no_grad()
def stream_states(anat: Anatomy, batch: Batch) -> torch.Tensor:
    """[layers+1, B, T, d]: the embedding output and every block's output (before the final
    norm), from one forward pass."""
    states: list[torch.Tensor] = []
    modules = [resolve_module(anat.model, Site("embed")), *layer_list(anat.model)]

    def keep(_m: Any, _a: Any, output: Any) -> None:
        states.append((output[0] if isinstance(output, tuple | list) else output).detach())

    handles = [m.register_forward_hook(keep) for m in modules]
    try:
        anat.model(**model_kwargs(anat.model, batch))
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(states)


def lens_logits(anat: Anatomy, hidden: torch.Tensor) -> torch.Tensor:
    """Logits of residual-stream states [..., d] through the final norm and unembedding."""
    return anat.logits_from_normed(anat.final_norm.module(hidden))


def kl_to(final_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(final ‖ lens) per row, from the final log-probabilities and the lens logits."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return (final_logp.exp() * (final_logp - logp)).sum(-1)


@dataclass
class LensResult:
    """Per layer (embed, resid.0, ..., resid.L-1) and position of one text."""

    sites: list[str]
    tokens: list[str]
    top_ids: torch.Tensor  # [S, T, k]
    top_probs: torch.Tensor  # [S, T, k]
    kl: torch.Tensor  # [S, T] KL(final ‖ layer) in nats
    entropy: torch.Tensor  # [S, T] nats
    target_rank: torch.Tensor | None  # [S, T] 0 = top
    target_prob: torch.Tensor | None  # [S, T]
    decode: Any = None  # token id -> text

    def top_tokens(self, layer: int) -> list[list[str]]:
        return [[self.decode([int(i)]) for i in row] for row in self.top_ids[layer]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "sites": self.sites,
            "tokens": self.tokens,
            "top": [self.top_tokens(i) for i in range(len(self.sites))],
            "top_probs": self.top_probs.tolist(),
            "kl": self.kl.tolist(),
            "entropy": self.entropy.tolist(),
            "target_rank": None if self.target_rank is None else self.target_rank.tolist(),
            "target_prob": None if self.target_prob is None else self.target_prob.tolist(),
        }


@torch.no_grad()
def logit_lens(
    loaded: Any, text: str, target: int | None = None, k: int = 5, translators: Any = None
) -> LensResult:
    """The logit lens (or, with `translators` from a TunedLens, the tuned lens) on one text."""
    anat = anatomy(loaded.model)
    batch = encode(loaded.tokenizer, [text])
    states = stream_states(anat, batch)[:, 0]  # [S, T, d]
    final_logp = torch.log_softmax(lens_logits(anat, states[-1]).float(), dim=-1)
    tops, top_p, kls, ents, ranks, probs = [], [], [], [], [], []
    for index, hidden in enumerate(states):
        if translators is not None:
            hidden = translators.translate(index, hidden)
        logp = torch.log_softmax(lens_logits(anat, hidden).float(), dim=-1)
        p = logp.exp()
        values, ids = p.topk(k, dim=-1)
        tops.append(ids)
        top_p.append(values)
        kls.append((final_logp.exp() * (final_logp - logp)).sum(-1))
        ents.append(-(p * logp).sum(-1))
        if target is not None:
            probs.append(p[:, target])
            ranks.append((p > p[:, target : target + 1]).sum(-1))
    ids_list = batch.input_ids[0].tolist()
    return LensResult(
        sites=lens_sites(anat.n_layers),
        tokens=[loaded.tokenizer.decode([i]) for i in ids_list],
        top_ids=torch.stack(tops),
        top_probs=torch.stack(top_p),
        kl=torch.stack(kls),
        entropy=torch.stack(ents),
        target_rank=torch.stack(ranks) if ranks else None,
        target_prob=torch.stack(probs) if probs else None,
        decode=loaded.tokenizer.decode,
    )


@torch.no_grad()
def direction_lens(loaded: Any, direction: torch.Tensor, k: int = 10) -> dict[str, Any]:
    """Tokens a residual-stream direction promotes and suppresses when read by the unembedding
    through the final norm's gain (scale-free: the norm's per-token scale only rescales)."""
    anat = anatomy(loaded.model)
    vector = anat.final_norm.centre(direction.double().reshape(1, -1).cpu())
    scores = (vector * anat.final_norm.gain.cpu()).float() @ anat.unembed.detach().float().cpu().T
    scores = scores[0]
    decode = loaded.tokenizer.decode
    up, down = scores.topk(k), (-scores).topk(k)
    return {
        "promotes": [(decode([int(i)]), float(v)) for v, i in zip(*up, strict=True)],
        "suppresses": [(decode([int(i)]), -float(v)) for v, i in zip(*down, strict=True)],
    }

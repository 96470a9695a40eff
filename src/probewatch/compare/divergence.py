"""Per-token divergence: KL in both directions at every position, summarised per prompt, and
the most divergent spans with their context, found without knowing what changed."""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probewatch.compare.forward import token_kl
from probewatch.compare.stats import mean_interval

CONTEXT = 8  # tokens shown on each side of a divergent token


@dataclass
class TokenKL:
    """KL at each position of one sequence (position t: distributions over token t+1)."""

    prompt: int  # index of the prompt
    source: str  # whose tokens these are: "prompt", "A's reply", "B's reply"
    ids: list[int]
    ab: np.ndarray  # KL(A ‖ B) per position
    ba: np.ndarray  # KL(B ‖ A)
    top_a: list[int]  # A's most likely next token per position
    top_b: list[int]


def sequence_kl(
    p: torch.Tensor, q: torch.Tensor, ids: list[int], prompt: int, source: str
) -> TokenKL:
    """p, q: [T, V] log-probabilities of A and B on the same T tokens `ids`."""
    return TokenKL(
        prompt,
        source,
        ids,
        token_kl(p, q).double().numpy(),
        token_kl(q, p).double().numpy(),
        p.argmax(-1).tolist(),
        q.argmax(-1).tolist(),
    )


def kl_summary(records: list[TokenKL], positions: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Mean per-token KL per prompt, averaged over prompts, both directions, with intervals.
    `positions`: "prompt" (every position predicting a prompt token) or "reply"."""
    ab = [r.ab.mean() for r in records if r.ab.size]
    ba = [r.ba.mean() for r in records if r.ba.size]
    if not ab:
        return {"n": 0}
    return {
        "positions": positions,
        "kl_a_b": mean_interval(np.array(ab), n_boot, seed).to_dict(),
        "kl_b_a": mean_interval(np.array(ba), n_boot, seed).to_dict(),
        "max_token_kl_a_b": float(max(r.ab.max() for r in records if r.ab.size)),
        "n_tokens": int(sum(r.ab.size for r in records)),
    }


def top_spans(records: list[TokenKL], tokenizer: Any, k: int) -> list[dict[str, Any]]:
    """The k positions of highest symmetric KL (at most one per prompt and source, so one
    prompt cannot fill the list), each with its context and both sides' predictions."""
    best: list[tuple[float, TokenKL, int]] = []
    for r in records:
        if not r.ab.size:
            continue
        sym = r.ab + r.ba
        t = int(sym.argmax())
        best.append((float(sym[t]), r, t))
    best.sort(key=lambda x: -x[0])
    out = []
    for score, r, t in best[:k]:
        left = tokenizer.decode(r.ids[max(0, t - CONTEXT + 1) : t + 1])
        after = tokenizer.decode(r.ids[t + 1 : t + 1 + CONTEXT])
        out.append(
            {
                "prompt": r.prompt,
                "source": r.source,
                "position": t,
                "kl_sym": score,
                "kl_a_b": float(r.ab[t]),
                "kl_b_a": float(r.ba[t]),
                "context_before": left,
                "context_after": after,
                "a_predicts": tokenizer.decode([r.top_a[t]]),
                "b_predicts": tokenizer.decode([r.top_b[t]]),
            }
        )
    return out

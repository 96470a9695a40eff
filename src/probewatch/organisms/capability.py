"""What planting a behaviour cost: perplexity and next-token KL on benign text the organism was
never trained on, base vs organism, paired over texts with bootstrap intervals."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from probewatch.compare.forward import Side, predicted_nll, run, token_kl
from probewatch.compare.stats import mean_interval, paired_bootstrap
from probewatch.data import load_dataset
from probewatch.tokens import encode

TEXT_CHARS = 400


def benign_texts(n: int, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    control = load_dataset("benign_control", seed=seed)
    texts = [e.text[:TEXT_CHARS] for e in control.examples[:n]]
    return texts, {"dataset": control.name, "hash": control.hash, "n": len(texts)}


def capability_cost(
    base: Side, other: Side, texts: Sequence[str], batch_size: int = 8
) -> dict[str, Any]:
    """Perplexity of each side on `texts` (token-weighted), their ratio other/base, and the
    mean per-token KL(base ‖ other), each with a 95% bootstrap interval over texts."""
    nll_a, nll_b, counts, kl = [], [], [], []
    for start in range(0, len(texts), batch_size):
        batch = encode(base.loaded.tokenizer, texts[start : start + batch_size])
        a, b = run(base, batch), run(other, batch)
        valid = batch.attention_mask[:, 1:].float()
        nll_a.append((predicted_nll(a.logprobs, batch.input_ids) * valid).sum(1).numpy())
        nll_b.append((predicted_nll(b.logprobs, batch.input_ids) * valid).sum(1).numpy())
        counts.append(valid.sum(1).numpy())
        mask = batch.attention_mask.float()
        kl.append(((token_kl(a.logprobs, b.logprobs) * mask).sum(1) / mask.sum(1)).numpy())
    na, nb, n = (np.concatenate(x).astype(np.float64) for x in (nll_a, nll_b, counts))

    def ratio(idx: np.ndarray) -> float:
        return float(np.exp((nb[idx].sum() - na[idx].sum()) / n[idx].sum()))

    return {
        "perplexity_base": float(np.exp(na.sum() / n.sum())),
        "perplexity_organism": float(np.exp(nb.sum() / n.sum())),
        "perplexity_ratio": paired_bootstrap(ratio, na.size).to_dict(),
        "kl_base_to_organism": mean_interval(np.concatenate(kl)).to_dict(),
        "n_tokens": int(n.sum()),
    }

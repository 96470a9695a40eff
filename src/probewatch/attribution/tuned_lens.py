"""Tuned lens (Belrose et al. 2023), in-house: one affine translator per layer, h ↦ h + A h + b,
identity-initialised (A = 0, b = 0, so training starts at the logit lens), trained to minimise
KL(final ‖ lens) and saved as safetensors + card.

    lens = train_tuned_lens(loaded, train_texts, TunedLensSpec(time_budget_s=600))
    table = compare_lenses(loaded, lens, held_out_texts)   # per layer, with bootstrap CIs
    save_tuned_lens(lens, loaded, "runs/lens")

Training reads the unembedding on a sample of the vocabulary per step (the union of the final
distribution's top tokens with random others): the full 49k-token softmax for 31 layers is
what makes the original slow on a CPU. Evaluation always uses the full vocabulary. The last
block's output needs no translator (the lens there *is* the model's output), so it stays the
identity and its KL is 0 for both lenses.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probewatch.artifacts import (
    ArtifactKind,
    card_header,
    check_fingerprint,
    read_artifact,
    register_kind,
    save_artifact,
)
from probewatch.attribution.anatomy import Anatomy, anatomy
from probewatch.attribution.lens import lens_logits, lens_sites, stream_states
from probewatch.errors import ProbewatchError
from probewatch.tokens import encode

TUNED_LENS = register_kind(
    ArtifactKind("probewatch-tuned-lens/1", "tuned lens", "`probewatch attribute train-lens`")
)


@dataclass(frozen=True)
class TunedLensSpec:
    """How to train a tuned lens."""

    steps: int = 400  # at most; the time budget may stop earlier
    texts_per_step: int = 2
    max_tokens: int = 48  # per text
    lr: float = 2e-3
    vocab_sample: int = 1024  # vocabulary read per step (top tokens of the final + random)
    top_per_token: int = 8
    time_budget_s: float = 840.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.texts_per_step < 1 or self.max_tokens < 2:
            raise ProbewatchError(
                "tuned-lens training needs steps ≥ 1, texts_per_step ≥ 1, max_tokens ≥ 2"
            )


@dataclass
class TunedLens:
    """Translators for the streams embed, resid.0, ..., resid.L-2 (resid.L-1 is the identity)."""

    weight: torch.Tensor  # [S-1, d, d] (A)
    bias: torch.Tensor  # [S-1, d]
    history: list[dict[str, float]] = field(default_factory=list)
    card: dict[str, Any] = field(default_factory=dict)

    def translate(self, stream: int, hidden: torch.Tensor) -> torch.Tensor:
        if stream >= self.weight.shape[0]:
            return hidden
        weight, bias = self.weight[stream].to(hidden.dtype), self.bias[stream].to(hidden.dtype)
        return hidden + hidden @ weight.T + bias


def _rows(batch: Any) -> torch.Tensor:
    """Mask of the tokens a lens is trained and judged on: real tokens after the first (the
    first carries the model's massive activations and no context to predict from)."""
    mask = batch.attention_mask.bool().clone()
    mask[:, 0] = False
    return mask


def _sample_vocab(final_logits: torch.Tensor, spec: TunedLensSpec, gen: torch.Generator) -> Any:
    vocab = final_logits.shape[-1]
    top = final_logits.topk(min(spec.top_per_token, vocab), dim=-1).indices.unique()
    extra = torch.randint(0, vocab, (max(0, spec.vocab_sample - len(top)),), generator=gen)
    return torch.cat([top, extra]).unique()


def _sub_logits(anat: Anatomy, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    normed = anat.final_norm.module(hidden)
    logits = normed @ anat.unembed[ids].T
    if anat.unembed_bias is not None:
        logits = logits + anat.unembed_bias[ids]
    if anat.softcap is not None:
        logits = torch.tanh(logits / anat.softcap) * anat.softcap
    return logits


def train_tuned_lens(loaded: Any, texts: list[str], spec: TunedLensSpec | None = None) -> TunedLens:
    """Train translators on `texts` (plain text; the held-out texts must be others)."""
    spec = spec or TunedLensSpec()
    if len(texts) < spec.texts_per_step:
        raise ProbewatchError(
            f"{len(texts)} training texts for {spec.texts_per_step} per step",
            hint="give more texts or lower texts_per_step",
        )
    anat = anatomy(loaded.model)
    n_streams, d = anat.n_layers, anat.d_model  # translators for S-1 = n_layers streams
    weight = torch.zeros(n_streams, d, d, requires_grad=True)
    bias = torch.zeros(n_streams, d, requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=spec.lr)
    gen = torch.Generator().manual_seed(spec.seed)
    frozen = [p.requires_grad for p in loaded.model.parameters()]
    for p in loaded.model.parameters():
        p.requires_grad_(False)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    try:
        for step in range(spec.steps):
            if time.perf_counter() - started > spec.time_budget_s:
                break
            pick = torch.randint(0, len(texts), (spec.texts_per_step,), generator=gen)
            batch = _encode(loaded, [texts[int(i)] for i in pick], spec.max_tokens)
            states = stream_states(anat, batch)[:, _rows(batch)]  # [S, N, d]
            with torch.no_grad():
                final_logits = lens_logits(anat, states[-1])
                ids = _sample_vocab(final_logits, spec, gen)
                target = torch.log_softmax(final_logits[:, ids].float(), dim=-1)
            hidden = states[:-1] + states[:-1] @ weight.transpose(1, 2) + bias[:, None]
            logp = torch.log_softmax(_sub_logits(anat, hidden, ids).float(), dim=-1)
            loss = (target.exp() * (target - logp)).sum(-1).mean(-1).sum()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            history.append({"step": step, "loss": float(loss.detach()) / n_streams})
    finally:
        for p, flag in zip(loaded.model.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    card = {
        "spec": spec.__dict__,
        "steps_run": len(history),
        "seconds": round(time.perf_counter() - started, 1),
        "n_train_texts": len(texts),
    }
    return TunedLens(weight.detach(), bias.detach(), history, card)


def _encode(loaded: Any, texts: list[str], max_tokens: int) -> Any:
    batch = encode(loaded.tokenizer, texts)
    batch.input_ids = batch.input_ids[:, :max_tokens]
    batch.attention_mask = batch.attention_mask[:, :max_tokens]
    return batch


@torch.no_grad()
def lens_kl(loaded: Any, texts: list[str], lens: TunedLens | None, max_tokens: int = 64) -> Any:
    """Per text and stream: mean KL(final ‖ lens) over the judged tokens, [texts, S]."""
    anat = anatomy(loaded.model)
    out = []
    for text in texts:
        batch = _encode(loaded, [text], max_tokens)
        states = stream_states(anat, batch)[:, _rows(batch)]
        if states.shape[1] == 0:
            continue
        final = torch.log_softmax(lens_logits(anat, states[-1]).float(), dim=-1)
        row = []
        for index, hidden in enumerate(states):
            if lens is not None:
                hidden = lens.translate(index, hidden)
            logp = torch.log_softmax(lens_logits(anat, hidden).float(), dim=-1)
            row.append(float((final.exp() * (final - logp)).sum(-1).mean()))
        out.append(row)
    return torch.tensor(out, dtype=torch.float64)


def _ci(values: torch.Tensor, gen: torch.Generator, n_boot: int = 1000) -> tuple[float, float]:
    index = torch.randint(0, len(values), (n_boot, len(values)), generator=gen)
    means = values[index].mean(1)
    return float(means.quantile(0.025)), float(means.quantile(0.975))


def compare_lenses(loaded: Any, lens: TunedLens, texts: list[str]) -> list[dict[str, Any]]:
    """Held-out KL per stream for the logit and the tuned lens, with 95% bootstrap CIs over
    texts for each and for their paired difference."""
    logit = lens_kl(loaded, texts, None)
    tuned = lens_kl(loaded, texts, lens)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for index, site in enumerate(lens_sites(anatomy(loaded.model).n_layers)):
        diff = logit[:, index] - tuned[:, index]
        rows.append(
            {
                "site": site,
                "logit_lens_kl": float(logit[:, index].mean()),
                "logit_lens_ci": _ci(logit[:, index], gen),
                "tuned_lens_kl": float(tuned[:, index].mean()),
                "tuned_lens_ci": _ci(tuned[:, index], gen),
                "improvement": float(diff.mean()),
                "improvement_ci": _ci(diff, gen),
                "n_texts": len(diff),
            }
        )
    return rows


def save_tuned_lens(lens: TunedLens, loaded: Any, out: str | Path, overwrite: bool = False) -> Path:
    card = {**card_header(TUNED_LENS, loaded), **lens.card}
    tensors = {"weight": lens.weight, "bias": lens.bias}
    return save_artifact(TUNED_LENS, out, tensors, card, overwrite=overwrite)


def load_tuned_lens(path: str | Path, loaded: Any, allow_mismatch: bool = False) -> TunedLens:
    tensors, card = read_artifact(TUNED_LENS, path)
    check_fingerprint(
        card.get("model", {}), loaded, f"tuned lens {path}", TUNED_LENS, allow_mismatch
    )
    anat = anatomy(loaded.model)
    expected = (anat.n_layers, anat.d_model, anat.d_model)
    if tuple(tensors.get("weight", torch.empty(0)).shape) != expected:
        raise ProbewatchError(
            f"tuned lens {path} has translators of shape "
            f"{tuple(tensors.get('weight', torch.empty(0)).shape)}; this model needs {expected}",
            hint="train a tuned lens for this model",
        )
    return TunedLens(tensors["weight"], tensors["bias"], [], card)

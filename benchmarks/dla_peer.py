"""Per-head direct logit attribution, ours against TransformerLens's (issue 17), on a tiny random
GPT-2 (there is no model hub) and on the default SmolLM2. Run in `.venv-peers`:

    .venv-peers/bin/python -m benchmarks.dla_peer        # this row alone
    .venv-peers/bin/python -m benchmarks.peers           # with the other peer rows

TransformerLens 4.x has no HookedTransformer: `TransformerBridge.boot_transformers(hf_model=...)`
wraps an HF model already in memory (the name is only recorded, nothing is looked up). Its
per-head DLA is the textbook recipe: `enable_compatibility_mode()` folds the final norm's gain
into W_U, `stack_head_results` gives each head's d_model output (hook_z · W_O), and
`logit_attrs` divides the stack by the final norm's cached scale (`apply_ln_to_stack`) before
dotting it with W_U[correct] − W_U[wrong]. Ours freezes the same scale from the real forward,
so the two must agree to fp32 rounding.

One convention is set to match: TransformerLens by default folds each head's value bias out of
its z into the attention output bias (softmax rows sum to 1, so b_V,h · W_O,h is a constant);
ours leaves it in the head, as the model computes it. `fold_value_biases=False` keeps it there
too. SmolLM2 has no attention biases; the GPT-2 here has them perturbed, so this matters there.
"""

import copy
import sys
from collections.abc import Sequence
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from probewatch.attribution import LogitDiff, direct_attribution
from probewatch.attribution.targets import single_token
from probewatch.models.loading import LoadedModel
from probewatch.tokens import Batch, encode

# (prompt, answer, wrong answer): every answer is one token for SmolLM2's tokenizer.
PROMPTS = (
    ("The Eiffel Tower is in the city of", " Paris", " London"),
    ("The Colosseum is in the city of", " Rome", " Paris"),
    ("Big Ben is in the city of", " London", " Rome"),
    ("When Mary and John went to the store, John gave a drink to", " Mary", " John"),
)
# Agreement needed: max |ours − TL| over every head and prompt ≤ RELATIVE × max |logit diff|.
RELATIVE = 1e-3


class DLADisagreement(AssertionError):
    """Our per-head DLA and TransformerLens's differ beyond the stated tolerance."""


def tiny_gpt2(tokenizer: Any, layers: int = 4, d_model: int = 64, seed: int = 0) -> LoadedModel:
    """A random GPT-2 over `tokenizer`'s vocabulary with every weight moved by N(0, 0.3), so LN
    gains and biases (the value biases included) are far from their defaults."""
    torch.manual_seed(seed)
    special = tokenizer.eos_token_id or 0  # GPT2Config's default 50256 may be out of vocabulary
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=d_model,
        n_layer=layers,
        n_head=4,
        n_positions=128,
        bos_token_id=special,
        eos_token_id=special,
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    return LoadedModel(model, tokenizer, name=f"tiny-gpt2-{layers}x{d_model}", source="random")


def transformer_lens_heads(
    loaded: LoadedModel, batch: Batch, correct: Sequence[int], wrong: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TransformerLens's per-head DLA of logit[correct] − logit[wrong] at each prompt's last
    token: (heads [P, L, H], its logit differences [P], the heads without the final norm's
    scale [P, L, H] — a control the comparison must reject)."""
    from transformer_lens.model_bridge import TransformerBridge

    # Copies: the bridge forces eager attention and folds weights in place, and sets up its
    # tokenizer (reloading it from its name_or_path, which must be a local directory here).
    bridge = TransformerBridge.boot_transformers(
        loaded.name,
        hf_model=copy.deepcopy(loaded.model),
        tokenizer=copy.deepcopy(loaded.tokenizer),
        device="cpu",
    )
    bridge.enable_compatibility_mode(disable_warnings=True, fold_value_biases=False)
    n_layers, n_heads = bridge.cfg.n_layers, bridge.cfg.n_heads
    unembed = bridge.tokens_to_residual_directions  # columns of the folded W_U
    heads, unscaled, diffs = [], [], []
    for row, (c, w) in enumerate(zip(correct, wrong, strict=True)):
        # Unpadded, one prompt at a time: the same tokens ours sees, no mask to get wrong.
        ids = batch.input_ids[row][batch.attention_mask[row].bool()][None]
        with torch.no_grad():
            logits, cache = bridge.run_with_cache(ids)
            stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [L·H, 1, d]
            c_t, w_t = torch.tensor([c]), torch.tensor([w])
            attrs = cache.logit_attrs(stack, tokens=c_t, incorrect_tokens=w_t, pos_slice=-1)
            control = (stack * (unembed(c) - unembed(w))).sum(-1)
        heads.append(attrs.reshape(n_layers, n_heads))
        unscaled.append(control.reshape(n_layers, n_heads))
        diffs.append(logits[0, -1, c] - logits[0, -1, w])
    return (
        torch.stack(heads).double(),
        torch.stack(diffs).double(),
        torch.stack(unscaled).double(),
    )


def agreement(
    loaded: LoadedModel, texts: Sequence[str], correct: Sequence[int], wrong: Sequence[int]
) -> dict[str, Any]:
    """Both DLAs of the same logit differences on the same tokens, and how far apart they are."""
    batch = encode(loaded.tokenizer, list(texts))
    ours = direct_attribution(loaded, batch, LogitDiff(list(correct), list(wrong)))
    theirs, their_diff, unscaled = transformer_lens_heads(loaded, batch, correct, wrong)
    scale = float(ours.target.abs().max())
    max_diff = float((ours.heads - theirs).abs().max())
    pair = torch.stack([ours.heads.flatten(), theirs.flatten()])
    return {
        "model": loaded.name,
        "prompts": len(texts),
        "heads": list(ours.heads.shape[1:]),
        "logit_diff_scale": scale,
        "max_abs_diff": max_diff,
        "relative_diff": max_diff / scale,
        "tolerance": RELATIVE * scale,
        "pearson": float(torch.corrcoef(pair)[0, 1]),
        "max_abs_head": float(ours.heads.abs().max()),
        "our_sum_error": ours.error(),
        "logit_diff_max_abs_diff": float((ours.target - their_diff).abs().max()),
        "control_without_norm_scale_max_abs_diff": float((ours.heads - unscaled).abs().max()),
    }


def check(row: dict[str, Any]) -> None:
    """Raise unless the DLAs agree within tolerance and the control (TL's heads without the
    final norm's scale) does not, so the check is shown to tell a wrong DLA apart."""
    problems = []
    if not row["max_abs_diff"] <= row["tolerance"]:
        problems.append(f"max |ours − TL| {row['max_abs_diff']:.3e} > {row['tolerance']:.3e}")
    if not row["control_without_norm_scale_max_abs_diff"] > row["tolerance"]:
        problems.append("the unscaled control agrees too, so the check cannot tell DLAs apart")
    if problems:
        raise DLADisagreement(
            f"{row['model']}: per-head DLA vs TransformerLens: " + "; ".join(problems)
        )


def city_prompts(tokenizer: Any) -> tuple[list[str], list[int], list[int]]:
    texts = [text for text, _, _ in PROMPTS]
    correct = [single_token(tokenizer, answer) for _, answer, _ in PROMPTS]
    wrong = [single_token(tokenizer, other) for _, _, other in PROMPTS]
    return texts, correct, wrong


def bench_dla_peer(default: LoadedModel) -> dict[str, Any]:
    """The GPT-2 and SmolLM2 rows; each is checked after both are measured."""
    texts, correct, wrong = city_prompts(default.tokenizer)
    rows = {
        "gpt2": agreement(tiny_gpt2(default.tokenizer), texts, correct, wrong),
        "smollm2": agreement(default, texts, correct, wrong),
    }
    for row in rows.values():
        print(
            f"DLA vs TransformerLens, {row['model']}: max |diff| {row['max_abs_diff']:.2e} "
            f"({row['relative_diff']:.1e} of the logit-diff scale {row['logit_diff_scale']:.2f}), "
            f"1 − pearson {1 - row['pearson']:.1e}"
        )
    return rows


def main() -> int:
    from benchmarks.common import machine, write_results
    from probewatch.models import load_model

    rows = bench_dla_peer(load_model("default"))
    write_results("dla_peer", {"machine": machine(), **rows})
    for row in rows.values():
        check(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The DLA-vs-TransformerLens benchmark row (benchmarks/dla_peer.py, issue 17). Its gate and the
tiny GPT-2 it builds are tested everywhere; the comparison itself only where TransformerLens is
installed (.venv-peers), since the main venv does not carry it."""

from pathlib import Path
from typing import Any

import pytest
from benchmarks import dla_peer

from probewatch.attribution import LogitDiff, direct_attribution
from tests.helpers import tiny_tokenizer

TEXTS = ["The Eiffel Tower is in the city of", "Big Ben is in", "Rome"]


def _ids(tokenizer: Any) -> tuple[list[int], list[int]]:
    # The byte tokenizer has no merges, so single letters are the single-token answers.
    one = [tokenizer.convert_tokens_to_ids(t) for t in ("P", "L", "R")]
    return one, one[1:] + one[:1]


def _row(diff: float, control: float) -> dict[str, Any]:
    return {
        "model": "m",
        "max_abs_diff": diff,
        "tolerance": 1e-3,
        "control_without_norm_scale_max_abs_diff": control,
    }


def test_check_fails_loudly_on_disagreement_and_on_a_control_that_agrees() -> None:
    dla_peer.check(_row(1e-6, 5.0))
    with pytest.raises(dla_peer.DLADisagreement, match="max"):
        dla_peer.check(_row(2e-3, 5.0))
    with pytest.raises(dla_peer.DLADisagreement, match="control"):
        dla_peer.check(_row(1e-6, 1e-6))
    with pytest.raises(dla_peer.DLADisagreement):
        dla_peer.check(_row(float("nan"), 5.0))  # NaN is not agreement


def test_tiny_gpt2_has_perturbed_biases_and_exact_dla() -> None:
    loaded = dla_peer.tiny_gpt2(tiny_tokenizer())
    attn = loaded.model.transformer.h[0].attn.c_attn
    d = loaded.d_model
    assert (
        float(attn.bias.detach()[2 * d :].abs().min()) > 0
    )  # value biases: the convention that matters
    correct, wrong = _ids(loaded.tokenizer)
    result = direct_attribution(loaded, TEXTS, LogitDiff(correct, wrong))
    assert result.error() < 1e-5


def test_transformer_lens_agrees_on_tiny_gpt2(tmp_path: Path) -> None:
    pytest.importorskip("transformer_lens")
    from transformers import AutoTokenizer

    # TransformerLens reloads the tokenizer from its name_or_path (to add BOS), so it must be
    # one saved to disk, not only built in memory.
    tiny_tokenizer().save_pretrained(tmp_path)
    loaded = dla_peer.tiny_gpt2(AutoTokenizer.from_pretrained(tmp_path))
    correct, wrong = _ids(loaded.tokenizer)
    row = dla_peer.agreement(loaded, TEXTS, correct, wrong)
    dla_peer.check(row)
    assert row["max_abs_diff"] < 1e-4 and row["pearson"] > 0.999999
    assert row["logit_diff_max_abs_diff"] < 1e-4  # both ran the same forward

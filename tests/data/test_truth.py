"""Truth family: capitals, sp_en_trans, larger_than, smaller_than and their negations."""

from collections import Counter
from functools import cache

import pytest

from probewatch.data import load_dataset
from probewatch.data.base import Dataset
from probewatch.data.truth import load_capitals, load_translations, number_words

NAMES = (
    "capitals",
    "neg_capitals",
    "sp_en_trans",
    "neg_sp_en_trans",
    "larger_than",
    "neg_larger_than",
    "smaller_than",
    "neg_smaller_than",
)


@cache
def built(name: str, seed: int = 0) -> Dataset:
    return load_dataset(name, seed=seed)


@pytest.mark.parametrize("name", NAMES)
def test_balanced_deduplicated_and_split_by_entity(name: str) -> None:
    dataset = built(name)
    texts = [ex.text for ex in dataset.examples]
    assert len(texts) == len(set(texts)) > 150
    for split in ("train", "test"):
        labels = Counter(ex.label for ex in dataset.split(split))
        assert set(labels) == {0.0, 1.0} and labels[0.0] == labels[1.0] >= 20, split
    train = {ex.group for ex in dataset.split("train")}
    test = {ex.group for ex in dataset.split("test")}
    assert not train & test
    assert 0.1 < len(test) / (len(train) + len(test)) < 0.35
    # Each entity gives exactly one true and one false statement.
    per_entity = Counter((ex.group, ex.label) for ex in dataset.examples)
    assert set(per_entity.values()) == {1}


@pytest.mark.parametrize("name", NAMES)
def test_building_twice_gives_identical_bytes_and_the_card_is_complete(name: str) -> None:
    assert built(name).to_jsonl() == load_dataset(name).to_jsonl()
    assert built(name).hash != built(name, seed=1).hash
    card = built(name).card
    assert card.name == name and card.seed == 0
    for field in (card.source, card.license, card.construction, card.split_rule):
        assert len(field) > 20


@pytest.mark.parametrize("name", ["capitals", "neg_capitals", "sp_en_trans", "neg_sp_en_trans"])
def test_the_stated_object_does_not_give_the_label_away(name: str) -> None:
    # Within each split, every object is named once in a true and once in a false statement.
    dataset = built(name)
    for split in ("train", "test"):
        named = Counter((ex.meta["stated"], ex.label) for ex in dataset.split(split))
        objects = {obj for obj, _ in named}
        assert all(named[(obj, 0.0)] == named[(obj, 1.0)] == 1 for obj in objects), split


@pytest.mark.parametrize("name", NAMES[4:])
def test_comparison_pairs_hold_the_same_tokens_with_opposite_labels(name: str) -> None:
    by_tokens: dict[tuple[str, ...], set[float]] = {}
    for ex in built(name).examples:
        key = tuple(sorted(ex.text.lower().rstrip(".").split()))
        by_tokens.setdefault(key, set()).add(ex.label)
    assert all(labels == {0.0, 1.0} for labels in by_tokens.values())


def test_labels_say_what_the_statements_say() -> None:
    for ex in built("capitals").examples:
        assert ex.label == float(ex.meta["stated"] == ex.meta["capital"])
        assert ex.text == f"The capital of {ex.meta['country']} is {ex.meta['stated']}."
    for ex in built("neg_capitals").examples:
        assert ex.label == float(ex.meta["stated"] != ex.meta["capital"]) and " is not " in ex.text
    for ex in built("sp_en_trans").examples:
        assert ex.label == float(ex.meta["stated"] == ex.meta["english"])
        assert ex.text.startswith("The Spanish ") and " means " in ex.text
    for ex in built("neg_sp_en_trans").examples:
        assert ex.label == float(ex.meta["stated"] != ex.meta["english"])
        assert " does not mean " in ex.text
    for name, holds in (
        ("larger_than", lambda a, b: a > b),
        ("neg_larger_than", lambda a, b: not a > b),
        ("smaller_than", lambda a, b: a < b),
        ("neg_smaller_than", lambda a, b: not a < b),
    ):
        for ex in built(name).examples:
            a, b = ex.meta["a"], ex.meta["b"]
            assert ex.label == float(holds(a, b)), ex.text
            assert ex.text.startswith(number_words(a).capitalize())
            assert ex.text.endswith(f" {number_words(b)}.")


def test_known_facts_are_present_and_string_matches_are_left_out() -> None:
    capitals = {f.subject: f.obj for f in load_capitals()}
    assert capitals["France"] == "Paris" and capitals["Colombia"] == "Bogotá"
    assert "Kuwait" not in capitals and "Singapore" not in capitals  # Kuwait City, Singapore
    translations = {f.obj: f.subject for f in load_translations()}
    assert translations["Germany"] == "Alemania" and translations["Spain"] == "España"
    assert all(s.casefold() != e.casefold() for e, s in translations.items())


def test_number_words() -> None:
    assert [number_words(n) for n in (0, 13, 20, 51, 84, 99)] == [
        "zero",
        "thirteen",
        "twenty",
        "fifty-one",
        "eighty-four",
        "ninety-nine",
    ]
    with pytest.raises(ValueError):
        number_words(100)

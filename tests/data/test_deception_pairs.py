"""deception_instructed: the same true statement under an honest and a deceptive instruction."""

from collections import Counter, defaultdict

from probewatch.data import load_dataset
from probewatch.data.deception_pairs import INSTRUCTION_PAIRS


def test_pairs_share_the_statement_and_differ_only_in_the_instruction() -> None:
    dataset = load_dataset("deception_instructed")
    by_text: dict[str, list] = defaultdict(list)
    for ex in dataset.examples:
        assert ex.messages is not None and ex.messages[-1] == {
            "role": "assistant",
            "content": ex.text,
        }
        honest, deceptive = INSTRUCTION_PAIRS[ex.meta["instruction_pair"]]
        assert ex.messages[0]["content"] == (deceptive if ex.label else honest)
        by_text[ex.text].append(ex)
    for pair in by_text.values():
        assert sorted(ex.label for ex in pair) == [0.0, 1.0]
        assert len({ex.split for ex in pair}) == 1
    for split in ("train", "test"):
        labels = Counter(ex.label for ex in dataset.split(split))
        assert labels[0.0] == labels[1.0] >= 100
    assert len({ex.meta["instruction_pair"] for ex in dataset.examples}) == len(INSTRUCTION_PAIRS)
    assert {ex.meta["source"] for ex in dataset.examples} == {"cities", "capitals", "sp_en_trans"}


def test_no_group_crosses_splits_and_the_build_is_deterministic() -> None:
    dataset = load_dataset("deception_instructed")
    sides: dict[str, set[str]] = defaultdict(set)
    for ex in dataset.examples:
        sides[ex.group].add(ex.split)
    assert all(len(s) == 1 for s in sides.values())
    assert dataset.to_jsonl() == load_dataset("deception_instructed").to_jsonl()
    assert dataset.hash != load_dataset("deception_instructed", seed=1).hash
    assert "Apollo" in dataset.card.source and "GeoNames" in dataset.card.source

"""Examples' spans and dataset cards: what positions="span" reads, and cards old and new."""

import json
from dataclasses import asdict

from probewatch.data.base import DatasetCard, Example


def test_an_examples_spans_prefer_the_users_over_the_graded_entity() -> None:
    assert Example("a", 1.0, meta={"spans": [[0, 1], [2, 3]]}).spans == [(0, 1), (2, 3)]
    assert Example("a", 1.0, meta={"answer_span": [4, 9]}).spans == [(4, 9)]
    both = Example("a", 1.0, meta={"spans": [[0, 1]], "answer_span": [4, 9]})
    assert both.spans == [(0, 1)]
    assert Example("a", 1.0).spans is None
    assert Example("a", 1.0, meta={"answer_span": None}).spans is None  # an ungraded answer


def test_a_card_round_trips_with_its_positions_and_old_cards_still_load() -> None:
    card = DatasetCard("k", "d", "s", "l", "c", "r", seed=3, positions="span")
    assert DatasetCard.from_dict(json.loads(json.dumps(asdict(card)))) == card
    old = asdict(card)
    del old["positions"]  # written before the field existed
    assert DatasetCard.from_dict(old).positions is None
    assert DatasetCard.from_dict({**old, "from_the_future": 1}).seed == 3

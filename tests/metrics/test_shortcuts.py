"""The shortcut audit's surface baseline and verdict on toy datasets built to be confounded
or clean."""

import random

import pytest

from probewatch.data.base import Example
from probewatch.metrics.shortcuts import (
    MARGIN,
    ShortcutAudit,
    serving_refusal,
    surface_baseline_auroc,
)
from probewatch.training.shortcut_audit import visible_text

NOUNS = ["river", "stone", "garden", "engine", "letter", "window", "forest", "bridge"]


def _toy(confounded: bool, n: int, seed: int) -> list[Example]:
    """Labels by a hidden coin; when confounded, label 1 requests are questions with 'how'."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = float(rng.random() < 0.5)
        a, b = rng.sample(NOUNS, 2)
        question = label == 1.0 if confounded else rng.random() < 0.5
        text = f"How does the {a} meet the {b}?" if question else f"Describe the {a} and the {b}."
        split = "test" if i % 4 == 0 else "train"
        rows.append(Example(text, label, split, group=str(i)))
    return rows


def _baseline(rows: list[Example]) -> float:
    train = [r for r in rows if r.split == "train"]
    test = [r for r in rows if r.split == "test"]
    return surface_baseline_auroc(
        [visible_text(r) for r in train],
        [r.label for r in train],
        [visible_text(r) for r in test],
        [r.label for r in test],
    )


def test_a_confounded_toy_dataset_is_flagged() -> None:
    baseline = _baseline(_toy(confounded=True, n=240, seed=0))
    assert baseline > 0.99
    audit = ShortcutAudit(probe_auroc=0.97, baseline_auroc=baseline)
    assert audit.verdict == "likely shortcut" and "baseline" in audit.reasons[0]


def test_a_clean_toy_dataset_passes() -> None:
    baseline = _baseline(_toy(confounded=False, n=240, seed=0))
    assert 0.3 < baseline < 0.7
    audit = ShortcutAudit(probe_auroc=0.9, baseline_auroc=baseline, control_auroc=0.52)
    assert audit.verdict == "passes" and audit.reasons == []


def test_the_rule_and_the_round_trip() -> None:
    near = ShortcutAudit(probe_auroc=0.9, baseline_auroc=0.9 - MARGIN + 1e-9)
    assert near.verdict == "likely shortcut"
    control = ShortcutAudit(0.95, 0.6, {"embed": 0.5, "resid.0": 0.91}, 0.2, "ctrl")
    assert control.verdict == "likely shortcut" and "ctrl" in control.reasons[0]
    assert control.warnings and "resid.0" in control.warnings[0]
    back = ShortcutAudit.from_dict(control.to_dict())
    assert back.to_dict() == control.to_dict()
    assert "likely shortcut" in back.line()


def test_the_baseline_reads_every_turn_of_a_chat() -> None:
    rows = []
    for i in range(80):
        label = float(i % 2)
        system = "You lie." if label else "You are honest."
        rows.append(
            Example(
                "Paris is in France.",
                label,
                "test" if i % 5 == 0 else "train",
                messages=(
                    {"role": "system", "content": system},
                    {"role": "assistant", "content": "Paris is in France."},
                ),
            )
        )
    assert _baseline(rows) == pytest.approx(1.0)


def test_a_likely_shortcut_is_refused_for_serving_unless_forced() -> None:
    bad = {"shortcut_audit": ShortcutAudit(0.9, 0.89).to_dict()}
    good = {"shortcut_audit": ShortcutAudit(0.9, 0.6).to_dict()}
    reason = serving_refusal(bad, "harm")
    assert reason is not None and "harm" in reason and "baseline" in reason
    assert serving_refusal(bad, "harm", force=True) is None
    assert serving_refusal(good, "harm") is None
    assert serving_refusal({}, "old") is None  # cards from before the audit

"""The shortcut audit end to end on a tiny model: a deliberately confounded toy dataset is
flagged, a clean one passes (activations, words/length baseline and control all measured)."""

import random
from pathlib import Path

import pytest

from probewatch.config import ProbeSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.training import BinaryScores, train
from probewatch.training.shortcut_audit import AuditInputs, run_shortcut_audit
from tests.helpers import tiny_model


def _card(name: str) -> DatasetCard:
    return DatasetCard(name, "toy", "test", "none", "toy", "every 4th row is test")


def _numbers(confounded: bool, n: int = 200) -> Dataset:
    """Label = the number is even. Numbers are unique, so no word recurs to give it away
    (the baseline drops words seen once) - unless confounded, when even rows say 'please'."""
    rng = random.Random(0)
    numbers = rng.sample(range(10_000, 99_999), n)
    rows = []
    for i, number in enumerate(numbers):
        label = float(number % 2 == 0)
        polite = "please " if confounded and label else ""
        text = f"{polite}note {number}"
        rows.append(Example(text, label, "test" if i % 4 == 0 else "train", group=str(i)))
    return Dataset(_card(f"toy_{'confounded' if confounded else 'clean'}"), rows)


def _control() -> Dataset:
    # Same surface feature as the confound ('please'), label independent of parity.
    rows = [
        Example(f"{'please ' if i % 2 else ''}note {2 * i + 10_000}", float(i % 2), "test")
        for i in range(60)
    ]
    return Dataset(_card("toy_control"), rows)


@pytest.mark.parametrize("confounded", [True, False])
def test_the_audit_flags_a_confound_and_passes_a_clean_dataset(
    confounded: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROBEWATCH_CACHE", str(tmp_path))
    tiny = tiny_model()
    dataset = _numbers(confounded)
    result = train(tiny, dataset, ProbeSpec(sites="resid.1-2", n_boot=50), progress=False)
    assert isinstance(result.metrics, BinaryScores)
    inputs = AuditInputs(
        dataset, result.artifact.probe, result.best_site, result.metrics.test.auroc
    )
    audit = run_shortcut_audit(tiny, inputs, control=_control())
    assert set(audit.early_layers) == {"embed", "resid.0", "resid.1"}
    assert result.metrics.test.auroc > 0.9  # the last digit is readable either way
    if confounded:
        assert audit.baseline_auroc > 0.95 and audit.verdict == "likely shortcut"
    else:
        assert audit.baseline_auroc < 0.7 and audit.verdict == "passes", audit.to_dict()

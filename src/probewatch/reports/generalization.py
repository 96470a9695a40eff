"""Train on each dataset, test on every other: does the probe read a concept or a format?"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from probewatch.data.base import Dataset, DatasetCard, require_binary
from probewatch.metrics.scores import auroc
from probewatch.models.loading import LoadedModel
from probewatch.probes.base import make_probe


@dataclass
class GeneralizationMatrix:
    site: str
    train_names: list[str]
    test_names: list[str]
    auroc: list[list[float]]  # [train][test]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "train": self.train_names,
            "test": self.test_names,
            "auroc": self.auroc,
            "notes": self.notes,
        }


def combine(datasets: Sequence[Dataset], name: str) -> Dataset:
    """One dataset from several, keeping their splits (used to train on several forms)."""
    card = DatasetCard(
        name=name,
        description="union of " + ", ".join(d.name for d in datasets),
        source="; ".join(sorted({d.card.source for d in datasets})),
        license="; ".join(sorted({d.card.license for d in datasets})),
        construction="concatenation, each part keeping its own split",
        split_rule="each part's own split rule",
    )
    examples = [ex for d in datasets for ex in d.examples]
    return Dataset(card, examples)


@dataclass(frozen=True)
class ProbeAt:
    """Which probe the matrix fits: a kind, read at one site."""

    site: str
    kind: str = "logistic"


def generalization_matrix(
    loaded: LoadedModel,
    train_sets: Sequence[Dataset],
    test_sets: Sequence[Dataset],
    probe_at: ProbeAt,
    progress: bool = True,
) -> GeneralizationMatrix:
    """Fit one probe per training set on its train split; score every test set's test split."""
    from probewatch.config import HarvestSpec
    from probewatch.store import harvest
    from probewatch.training import per_example  # training imports eval

    site, kind = probe_at.site, probe_at.kind

    def rows(dataset: Dataset, split: str) -> tuple[Any, Any]:
        stored = harvest(loaded, dataset, HarvestSpec(sites=site), progress=progress)
        part = stored.load(site).rows(split)
        return part, part.acts

    tests = []
    for dataset in test_sets:
        require_binary(dataset.split("test"), f"the test split of {dataset.name!r}")
        tests.append(rows(dataset, "test"))
    grid: list[list[float]] = []
    for dataset in train_sets:
        require_binary(dataset.split("train"), f"the train split of {dataset.name!r}")
        train_rows, train_acts = rows(dataset, "train")
        probe = make_probe(kind).fit(train_acts, train_rows.label)
        row = []
        for stored, acts in tests:
            scores, labels, _ = per_example(probe.score(acts), stored)
            row.append(auroc(scores, labels))
        grid.append(row)
    matrix = GeneralizationMatrix(
        site, [d.name for d in train_sets], [d.name for d in test_sets], grid
    )
    inverted = [
        f"{t} -> {s}: {v:.2f}"
        for t, r in zip(matrix.train_names, grid, strict=True)
        for s, v in zip(matrix.test_names, r, strict=True)
        if v < 0.35
    ]
    if inverted:
        matrix.notes.append(
            "below 0.5 means the probe is confidently inverted there (it reads a feature that "
            "flips, e.g. 'names the right object' rather than truth under negation): "
            + "; ".join(inverted)
        )
    return matrix


def mean_off_diagonal(matrix: GeneralizationMatrix) -> float:
    values = [
        v
        for t, row in zip(matrix.train_names, matrix.auroc, strict=True)
        for s, v in zip(matrix.test_names, row, strict=True)
        if t != s
    ]
    return float(np.mean(values)) if values else float("nan")

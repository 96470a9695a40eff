"""The one training loop: harvest (cached), then for each site fit on the train split minus a
validation part held out by group, score validation and test, keep the site that validation
prefers, and build the card. Binary and regression tasks plug in what differs (targets,
scores, metric, the chosen probe's threshold or baseline).

Layer choice is honest: validation picks the site (and, for binary probes, calibrates the
scores and sets the threshold unless a benign control set is given); the test split is used
once, to report. Every site's test score is shown too, but never used to choose. Sites that
tie on the metric (validation AUROC saturates at 1.0 on an easy split, and the first of the
tied layers is an accident of order) are told apart by the task's tie-break.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from probewatch.config import HarvestSpec, Positions, ProbeSpec, as_positions
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import ProbeArtifact, build_card
from probewatch.probes.base import PROBE_KINDS, Probe, make_probe
from probewatch.sites import expand_sites
from probewatch.store import ActivationStore, StoredSite, harvest, split_rows, validation_mask
from probewatch.training.results import (
    METRIC_NAMES,
    BinaryScores,
    RegressionScores,
    SweepRow,
    TrainResult,
)


@dataclass
class Scored:
    """A probe's scores on one part (per example or per row, as the task scores) with the
    targets they are judged against, and the task's metric over them."""

    scores: np.ndarray
    targets: np.ndarray
    value: float
    tiebreak: float = float("-inf")  # higher is better; decides between equal values


def preference(scored: Scored) -> tuple[float, float]:
    """How the sweep ranks a site's validation scores: the metric, then the tie-break."""
    tiebreak = scored.tiebreak if np.isfinite(scored.tiebreak) else float("-inf")
    return scored.value, tiebreak


@dataclass
class Chosen:
    """The best site so far, with what the task's finish needs, so nothing is loaded twice."""

    row: SweepRow
    probe: Probe
    train: StoredSite
    fit_part: StoredSite
    test: StoredSite
    val: Scored
    scored_test: Scored


@dataclass
class Run:
    """One sweep's inputs and what it found."""

    loaded: LoadedModel
    dataset: Dataset
    spec: ProbeSpec
    positions: Positions
    store: ActivationStore
    progress: bool
    sweep: list[SweepRow] = field(default_factory=list)
    scored: dict[str, tuple[Scored, Scored]] = field(default_factory=dict)  # val, test per site


class TrainingTask(ABC):
    """What a task (binary, regression) adds to the sweep."""

    name: ClassVar[str]
    metric: ClassVar[str]  # key of METRIC_NAMES
    default_kind: ClassVar[str]
    default_n_boot: ClassVar[int]
    tiebreak_rule: ClassVar[str] = ""  # how equal validation values are told apart, for the card

    def __init__(self, dataset: Dataset, spec: ProbeSpec) -> None:
        self.dataset = dataset
        self.spec = spec

    @property
    def n_boot(self) -> int:
        return self.spec.n_boot or self.default_n_boot

    def positions(self) -> Positions:
        return self.spec.positions or self.card_positions() or "last"

    def card_positions(self) -> Positions | None:
        """The positions the dataset's card asks for when the spec names none."""
        wanted = self.dataset.card.positions
        return as_positions(wanted) if wanted else None

    @property
    def kind(self) -> str:
        return self.spec.kind or self.default_kind

    def check_kind(self) -> None:
        """Refuse a probe kind that fits the other task's targets, before any harvest (a
        binary kind on regression targets would fail later on their non-0/1 values)."""
        if self.kind not in PROBE_KINDS:
            make_probe(self.kind, **self.spec.probe_options())  # says which kinds exist
        fits = PROBE_KINDS[self.kind].task
        if fits != self.name:
            mine = sorted(name for name, cls in PROBE_KINDS.items() if cls.task == self.name)
            raise ProbewatchError(
                f"probe kind {self.kind!r} fits {fits} labels, but {self.dataset.name!r} is "
                f"a {self.name} task",
                hint=f"for {self.name} use --kind {' or '.join(mine)}",
            )

    @abstractmethod
    def check(self) -> None:
        """Refuse a dataset this task cannot train on, before any harvest."""

    @abstractmethod
    def check_parts(self, train: StoredSite, test: StoredSite, validation: StoredSite) -> None:
        """Refuse a site's parts that are too small (or one-class) to fit, choose and report."""

    @abstractmethod
    def targets(self, part: StoredSite) -> torch.Tensor:
        """What the probe is fitted to on these rows."""

    @abstractmethod
    def score(self, probe: Probe, part: StoredSite) -> Scored: ...

    @abstractmethod
    def finish(
        self, run: Run, best: Chosen
    ) -> tuple[BinaryScores | RegressionScores, dict[str, Any], dict[str, Any]]:
        """The chosen probe's metrics, the card's `dataset` entry and its extra entries."""

    def monitor(self) -> dict[str, Any]:
        """The card's `monitor` entry: what the live monitor judges and how it aggregates."""
        monitor: dict[str, Any] = {"scope": self.spec.scope}
        aggregator = self.spec.monitor_aggregator_config()
        if aggregator:
            monitor["aggregator"] = aggregator
        return monitor


def sweep_sites(loaded: LoadedModel, task: TrainingTask, progress: bool = True) -> TrainResult:
    """Run the sweep of `task.spec.sites` on `task.dataset` and build the chosen probe."""
    task.check()
    task.check_kind()
    spec, dataset = task.spec, task.dataset
    positions = task.positions()
    store = harvest(
        loaded,
        dataset,
        HarvestSpec(sites=spec.sites, positions=positions, batch_size=spec.batch_size),
        progress=progress,
    )
    run = Run(loaded, dataset, spec, positions, store, progress)
    kind = task.kind
    best: Chosen | None = None
    # A reused store may hold more sites than asked for: sweep only the requested ones.
    for site in (s.name for s in expand_sites(spec.sites, loaded.n_layers)):
        stored = store.load(site)
        train, test = stored.rows("train"), stored.rows("test")
        val_mask = validation_mask(train, dataset, spec.seed)
        fit_part, val_part = split_rows(train, ~val_mask), split_rows(train, val_mask)
        task.check_parts(train, test, val_part)
        probe = make_probe(kind, **spec.probe_options()).fit(
            fit_part.acts, task.targets(fit_part), groups=fit_part.example_index
        )
        val, scored_test = task.score(probe, val_part), task.score(probe, test)
        row = SweepRow(site, val.value, scored_test.value, task.metric)
        run.sweep.append(row)
        run.scored[site] = (val, scored_test)
        if best is None or preference(val) > preference(best.val):
            best = Chosen(row, probe, train, fit_part, test, val, scored_test)
    assert best is not None  # expand_sites never returns an empty list
    metrics, dataset_entry, extra = task.finish(run, best)
    card = build_card(
        best.probe,
        loaded,
        best.row.site,
        positions,
        dataset=dataset_entry,
        metrics=metrics.to_dict(),
        extra={
            **extra,
            "selection": f"best grouped-validation {METRIC_NAMES[task.metric]} on the train "
            f"split{task.tiebreak_rule}; test used once",
            "sweep": [r.to_dict() for r in run.sweep],
            "recipe": spec.to_dict(),
            "monitor": task.monitor(),
        },
    )
    return TrainResult(
        task.name,
        run.sweep,
        ProbeArtifact(best.probe, card),
        metrics,
        store,
        best.val.scores,
        best.val.targets,
        best.scored_test.scores,
        best.scored_test.targets,
    )


def dataset_entry(dataset: Dataset, **counts: Any) -> dict[str, Any]:
    """The card's `dataset` entry: what the probe was trained on, and how many of what."""
    return {
        "name": dataset.name,
        "hash": dataset.hash,
        "seed": dataset.card.seed,
        **counts,
        "source": dataset.card.source,
    }

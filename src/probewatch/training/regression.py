"""Regression probes on per-token targets (thinking progress) or per-example ones (a number).

Per-token targets live in `example.meta[target_key]`, one value per stored token of the
example in token order (`thinking_progress` writes them aligned to the response mask). The
report includes a position-only baseline (the mean train target at each response position),
fitted on the same rows, so "R² 0.8" cannot hide that counting tokens gives 0.8 too.
"""

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from probewatch.config import Positions, ProbeSpec
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import mae, r2
from probewatch.probes.base import Probe
from probewatch.store import StoredSite, token_order
from probewatch.training.examples import n_examples
from probewatch.training.results import RegressionScores
from probewatch.training.sweep import Chosen, Run, Scored, TrainingTask, dataset_entry


def per_token_key(dataset: Dataset, key: str = "progress") -> str | None:
    """`key` when every example carries per-token targets under it, else None (labels)."""
    return key if all(key in (e.meta or {}) for e in dataset.examples) else None


def row_targets(dataset: Dataset, stored: StoredSite, target_key: str | None) -> torch.Tensor:
    """The target of every stored row: meta[target_key][k] for the k-th stored token of its
    example (token order), or the example's label when `target_key` is None."""
    if target_key is None:
        return stored.label.double()
    targets = torch.empty(stored.example_index.shape[0], dtype=torch.float64)
    order = token_order(stored)
    examples, counts = torch.unique_consecutive(stored.example_index[order], return_counts=True)
    start = 0
    for index, count in zip(examples.tolist(), counts.tolist(), strict=True):
        values = (dataset.examples[index].meta or {}).get(target_key)
        if not isinstance(values, list) or len(values) != count:
            found = len(values) if isinstance(values, list) else "none"
            raise ProbewatchError(
                f"example {index} of {dataset.name!r} has {count} stored tokens but "
                f"{found} {target_key!r} targets",
                hint="per-token targets must match the positions harvested (positions='mask')",
            )
        targets[order[start : start + count]] = torch.tensor(values, dtype=torch.float64)
        start += count
    return targets


def token_ordinal(stored: StoredSite) -> np.ndarray:
    """0-based rank of each row among its example's rows (its position in the response)."""
    ordinal = np.empty(stored.example_index.shape[0], dtype=np.int64)
    order = token_order(stored).numpy()
    examples = stored.example_index.numpy()[order]
    starts = np.r_[0, np.flatnonzero(np.diff(examples)) + 1]
    rank = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
    ordinal[order] = rank
    return ordinal


@dataclass
class PositionBaseline:
    """Predicts the mean train target at each position (positions past the longest train
    example get the last position's mean): what counting tokens alone gives."""

    means: np.ndarray

    @classmethod
    def fit(cls, ordinal: np.ndarray, targets: np.ndarray) -> "PositionBaseline":
        sums = np.bincount(ordinal, weights=targets)
        counts = np.bincount(ordinal)
        return cls(sums / np.maximum(counts, 1))

    def predict(self, ordinal: np.ndarray) -> np.ndarray:
        return np.asarray(self.means[np.minimum(ordinal, self.means.size - 1)])


def bootstrap_r2(
    predictions: np.ndarray, targets: np.ndarray, groups: np.ndarray, seed: int, n_boot: int
) -> tuple[float, float]:
    """Percentile interval resampling whole examples (tokens of one response are not
    independent draws)."""
    rng = np.random.default_rng(seed)
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(unique.size)]
    values = []
    for _ in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(0, unique.size, unique.size)])
        if np.ptp(targets[rows]) > 0:
            values.append(r2(predictions[rows], targets[rows]))
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


class RegressionTask(TrainingTask):
    name = "regression"
    metric = "r2"
    default_kind = "ridge"
    default_n_boot = 500

    def __init__(self, dataset: Dataset, spec: ProbeSpec) -> None:
        super().__init__(dataset, spec)
        self.target_key = per_token_key(dataset)

    def positions(self) -> Positions:
        default: Positions = "mask" if self.target_key else "last"
        return self.spec.positions or self.card_positions() or default

    def check(self) -> None:
        if self.dataset.card.task != "regression":
            raise ProbewatchError(
                f"dataset {self.dataset.name!r} is a {self.dataset.card.task} dataset",
                hint="regression probes need a regression dataset (e.g. thinking_progress)",
            )

    def check_parts(self, train: StoredSite, test: StoredSite, validation: StoredSite) -> None:
        if train.acts.shape[0] < 3 or test.acts.shape[0] < 2:
            raise ProbewatchError(
                f"{self.dataset.name!r} has too few train/test rows ({train.acts.shape[0]}/"
                f"{test.acts.shape[0]}) for a regression probe",
                hint="build the dataset with more examples",
            )
        if validation.acts.shape[0] < 2:
            raise ProbewatchError(
                f"the validation part of {self.dataset.name!r} is empty",
                hint="build the dataset with more examples (groups)",
            )

    def targets(self, part: StoredSite) -> torch.Tensor:
        return row_targets(self.dataset, part, self.target_key).float()

    def score(self, probe: Probe, part: StoredSite) -> Scored:
        targets = row_targets(self.dataset, part, self.target_key).numpy()
        with torch.no_grad():
            predictions = probe.score(part.acts).double().numpy().reshape(-1)
        return Scored(predictions, targets, r2(predictions, targets))

    def finish(
        self, _run: Run, best: Chosen
    ) -> tuple[RegressionScores, dict[str, Any], dict[str, Any]]:
        test, predictions, test_y = best.test, best.scored_test.scores, best.scored_test.targets
        seed = self.spec.seed
        low, high = bootstrap_r2(predictions, test_y, test.example_index.numpy(), seed, self.n_boot)
        baseline_r2 = baseline_mae = None
        if self.target_key is not None:
            train_y = row_targets(self.dataset, best.train, self.target_key).numpy()
            baseline = PositionBaseline.fit(token_ordinal(best.train), train_y)
            guess = baseline.predict(token_ordinal(test))
            baseline_r2, baseline_mae = r2(guess, test_y), mae(guess, test_y)
        metrics = RegressionScores(
            n_tokens=int(test_y.size),
            n_examples=n_examples(test),
            r2=best.scored_test.value,
            r2_ci_low=low,
            r2_ci_high=high,
            mae=mae(predictions, test_y),
            pearson=float(np.corrcoef(predictions, test_y)[0, 1]),
            baseline_r2=baseline_r2,
            baseline_mae=baseline_mae,
        )
        per_token = self.target_key is not None
        entry = dataset_entry(
            self.dataset,
            target=f"meta.{self.target_key} (per token)" if per_token else "label",
            n_train_examples=n_examples(best.train),
            n_test_examples=metrics.n_examples,
        )
        return metrics, entry, {"task": "regression"}

    def monitor(self) -> dict[str, Any]:
        # A regression probe is a gauge of the response so far: its latest token's value.
        monitor = super().monitor()
        monitor.setdefault("aggregator", {"name": "last"})
        return monitor

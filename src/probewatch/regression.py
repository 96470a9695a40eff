"""Regression probes on per-token targets (thinking progress) or per-example ones (a number).

Same honesty rules as the binary pipeline: each site's probe is fitted on the train split
minus a validation part held out by group; validation R² picks the site; the test split is
used once. Per-token targets live in `example.meta[target_key]`, one value per stored token
of the example in token order (`thinking_progress` writes them aligned to the response mask).

A probe that reads progress must beat what the token's position alone tells: the card
reports a position-only baseline (the mean train target at each response position), fitted
on the same rows, so "R² 0.8" cannot hide that counting tokens gives 0.8 too.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from probewatch.capture import ActivationCapture
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import mae, r2
from probewatch.models.loading import LoadedModel
from probewatch.pipeline import harvest_cached, split_rows, token_order, validation_mask
from probewatch.probes.artifact import ProbeArtifact, build_card
from probewatch.probes.base import Probe, make_probe
from probewatch.store import StoredSite


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


@dataclass
class RegressionSiteResult:
    site: str
    val_r2: float
    test_r2: float


@dataclass
class RegressionScores:
    """Held-out test metrics, with a 95% bootstrap interval over examples for R²."""

    n_tokens: int
    n_examples: int
    r2: float
    r2_ci_low: float
    r2_ci_high: float
    mae: float
    pearson: float
    baseline_r2: float | None  # position-only, per-token targets only
    baseline_mae: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RegressionResult:
    sweep: list[RegressionSiteResult]
    artifact: ProbeArtifact
    metrics: RegressionScores

    @property
    def best_site(self) -> str:
        return self.artifact.site


def _bootstrap_r2(
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


@dataclass
class _Chosen:
    """The best site so far, with what the report needs, so nothing is loaded twice."""

    val_r2: float
    probe: Probe
    site: str
    train: StoredSite
    test: StoredSite
    test_y: np.ndarray
    predictions: np.ndarray
    test_r2: float


def _scores(probe: Probe, part: StoredSite, targets: np.ndarray) -> tuple[np.ndarray, float]:
    with torch.no_grad():
        predictions = probe.score(part.acts).double().numpy().reshape(-1)
    return predictions, r2(predictions, targets)


def train_regression_probe(
    loaded: LoadedModel,
    dataset: Dataset,
    sites: str | list[str] = "all",
    positions: str = "mask",
    target_key: str | None = "progress",
    kind: str = "ridge",
    probe_config: dict[str, Any] | None = None,
    seed: int = 0,
    n_boot: int = 500,
    batch_size: int = 8,
    progress: bool = True,
) -> RegressionResult:
    """Sweep `sites` for a regression probe of the per-token targets `meta[target_key]` (or of
    the example labels, with target_key=None); validation R² picks the site."""
    if dataset.card.task != "regression":
        raise ProbewatchError(
            f"dataset {dataset.name!r} is a {dataset.card.task} dataset",
            hint="regression probes need a regression dataset (e.g. thinking_progress)",
        )
    store = harvest_cached(loaded, dataset, sites, positions, batch_size, progress)
    with ActivationCapture(loaded.model, sites, positions) as capture:
        requested = capture.site_names
    per_token = target_key is not None
    sweep: list[RegressionSiteResult] = []
    best: _Chosen | None = None
    for site in requested:
        stored = store.load(site)
        train, test = stored.rows("train"), stored.rows("test")
        if train.acts.shape[0] < 3 or test.acts.shape[0] < 2:
            raise ProbewatchError(
                f"{dataset.name!r} has too few train/test rows ({train.acts.shape[0]}/"
                f"{test.acts.shape[0]}) for a regression probe",
                hint="build the dataset with more examples",
            )
        val_mask = validation_mask(train, dataset, seed)
        fit_part, val_part = split_rows(train, ~val_mask), split_rows(train, val_mask)
        if val_part.acts.shape[0] < 2:
            raise ProbewatchError(
                f"the validation part of {dataset.name!r} is empty",
                hint="build the dataset with more examples (groups)",
            )
        fit_y = row_targets(dataset, fit_part, target_key)
        probe = make_probe(kind, **(probe_config or {})).fit(fit_part.acts, fit_y.float())
        _, val_r2 = _scores(probe, val_part, row_targets(dataset, val_part, target_key).numpy())
        test_y = row_targets(dataset, test, target_key).numpy()
        predictions, test_r2 = _scores(probe, test, test_y)
        sweep.append(RegressionSiteResult(site, val_r2, test_r2))
        if best is None or val_r2 > best.val_r2:
            best = _Chosen(val_r2, probe, site, train, test, test_y, predictions, test_r2)
    assert best is not None
    probe, site, train, test = best.probe, best.site, best.train, best.test
    test_y, predictions, test_r2 = best.test_y, best.predictions, best.test_r2
    low, high = _bootstrap_r2(predictions, test_y, test.example_index.numpy(), seed, n_boot)
    baseline_r2 = baseline_mae = None
    if per_token:
        baseline = PositionBaseline.fit(
            token_ordinal(train), row_targets(dataset, train, target_key).numpy()
        )
        guess = baseline.predict(token_ordinal(test))
        baseline_r2, baseline_mae = r2(guess, test_y), mae(guess, test_y)
    metrics = RegressionScores(
        n_tokens=int(test_y.size),
        n_examples=len(set(test.example_index.tolist())),
        r2=test_r2,
        r2_ci_low=low,
        r2_ci_high=high,
        mae=mae(predictions, test_y),
        pearson=float(np.corrcoef(predictions, test_y)[0, 1]),
        baseline_r2=baseline_r2,
        baseline_mae=baseline_mae,
    )
    card = build_card(
        probe,
        loaded,
        site,
        positions,
        dataset={
            "name": dataset.name,
            "hash": dataset.hash,
            "seed": dataset.card.seed,
            "target": f"meta.{target_key} (per token)" if per_token else "label",
            "n_train_examples": len(set(train.example_index.tolist())),
            "n_test_examples": metrics.n_examples,
            "source": dataset.card.source,
        },
        metrics=metrics.to_dict(),
        extra={
            "task": "regression",
            "selection": "best grouped-validation R² on the train split; test used once",
            "sweep": [asdict(r) for r in sweep],
        },
    )
    return RegressionResult(sweep, ProbeArtifact(probe, card), metrics)


def sweep_table(sweep: Sequence[RegressionSiteResult]) -> str:
    lines = [f"{'site':12} {'val R²':>8} {'test R²':>8}"]
    lines += [f"{r.site:12} {r.val_r2:8.3f} {r.test_r2:8.3f}" for r in sweep]
    return "\n".join(lines)

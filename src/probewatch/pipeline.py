"""The main job as functions: harvest (cached), sweep layers, train the best probe, evaluate.

Layer choice is honest: each layer's probe is fitted on part of the train split and scored on
a validation part held out *by group* (e.g. by city). Validation picks the layer, calibrates
the scores and (without a separate control set) sets the alarm threshold; the test split is
used once, to report. The test AUROC of every layer is shown too, but never used to choose.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probewatch.capture import ActivationCapture
from probewatch.data.base import Dataset, require_binary
from probewatch.errors import ProbewatchError
from probewatch.metrics.calibration import (
    PlattScaler,
    expected_calibration_error,
    threshold_at_fpr,
)
from probewatch.metrics.scores import BinaryMetrics, auroc, binary_metrics, fpr_at_recall
from probewatch.models.loading import LoadedModel
from probewatch.paths import cache_dir
from probewatch.probes.aggregators import Aggregator, make_aggregator
from probewatch.probes.artifact import ProbeArtifact, build_card, check_model
from probewatch.probes.base import Probe, make_probe
from probewatch.store import ActivationStore, StoredSite, harvest

VALIDATION_FRACTION_OF = 5  # one train group in five validates the layer choice


def store_path(loaded: LoadedModel, dataset: Dataset, sites: Sequence[str], positions: str) -> Path:
    sites_key = hashlib.sha256(",".join(sites).encode()).hexdigest()[:8]
    return (
        cache_dir()
        / "activations"
        / f"{loaded.name}-{loaded.fingerprint[:8]}"
        / f"{dataset.name}-{dataset.hash}-{positions}-{sites_key}"
    )


def harvest_cached(
    loaded: LoadedModel,
    dataset: Dataset,
    sites: str | list[str],
    positions: str = "last",
    batch_size: int = 32,
    progress: bool = True,
) -> ActivationStore:
    """Harvest into the user cache, reusing (or resuming) a store made with the same inputs."""
    with ActivationCapture(loaded.model, sites, positions) as capture:
        names = capture.site_names
    path = store_path(loaded, dataset, names, positions)
    if (path / "manifest.json").is_file():
        store = ActivationStore.open(path)
        if store.complete:
            return store
    # A finished store of the same model, data and positions with more sites serves too
    # (e.g. one site of an all-layer sweep).
    prefix = f"{dataset.name}-{dataset.hash}-{positions}-"
    for candidate in sorted(path.parent.glob(prefix + "*")):
        try:
            other = ActivationStore.open(candidate)
        except ProbewatchError:
            continue
        if other.complete and set(names) <= set(other.sites):
            return other
    return harvest(loaded, dataset, names, path, positions, batch_size, progress=progress)


def token_order(stored: StoredSite) -> torch.Tensor:
    """Row order that groups rows by example and sorts each example's rows by token."""
    if stored.token_index.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    span = int(stored.token_index.max()) + 1
    return torch.argsort(stored.example_index * span + stored.token_index)


def per_example(
    scores: torch.Tensor, stored: StoredSite, aggregator: Aggregator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One score per example: its token scores reduced by `aggregator` (default mean), in
    token order; returns scores, labels and example indices, in example order."""
    index = stored.example_index
    unique, inverse = torch.unique(index, return_inverse=True)
    labels = torch.zeros(unique.shape[0], dtype=torch.float64)
    labels[inverse] = stored.label.double()
    if aggregator is None or aggregator.name == "mean":
        sums = torch.zeros(unique.shape[0], dtype=torch.float64)
        sums.index_add_(0, inverse, scores.double())
        counts = torch.bincount(inverse, minlength=unique.shape[0]).double()
        return (sums / counts).numpy(), labels.numpy(), unique.numpy()
    order = token_order(stored)
    grouped = torch.split(scores.double()[order], torch.bincount(inverse).tolist())
    reduced = np.array([aggregator.aggregate(g.numpy()) for g in grouped])
    return reduced, labels.numpy(), unique.numpy()


def validation_mask(stored: StoredSite, dataset: Dataset, seed: int) -> torch.Tensor:
    groups = [dataset.examples[i].group or str(i) for i in stored.example_index.tolist()]
    digest = {
        g: int(hashlib.sha256(f"val:{seed}:{g}".encode()).hexdigest()[:8], 16) for g in set(groups)
    }
    return torch.tensor([digest[g] % VALIDATION_FRACTION_OF == 0 for g in groups])


@dataclass
class LayerResult:
    site: str
    val_auroc: float
    test_auroc: float


@dataclass
class ProbeMetrics:
    """Held-out metrics of a trained probe, with its threshold and calibration."""

    test: BinaryMetrics
    recall_at_fpr: float  # on test positives, at the control-set threshold
    test_fpr: float  # realized FPR of that threshold on test negatives
    fpr_at_99_recall: float
    ece_raw: float  # expected calibration error of sigmoid(score) on test
    ece_calibrated: float  # ... after Platt scaling fitted on validation
    threshold: float
    target_fpr: float
    control: str  # what the threshold was set on

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test.to_dict(),
            "recall_at_fpr": self.recall_at_fpr,
            "test_fpr_at_threshold": self.test_fpr,
            "fpr_at_99_recall": self.fpr_at_99_recall,
            "ece_raw": self.ece_raw,
            "ece_calibrated": self.ece_calibrated,
        }


@dataclass
class TrainResult:
    sweep: list[LayerResult]
    artifact: ProbeArtifact
    metrics: ProbeMetrics
    store: ActivationStore
    test_scores: np.ndarray  # raw per-example scores of the chosen probe, for reports
    test_labels: np.ndarray
    val_scores: np.ndarray
    val_labels: np.ndarray

    @property
    def best_site(self) -> str:
        return self.artifact.site


def _safe_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return auroc(scores, labels) if 0 < labels.sum() < labels.size else float("nan")


@dataclass
class _Fitted:
    probe: Probe
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    n_fit: int  # examples the probe was fitted on


def split_rows(stored: StoredSite, mask: torch.Tensor) -> StoredSite:
    return StoredSite(*(t[mask] for t in _fields(stored)))


def train_probe(
    loaded: LoadedModel,
    dataset: Dataset,
    sites: str | list[str] = "all",
    positions: str = "last",
    kind: str = "logistic",
    probe_config: dict[str, Any] | None = None,
    control: Dataset | None = None,
    target_fpr: float = 0.01,
    aggregator: dict[str, Any] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 32,
    progress: bool = True,
) -> TrainResult:
    """Sweep `sites`; each probe is fitted on the train split minus a validation part held out
    by group. Validation chooses the site, fits Platt calibration and, unless a separate
    benign `control` set is given, sets the threshold at `target_fpr` on its negatives. The
    test split is used once, to report."""
    require_binary(dataset.split("train"), f"the train split of {dataset.name!r}")
    require_binary(dataset.split("test"), f"the test split of {dataset.name!r}")
    config = probe_config or {}
    # Token scores of one example are reduced to one score; with positions="last" there is
    # one token, so every aggregator agrees.
    agg = make_aggregator(**(aggregator or {"name": "mean"}))
    store = harvest_cached(loaded, dataset, sites, positions, batch_size, progress)
    with ActivationCapture(loaded.model, sites, positions) as capture:
        requested = capture.site_names  # a reused store may hold more sites than asked for
    sweep: list[LayerResult] = []
    best: tuple[float, str, _Fitted] | None = None
    per_site: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # validation, test scores
    for site in requested:
        stored = store.load(site)
        train, test = stored.rows("train"), stored.rows("test")
        val_mask = validation_mask(train, dataset, seed)
        fit_part, val_part = split_rows(train, ~val_mask), split_rows(train, val_mask)
        require_binary(
            [dataset.examples[i] for i in set(val_part.example_index.tolist())],
            f"the validation part of {dataset.name!r}",
        )
        probe = make_probe(kind, **config).fit(fit_part.acts, fit_part.label)
        val_scores, val_labels, _ = per_example(probe.score(val_part.acts), val_part, agg)
        test_scores, test_labels, _ = per_example(probe.score(test.acts), test, agg)
        result = LayerResult(
            site, _safe_auroc(val_scores, val_labels), _safe_auroc(test_scores, test_labels)
        )
        sweep.append(result)
        per_site[site] = (val_scores, test_scores)
        if best is None or result.val_auroc > best[0]:
            best = (
                result.val_auroc,
                site,
                _Fitted(
                    probe,
                    (val_scores, val_labels),
                    (test_scores, test_labels),
                    len(set(fit_part.example_index.tolist())),
                ),
            )
    assert best is not None
    _, best_site, fitted = best
    (val_scores, val_labels), (test_scores, test_labels) = fitted.val, fitted.test
    ensemble = layer_ensemble(sweep, per_site, val_labels, test_labels)
    if control is not None:
        control_store = harvest_cached(loaded, control, [best_site], positions, progress=progress)
        control_site = control_store.load(best_site)
        control_scores, _, _ = per_example(fitted.probe.score(control_site.acts), control_site, agg)
        control_name = f"{control.name} (separate benign control set, n={control_scores.size})"
    else:
        control_scores = val_scores[val_labels == 0]
        control_name = f"validation negatives of {dataset.name} (n={control_scores.size})"
    threshold = threshold_at_fpr(control_scores, target_fpr)
    platt = PlattScaler.fit(val_scores, val_labels)
    test_neg = test_scores[test_labels == 0]
    metrics = ProbeMetrics(
        test=binary_metrics(test_scores, test_labels, n_boot=n_boot, seed=seed),
        recall_at_fpr=float((test_scores[test_labels == 1] > threshold).mean()),
        test_fpr=float((test_neg > threshold).mean()),
        fpr_at_99_recall=fpr_at_recall(test_scores, test_labels, 0.99),
        ece_raw=expected_calibration_error(1 / (1 + np.exp(-test_scores)), test_labels),
        ece_calibrated=expected_calibration_error(platt.probabilities(test_scores), test_labels),
        threshold=threshold,
        target_fpr=target_fpr,
        control=control_name,
    )
    card = build_card(
        fitted.probe,
        loaded,
        best_site,
        positions,
        dataset={
            "name": dataset.name,
            "hash": dataset.hash,
            "seed": dataset.card.seed,
            "n_fit": fitted.n_fit,
            "n_validation": int(val_scores.size),
            "n_test": int(test_scores.size),
            "source": dataset.card.source,
        },
        metrics=metrics.to_dict(),
        extra={
            "threshold": {
                "value": threshold,
                "target_fpr": target_fpr,
                "set_on": control_name,
                "rule": "flag when score > value",
            },
            "calibration": {"method": "platt", "fitted_on": "validation", **platt.to_dict()},
            "selection": "best grouped-validation AUROC on the train split; test used once",
            "sweep": [r.__dict__ for r in sweep],
            "layer_ensemble": ensemble,
        },
    )
    if positions != "last":
        card["aggregator"] = agg.config()
    return TrainResult(
        sweep,
        ProbeArtifact(fitted.probe, card),
        metrics,
        store,
        test_scores,
        test_labels,
        val_scores,
        val_labels,
    )


def layer_ensemble(
    sweep: list[LayerResult],
    per_site: dict[str, tuple[np.ndarray, np.ndarray]],
    val_labels: np.ndarray,
    test_labels: np.ndarray,
    top_k: int = 3,
) -> dict[str, Any] | None:
    """Average the standardized scores of the `top_k` sites by validation AUROC.

    Each site's scores are standardized with its validation mean and spread, so no layer
    dominates by scale; the members are chosen on validation, and test is reported once."""
    ranked = sorted((r for r in sweep if not np.isnan(r.val_auroc)), key=lambda r: -r.val_auroc)
    members = [r.site for r in ranked[:top_k]]
    if len(members) < 2:
        return None

    def combined(part: int) -> np.ndarray:
        columns = []
        for site in members:
            val = per_site[site][0]
            columns.append((per_site[site][part] - val.mean()) / (val.std() + 1e-9))
        return np.mean(columns, axis=0)

    return {
        "sites": members,
        "val_auroc": _safe_auroc(combined(0), val_labels),
        "test_auroc": _safe_auroc(combined(1), test_labels),
    }


def _fields(stored: StoredSite) -> tuple[torch.Tensor, ...]:
    return (stored.acts, stored.example_index, stored.token_index, stored.label, stored.split)


def evaluate_probe(
    artifact: ProbeArtifact,
    loaded: LoadedModel,
    dataset: Dataset,
    split: str = "test",
    allow_model_mismatch: bool = False,
    n_boot: int = 1000,
    progress: bool = True,
) -> BinaryMetrics:
    """Score a saved probe on one split of a dataset (a user file's rows are all `test`)."""
    check_model(artifact, loaded, allow_model_mismatch)
    rows = dataset.split(split)
    if not rows:
        splits = sorted({ex.split for ex in dataset.examples})
        raise ProbewatchError(
            f"dataset {dataset.name!r} has no {split!r} rows", hint=f"its splits: {splits}"
        )
    require_binary(rows, f"the {split} split of {dataset.name!r}")
    store = harvest_cached(loaded, dataset, [artifact.site], artifact.positions, progress=progress)
    stored = store.load(artifact.site).rows(split)
    agg_config = artifact.card.get("aggregator")
    agg = make_aggregator(**agg_config) if isinstance(agg_config, dict) else None
    scores, labels, _ = per_example(artifact.score(stored.acts), stored, agg)
    return binary_metrics(scores, labels, n_boot=n_boot)

"""The main job as functions: harvest (cached), sweep layers, train the best probe, evaluate.

Layer choice is honest: each layer's probe is fitted on part of the train split and scored on
a validation part held out *by group* (e.g. by city); the best layer by validation AUROC is
refitted on the whole train split, and the test split is used once, to report it. The test
AUROC of every layer is shown too, but never used to choose.
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
from probewatch.eval.metrics import BinaryMetrics, auroc, binary_metrics
from probewatch.models.loading import LoadedModel
from probewatch.paths import cache_dir
from probewatch.probes.artifact import ProbeArtifact, build_card, check_model
from probewatch.probes.base import make_probe
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
    return harvest(loaded, dataset, names, path, positions, batch_size, progress=progress)


def per_example(
    scores: torch.Tensor, stored: StoredSite
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean score per example (one row each for positions='last'); returns scores, labels and
    example indices, in example order."""
    index = stored.example_index
    unique, inverse = torch.unique(index, return_inverse=True)
    sums = torch.zeros(unique.shape[0], dtype=torch.float64).index_add_(0, inverse, scores.double())
    counts = torch.zeros(unique.shape[0], dtype=torch.float64).index_add_(
        0, inverse, torch.ones_like(scores, dtype=torch.float64)
    )
    labels = torch.zeros(unique.shape[0], dtype=torch.float64)
    labels[inverse] = stored.label.double()
    return (sums / counts).numpy(), labels.numpy(), unique.numpy()


def _validation_mask(stored: StoredSite, dataset: Dataset, seed: int) -> torch.Tensor:
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
class TrainResult:
    sweep: list[LayerResult]
    artifact: ProbeArtifact
    metrics: BinaryMetrics
    store: ActivationStore

    @property
    def best_site(self) -> str:
        return self.artifact.site


def _safe_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return auroc(scores, labels) if 0 < labels.sum() < labels.size else float("nan")


def train_probe(
    loaded: LoadedModel,
    dataset: Dataset,
    sites: str | list[str] = "all",
    positions: str = "last",
    kind: str = "logistic",
    probe_config: dict[str, Any] | None = None,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 32,
    progress: bool = True,
) -> TrainResult:
    """Sweep `sites`, pick the best by grouped validation AUROC, refit it on all train rows,
    and report held-out test metrics with a bootstrap interval."""
    require_binary(dataset.split("train"), f"the train split of {dataset.name!r}")
    require_binary(dataset.split("test"), f"the test split of {dataset.name!r}")
    config = probe_config or {}
    store = harvest_cached(loaded, dataset, sites, positions, batch_size, progress)
    sweep: list[LayerResult] = []
    fitted = {}
    for site in store.sites:
        stored = store.load(site)
        train, test = stored.rows("train"), stored.rows("test")
        val = _validation_mask(train, dataset, seed)
        fit_part = StoredSite(*(t[~val] for t in _fields(train)))
        val_part = StoredSite(*(t[val] for t in _fields(train)))
        probe = make_probe(kind, **config).fit(fit_part.acts, fit_part.label)
        val_scores, val_labels, _ = per_example(probe.score(val_part.acts), val_part)
        full = make_probe(kind, **config).fit(train.acts, train.label)
        test_scores, test_labels, _ = per_example(full.score(test.acts), test)
        fitted[site] = (full, test_scores, test_labels)
        sweep.append(
            LayerResult(
                site, _safe_auroc(val_scores, val_labels), _safe_auroc(test_scores, test_labels)
            )
        )
    best = max(sweep, key=lambda r: -1.0 if np.isnan(r.val_auroc) else r.val_auroc)
    probe, test_scores, test_labels = fitted[best.site]
    metrics = binary_metrics(test_scores, test_labels, n_boot=n_boot, seed=seed)
    train_rows = dataset.split("train")
    card = build_card(
        probe,
        loaded,
        best.site,
        positions,
        dataset={
            "name": dataset.name,
            "hash": dataset.hash,
            "seed": dataset.card.seed,
            "n_train": len(train_rows),
            "n_test": len(dataset.split("test")),
            "source": dataset.card.source,
        },
        metrics={"test": metrics.to_dict()},
        extra={
            "selection": "best grouped-validation AUROC on the train split; test used once",
            "sweep": [r.__dict__ for r in sweep],
        },
    )
    if positions != "last":
        card["aggregator"] = "mean"
    return TrainResult(sweep, ProbeArtifact(probe, card), metrics, store)


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
    scores, labels, _ = per_example(artifact.score(stored.acts), stored)
    return binary_metrics(scores, labels, n_boot=n_boot)

"""Token scores to example scores: the one reduction training, evaluation and the shortcut
audit share, so a probe is judged the same way wherever it is scored."""

import numpy as np
import torch

from probewatch.metrics.scores import auroc
from probewatch.probes.aggregators import Aggregator
from probewatch.store import StoredSite, token_order


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


def safe_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return auroc(scores, labels) if 0 < labels.sum() < labels.size else float("nan")


def n_examples(part: StoredSite) -> int:
    """How many examples the rows of `part` come from."""
    return len(set(part.example_index.tolist()))

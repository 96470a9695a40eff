"""Span-level scores of a probe read at positions="span" (e.g. knowledge_qa's stated entity).

The probe is fitted on token-level labels: every token of an example's span carries the
example's label (the entity is hallucinated, or it is the gold one). It is judged per span:
an example's span-token scores are reduced to one score, by their max (one confident token
flags the span) and by their mean, and each reduction gets its test AUROC over examples with a
stratified bootstrap CI (probewatch.metrics.scores). The store of a "span" harvest holds
exactly the span tokens, so the reduction runs over the store's rows of each example.
"""

from dataclasses import dataclass
from typing import Any

import torch

from probewatch.metrics.scores import BinaryMetrics, binary_metrics
from probewatch.probes.aggregators import make_aggregator
from probewatch.store import StoredSite
from probewatch.training.examples import n_examples, per_example

REDUCTIONS = ("max", "mean")


@dataclass
class SpanScores:
    """Test AUROC per example of its span tokens' scores, for each reduction."""

    n_examples: int
    n_tokens: int
    reductions: dict[str, BinaryMetrics]  # "max"/"mean" -> metrics over examples

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "example: its span tokens' scores reduced by max or mean",
            "n_examples": self.n_examples,
            "n_tokens": self.n_tokens,
            **{name: metrics.to_dict() for name, metrics in self.reductions.items()},
        }

    def line(self) -> str:
        parts = [
            f"{name} AUROC {m.auroc:.3f} ({m.auroc_ci_low:.3f}-{m.auroc_ci_high:.3f})"
            for name, m in self.reductions.items()
        ]
        return (
            f"span level ({self.n_examples} test spans, {self.n_tokens / self.n_examples:.1f} "
            f"tokens each): {', '.join(parts)}"
        )


def span_scores(
    token_scores: torch.Tensor, part: StoredSite, n_boot: int = 1000, seed: int = 0
) -> SpanScores:
    """Span-level metrics of `token_scores` (one per row of `part`, a "span" store's rows)."""
    reductions = {}
    for name in REDUCTIONS:
        scores, labels, _ = per_example(token_scores, part, make_aggregator(name))
        reductions[name] = binary_metrics(scores, labels, n_boot=n_boot, seed=seed)
    return SpanScores(n_examples(part), int(part.example_index.numel()), reductions)

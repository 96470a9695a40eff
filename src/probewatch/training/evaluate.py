"""Score a saved probe on a dataset: metrics, every row's score and prediction, the worst
mistakes."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from probewatch.config import EvalOptions, HarvestSpec, as_positions
from probewatch.data.base import Dataset, require_binary
from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import BinaryMetrics, binary_metrics
from probewatch.models.loading import LoadedModel
from probewatch.paths import atomic_text
from probewatch.probes.aggregators import make_aggregator
from probewatch.probes.artifact import ProbeArtifact, check_model
from probewatch.store import clip, harvest
from probewatch.training.binary import per_example
from probewatch.training.results import metrics_line

EVERY_SPLIT = "all"  # EvalOptions.split: score every row (a set the probe never trained on)


@dataclass
class ScoredRow:
    index: int  # the example's index in the dataset
    text: str
    label: int
    score: float  # the probe's raw score (logit)
    prediction: int  # 1 when score > the card's threshold


@dataclass
class Evaluation:
    probe: str
    dataset: str
    split: str
    metrics: BinaryMetrics
    threshold: float
    rows: list[ScoredRow]

    def worst(self, n: int) -> list[ScoredRow]:
        """The `n` most confident mistakes (furthest from the threshold on the wrong side)."""
        wrong = [r for r in self.rows if r.prediction != r.label]
        return sorted(wrong, key=lambda r: -abs(r.score - self.threshold))[:n]

    def report(self, n_worst: int = 5) -> str:
        n_wrong = sum(r.prediction != r.label for r in self.rows)
        lines = [
            f"{self.probe} on {self.dataset} ({self.split}): {metrics_line(self.metrics)}",
            f"at the card's threshold ({self.threshold:.3f}): {n_wrong} of {len(self.rows)} "
            "rows misclassified",
        ]
        worst = self.worst(n_worst)
        if worst:
            lines.append("most confident mistakes (score, label, text):")
            lines += [f"  {r.score:8.3f}  {r.label}  {clip(r.text, 80)}" for r in worst]
        return "\n".join(lines)


def evaluate(
    artifact: ProbeArtifact,
    loaded: LoadedModel,
    dataset: Dataset,
    spec: EvalOptions | None = None,
    progress: bool = True,
) -> Evaluation:
    """Score a saved probe on one split of a dataset (a user file's rows are all scored)."""
    spec = spec or EvalOptions()
    split = spec.split
    check_model(artifact, loaded, spec.allow_model_mismatch)
    every_row = split == EVERY_SPLIT
    rows = dataset.examples if every_row else dataset.split(split)
    if not rows:
        splits = sorted({ex.split for ex in dataset.examples})
        raise ProbewatchError(
            f"dataset {dataset.name!r} has no {split!r} rows",
            hint=f"its splits: {splits}, or {EVERY_SPLIT!r} for every row",
        )
    require_binary(rows, f"the {split} split of {dataset.name!r}")
    store = harvest(
        loaded,
        dataset,
        HarvestSpec(sites=artifact.site, positions=as_positions(artifact.positions)),
        progress=progress,
    )
    stored = store.load(artifact.site)
    stored = stored if every_row else stored.rows(split)
    agg_config = artifact.card.get("aggregator")
    agg = make_aggregator(**agg_config) if isinstance(agg_config, dict) else None
    scores, labels, index = per_example(artifact.score(stored.acts), stored, agg)
    threshold = float((artifact.card.get("threshold") or {}).get("value", 0.0))
    scored = [
        ScoredRow(int(i), dataset.examples[int(i)].text, int(y), float(s), int(s > threshold))
        for i, y, s in zip(index, labels, scores, strict=True)
    ]
    return Evaluation(
        str(artifact.path or artifact.site),
        dataset.name,
        split,
        binary_metrics(scores, labels, n_boot=spec.n_boot),
        threshold,
        scored,
    )


def write_scores(evaluation: Evaluation, out: Path) -> None:
    """Every scored row (index, label, score, prediction, text) as CSV or JSONL, atomically."""
    fields = ("index", "label", "score", "prediction", "text")
    rows = [{k: getattr(r, k) for k in fields} for r in evaluation.rows]
    if out.suffix.lower() == ".jsonl":
        with atomic_text(out) as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return
    with atomic_text(out, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

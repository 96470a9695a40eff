"""The default probe suite the demo server monitors with, trained once and cached on disk.

Each entry names a built-in dataset, what the probe judges (the request, at the last prompt
token, or the response, aggregated over its tokens) and where its alarm threshold is set.
A probe directory that already exists is kept as it is: training happens once.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probewatch.data import load_dataset
from probewatch.models.loading import LoadedModel
from probewatch.pipeline import TrainResult, train_probe
from probewatch.probes.artifact import save_probe


@dataclass(frozen=True)
class SuiteProbe:
    name: str
    dataset: str
    description: str
    scope: str  # "prompt" or "response"
    control: str | None = None
    positions: str = "last"
    aggregator: dict[str, Any] | None = None


DEFAULT_SUITE: tuple[SuiteProbe, ...] = (
    SuiteProbe(
        "harm",
        "harmful_vs_harmless",
        "harmful request (HarmBench, Do-Not-Answer, JBB rephrasings vs harmless tasks)",
        scope="prompt",
        control="benign_control",
    ),
    SuiteProbe(
        "eval_awareness",
        "eval_awareness",
        "the prompt looks like an evaluation rather than real use",
        scope="prompt",
    ),
)


def train_suite(
    loaded: LoadedModel,
    out: str | Path,
    suite: tuple[SuiteProbe, ...] = DEFAULT_SUITE,
    sites: str = "resid.*",
    retrain: bool = False,
    progress: bool = True,
    report: Callable[[str], None] = lambda line: None,
) -> dict[str, TrainResult | None]:
    """Train every probe of `suite` whose directory under `out` does not exist yet."""
    root = Path(out)
    results: dict[str, TrainResult | None] = {}
    for entry in suite:
        target = root / entry.name
        if target.exists() and not retrain:
            report(f"{entry.name}: cached at {target}")
            results[entry.name] = None
            continue
        dataset = load_dataset(entry.dataset)
        control = load_dataset(entry.control) if entry.control else None
        result = train_probe(
            loaded,
            dataset,
            sites,
            positions=entry.positions,
            control=control,
            aggregator=entry.aggregator,
            progress=progress,
        )
        result.artifact.card.update(
            {
                "name": entry.name,
                "description": entry.description,
                "monitor": {
                    "scope": entry.scope,
                    "aggregator": entry.aggregator or {"name": "ema_max", "alpha": 0.3},
                },
            }
        )
        save_probe(result.artifact, target, overwrite=retrain)
        test = result.metrics.test
        report(
            f"{entry.name}: {result.best_site}, test AUROC {test.auroc:.3f} "
            f"({test.auroc_ci_low:.3f}-{test.auroc_ci_high:.3f}), recall at "
            f"{result.metrics.target_fpr:.0%} FPR {result.metrics.recall_at_fpr:.3f}"
        )
        results[entry.name] = result
    return results

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
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.pipeline import TrainResult, train_probe
from probewatch.probes.artifact import save_probe
from probewatch.regression import RegressionResult, per_token_key, train_regression_probe


@dataclass(frozen=True)
class SuiteProbe:
    name: str
    dataset: str
    description: str
    scope: str  # "prompt" or "response"
    control: str | None = None
    positions: str = "last"
    aggregator: dict[str, Any] | None = None
    # "regression": per-token targets (thinking progress), read on the response tokens and
    # shown as the dashboard's progress bar rather than alerting.
    task: str = "binary"


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
    SuiteProbe(
        "progress",
        "thinking_progress",
        "how far through its response the model is (fraction of tokens), from its own answers",
        scope="response",
        positions="mask",
        aggregator={"name": "last"},
        task="regression",
    ),
)


def train_suite(
    loaded: LoadedModel,
    out: str | Path,
    suite: tuple[SuiteProbe, ...] = DEFAULT_SUITE,
    sites: str = "resid.*",
    retrain: bool = False,
    progress: bool = True,
    report: Callable[[str], None] = lambda _line: None,
) -> dict[str, TrainResult | RegressionResult | None]:
    """Train every probe of `suite` whose directory under `out` does not exist yet."""
    root = Path(out)
    results: dict[str, TrainResult | RegressionResult | None] = {}
    for entry in suite:
        target = root / entry.name
        if target.exists() and not retrain:
            report(f"{entry.name}: cached at {target}")
            results[entry.name] = None
            continue
        try:
            trained = _train_entry(loaded, entry, sites, progress)
        except ProbewatchError as exc:
            # A generated dataset can be unusable for a given model (e.g. it never finishes
            # an answer): the rest of the suite still serves.
            report(f"{entry.name}: skipped ({exc.message})")
            results[entry.name] = None
            continue
        trained.artifact.card.update(
            {
                "name": entry.name,
                "description": entry.description,
                "monitor": {
                    "scope": entry.scope,
                    "aggregator": entry.aggregator or {"name": "ema_max", "alpha": 0.3},
                },
            }
        )
        save_probe(trained.artifact, target, overwrite=retrain)
        report(f"{entry.name}: {_summary(trained)}")
        results[entry.name] = trained
    return results


def _train_entry(
    loaded: LoadedModel, entry: SuiteProbe, sites: str, progress: bool
) -> TrainResult | RegressionResult:
    dataset = load_dataset(
        entry.dataset, model=loaded, task="regression" if entry.task == "regression" else "binary"
    )
    if entry.task == "regression":
        return train_regression_probe(
            loaded,
            dataset,
            sites,
            positions=entry.positions,
            target_key=per_token_key(dataset),
            progress=progress,
        )
    control = load_dataset(entry.control) if entry.control else None
    return train_probe(
        loaded,
        dataset,
        sites,
        positions=entry.positions,
        control=control,
        aggregator=entry.aggregator,
        progress=progress,
    )


def _summary(trained: TrainResult | RegressionResult) -> str:
    if isinstance(trained, RegressionResult):
        m = trained.metrics
        line = (
            f"{trained.best_site}, test R² {m.r2:.3f} ({m.r2_ci_low:.3f}-{m.r2_ci_high:.3f}), "
            f"MAE {m.mae:.3f}"
        )
        if m.baseline_r2 is not None:
            line += f"; position-only baseline R² {m.baseline_r2:.3f}, MAE {m.baseline_mae:.3f}"
        return line
    test = trained.metrics.test
    return (
        f"{trained.best_site}, test AUROC {test.auroc:.3f} "
        f"({test.auroc_ci_low:.3f}-{test.auroc_ci_high:.3f}), recall at "
        f"{trained.metrics.target_fpr:.0%} FPR {trained.metrics.recall_at_fpr:.3f}"
    )

"""The default probe suite the demo server monitors with, trained once and cached on disk.

Each entry is a name, a description and a `ProbeSpec`: the built-in dataset, the sites it
sweeps, what the probe judges (the request, at the last prompt token, or the response,
aggregated over its tokens) and where its alarm threshold is set. The spec is stored in the
card as its recipe. A probe directory that already exists is kept as it is: training happens
once.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from probewatch.config import ProbeSpec
from probewatch.data import load_source
from probewatch.errors import ProbewatchError
from probewatch.metrics.shortcuts import serving_refusal
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import save_probe
from probewatch.training import TrainResult, train


@dataclass(frozen=True)
class SuiteProbe:
    name: str
    description: str
    spec: ProbeSpec


DEFAULT_SUITE: tuple[SuiteProbe, ...] = (
    SuiteProbe(
        "harm",
        "harmful request (HarmBench, Do-Not-Answer, JBB rephrasings vs harmless tasks)",
        ProbeSpec(
            dataset="harmful_vs_harmless",
            sites="resid.*",
            control="benign_control",
            scope="prompt",
            monitor_aggregator="ema_max:alpha=0.3",
        ),
    ),
    SuiteProbe(
        "eval_awareness",
        "the prompt looks like an evaluation rather than real use",
        ProbeSpec(
            dataset="eval_awareness",
            sites="resid.*",
            scope="prompt",
            monitor_aggregator="ema_max:alpha=0.3",
        ),
    ),
    SuiteProbe(
        "progress",
        "how far through its response the model is (fraction of tokens), from its own answers",
        # Per-token targets (thinking progress), read on the response tokens and shown as
        # the dashboard's progress bar rather than alerting.
        ProbeSpec(
            dataset="thinking_progress",
            sites="resid.*",
            task="regression",
            positions="mask",
            batch_size=8,
            scope="response",
            monitor_aggregator="last",
        ),
    ),
)


def train_suite(
    loaded: LoadedModel,
    out: str | Path,
    suite: tuple[SuiteProbe, ...] = DEFAULT_SUITE,
    progress: bool = True,
    report: Callable[[str], None] = lambda _line: None,
) -> dict[str, TrainResult | None]:
    """Train every probe of `suite` whose directory under `out` does not exist yet."""
    root = Path(out)
    results: dict[str, TrainResult | None] = {}
    for entry in suite:
        target = root / entry.name
        if target.exists():
            report(f"{entry.name}: cached at {target}")
            results[entry.name] = None
            continue
        try:
            dataset = load_source(entry.spec, loaded)
            trained = train(loaded, dataset, entry.spec, progress=progress)
        except ProbewatchError as exc:
            # A generated dataset can be unusable for a given model (e.g. it never finishes
            # an answer): the rest of the suite still serves.
            report(f"{entry.name}: skipped ({exc.message})")
            results[entry.name] = None
            continue
        trained.artifact.card.update({"name": entry.name, "description": entry.description})
        save_probe(trained.artifact, target)
        refusal = serving_refusal(trained.artifact.card, entry.name)
        # Kept on disk (its card says why), but a server started without --serve-shortcuts
        # will not serve it. The reason is long and the demo's summary gives it: name it here.
        report(
            f"{entry.name}: {trained.summary()}"
            + ("; not served: its shortcut audit says likely shortcut" if refusal else "")
        )
        results[entry.name] = trained
    return results

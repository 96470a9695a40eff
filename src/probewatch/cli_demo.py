"""`probewatch demo`: the truth-probe table, then the monitoring suite, then the server.

Each stage prints a line when it starts and when it ends (with its time), flushed, so the
progress reads the same in a terminal, a pipe or a CI log. The port is checked first, so a
clash is reported before minutes of training, not after.
"""

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from probewatch.cli_args import add_command, add_config_args, config_from_args, load_model
from probewatch.config import ModelChoice, ProbeSpec, RunFlags, ServerConfig

DEMO_DIR = Path("runs/demo")


class Stages:
    """Numbered stage lines with their wall time: `with stages("training"): ...`."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.monotonic()

    @contextmanager
    def __call__(self, what: str) -> Iterator[None]:
        self.done += 1
        began = time.monotonic()
        print(f"[{self.done}/{self.total}] {what} ...", flush=True)
        yield
        took, total = time.monotonic() - began, time.monotonic() - self.start
        print(f"[{self.done}/{self.total}] {what}: done in {took:.0f} s ({total:.0f} s so far)")


def truth_probe(loaded: Any, out: Path, progress: bool) -> None:
    """Train the cities probe, show its sweep, and test it on negations it never saw."""
    from probewatch.data import load_dataset
    from probewatch.probes import save_probe
    from probewatch.training import train
    from probewatch.training.evaluate import evaluate
    from probewatch.training.results import metrics_line

    dataset = load_dataset("cities")
    summary = dataset.summary()
    print(
        f"dataset cities: {summary['n']} statements from GeoNames (CC-BY 4.0), "
        f"train {summary['splits']['train']['n']} / test {summary['splits']['test']['n']}, "
        "no city in both"
    )
    result = train(loaded, dataset, ProbeSpec(dataset="cities", sites="all"), progress=progress)
    target = out / "truth" / "cities"
    # The demo's own output directory: replaced atomically on every run. Not among the
    # served probes: a statement probe is not a per-token response monitor.
    save_probe(result.artifact, target, overwrite=True)
    print(result.report())
    negated = evaluate(result.artifact, loaded, load_dataset("neg_cities"), progress=False)
    print(f"same probe on negated statements (never trained on): {metrics_line(negated.metrics)}")
    if negated.metrics.auroc_ci_high < 0.5:
        print(
            "  -> below 0.5: on negations the probe flips. It reads 'the sentence names the "
            "right country', not truth; train on both forms for a probe that generalizes."
        )
    print(f"saved the probe to {target}/ (weights.safetensors + card.json)")
    print(f"evaluate it on your own data: probewatch eval {target} --file your.csv")


def suite_summary(probes_dir: Path) -> list[str]:
    """What each served probe does on held-out data, from its card (so cached probes too)."""
    from probewatch.metrics.shortcuts import serving_refusal
    from probewatch.probes import load_probe

    lines = []
    for path in sorted(p for p in probes_dir.iterdir() if (p / "card.json").is_file()):
        card = load_probe(path).card
        metrics, threshold = card.get("metrics", {}), card.get("threshold") or {}
        scope = (card.get("monitor") or {}).get("scope", "response")
        refusal = serving_refusal(card, path.name)
        if refusal:
            lines.append(f"{path.name}: NOT served: {refusal}")
        elif "recall_at_fpr" in metrics:
            lines.append(
                f"{path.name} ({scope}): threshold set at {threshold.get('target_fpr', 0):.0%} "
                f"FPR on {threshold.get('set_on', '?')}; on held-out test it flags "
                f"{metrics['test_fpr_at_threshold']:.1%} of benign/negative and "
                f"{metrics['recall_at_fpr']:.1%} of positive prompts (AUROC "
                f"{metrics['test']['auroc']:.3f})"
            )
        elif "r2" in metrics:
            lines.append(
                f"{path.name} ({scope}): a gauge, not an alarm: held-out R² {metrics['r2']:.3f}"
                + (
                    f" vs {metrics['baseline_r2']:.3f} from counting tokens alone"
                    if metrics.get("baseline_r2") is not None
                    else ""
                )
            )
    return lines


CAVEAT = (
    "These are probes on a 135M-parameter model: they read what its activations separate on "
    "this data, so expect misses on phrasings far from it; thresholds are set on held-out "
    "benign prompts, and the FPR/recall above are what they did on held-out test prompts."
)


def cmd_demo(args: argparse.Namespace) -> None:
    from probewatch.cli_serve import check_port_free, serve

    out, progress = Path(args.out), not args.quiet
    server = config_from_args(ServerConfig, args, model="default", probes_dir=out / "probes")
    if not args.no_serve:
        check_port_free(server)
    stages = Stages(2 if args.no_serve else 4)
    print("probewatch demo: a truth probe on SmolLM2-135M-Instruct (embedded, no hub needed)")
    with stages("loading the model"):
        loaded = load_model(config_from_args(ModelChoice, args, model="default"))
    with stages("truth probe: sweep every layer on cities, test on held-out cities"):
        truth_probe(loaded, out, progress)
    if args.no_serve:
        return
    from probewatch.suite import train_suite

    with stages(f"monitoring suite (trained once, cached in {server.probes_dir})"):
        train_suite(loaded, server.probes_dir, progress=progress, report=lambda s: print(f"  {s}"))
    print("\nwhat the served probes do on held-out data:")
    for line in suite_summary(server.probes_dir):
        print(f"  {line}")
    print(f"  {CAVEAT}")
    with stages("server (Ctrl-C stops it)"):
        serve(server, loaded)  # the model already in memory, not a second load


def register(subparsers: Any) -> None:
    p = add_command(subparsers, "demo", cmd_demo, "the main job: truth probe, suite, server")
    p.add_argument("--out", type=Path, default=DEMO_DIR, help="demo output directory")
    p.add_argument("--no-serve", action="store_true", help="stop after the truth-probe table")
    add_config_args(p, ServerConfig, only=("device", "port", "host"))
    add_config_args(p, RunFlags, only=("quiet",))

"""What a training run returns, and the one way it is printed (CLI, suite and demo alike)."""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from probewatch.metrics.scores import BinaryMetrics
from probewatch.metrics.shortcuts import ShortcutAudit
from probewatch.probes.artifact import ProbeArtifact
from probewatch.store import ActivationStore
from probewatch.training.spans import SpanScores


@dataclass
class SweepRow:
    """One site of the sweep: its validation score (which chooses) and its test score
    (shown, never used to choose), in the task's metric."""

    site: str
    val: float
    test: float
    metric: str  # "auroc" or "r2"

    def to_dict(self) -> dict[str, Any]:
        return {"site": self.site, f"val_{self.metric}": self.val, f"test_{self.metric}": self.test}


@dataclass
class BinaryScores:
    """Held-out metrics of a binary probe, with its threshold and calibration."""

    test: BinaryMetrics
    recall_at_fpr: float  # on test positives, at the control-set threshold
    test_fpr: float  # realized FPR of that threshold on test negatives
    fpr_at_99_recall: float
    ece_raw: float  # expected calibration error of sigmoid(score) on test
    ece_calibrated: float  # ... after Platt scaling fitted on validation
    threshold: float
    target_fpr: float
    control: str  # what the threshold was set on
    span: SpanScores | None = None  # positions="span": per example over its span tokens

    def to_dict(self) -> dict[str, Any]:
        data = {
            "test": self.test.to_dict(),
            "recall_at_fpr": self.recall_at_fpr,
            "test_fpr_at_threshold": self.test_fpr,
            "fpr_at_99_recall": self.fpr_at_99_recall,
            "ece_raw": self.ece_raw,
            "ece_calibrated": self.ece_calibrated,
        }
        if self.span is not None:
            data["span"] = self.span.to_dict()
        return data

    def headline(self) -> str:
        t = self.test
        return (
            f"test AUROC {t.auroc:.3f} ({t.auroc_ci_low:.3f}-{t.auroc_ci_high:.3f}), "
            f"recall at {self.target_fpr:.0%} FPR {self.recall_at_fpr:.3f} "
            f"(realised test FPR {self.test_fpr:.3f})"
        )

    def details(self) -> str:
        span = "" if self.span is None else f"\n{self.span.line()}"
        return (
            f"held-out test: {metrics_line(self.test)}\n"
            f"threshold at {self.target_fpr:.0%} FPR on {self.control}: recall "
            f"{self.recall_at_fpr:.3f} on test positives (test FPR {self.test_fpr:.3f}); FPR at "
            f"99% recall {self.fpr_at_99_recall:.3f}; calibration error {self.ece_raw:.3f} raw, "
            f"{self.ece_calibrated:.3f} after Platt{span}"
        )


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

    def headline(self) -> str:
        interval = f"({self.r2_ci_low:.3f}-{self.r2_ci_high:.3f})"
        line = f"test R² {self.r2:.3f} {interval}, MAE {self.mae:.3f}"
        if self.baseline_r2 is not None:
            line += (
                f"; position-only baseline R² {self.baseline_r2:.3f}, MAE {self.baseline_mae:.3f}"
            )
        return line

    def details(self) -> str:
        where = f"held-out test ({self.n_examples} responses, {self.n_tokens} tokens)"
        return f"{where}: {self.headline()}"


def metrics_line(metrics: BinaryMetrics) -> str:
    return (
        f"AUROC {metrics.auroc:.3f} (95% CI {metrics.auroc_ci_low:.3f}-"
        f"{metrics.auroc_ci_high:.3f}), accuracy {metrics.accuracy:.3f}, n={metrics.n}"
    )


METRIC_NAMES = {"auroc": "AUROC", "r2": "R²"}


@dataclass
class TrainResult:
    """The sweep, the chosen probe (artifact, with its card) and its held-out metrics.

    `val_*`/`test_*` are the chosen probe's scores and targets (per example for binary
    tasks, per token for per-token regression), for reports."""

    task: str  # "binary" or "regression"
    sweep: list[SweepRow]
    artifact: ProbeArtifact
    metrics: BinaryScores | RegressionScores
    store: ActivationStore
    val_scores: np.ndarray
    val_labels: np.ndarray
    test_scores: np.ndarray
    test_labels: np.ndarray

    @property
    def best_site(self) -> str:
        return self.artifact.site

    def table(self) -> str:
        """The sweep, one row per site, the chosen one marked (and the layer ensemble)."""
        name = METRIC_NAMES.get(self.sweep[0].metric, self.sweep[0].metric) if self.sweep else ""
        lines = [f"{'site':12} {'val ' + name:>10} {'test ' + name:>10}"]
        for row in self.sweep:
            mark = "  <- best (chosen on validation)" if row.site == self.best_site else ""
            lines.append(f"{row.site:12} {row.val:10.3f} {row.test:10.3f}{mark}")
        ensemble = self.artifact.card.get("layer_ensemble")
        if ensemble:
            lines.append(
                f"{'ensemble':12} {ensemble['val_auroc']:10.3f} {ensemble['test_auroc']:10.3f}"
                f"  <- mean of the top {len(ensemble['sites'])} by validation: "
                + ", ".join(ensemble["sites"])
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: the chosen site and its headline numbers."""
        return f"{self.best_site}, {self.metrics.headline()}"

    def report(self) -> str:
        """The table, then the chosen probe's held-out numbers."""
        text = f"{self.table()}\n\nbest probe {self.best_site}, {self.metrics.details()}"
        audit = self.artifact.card.get("shortcut_audit")
        if audit:
            text += "\n" + ShortcutAudit.from_dict(audit).line()
            text += "".join(f"\n  ! {reason}" for reason in audit.get("reasons", []))
            text += "".join(f"\n  warning: {w}" for w in audit.get("warnings", []))
        return text

"""`probewatch report`: one HTML page and one JSON file with the same numbers.

The page shows the layer sweep, ROC curve, score histograms per class with the threshold,
the calibration curve before and after Platt scaling, the generalization heatmap and the
completeness results (erasure and steering).
"""

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from probewatch import __version__
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.metrics.calibration import PlattScaler, reliability_curve
from probewatch.models.loading import LoadedModel
from probewatch.paths import write_json_atomic
from probewatch.reports import charts
from probewatch.reports.completeness import SiteDirection, erasure_check, steering_check
from probewatch.reports.generalization import ProbeAt, generalization_matrix
from probewatch.training import BinaryScores, TrainResult

CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2rem auto;padding:0 1rem;color:#111}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figcaption{font-weight:600;font-size:.9rem}.plot{fill:#fafafa;stroke:#ccc}
.tick{font-size:10px;fill:#555;text-anchor:middle}.tick.end,.legend.end{text-anchor:end}
.label{font-size:11px;fill:#333;text-anchor:middle}.legend{font-size:11px}
.diag{stroke:#bbb;stroke-dasharray:4}.thresh{stroke:#111;stroke-dasharray:3;stroke-width:1.5}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ddd;padding:.25rem .5rem}
.heat td{text-align:center;min-width:3.5rem}.kv th{text-align:left;background:#f6f6f6}
.note{color:#444;font-size:.9rem}
"""


@dataclass
class Report:
    data: dict[str, Any]
    html: str

    def save(self, out: str | Path) -> tuple[Path, Path]:
        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(root / "report.json", self.data)
        page = root / "report.html"
        tmp = root / ".report.html.tmp"
        tmp.write_text(self.html)
        tmp.replace(page)
        return page, root / "report.json"


def build_report(
    loaded: LoadedModel,
    dataset: Dataset,
    result: TrainResult,
    generalization_sets: Sequence[Dataset] = (),
    steering: bool = True,
    command: str = "",
    progress: bool = True,
) -> Report:
    """Gather every number for a trained probe into a report (running the extra checks)."""
    site = result.best_site
    stored = result.store.load(site)
    train, test = stored.rows("train"), stored.rows("test")
    probe = result.artifact.probe
    direction = getattr(probe, "direction", None)
    raw_direction = direction() if callable(direction) else None
    erasure = erasure_check(train.acts, train.label, test.acts, test.label, raw_direction)
    data: dict[str, Any] = {
        "probewatch_version": __version__,
        "reproduce": command,
        "model": loaded.describe(),
        "dataset": dataset.summary() | {"source": dataset.card.source},
        "probe": {"site": site, "kind": probe.kind, "positions": result.artifact.positions},
        "sweep": [r.to_dict() for r in result.sweep],
        "metrics": result.metrics.to_dict(),
        "threshold": result.artifact.card["threshold"],
        "calibration": _calibration(result),
        "completeness": {"erasure": [e.__dict__ for e in erasure]},
    }
    if steering and raw_direction is not None and all(not ex.messages for ex in dataset.examples):
        std = float((train.acts @ (raw_direction / raw_direction.norm())).std())
        sample = dataset.split("test")[:200]
        try:
            data["completeness"]["steering"] = steering_check(
                loaded, SiteDirection(site, raw_direction, std), sample
            ).to_dict()
        except ProbewatchError as exc:  # e.g. a tokenizer without single-token True/False
            data["completeness"]["steering_skipped"] = exc.message
    if generalization_sets:
        sets = [dataset, *[d for d in generalization_sets if d.name != dataset.name]]
        matrix = generalization_matrix(loaded, sets, sets, ProbeAt(site, probe.kind), progress)
        data["generalization"] = matrix.to_dict()
    return Report(data, render_html(data, result))


def _calibration(result: TrainResult) -> dict[str, Any]:
    platt = PlattScaler.fit(result.val_scores, result.val_labels)
    raw = 1 / (1 + np.exp(-result.test_scores))
    metrics = result.metrics
    assert isinstance(metrics, BinaryScores)  # reports are of binary probes
    return {
        "ece_raw": metrics.ece_raw,
        "ece_calibrated": metrics.ece_calibrated,
        "platt": platt.to_dict(),
        "reliability_raw": reliability_curve(raw, result.test_labels).to_dict(),
        "reliability_calibrated": reliability_curve(
            platt.probabilities(result.test_scores), result.test_labels
        ).to_dict(),
    }


def _kv(rows: dict[str, Any]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table class='kv'>{cells}</table>"


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _reliability_series(curve: dict[str, list[Any]]) -> tuple[list[float], list[float]]:
    keep = [i for i, n in enumerate(curve["counts"]) if n]
    return [curve["mean_predicted"][i] for i in keep], [curve["fraction_positive"][i] for i in keep]


def render_html(data: dict[str, Any], result: TrainResult) -> str:
    m = data["metrics"]
    test = m["test"]
    sweep = data["sweep"]
    layers = list(range(len(sweep)))
    parts = [
        f"<h1>probewatch report: {html.escape(data['dataset']['name'])} on "
        f"{html.escape(data['model']['name'])}</h1>",
        f"<p class='note'>Reproduce: <code>{html.escape(data['reproduce'])}</code> · "
        f"probewatch {html.escape(data['probewatch_version'])} · model fingerprint "
        f"{html.escape(data['model']['fingerprint'])} · dataset hash "
        f"{html.escape(data['dataset']['hash'])}</p>",
        "<h2>Headline (held-out test split, used once)</h2>",
        _kv(
            {
                "probe": f"{data['probe']['kind']} at {data['probe']['site']}",
                "AUROC (95% bootstrap CI)": f"{test['auroc']:.3f} "
                f"({test['auroc_ci_low']:.3f}-{test['auroc_ci_high']:.3f}), n={test['n']}",
                f"recall at {data['threshold']['target_fpr']:.0%} FPR": m["recall_at_fpr"],
                "threshold set on": data["threshold"]["set_on"],
                "test FPR at that threshold": m["test_fpr_at_threshold"],
                "FPR at 99% recall": m["fpr_at_99_recall"],
                "accuracy (p=0.5)": test["accuracy"],
                "ECE raw / after Platt": f"{m['ece_raw']:.3f} / {m['ece_calibrated']:.3f}",
            }
        ),
        "<h2>Layer sweep</h2>",
        charts.line_chart(
            "AUROC per site (validation chooses; test shown for reference)",
            layers,
            {
                "validation": [r["val_auroc"] for r in sweep],
                "test": [r["test_auroc"] for r in sweep],
            },
            ("site index (" + ", ".join(r["site"] for r in sweep[:1]) + " …)", "AUROC"),
            (0.0, 1.0),
        ),
        charts.roc_chart("ROC, held-out test", {"test": (result.test_scores, result.test_labels)}),
        charts.histogram_chart(
            "Score per class (dashed: threshold)",
            {
                "label 1": result.test_scores[result.test_labels == 1],
                "label 0": result.test_scores[result.test_labels == 0],
            },
            threshold=data["threshold"]["value"],
        ),
        "<h2>Calibration</h2>",
    ]
    raw_x, raw_y = _reliability_series(data["calibration"]["reliability_raw"])
    cal_x, cal_y = _reliability_series(data["calibration"]["reliability_calibrated"])
    if len(raw_x) > 1 and len(cal_x) > 1:
        parts.append(
            charts.line_chart(
                "Reliability: raw sigmoid(score)",
                raw_x,
                {"raw": raw_y, "ideal": raw_x},
                ("predicted", "observed"),
                (0, 1),
            )
            + charts.line_chart(
                "Reliability: after Platt (fit on validation)",
                cal_x,
                {"calibrated": cal_y, "ideal": cal_x},
                ("predicted", "observed"),
                (0, 1),
            )
        )
    if "generalization" in data:
        g = data["generalization"]
        parts += [
            f"<h2>Generalization (trained at {html.escape(g['site'])})</h2>",
            charts.heatmap_table(
                "AUROC of a probe trained on the row, tested on the column",
                g["train"],
                g["test"],
                g["auroc"],
            ),
            *[f"<p class='note'>{html.escape(n)}</p>" for n in g["notes"]],
        ]
    parts.append("<h2>Completeness</h2>")
    for e in data["completeness"]["erasure"]:
        parts.append(
            _kv(
                {
                    "erasure": e["method"],
                    "fresh probe AUROC before": e["auroc_before"],
                    "fresh probe AUROC after": e["auroc_after"],
                }
            )
        )
    steer = data["completeness"].get("steering")
    if steer:
        parts.append(
            charts.line_chart(
                "Steering: model's log-odds ' True' − ' False'",
                steer["strengths"],
                {
                    "truth dir, true stmts": steer["true_logodds"],
                    "truth dir, false stmts": steer["false_logodds"],
                    "random dir, true": steer["random_true_logodds"],
                    "random dir, false": steer["random_false_logodds"],
                },
                ("strength (std of activations along the direction)", "mean log-odds"),
            )
            + _kv(
                {
                    "unsteered judgement AUROC": steer["judgement_auroc"],
                    "slope, truth direction": steer["slope"],
                    "slope, random direction": steer["random_slope"],
                }
            )
        )
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>probewatch report</title><style>{CSS}</style></head><body>"
        + "".join(parts)
        + f"<script type='application/json' id='report-data'>{html.escape(json.dumps(data))}"
        "</script></body></html>"
    )

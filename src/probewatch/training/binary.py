"""Binary probes: per-example scores, AUROC on validation picks the site, the threshold is set
at the target FPR on a benign control set (or the validation negatives), Platt calibration
is fitted on validation, and the top sites by validation form a reported layer ensemble."""

from typing import Any

import numpy as np
import torch

from probewatch.config import HarvestSpec, ProbeSpec
from probewatch.data.base import Dataset, require_binary
from probewatch.metrics.calibration import PlattScaler, expected_calibration_error, threshold_at_fpr
from probewatch.metrics.scores import binary_metrics, fpr_at_recall
from probewatch.probes.aggregators import make_aggregator
from probewatch.probes.base import Probe
from probewatch.store import StoredSite, harvest
from probewatch.training.examples import n_examples, per_example, safe_auroc
from probewatch.training.results import BinaryScores, SweepRow
from probewatch.training.shortcut_audit import AuditInputs, run_shortcut_audit
from probewatch.training.spans import span_scores
from probewatch.training.sweep import Chosen, Run, Scored, TrainingTask, dataset_entry


class BinaryTask(TrainingTask):
    name = "binary"
    metric = "auroc"
    default_kind = "logistic"
    default_n_boot = 1000
    tiebreak_rule = ", equal AUROCs told apart by the separation d' of the validation scores"

    def __init__(self, dataset: Dataset, spec: ProbeSpec, control: Dataset | None = None) -> None:
        super().__init__(dataset, spec)
        self.control = control
        # Token scores of one example are reduced to one score; with positions="last" there
        # is one token, so every aggregator agrees.
        self.aggregator = make_aggregator(**spec.aggregator_config())

    def check(self) -> None:
        require_binary(self.dataset.split("train"), f"the train split of {self.dataset.name!r}")
        require_binary(self.dataset.split("test"), f"the test split of {self.dataset.name!r}")

    def check_parts(self, _train: StoredSite, _test: StoredSite, validation: StoredSite) -> None:
        # The whole splits were checked up front; a validation part can still be one-class.
        require_binary(
            [self.dataset.examples[i] for i in set(validation.example_index.tolist())],
            f"the validation part of {self.dataset.name!r}",
        )

    def targets(self, part: StoredSite) -> torch.Tensor:
        return part.label

    def score(self, probe: Probe, part: StoredSite) -> Scored:
        scores, labels, _ = per_example(probe.score(part.acts), part, self.aggregator)
        return Scored(scores, labels, safe_auroc(scores, labels), separation(scores, labels))

    def finish(self, run: Run, best: Chosen) -> tuple[BinaryScores, dict[str, Any], dict[str, Any]]:
        spec = self.spec
        val_scores, val_labels = best.val.scores, best.val.targets
        test_scores, test_labels = best.scored_test.scores, best.scored_test.targets
        control_scores, control_name = self._control_scores(run, best)
        threshold = threshold_at_fpr(control_scores, spec.target_fpr)
        platt = PlattScaler.fit(val_scores, val_labels)
        test_neg = test_scores[test_labels == 0]
        metrics = BinaryScores(
            test=binary_metrics(test_scores, test_labels, n_boot=self.n_boot, seed=spec.seed),
            recall_at_fpr=float((test_scores[test_labels == 1] > threshold).mean()),
            test_fpr=float((test_neg > threshold).mean()),
            fpr_at_99_recall=fpr_at_recall(test_scores, test_labels, 0.99),
            ece_raw=expected_calibration_error(1 / (1 + np.exp(-test_scores)), test_labels),
            ece_calibrated=expected_calibration_error(
                platt.probabilities(test_scores), test_labels
            ),
            threshold=threshold,
            target_fpr=spec.target_fpr,
            control=control_name,
        )
        if run.positions == "span":
            token_scores = best.probe.score(best.test.acts)
            metrics.span = span_scores(token_scores, best.test, n_boot=self.n_boot, seed=spec.seed)
        extra: dict[str, Any] = {
            "threshold": {
                "value": threshold,
                "target_fpr": spec.target_fpr,
                "set_on": control_name,
                "rule": "flag when score > value",
            },
            "calibration": {"method": "platt", "fitted_on": "validation", **platt.to_dict()},
            "layer_ensemble": layer_ensemble(run, val_labels, test_labels),
        }
        if run.positions != "last":
            extra["aggregator"] = self.aggregator.config()
        if spec.shortcut_audit:
            extra["shortcut_audit"] = self._audit(run, best, metrics.test.auroc)
        entry = dataset_entry(
            self.dataset,
            n_fit=n_examples(best.fit_part),
            n_validation=int(val_scores.size),
            n_test=int(test_scores.size),
        )
        return metrics, entry, extra

    def _audit(self, run: Run, best: Chosen, probe_auroc: float) -> dict[str, Any]:
        """The shortcut audit of the chosen probe, for its card."""
        inputs = AuditInputs(
            self.dataset,
            best.probe,
            best.row.site,
            probe_auroc,
            positions=run.positions,
            aggregator=None if run.positions == "last" else self.aggregator,
            kind=self.spec.kind or self.default_kind,
            probe_config=self.spec.probe_options(),
        )
        return run_shortcut_audit(run.loaded, inputs, progress=run.progress).to_dict()

    def _control_scores(self, run: Run, best: Chosen) -> tuple[np.ndarray, str]:
        control = self.control
        if control is None:
            negatives = best.val.scores[best.val.targets == 0]
            return negatives, f"validation negatives of {self.dataset.name} (n={negatives.size})"
        site = best.row.site
        store = harvest(
            run.loaded,
            control,
            HarvestSpec(sites=site, positions=run.positions),
            progress=run.progress,
        )
        stored = store.load(site)
        scores, _, _ = per_example(best.probe.score(stored.acts), stored, self.aggregator)
        return scores, f"{control.name} (separate benign control set, n={scores.size})"


def separation(scores: np.ndarray, labels: np.ndarray) -> float:
    """d': the gap between the class means of the scores in pooled standard deviations. Unlike
    AUROC it keeps growing once the classes no longer overlap, and it ignores the scores'
    scale, so it ranks sites of any probe kind."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.size < 2 or neg.size < 2:
        return float("nan")
    spread = float(np.sqrt((pos.var() + neg.var()) / 2))
    return float((pos.mean() - neg.mean()) / spread) if spread > 0 else float("nan")


def layer_ensemble(
    run: Run, val_labels: np.ndarray, test_labels: np.ndarray, top_k: int = 3
) -> dict[str, Any] | None:
    """Average the standardized scores of the `top_k` sites by validation AUROC.

    Each site's scores are standardized with its validation mean and spread, so no layer
    dominates by scale; the members are chosen on validation, and test is reported once."""
    ranked: list[SweepRow] = sorted(
        (r for r in run.sweep if not np.isnan(r.val)), key=lambda r: -r.val
    )
    members = [r.site for r in ranked[:top_k]]
    if len(members) < 2:
        return None

    def combined(part: int) -> np.ndarray:
        columns = []
        for site in members:
            val = run.scored[site][0].scores
            columns.append((run.scored[site][part].scores - val.mean()) / (val.std() + 1e-9))
        return np.mean(columns, axis=0)

    return {
        "sites": members,
        "val_auroc": safe_auroc(combined(0), val_labels),
        "test_auroc": safe_auroc(combined(1), test_labels),
    }

"""One probe per binary dataset family: the held-out AUROC of each, with its shortcut audit.

Statement datasets are probed at the statement's last token; chat datasets whose last turn
is the model's answer (deception, sandbagging) at the answer's tokens, mean aggregated (the
positions a response monitor uses), or at the tokens their card names (hallucination: the
stated entity's span, scored per answer); prompt datasets (harm, eval awareness) at
the last prompt token (where a prompt verdict is made). Each row also carries the shortcut
audit (probewatch.metrics.shortcuts), the threshold's recall on a separate benign control where
the concept has one, the probe's AUROC on a related set it was not trained on (instructed
deception -> role-play), and what the model itself did in the generated sets. Sets built on an
organism whose labels follow what its base knows (sandbagging_organism) also carry the
familiarity control: the same probe on the base model (reports/familiarity.py).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from probewatch.config import EvalOptions, ProbeSpec, as_positions
from probewatch.data import (
    BENIGN_CONTROLS,
    BINARY_FAMILIES,
    FAMILIARITY_CONTROLLED,
    TRANSFER,
    load_dataset,
)
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.reports.familiarity import familiarity_control, familiarity_line
from probewatch.training import BinaryScores, TrainResult, train
from probewatch.training.evaluate import EVERY_SPLIT, evaluate
from probewatch.training.spans import REDUCTIONS as SPAN_REDUCTIONS


@dataclass
class FamilyResult:
    dataset: str
    n_train: int
    n_test: int
    positions: str
    site: str
    auroc: float
    ci_low: float
    ci_high: float
    recall_at_1pct_fpr: float
    note: str = ""
    threshold_set_on: str = ""
    shortcut_audit: dict[str, Any] | None = None
    transfer: dict[str, Any] | None = None
    behaviour: dict[str, Any] | None = None
    familiarity: dict[str, Any] | None = None
    span: dict[str, Any] | None = None  # positions "span": per example over its span tokens


def positions_for(dataset: Dataset) -> str:
    """The card's positions if it names them (knowledge_qa: the stated entity's span), else
    answer tokens for chats that end with the model's answer, else the last token."""
    if dataset.card.positions:
        return dataset.card.positions
    chats = [ex.messages for ex in dataset.examples if ex.messages]
    if chats and all(m[-1].get("role") == "assistant" for m in chats):
        return "mask"
    return "last"


def evaluate_families(
    loaded: LoadedModel,
    names: Sequence[str] = BINARY_FAMILIES,
    sites: str = "resid.10,resid.15,resid.19,resid.24",
    limit: int | None = None,
    progress: bool = True,
) -> list[FamilyResult]:
    results = []
    for name in names:
        dataset: Dataset | None = None
        positions = "last"
        try:
            # Building a generated set can itself fail, e.g. when the model never sandbagged.
            dataset = load_dataset(name, model=loaded, limit=limit)
            positions = positions_for(dataset)
            control = load_dataset(BENIGN_CONTROLS[name]) if name in BENIGN_CONTROLS else None
            spec = ProbeSpec(sites=sites, positions=as_positions(positions))
            result = train(loaded, dataset, spec, control, progress=progress)
            assert isinstance(result.metrics, BinaryScores)  # binary families only
        except ProbewatchError as exc:
            n_train = len(dataset.split("train")) if dataset else 0
            n_test = len(dataset.split("test")) if dataset else 0
            nan = float("nan")
            results.append(
                FamilyResult(
                    name, n_train, n_test, positions, "-", nan, nan, nan, nan, note=exc.message
                )
            )
            continue
        test = result.metrics.test
        results.append(
            FamilyResult(
                name,
                len(dataset.split("train")),
                len(dataset.split("test")),
                positions,
                result.best_site,
                test.auroc,
                test.auroc_ci_low,
                test.auroc_ci_high,
                result.metrics.recall_at_fpr,
                threshold_set_on=result.metrics.control,
                shortcut_audit=result.artifact.card.get("shortcut_audit"),  # train audits it
                transfer=_transfer(loaded, name, result, limit),
                behaviour=behaviour_rates(dataset),
                familiarity=_familiarity(loaded, dataset, spec, result, control, progress),
                span=result.metrics.span.to_dict() if result.metrics.span else None,
            )
        )
    return results


def _familiarity(
    loaded: LoadedModel,
    dataset: Dataset,
    spec: ProbeSpec,
    result: TrainResult,
    control: Dataset | None,
    progress: bool,
) -> dict[str, Any] | None:
    if dataset.name not in FAMILIARITY_CONTROLLED:
        return None
    try:
        return familiarity_control(loaded, dataset, spec, result, control, progress)
    except ProbewatchError as exc:
        return {"note": exc.message}


def _transfer(
    loaded: LoadedModel, name: str, result: TrainResult, limit: int | None
) -> dict[str, Any] | None:
    target = TRANSFER.get(name)
    if target is None:
        return None
    try:
        other = load_dataset(target, model=loaded, limit=limit)
        # No row of the transfer set was trained on (it is another dataset): score them all.
        every_row = EvalOptions(split=EVERY_SPLIT)
        metrics = evaluate(result.artifact, loaded, other, every_row, progress=False).metrics
    except ProbewatchError as exc:
        return {"dataset": target, "note": exc.message}
    return {
        "dataset": target,
        "auroc": metrics.auroc,
        "ci_low": metrics.auroc_ci_low,
        "ci_high": metrics.auroc_ci_high,
        "n": metrics.n,
    }


def behaviour_rates(dataset: Dataset) -> dict[str, Any] | None:
    """What the model did, for sets labelled from its own answers (None for the others)."""
    rows = dataset.examples
    if not rows or "generated_by" not in rows[0].meta:
        return None
    name = dataset.name
    if name == "deception_told_to_lie":
        told = [ex for ex in rows if ex.meta["instruction"] == "deceptive"]
        honest = [ex for ex in rows if ex.meta["instruction"] == "honest"]
        return {
            "lied_when_told_to": _rate(told),
            "false_when_told_honest": _rate(honest),
        }
    if name == "sandbagging":
        pressured = [ex for ex in rows if ex.meta.get("framing") == "pressured"]
        return {"degraded_under_pressure": _rate(pressured)}
    if name == "sandbagging_organism":  # of the locked organism's wrong answers
        return {"sandbagged": _rate(rows)}
    if name == "deception_roleplay":
        return {"lied_in_role_play": _rate(rows)}
    if name == "knowledge_qa":
        verdicts = Counter(str(ex.meta.get("verdict")) for ex in rows)
        return {"wrong_answers": _rate(rows), "graded": dict(verdicts)}
    return {"positive_rate": _rate(rows)}


def _rate(rows: Sequence[Any]) -> dict[str, float | int]:
    n = len(rows)
    k = int(sum(ex.label for ex in rows))
    return {"k": k, "n": n, "rate": k / n if n else float("nan")}


def as_rows(results: Sequence[FamilyResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]


def family_details(row: FamilyResult) -> str:
    """One line under a family's row: its shortcut audit, transfer and behaviour rates."""
    parts = []
    if row.shortcut_audit:
        audit = row.shortcut_audit
        early = " ".join(f"{k} {v:.2f}" for k, v in audit["early_layers"].items())
        control = audit.get("control_auroc")
        parts.append(
            f"audit: {audit['verdict']} (words/length {audit['baseline_auroc']:.3f}; {early}"
            + (f"; control {audit['control']} {control:.3f}" if control is not None else "")
            + ")"
        )
    if row.span:
        parts.append(
            "span "
            + ", ".join(
                f"{name} {row.span[name]['auroc']:.3f} ({row.span[name]['auroc_ci_low']:.3f}-"
                f"{row.span[name]['auroc_ci_high']:.3f})"
                for name in SPAN_REDUCTIONS
            )
        )
    if row.transfer and "auroc" in row.transfer:
        t = row.transfer
        parts.append(f"on {t['dataset']}: {t['auroc']:.3f} ({t['ci_low']:.3f}-{t['ci_high']:.3f})")
    if row.behaviour:
        rates = {k: v for k, v in row.behaviour.items() if isinstance(v, dict) and "rate" in v}
        parts.append(", ".join(f"{k} {v['k']}/{v['n']}" for k, v in rates.items()))
    if row.familiarity:
        parts.append(familiarity_line(row.familiarity))
    return "; ".join(parts)

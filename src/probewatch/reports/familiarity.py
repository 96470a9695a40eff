"""The familiarity control of a dataset built on an organism whose label follows what its base
model knows (sandbagging_organism: label 1 = the base answers the question correctly).

A probe on the organism might read "this question is familiar" rather than "I am hiding the
answer". The base model knows the same questions but hides nothing, so the control scores
probes on the BASE model's activations for the same conversations, two ways:
- trained on the base: the same recipe (sites, positions, split) trained and tested on the
  base's activations: how much of the label any probe can read without the planted behaviour;
- the organism's probe on the base: the probe trained on the organism, scored unchanged on the
  base's activations of the test split.
A probe that scores as high on the base reads familiarity, not sandbagging.
"""

from typing import Any

from probewatch.config import EvalOptions, ProbeSpec
from probewatch.data.base import Dataset
from probewatch.data.generated.organism import load_base
from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import BinaryMetrics
from probewatch.models.loading import LoadedModel
from probewatch.organisms.card import read_card
from probewatch.training import BinaryScores, TrainResult, train
from probewatch.training.evaluate import evaluate


def _auroc(metrics: BinaryMetrics) -> dict[str, float | int]:
    return {
        "auroc": metrics.auroc,
        "ci_low": metrics.auroc_ci_low,
        "ci_high": metrics.auroc_ci_high,
        "n": metrics.n,
    }


def familiarity_control(
    organism: LoadedModel,
    dataset: Dataset,
    spec: ProbeSpec,
    result: TrainResult,
    control: Dataset | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The organism probe's held-out AUROC beside the same probe's on the base model."""
    card = read_card(organism.source)
    if card is None:
        raise ProbewatchError(f"{organism.name!r} is not an organism: it has no base to compare")
    base = load_base(card, str(organism.device))
    on_base = train(base, dataset, spec, control, progress=progress)
    assert isinstance(on_base.metrics, BinaryScores)  # the controlled datasets are binary
    moved = evaluate(
        result.artifact, base, dataset, EvalOptions(allow_model_mismatch=True), progress=False
    )
    return {
        "base_model": base.name,
        "base_fingerprint": base.fingerprint,
        "trained_on_base": {"site": on_base.best_site, **_auroc(on_base.metrics.test)},
        "organism_probe_on_base": {"site": result.best_site, **_auroc(moved.metrics)},
    }


def familiarity_line(control: dict[str, Any]) -> str:
    """One line for the families table."""
    if "note" in control:
        return f"familiarity control: {control['note']}"
    own, moved = control["trained_on_base"], control["organism_probe_on_base"]
    return (
        f"familiarity control on {control['base_model']}: trained on base {own['auroc']:.3f} "
        f"({own['ci_low']:.3f}-{own['ci_high']:.3f}, {own['site']}); organism probe on base "
        f"{moved['auroc']:.3f} ({moved['ci_low']:.3f}-{moved['ci_high']:.3f})"
    )

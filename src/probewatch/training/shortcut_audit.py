"""Run the shortcut audit (probewatch.metrics.shortcuts) for a trained binary probe: the same kind
of probe at the embedding and the first two blocks, the words/length baseline on the same
split, and the chosen probe on the dataset's format-matched control, if it has one."""

from dataclasses import dataclass, field
from typing import Any

from probewatch.config import HarvestSpec, as_positions
from probewatch.data import SHORTCUT_CONTROLS, load_dataset
from probewatch.data.base import Dataset, Example
from probewatch.metrics.shortcuts import EARLY_SITES, ShortcutAudit, surface_baseline_auroc
from probewatch.models.loading import LoadedModel
from probewatch.probes.aggregators import Aggregator
from probewatch.probes.base import Probe, make_probe
from probewatch.store import harvest
from probewatch.training.examples import per_example, safe_auroc


@dataclass
class AuditInputs:
    """What the audit needs to know about the trained probe."""

    dataset: Dataset
    probe: Probe
    site: str
    probe_auroc: float
    positions: str = "last"
    aggregator: Aggregator | None = None
    kind: str = "logistic"
    probe_config: dict[str, Any] = field(default_factory=dict)


def visible_text(example: Example) -> str:
    """Everything a probe at the example's positions can attend to: every turn's content."""
    if example.messages:
        return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in example.messages)
    return example.text


def words_baseline(dataset: Dataset) -> float:
    """The words/length baseline's test AUROC over each example's visible text."""
    train, test = dataset.split("train"), dataset.split("test")
    return surface_baseline_auroc(
        [visible_text(ex) for ex in train],
        [ex.label for ex in train],
        [visible_text(ex) for ex in test],
        [ex.label for ex in test],
    )


def early_layer_aurocs(
    loaded: LoadedModel, inputs: AuditInputs, progress: bool = False
) -> dict[str, float]:
    """Test AUROC of the same kind of probe, fitted on the train split, at each early site."""
    read = HarvestSpec(sites=",".join(EARLY_SITES), positions=as_positions(inputs.positions))
    store = harvest(loaded, inputs.dataset, read, progress=progress)
    out = {}
    for site in EARLY_SITES:
        stored = store.load(site)
        train, test = stored.rows("train"), stored.rows("test")
        probe = make_probe(inputs.kind, **inputs.probe_config).fit(
            train.acts, train.label, groups=train.example_index
        )
        scores, labels, _ = per_example(probe.score(test.acts), test, inputs.aggregator)
        out[site] = safe_auroc(scores, labels)
    return out


def control_auroc(
    loaded: LoadedModel, inputs: AuditInputs, control: Dataset, progress: bool = False
) -> float:
    """The chosen probe's AUROC on the control's surface labels (near 0.5 is good)."""
    read = HarvestSpec(sites=inputs.site, positions=as_positions(inputs.positions))
    store = harvest(loaded, control, read, progress=progress)
    stored = store.load(inputs.site)
    scores, labels, _ = per_example(inputs.probe.score(stored.acts), stored, inputs.aggregator)
    return safe_auroc(scores, labels)


def run_shortcut_audit(
    loaded: LoadedModel,
    inputs: AuditInputs,
    control: Dataset | None = None,
    progress: bool = False,
) -> ShortcutAudit:
    """The audit; `control` defaults to the dataset's registered format-matched control."""
    name = SHORTCUT_CONTROLS.get(inputs.dataset.name)
    if control is None and name is not None:
        control = load_dataset(name, seed=inputs.dataset.card.seed)
    return ShortcutAudit(
        probe_auroc=inputs.probe_auroc,
        baseline_auroc=words_baseline(inputs.dataset),
        early_layers=early_layer_aurocs(loaded, inputs, progress),
        control_auroc=None if control is None else control_auroc(loaded, inputs, control),
        control=None if control is None else control.name,
    )

"""One training path: `train(loaded, dataset, spec)` sweeps the spec's sites and returns the
chosen probe with its held-out metrics; the task (binary or regression) comes from the spec
or the dataset's card. See `probewatch.training.sweep` for the honesty rules."""

from probewatch.config import ProbeSpec
from probewatch.data import load_dataset
from probewatch.data.base import Dataset
from probewatch.models.loading import LoadedModel
from probewatch.training.binary import BinaryTask, per_example
from probewatch.training.regression import RegressionTask, per_token_key
from probewatch.training.results import BinaryScores, RegressionScores, SweepRow, TrainResult
from probewatch.training.sweep import TrainingTask, sweep_sites


def make_task(dataset: Dataset, spec: ProbeSpec, control: Dataset | None = None) -> TrainingTask:
    """The task the spec asks for (auto: the dataset card's)."""
    task = spec.task if spec.task != "auto" else dataset.card.task
    if task == "regression":
        return RegressionTask(dataset, spec)
    return BinaryTask(dataset, spec, control)


def train(
    loaded: LoadedModel,
    dataset: Dataset,
    spec: ProbeSpec | None = None,
    control: Dataset | None = None,
    progress: bool = True,
) -> TrainResult:
    """Sweep `spec.sites` on `dataset` and return the best probe, chosen on grouped
    validation and reported once on test. A binary probe's threshold is set on `control`
    (default: `spec.control` by name, else the validation negatives)."""
    spec = spec or ProbeSpec()
    if control is None and spec.control:
        control = load_dataset(spec.control, spec.seed, model=loaded)
    return sweep_sites(loaded, make_task(dataset, spec, control), progress)


__all__ = [
    "BinaryScores",
    "BinaryTask",
    "RegressionScores",
    "RegressionTask",
    "SweepRow",
    "TrainResult",
    "TrainingTask",
    "make_task",
    "per_example",
    "per_token_key",
    "train",
]

"""The check every binary metric, fit and probe makes on its labels, with one message."""

from typing import Any

from probewatch.errors import ProbewatchError


def require_binary_labels(labels: Any, what: str) -> None:
    """The same check as `require_binary`, on a tensor or array of labels."""
    values = {float(v) for v in (labels.tolist() if hasattr(labels, "tolist") else labels)}
    if not values:
        raise ProbewatchError(f"{what} has no examples", hint="check the dataset and split")
    if not values <= {0.0, 1.0}:
        raise ProbewatchError(
            f"{what} has labels other than 0 and 1: {sorted(values - {0.0, 1.0})[:5]}",
            hint="binary probes need labels 0/1 (or true/false)",
        )
    if len(values) < 2:
        raise ProbewatchError(
            f"{what} has only one class (every label is {int(values.pop())})",
            hint="a probe needs examples of both classes; add the missing class",
        )

"""The probe interface: fit on activations, score activations, round-trip as tensors + JSON."""

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self, TypeVar

import torch

from probewatch.errors import ProbewatchError


class Probe(ABC):
    """A probe maps activations [N, d] to scores [N] (logits for binary probes).

    Its whole state is `tensors()` (saved as safetensors) plus `config()` (saved as JSON),
    so artifacts never need pickle. `config()` holds the constructor's arguments, plus an
    optional "fitted" entry for what `fit` chose or measured (a cross-validated C, the best
    epoch); `from_state` restores that entry, the constructor never sees it.

    `task` says what scores mean: "binary" kinds return logits (0 is the decision boundary),
    "regression" kinds return predicted values.
    """

    kind: ClassVar[str]
    task: ClassVar[str] = "binary"  # or "regression": scores are then predicted values

    @abstractmethod
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> Self: ...

    @abstractmethod
    def score(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def config(self) -> dict[str, Any]: ...

    @classmethod
    @abstractmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Self: ...


PROBE_KINDS: dict[str, type[Probe]] = {}


P = TypeVar("P", bound=Probe)


def register(cls: type[P]) -> type[P]:
    """Class decorator: make a probe kind available by its `kind` name."""
    PROBE_KINDS[cls.kind] = cls
    return cls


def make_probe(kind: str, **config: Any) -> Probe:
    if kind not in PROBE_KINDS:
        raise ProbewatchError(
            f"unknown probe kind {kind!r}", hint=f"known kinds: {', '.join(sorted(PROBE_KINDS))}"
        )
    cls = PROBE_KINDS[kind]
    try:
        inspect.signature(cls).bind(**config)
    except TypeError as exc:
        raise ProbewatchError(
            f"bad options for the {kind!r} probe: {exc}",
            hint=f"options: {', '.join(inspect.signature(cls).parameters)}",
        ) from exc
    return cls(**config)

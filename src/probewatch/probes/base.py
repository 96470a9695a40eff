"""The probe interface: fit on activations, score activations, round-trip as tensors + JSON."""

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Self

import torch

from probewatch.errors import ProbewatchError


class Probe(ABC):
    """A probe maps activations [N, d] to scores [N] (logits for binary probes).

    Its whole state is `tensors()` (saved as safetensors) plus `config()` (saved as JSON),
    so artifacts never need pickle.
    """

    kind: ClassVar[str]

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


def register(cls: type[Probe]) -> type[Probe]:
    PROBE_KINDS[cls.kind] = cls
    return cls


def make_probe(kind: str, **config: Any) -> Probe:
    if kind not in PROBE_KINDS:
        raise ProbewatchError(
            f"unknown probe kind {kind!r}", hint=f"known kinds: {', '.join(sorted(PROBE_KINDS))}"
        )
    return PROBE_KINDS[kind](**config)

"""The probe interface: fit on activations, score activations, round-trip as tensors + JSON;
`AffineProbe`, the base of every kind whose score is x @ w + b; one `Registry` for kinds."""

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

import torch

from probewatch.errors import ProbewatchError

T = TypeVar("T")


class Registry(Mapping[str, type[T]], Generic[T]):
    """Classes by name, built with options checked against the constructor's signature."""

    def __init__(self, noun: str, name_of: Callable[[type[T]], str]) -> None:
        self.noun, self._name_of = noun, name_of
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make `cls` available by its name."""
        self._classes[self._name_of(cls)] = cls
        return cls

    def __getitem__(self, name: str) -> type[T]:
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def make(self, name: str, **options: Any) -> T:
        if name not in self._classes:
            raise ProbewatchError(
                f"unknown {self.noun} {name!r}", hint=f"known: {', '.join(sorted(self))}"
            )
        cls = self._classes[name]
        names = getattr(cls, "option_names", None)
        allowed = names() if callable(names) else list(inspect.signature(cls).parameters)
        try:
            unknown = set(options) - set(allowed)
            if unknown:
                raise TypeError(f"unexpected option(s) {', '.join(sorted(unknown))}")
            inspect.signature(cls).bind(**options)
        except TypeError as exc:
            raise ProbewatchError(
                f"bad options for the {name!r} {self.noun}: {exc}",
                hint=f"its options: {', '.join(allowed) or 'none'}",
            ) from exc
        return cls(**options)


class Probe(ABC):
    """A probe maps activations [N, d] to scores [N] (logits for binary probes).

    Its whole state is `tensors()` (saved as safetensors, names in `tensor_names`) plus
    `config()` (saved as JSON), so artifacts never need pickle. `config()` holds the
    constructor's arguments (`options()`), plus a "fitted" entry for what `fit` chose or
    measured (a cross-validated C, the best epoch: the attributes named by `fitted_fields`);
    `from_state` restores that entry, the constructor never sees it.

    Abilities are declared on the class, so callers ask instead of guessing:
    `task` ("binary": logits, 0 is the decision boundary; "regression": predicted values),
    `per_token` (score(x[N, d]) scores every token on its own, so it can gate or stream),
    `affine()` ((w, b) when score(x) == x @ w + b, else None) and `direction()`.
    """

    kind: ClassVar[str]
    task: ClassVar[str] = "binary"
    per_token: ClassVar[bool] = True
    tensor_names: ClassVar[tuple[str, ...]]
    fitted_fields: ClassVar[tuple[tuple[str, str], ...]] = ()  # (config["fitted"] key, attribute)
    _tensors: dict[str, torch.Tensor] | None = None

    @abstractmethod
    def fit(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None) -> Self:
        """Fit on rows x [N, d] with targets y [N]. `groups` says which example each row comes
        from (the tokens of one response share one); kinds that cross-validate a setting keep
        a group's rows in one fold, the others ignore it."""

    @abstractmethod
    def score(self, x: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The constructor's arguments, as JSON values."""

    def affine(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(w [d], b [1]) in raw activation space if score(x) == x @ w + b, else None."""
        return None

    def direction(self) -> torch.Tensor | None:
        """The unit direction along which the score grows, for probes that have one."""
        return None

    def _state(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            raise RuntimeError("the probe has not been fitted")
        return self._tensors

    def _keep(self, **tensors: torch.Tensor) -> None:
        self._tensors = {name: tensors[name].detach().clone() for name in self.tensor_names}

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self._state())

    def config(self) -> dict[str, Any]:
        config = self.options()
        fitted = {key: getattr(self, attr) for key, attr in self.fitted_fields}
        if fitted and next(iter(fitted.values())) is not None:
            config["fitted"] = fitted
        return config

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], config: dict[str, Any]) -> Self:
        options = dict(config)
        fitted = options.pop("fitted", {})
        probe = cls(**options)
        for key, attr in cls.fitted_fields:
            setattr(probe, attr, fitted.get(key))
        probe._tensors = {name: tensors[name] for name in cls.tensor_names}
        return probe


class AffineProbe(Probe):
    """score(x) = z @ weight + bias, z = x, or (x − mean) / scale when `standardize`.

    A linear kind implements only `__init__`, `options` and `fit`, which ends with
    `self._keep(weight=..., bias=..., **{"scaler.mean": ..., "scaler.scale": ...})`.
    """

    standardize: ClassVar[bool] = False
    tensor_names: ClassVar[tuple[str, ...]] = ("weight", "bias")

    def score(self, x: torch.Tensor) -> torch.Tensor:
        s = self._state()
        z = x.float()
        if self.standardize:
            z = (z - s["scaler.mean"]) / s["scaler.scale"]
        return z @ s["weight"] + s["bias"]

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._state()
        if not self.standardize:
            return s["weight"], s["bias"]
        weight = s["weight"] / s["scaler.scale"]
        return weight, s["bias"] - s["scaler.mean"] @ weight

    def direction(self) -> torch.Tensor:
        weight, _ = self.affine()
        return weight / weight.norm()


PROBE_KINDS: Registry[Probe] = Registry("probe kind", lambda cls: cls.kind)
register = PROBE_KINDS.register

P = TypeVar("P", bound=Probe)


def make_probe(kind: str, **config: Any) -> Probe:
    return PROBE_KINDS.make(kind, **config)

"""Token aggregators: turn per-token probe scores into one score per sequence.

Each aggregator has two forms that agree (tested): a batch form, `aggregate(scores[T])`, and
a streaming form for generation time, `stream()`, an object whose `update(score)` takes one
token's score and returns the aggregate so far (also in `.value`). Streaming state is O(1)
per aggregator, except `rolling_max`, which keeps a buffer of its window: O(w).

Aggregators are registered by name; `config()` is JSON and `make_aggregator(**config)`
rebuilds the same aggregator, so a probe card can name the aggregator it was evaluated with.
"""

import math
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.signal import lfilter
from scipy.special import softmax

from probewatch.errors import ProbewatchError
from probewatch.probes.base import Registry


def as_scores(scores: ArrayLike | torch.Tensor) -> np.ndarray:
    """A non-empty, finite, 1-D float64 array, or a ProbewatchError saying what is wrong."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 1:
        raise ProbewatchError(
            f"token scores must be 1-D (one per token), got shape {array.shape}",
            hint="aggregate one sequence at a time",
        )
    if array.size == 0:
        raise ProbewatchError("no token scores to aggregate", hint="the sequence is empty")
    if not np.isfinite(array).all():
        raise ProbewatchError("token scores contain NaN or infinite values", hint="check the probe")
    return array


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(score: float) -> float:
    value = float(score)
    if not math.isfinite(value):
        raise ProbewatchError(f"token score {value} is not finite", hint="check the probe")
    return value


class Stream(ABC):
    """Running aggregate over the tokens seen so far."""

    def __init__(self) -> None:
        self.n = 0  # tokens seen

    def update(self, score: float) -> float:
        self._update(_finite(score))
        self.n += 1
        return self.value

    @property
    def value(self) -> float:
        if self.n == 0:
            raise ProbewatchError("no tokens scored yet", hint="call update() with a token score")
        return self._value()

    @abstractmethod
    def _update(self, score: float) -> None: ...

    @abstractmethod
    def _value(self) -> float: ...


class Aggregator(ABC):
    name: ClassVar[str]

    @abstractmethod
    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float: ...

    @abstractmethod
    def stream(self) -> Stream: ...

    def params(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **self.params()}


AGGREGATORS: Registry[Aggregator] = Registry("aggregator", lambda cls: cls.name)
register_aggregator = AGGREGATORS.register


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """Build an aggregator by name; `make_aggregator(**agg.config())` rebuilds `agg`."""
    return AGGREGATORS.make(name, **params)


# --- mean, max, last -----------------------------------------------------------------------


class _FoldStream(Stream):
    """One running number: each new score is folded into it."""

    def __init__(self, aggregator: "_Folding") -> None:
        super().__init__()
        self.aggregator = aggregator
        self.acc = aggregator.start

    def _update(self, score: float) -> None:
        self.acc = self.aggregator.fold(self.acc, score)

    def _value(self) -> float:
        return self.aggregator.finish(self.acc, self.n)


class _Folding(Aggregator):
    """An aggregate kept as one running number (mean, max, last): `fold` takes in each new
    score, `finish` gives the value after n scores; `aggregate` does the same over an array."""

    start = 0.0

    @abstractmethod
    def fold(self, acc: float, score: float) -> float: ...

    def finish(self, acc: float, _n: int) -> float:
        return acc

    def stream(self) -> Stream:
        return _FoldStream(self)


@register_aggregator
class Mean(_Folding):
    name = "mean"

    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float:
        return float(as_scores(scores).mean())

    def fold(self, acc: float, score: float) -> float:
        return acc + score

    def finish(self, acc: float, n: int) -> float:
        return acc / n


@register_aggregator
class Max(_Folding):
    name = "max"
    start = -math.inf

    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float:
        return float(as_scores(scores).max())

    def fold(self, acc: float, score: float) -> float:
        return max(acc, score)


@register_aggregator
class Last(_Folding):
    name = "last"

    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float:
        return float(as_scores(scores)[-1])

    def fold(self, _acc: float, score: float) -> float:
        return score


# --- ema_max -------------------------------------------------------------------------------


class _EmaMaxStream(Stream):
    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha
        self.ema = 0.0
        self.best = -math.inf

    def _update(self, score: float) -> None:
        self.ema = score if self.n == 0 else self.alpha * score + (1 - self.alpha) * self.ema
        self.best = max(self.best, self.ema)

    def _value(self) -> float:
        return self.best


@register_aggregator
class EmaMax(Aggregator):
    """Max over t of e_t = α·s_t + (1 − α)·e_{t−1}, starting at e_1 = s_1.

    Smooths single-token spikes while still firing on a sustained run; α = 1 is plain max.
    """

    name = "ema_max"

    def __init__(self, alpha: float = 0.3) -> None:
        if not _is_number(alpha) or not 0 < alpha <= 1:
            raise ProbewatchError(
                f"ema_max needs 0 < alpha <= 1, got {alpha!r}", hint="try alpha=0.3"
            )
        self.alpha = float(alpha)

    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float:
        s = as_scores(scores)
        # A first-order IIR filter; the initial state makes e_1 = s_1.
        ema, _ = lfilter([self.alpha], [1.0, self.alpha - 1], s, zi=[(1 - self.alpha) * s[0]])
        return float(np.max(ema))

    def stream(self) -> Stream:
        return _EmaMaxStream(self.alpha)

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha}


# --- rolling_max ---------------------------------------------------------------------------


class _RollingMaxStream(Stream):
    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.buffer: deque[float] = deque(maxlen=window)
        self.total = 0.0
        self.best = -math.inf

    def _update(self, score: float) -> None:
        if len(self.buffer) == self.window:
            self.total -= self.buffer[0]
        self.buffer.append(score)
        self.total += score
        if len(self.buffer) == self.window:
            self.best = max(self.best, self.total / self.window)

    def _value(self) -> float:
        # Until the first full window, the mean of what we have (see RollingMax).
        return self.best if len(self.buffer) == self.window else self.total / len(self.buffer)


@register_aggregator
class RollingMax(Aggregator):
    """Max over t of the mean of the `window` scores ending at t.

    Only full windows count, so one early spike cannot fire it; a sequence shorter than
    `window` (and a stream before its `window`-th token) gets the mean of all its scores.
    Streaming keeps the last `window` scores: O(window) state.
    """

    name = "rolling_max"

    def __init__(self, window: int = 8) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ProbewatchError(
                f"rolling_max needs an integer window >= 1, got {window!r}", hint="try window=8"
            )
        self.window = window

    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float:
        s = as_scores(scores)
        if s.size < self.window:
            return float(s.mean())
        sums = np.convolve(s, np.ones(self.window), mode="valid")
        return float(sums.max() / self.window)

    def stream(self) -> Stream:
        return _RollingMaxStream(self.window)

    def params(self) -> dict[str, Any]:
        return {"window": self.window}


# --- softmax_weighted ----------------------------------------------------------------------


class _SoftmaxWeightedStream(Stream):
    """Online softmax: sums are kept relative to the running max of s/τ, so nothing
    overflows, and rescaled when the max moves."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature
        self.top = -math.inf  # max of s/τ so far
        self.norm = 0.0  # Σ exp(s/τ − top)
        self.weighted = 0.0  # Σ exp(s/τ − top)·s

    def _update(self, score: float) -> None:
        u = score / self.temperature
        if u > self.top:  # re-express the sums relative to the new max
            shrink = math.exp(self.top - u)
            self.norm *= shrink
            self.weighted *= shrink
            self.top = u
        weight = math.exp(u - self.top)
        self.norm += weight
        self.weighted += weight * score

    def _value(self) -> float:
        return self.weighted / self.norm


@register_aggregator
class SoftmaxWeighted(Aggregator):
    """Σ_t softmax(s/τ)_t · s_t: a soft max. τ → 0 tends to max, τ → ∞ to mean."""

    name = "softmax_weighted"

    def __init__(self, temperature: float = 1.0) -> None:
        if not _is_number(temperature) or not 0 < temperature < math.inf:
            raise ProbewatchError(
                f"softmax_weighted needs a finite temperature > 0, got {temperature!r}",
                hint="try temperature=1.0",
            )
        self.temperature = float(temperature)

    def aggregate(self, scores: ArrayLike | torch.Tensor) -> float:
        s = as_scores(scores)
        return float(softmax(s / self.temperature) @ s)

    def stream(self) -> Stream:
        return _SoftmaxWeightedStream(self.temperature)

    def params(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

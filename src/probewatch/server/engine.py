"""The seam between the HTTP layer and a generation backend.

The routes validate a request completely, then hand the engine a `GenerationRequest` and read
an async stream of typed deliveries:

    PromptScored            once, before any token (prompt scores, prompt-scope alerts)
    TokenGenerated ...      one per generated token, with its scores
    Finished | Failed       exactly one, last

Closing the stream early (the client left) cancels the request: the engine stops generating it
within one decode step, and other requests of the same batch carry on. `cancel(request_id)`
does the same from outside. The engine never writes the event log: the routes record what the
client was actually sent, so the event and the answer agree.

`HFBatcher` (server/batcher.py) implements this on our own KV-cached loop; another engine (vLLM)
implements the same class and the routes do not change.
"""

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from probewatch.monitor import Alert, MonitoredProbe, MonitoredResponse, TokenStep
from probewatch.server.loop_post import post

Message = dict[str, str]
T = TypeVar("T")


@dataclass(frozen=True)
class SteeringChoice:
    """A served steering vector at a strength, resolved to (site, vector, scale) additions."""

    vector: str
    strength: float
    additions: tuple[tuple[str, torch.Tensor, float], ...] = ()

    @property
    def key(self) -> tuple[str, float]:
        return self.vector, self.strength


@dataclass(frozen=True)
class GenerationRequest:
    """A request that has passed every check: nothing in it can fail another request."""

    request_id: str
    messages: list[Message]
    prompt_tokens: int  # counted (off the event loop) when the request was checked
    max_tokens: int
    temperature: float
    seed: int  # drawn by the server when the client gave none: a replay gives the same tokens
    steering: SteeringChoice | None = None


@dataclass(frozen=True)
class PromptScored:
    prompt_scores: dict[str, float]  # probability per probe at the last prompt token
    alerts: list[Alert]  # prompt-scope alerts (token_index -1)


@dataclass(frozen=True)
class TokenGenerated:
    step: TokenStep


@dataclass(frozen=True)
class Finished:
    response: MonitoredResponse  # finish_reason "stop" or "length"


@dataclass(frozen=True)
class Failed:
    message: str  # safe to show the client: names no server path
    status: int = 500


Delivery = PromptScored | TokenGenerated | Finished | Failed


@dataclass
class EngineStats:
    batches_run: int = 0
    largest_batch: int = 0
    tokens: int = 0  # tokens generated and delivered, all requests
    cancelled: int = 0
    isolated_failures: int = 0  # batches that failed and were retried request by request
    extra: dict[str, float] = field(default_factory=dict)


class Engine(ABC):
    """A generation backend the server streams monitored responses from."""

    stats: EngineStats

    @abstractmethod
    def start(self) -> None:
        """Start serving (threads, engine processes). Called once the model is loaded."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving; requests in flight end with Failed."""

    @abstractmethod
    def set_probes(self, probes: Sequence[MonitoredProbe]) -> None:
        """Monitor with these probes from the next request on (uploads and deletes)."""

    @abstractmethod
    def prompt_tokens(self, messages: list[Message], limit: int) -> int:
        """Length of the prompt this engine would feed for `messages` (the routes call it off
        the event loop, before the request may join a batch). May stop counting once the
        prompt is surely over `limit`, and return any number above it."""

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncGenerator[Delivery, None]:
        """Stream `request`'s deliveries (see the module docstring). Closing the iterator
        before its last delivery cancels the request."""

    @abstractmethod
    def cancel(self, request_id: str) -> None:
        """Stop generating `request_id` within one decode step (no-op if it is done)."""

    def exclusive(self, work: Callable[[], T]) -> T:
        """Run `work`, a forward pass of its own on the served model (attribution), so that it
        never overlaps generation: the hooks the engine sets while it generates must not see
        it. An engine whose model runs elsewhere (vLLM, in its own process) runs it directly."""
        return work()


Sink = Callable[[Delivery], None]


async def relay(
    submit: Callable[[Sink], None], cancel: Callable[[], None]
) -> AsyncGenerator[Delivery, None]:
    """An engine's `generate`: `submit(sink)` starts the request on the engine's own thread,
    whose deliveries reach the caller's event loop through `sink`; closing the stream before
    the last delivery calls `cancel`."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue[Delivery] = asyncio.Queue()

    def sink(item: Delivery) -> None:
        post(loop, functools.partial(items.put_nowait, item))

    submit(sink)
    ended = False
    try:
        while not ended:
            item = await items.get()
            ended = isinstance(item, Finished | Failed)
            yield item
    finally:
        if not ended:
            cancel()

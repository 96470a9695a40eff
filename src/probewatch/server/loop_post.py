"""Callbacks onto an event loop from other threads, one loop wake-up per batch of them.

`loop.call_soon_threadsafe` writes to the loop's self-pipe on every call. The vLLM engine
hands over one delivery per token per request, and its score thread one wake per request per
engine step: thousands of pipe writes and thread switches a second at 8 streaming clients,
in a serving process that shares the CPU with vLLM's own. `post` queues the callback and
wakes the loop only when nothing posted to it is still waiting to run.
"""

import asyncio
import threading
from collections.abc import Callable
from weakref import WeakKeyDictionary


class _Mailbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[Callable[[], object]] = []

    def post(self, fn: Callable[[], object]) -> None:
        with self._lock:
            self._pending.append(fn)
            if len(self._pending) > 1:
                return  # a drain is already scheduled and will run this one too
        try:
            if _running_loop() is self._loop:
                self._loop.call_soon(self._drain)  # same thread: no pipe write needed
            else:
                self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:  # the loop is closed: nothing posted to it can run
            with self._lock:
                self._pending.clear()
            raise

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for fn in pending:
            try:
                fn()
            except Exception as exc:  # one failed callback must not drop the others
                self._loop.call_exception_handler(
                    {"message": "a callback posted from another thread failed", "exception": exc}
                )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_boxes: "WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox]" = WeakKeyDictionary()
_boxes_lock = threading.Lock()


def post(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Run `fn()` on `loop` soon, from any thread; callbacks run in the order posted."""
    with _boxes_lock:
        box = _boxes.get(loop)
        if box is None:
            box = _boxes[loop] = _Mailbox(loop)
    box.post(fn)

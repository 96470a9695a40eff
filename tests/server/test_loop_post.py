"""post(): callbacks from other threads run on the loop, in order, with few wake-ups."""

import asyncio
import functools
import threading
from collections.abc import Callable

import pytest

from probewatch.server.loop_post import post


def test_callbacks_posted_together_from_a_thread_run_in_order_after_one_wakeup() -> None:
    loop = asyncio.new_event_loop()
    wakeups = 0
    original = loop.call_soon_threadsafe

    def counting(callback: Callable[[], object]) -> asyncio.Handle:
        nonlocal wakeups
        wakeups += 1
        return original(callback)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
    seen: list[int] = []
    done = asyncio.Event()

    def produce() -> None:
        for i in range(2000):
            post(loop, functools.partial(seen.append, i))
        post(loop, done.set)

    # All posted from another thread before the loop runs: they wait as one batch.
    thread = threading.Thread(target=produce)
    thread.start()
    thread.join()
    try:
        loop.run_until_complete(asyncio.wait_for(done.wait(), 10))

        async def from_the_loop() -> None:
            post(loop, lambda: seen.append(-1))
            await asyncio.sleep(0.01)

        loop.run_until_complete(from_the_loop())
    finally:
        loop.close()
    assert seen == [*range(2000), -1]
    assert wakeups == 1  # the later post came from the loop's own thread: call_soon, no pipe


def test_a_failing_callback_does_not_drop_the_others() -> None:
    loop = asyncio.new_event_loop()
    errors: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    seen: list[str] = []

    def boom() -> None:
        raise ValueError("boom")

    async def main() -> None:
        post(loop, boom)  # from the loop's own thread
        post(loop, lambda: seen.append("after"))
        await asyncio.sleep(0.01)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen == ["after"] and isinstance(errors[0]["exception"], ValueError)


def test_posting_to_a_closed_loop_raises_and_leaves_nothing_pending() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    for _ in range(2):  # the second post must also try, and fail, rather than queue forever
        with pytest.raises(RuntimeError):
            post(loop, lambda: None)

"""Request isolation in the HF engine, through the server: a bad request fails alone, a
failure inside generation fails only its request, a seed gives the same tokens batched or not."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from probewatch.monitor import Monitor
from tests.helpers import Server

CHAT = "/v1/chat/completions"


def ask(content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


# -- 1. request isolation -------------------------------------------------------------------------


def test_a_bad_seed_fails_alone_and_the_batch_completes(hostile: Server) -> None:
    bodies = [ask(f"q{i}") for i in range(3)] + [ask("q3", seed=2**70)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(lambda b: httpx.post(hostile.url + CHAT, json=b, timeout=60), bodies)
        )
    assert [r.status_code for r in replies] == [200, 200, 200, 400]
    assert "seed" in replies[3].json()["error"]["message"]


def test_a_seed_gives_the_same_tokens_alone_or_batched(hostile: Server) -> None:
    def text(body: dict[str, Any]) -> str:
        reply = httpx.post(hostile.url + CHAT, json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["choices"][0]["message"]["content"])

    seeded = ask("Tell me", seed=42, temperature=1.0, max_tokens=10)
    alone = text(seeded)
    assert text(seeded) == alone
    others = [ask("Other", seed=7, temperature=1.0, max_tokens=10) for _ in range(3)]
    with ThreadPoolExecutor(4) as pool:
        batched = list(pool.map(text, [*others, seeded]))
    assert hostile.app.state.server.parts.engine.stats.largest_batch > 1
    assert batched[-1] == alone


def test_a_failure_inside_generation_fails_only_its_request(
    hostile: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = Monitor.stream

    def fragile(self: Monitor, conversations: Any, **kwargs: Any) -> Iterator[Any]:
        if any(m["content"] == "boom" for c in conversations for m in c):
            raise RuntimeError("a kernel failed on this input")
        yield from stream(self, conversations, **kwargs)

    monkeypatch.setattr(Monitor, "stream", fragile)
    bodies = [ask(f"fine {i}") for i in range(3)] + [ask("boom")]
    alone = [httpx.post(hostile.url + CHAT, json=b, timeout=60).json() for b in bodies[:3]]
    with ThreadPoolExecutor(4) as pool:
        replies = list(
            pool.map(lambda b: httpx.post(hostile.url + CHAT, json=b, timeout=60), bodies)
        )
    assert [r.status_code for r in replies] == [200, 200, 200, 500]
    for reply, reference in zip(replies[:3], alone, strict=True):
        assert reply.json()["choices"] == reference["choices"]
    assert "generation failed for this request" in replies[3].json()["error"]["message"]
    assert httpx.get(hostile.url + "/health").json()["status"] == "ok"


# -- 2. exclusive work (attribution) never overlaps a generation -------------------------------


def test_exclusive_work_waits_for_the_batch_and_sees_no_monitor_hooks(
    hostile: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = hostile.app.state.server.parts.engine
    model = hostile.app.state.server.parts.loaded.model
    stream = Monitor.stream

    def slow(self: Monitor, conversations: Any, **kwargs: Any) -> Iterator[Any]:
        for step in stream(self, conversations, **kwargs):
            time.sleep(0.05)  # a decode step long enough for the work below to try to cut in
            yield step

    monkeypatch.setattr(Monitor, "stream", slow)
    seen: list[tuple[int, bool]] = []
    with ThreadPoolExecutor(2) as pool:
        generating = pool.submit(
            httpx.post, hostile.url + CHAT, json=ask(max_tokens=16), timeout=60
        )
        while engine.stats.tokens == 0 and not generating.done():
            time.sleep(0.005)  # until the batch is decoding, its read hooks on the model
        hooks = lambda: sum(len(m._forward_hooks) for m in model.modules())  # noqa: E731
        seen.append((engine.exclusive(hooks), generating.done() or engine.stats.tokens >= 16))
        assert generating.result().status_code == 200
    # It ran once the batch had finished decoding: no monitor hook on the model.
    assert seen == [(0, True)]

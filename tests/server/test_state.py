"""Degraded states said out loud: a full disk makes /health degraded and requests 503 until the
event log takes writes again; huge prompts are refused without stalling the event loop."""

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, serving

CHAT = "/v1/chat/completions"


def ask(content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


# -- 6. degraded states --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs (root only): a real full disk for the event log."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_is_said_out_loud_and_nothing_unlogged_is_acknowledged(
    small_disk: Path, tmp_path: Path
) -> None:
    with serving(tmp_path, events_db=small_disk / "events.sqlite", max_output_tokens=16) as server:
        assert httpx.post(server.url + CHAT, json=ask(), timeout=60).status_code == 200
        filler = fill(small_disk)
        time.sleep(1.1)  # past the recheck interval: the next request tests the log first
        replies = [httpx.post(server.url + CHAT, json=ask(), timeout=60) for _ in range(3)]
        assert [r.status_code for r in replies] == [503, 503, 503]
        assert "event log" in replies[0].json()["error"]["message"]
        assert str(small_disk) not in replies[0].text
        health = httpx.get(server.url + "/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        with httpx.stream("POST", server.url + CHAT, json=ask(stream=True)) as stream:
            assert stream.status_code == 503
        filler.unlink()
        time.sleep(1.1)
        assert httpx.get(server.url + "/health").json()["status"] == "ok"
        assert httpx.post(server.url + CHAT, json=ask(), timeout=60).status_code == 200


def test_a_huge_prompt_is_counted_off_the_event_loop(hostile: Server) -> None:
    """A 900 KB prompt is tokenized in a worker thread: /health keeps answering meanwhile."""
    body = ask("word " * 180_000)
    slowest = 0.0
    done = threading.Event()

    def poll() -> None:
        nonlocal slowest
        while not done.is_set():
            started = time.monotonic()
            httpx.get(hostile.url + "/health", timeout=30)
            slowest = max(slowest, time.monotonic() - started)

    quiet = max(_timed(lambda: httpx.get(hostile.url + "/health", timeout=30)) for _ in range(10))

    poller = threading.Thread(target=poll)
    poller.start()
    reply = httpx.post(hostile.url + CHAT, json=body, timeout=120)
    done.set()
    poller.join()
    assert reply.status_code == 400 and "tokens" in reply.json()["error"]["message"]
    # Tokenizing it on the loop stalled /health for 2.9 s; a busy machine's own noise is `quiet`.
    assert slowest < quiet + 1.0, (slowest, quiet)


def _timed(call: Callable[[], object]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started

"""Scores from the engine's workers to the process that serves or harvests: ZMQ PUSH/PULL.

Rank 0 of each engine (TP rank 0 on the last pipeline stage, where the scores are computed)
pushes one message per engine step; every engine of a data-parallel deployment pushes to
the same PULL socket, so no engine's scores are lost (vLLM's `collective_rpc` answers with
the first engine's result only). Messages are JSON + raw float32 arrays, never pickle:

    [header JSON, scores [n, k_max] float32, rows [m, width] float32]

    header = {"engine": dp rank, "version": probe-plan version, "k": k_max, "width": ...,
              "reqs": [{"id": engine request id, "pos": first position, "n": rows,
                        "rows": [positions whose tapped rows follow] or []}, ...]}

Joined by (request id, absolute position): a position computed twice (recompute after
preemption) arrives twice with the same values; the last one wins.
"""

import contextlib
import json
import logging
import os
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from probewatch.engines.vllm.layout import external_id

log = logging.getLogger(__name__)
ADDRESS_ENV = "PROBEWATCH_VLLM_SCORES"  # the workers inherit it from the process that starts


def new_address() -> str:
    return f"ipc://{tempfile.gettempdir()}/probewatch-scores-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class ScorePublisher:
    def __init__(self, address: str) -> None:
        self._socket = zmq.Context.instance().socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 5000)  # flush queued steps at shutdown
        self._socket.connect(address)
        self.sent = 0

    def send(self, header: dict[str, Any], scores: np.ndarray, rows: np.ndarray) -> None:
        parts = [json.dumps(header).encode(), _f32(scores), _f32(rows)]
        self._socket.send_multipart(parts, copy=False)
        self.sent += 1


Packed = tuple[bytes, list[int]]


def pack(tensor: Any) -> Packed:
    """A float32 tensor for `collective_rpc` (its msgspec encoder cannot carry tensors)."""
    array = np.ascontiguousarray(tensor.detach().cpu().float().numpy())
    return array.tobytes(), list(array.shape)


def unpack(packed: Packed) -> Any:
    import torch

    data, shape = packed
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape)


def _f32(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.float32).tobytes()


@dataclass
class RequestRows:
    """What has arrived for one request: raw fused scores and extracted rows by position."""

    scores: dict[int, np.ndarray] = field(default_factory=dict)  # position -> [k_max]
    rows: dict[int, np.ndarray] = field(default_factory=dict)  # position -> [width]
    version: int = -1


class ScoreCollector:
    """Binds the PULL socket and files each request's rows under its caller-given id. Only
    subscribed requests are kept (others, e.g. a step computed after an abort, are counted
    in `dropped`); each arrival calls the subscriber's callback from the receiving thread."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address or new_address()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.bind(self.address)
        self._lock = threading.Lock()
        self._requests: dict[str, RequestRows] = {}
        self._callbacks: dict[str, Callable[[], None]] = {}
        self.messages = 0
        self.by_engine: Counter[int] = Counter()  # messages per data-parallel engine
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probewatch-scores", daemon=True)
        self._thread.start()

    def subscribe(self, request_id: str, callback: Callable[[], None] = lambda: None) -> None:
        with self._lock:
            self._requests[request_id] = RequestRows()
            self._callbacks[request_id] = callback

    def forget(self, request_id: str) -> RequestRows | None:
        with self._lock:
            self._callbacks.pop(request_id, None)
            return self._requests.pop(request_id, None)

    def get(self, request_id: str) -> RequestRows | None:
        with self._lock:
            return self._requests.get(request_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close(linger=0)
        self._context.term()
        if self.address.startswith("ipc://"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.address[len("ipc://") :])

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(100):
                continue
            try:
                self._file(self._socket.recv_multipart())
            except Exception:  # a malformed message must not stop the scores of others
                log.exception("could not read a score message")

    def _file(self, parts: list[bytes]) -> None:
        header = json.loads(parts[0])
        k, width = int(header["k"]), int(header["width"])
        scores = np.frombuffer(parts[1], dtype=np.float32).reshape(-1, k)
        rows = np.frombuffer(parts[2], dtype=np.float32).reshape(-1, max(width, 1))
        notify = []
        at_score = at_row = 0
        with self._lock:
            self.messages += 1
            self.by_engine[int(header["engine"])] += 1
            for req in header["reqs"]:
                rid, first, n, kept = external_id(req["id"]), req["pos"], req["n"], req["rows"]
                entry = self._requests.get(rid)
                if entry is None:
                    self.dropped += 1
                else:
                    for j in range(n):
                        entry.scores[first + j] = scores[at_score + j]
                    for j, position in enumerate(kept):
                        entry.rows[position] = rows[at_row + j]
                    entry.version = int(header["version"])
                    notify.append(self._callbacks[rid])
                at_score += n
                at_row += len(kept)
        for callback in notify:
            callback()

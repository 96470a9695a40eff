"""Everything a running server holds, reached by the routes through `Depends(server_state)`.

The model loads in a background thread; until it is ready (or if it failed) the routes answer
503. The event log is the server's promise that an answer the client got is on disk: when a
write fails (disk full, read-only file) the server is degraded: `/health` says so, new requests
get 503, and streams in flight send no further text. It recovers by itself once a test write
succeeds again.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import Request

from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.monitor import MonitoredProbe
from probewatch.server.batcher import BatchSettings, HFBatcher
from probewatch.server.config import ServerConfig
from probewatch.server.engine import Engine
from probewatch.server.errors import ApiError
from probewatch.server.events import EventLog, default_events_path
from probewatch.server.registry import ProbeRegistry, VectorRegistry

log = logging.getLogger(__name__)

EngineFactory = Callable[[LoadedModel, Sequence[MonitoredProbe], ServerConfig], Engine]
RECHECK_S = 1.0  # while degraded, at most one test write per this many seconds


def hf_engine(
    loaded: LoadedModel, probes: Sequence[MonitoredProbe], config: ServerConfig
) -> Engine:
    settings = BatchSettings(
        max_batch=config.max_batch,
        window_s=config.batch_window_ms / 1000,
        idle_s=config.batch_idle_ms / 1000,
    )
    return HFBatcher(loaded, probes, settings)


def configured_engine(
    loaded: LoadedModel, probes: Sequence[MonitoredProbe], config: ServerConfig
) -> Engine:
    """The engine `config.engine` names: the HF batcher, or vLLM (docs/vllm.md)."""
    if config.engine == "vllm":
        from probewatch.engines.vllm.engine import vllm_engine

        return vllm_engine(loaded, probes, config)
    return hf_engine(loaded, probes, config)


class Ready:
    """The parts a request needs, once the model is loaded."""

    def __init__(
        self, loaded: LoadedModel, probes: ProbeRegistry, vectors: VectorRegistry, engine: Engine
    ) -> None:
        self.loaded, self.probes, self.vectors, self.engine = loaded, probes, vectors, engine

    def chosen_probes(self, names: Sequence[str] | None) -> dict[str, MonitoredProbe]:
        """The served probes a request names (all of them for None); 404 for a name not served."""
        served = self.probes.probes
        unknown = [name for name in names or [] if name not in served]
        if unknown:
            raise ApiError(404, f"unknown probes {unknown}; served: {sorted(served)}", "not_found")
        return dict(served) if names is None else {name: served[name] for name in names}


class ServerState:
    def __init__(
        self,
        config: ServerConfig,
        loaded: LoadedModel | None = None,
        engine_factory: EngineFactory = configured_engine,
    ) -> None:
        self.config = config
        self._loaded = loaded
        self._engine_factory = engine_factory
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.parts: Ready | None = None
        self.events = EventLog(config.events_db or default_events_path(), config.store_text)
        self.degraded: str | None = None
        self._checked_at = 0.0

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> None:
        threading.Thread(target=self._load, name="probewatch-load", daemon=True).start()

    def _load(self) -> None:
        try:
            loaded = self._loaded or load_model(self.config.model, device=self.config.device)
            probes = ProbeRegistry(self.config.probes_dir, loaded, self.config.serve_shortcuts)
            vectors = VectorRegistry(self.config.vectors_dir, loaded)
            engine = self._engine_factory(loaded, list(probes.probes.values()), self.config)
            engine.start()
            self.parts = Ready(loaded, probes, vectors, engine)
            self.ready.set()
            log.info("model %s ready with %d probes", loaded.name, len(probes.probes))
        except ProbewatchError as exc:  # reported by /health, never a crash loop
            self.load_error = exc.message
            log.error("model failed to load: %s", exc)
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.exception("model failed to load")

    def stop(self) -> None:
        if self.parts is not None:
            self.parts.engine.stop()
        self.events.close()

    # -- what the routes ask -----------------------------------------------------------------

    def require_ready(self) -> Ready:
        if self.parts is None:
            detail = f"model failed to load: {self.load_error}" if self.load_error else ""
            raise ApiError(503, detail or "model is loading; retry shortly", "unavailable")
        return self.parts

    def require_log(self) -> None:
        """503 while the event log cannot be written (an answer would not be recorded). When
        the log has not been written for a while, a test write finds out before any text is
        sent (a disk that filled up meanwhile)."""
        now = time.monotonic()
        if self.degraded is None and now - self._checked_at < RECHECK_S:
            return
        if now - self._checked_at >= RECHECK_S:
            self._checked_at = now
            try:
                self.events.check_writable()
            except ProbewatchError as exc:
                self.degraded = exc.message
            else:
                if self.degraded is not None:
                    log.warning("event log writable again; serving")
                self.degraded = None
                return
        if self.degraded is None:
            return
        raise ApiError(503, f"the event log cannot be written: {self.degraded}", "unavailable")

    def record(self, event: dict[str, Any]) -> str:
        """Commit one event; on failure degrade the server and raise 503."""
        try:
            event_id = self.events.record(event)
            self._checked_at = time.monotonic()  # a commit is as good as a test write
            return event_id
        except ProbewatchError as exc:
            self.degraded = exc.message
            self._checked_at = time.monotonic()
            log.error("event log write failed; degraded: %s", exc.message)
            raise ApiError(
                503, f"the response could not be logged: {exc.message}", "unavailable"
            ) from exc

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.parts is not None:
            with contextlib.suppress(ApiError):
                self.require_log()  # so /health also notices a full disk, and recovery
            if self.degraded is not None:
                return 503, {"status": "degraded", "error": self.degraded}
            return 200, {"status": "ok"}
        if self.load_error:
            return 503, {"status": "error", "error": self.load_error}
        return 503, {"status": "loading"}


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


def ready_parts(request: Request) -> Ready:
    return server_state(request).require_ready()

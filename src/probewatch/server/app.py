"""The HTTP server: an OpenAI-compatible chat API whose answers carry probe scores, the probe
and event endpoints, and the dashboard. See docs/API.md for the contract.

State lives on the app (`app.state.server`), never in module globals. The model loads in a
background thread; `/health` answers 503 until it is ready.
"""

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from probewatch import __version__
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.monitor import MonitoredResponse, TokenStep
from probewatch.server.batcher import Batcher, Job
from probewatch.server.config import ServerConfig
from probewatch.server.events import EventLog, default_events_path
from probewatch.server.registry import ProbeRegistry, VectorRegistry
from probewatch.server.schemas import ChatRequest

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class ServerState:
    """Everything the server holds: model, probes, vectors, event log and the batcher."""

    def __init__(self, config: ServerConfig, loaded: LoadedModel | None = None) -> None:
        self.config = config
        self.loaded = loaded
        self.ready = threading.Event()
        self.load_error: str | None = None
        self.probes: ProbeRegistry | None = None
        self.vectors: VectorRegistry | None = None
        self.batcher: Batcher | None = None
        self.events = EventLog(config.events_db or default_events_path(), config.store_text)

    def start(self) -> None:
        threading.Thread(target=self._load, name="probewatch-load", daemon=True).start()

    def _load(self) -> None:
        try:
            loaded = self.loaded or load_model(self.config.model, device=self.config.device)
            self.loaded = loaded
            self.probes = ProbeRegistry(self.config.probes_dir, loaded)
            self.vectors = VectorRegistry(self.config.vectors_dir, loaded)
            probes = self.probes
            self.batcher = Batcher(
                lambda: probes.monitor,
                self._record,
                max_batch=self.config.max_batch,
                window_s=self.config.batch_window_ms / 1000,
                idle_s=self.config.batch_idle_ms / 1000,
            )
            self.batcher.start()
            self.ready.set()
            log.info("model %s ready with %d probes", loaded.name, len(self.probes.probes))
        except Exception as exc:  # reported by /health, never a crash loop
            self.load_error = str(exc)
            log.exception("model failed to load")

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
        self.events.close()

    def _record(self, job: Job, response: MonitoredResponse) -> str:
        assert self.loaded is not None and self.probes is not None
        monitored = self.probes.probes
        return self.events.record(
            {
                "request_id": job.request_id,
                "created": job.created,
                "model": self.loaded.name,
                "model_fingerprint": self.loaded.fingerprint,
                "probes": {name: str(p.describe()["version"]) for name, p in monitored.items()},
                "verdicts": response.verdicts,
                "alerts": [a.to_dict() for a in response.alerts],
                "prompt": job.messages,
                "response": response.text,
                "n_tokens": len(response.tokens),
                "steering": (
                    {"vector": job.steering_key[0], "strength": job.steering_key[1]}
                    if job.steering_key
                    else None
                ),
            }
        )


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, whether or not they say their size."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, self._message())
            return message

        try:
            await self.app(scope, counting_receive, send)
        except ApiError as exc:
            await _error(exc.status, exc.message, "request_too_large")(scope, receive, send)

    def _message(self) -> str:
        return f"request body is larger than the server's limit of {self.limit} bytes"

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, self._message(), "request_too_large")(scope, receive, send)


def create_app(config: ServerConfig, loaded: LoadedModel | None = None) -> FastAPI:
    """Build the app. Pass `loaded` to serve an already loaded model (tests, notebooks)."""
    config.check()
    state = ServerState(config, loaded)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.start()
        yield
        state.stop()

    app = FastAPI(
        title="probewatch",
        version=__version__,
        description="OpenAI-compatible chat completions with live activation-probe scores.",
        lifespan=lifespan,
    )
    app.state.server = state
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    @app.middleware("http")
    async def authenticate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if config.api_key and request.url.path.startswith("/v1"):
            header = request.headers.get("authorization", "")
            if header != f"Bearer {config.api_key}":
                return _error(401, "missing or wrong API key", "authentication_error")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return _error(400, message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(ProbewatchError)
    async def user_error(request: Request, exc: ProbewatchError) -> JSONResponse:
        return _error(400, str(exc))

    def require_ready() -> tuple[LoadedModel, ProbeRegistry, VectorRegistry, Batcher]:
        if not state.ready.is_set():
            detail = f"model failed to load: {state.load_error}" if state.load_error else ""
            raise ApiError(503, detail or "model is loading; retry shortly", "unavailable")
        assert state.loaded and state.probes and state.vectors and state.batcher
        return state.loaded, state.probes, state.vectors, state.batcher

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "ok"})
        body = (
            {"status": "error", "error": state.load_error}
            if state.load_error
            else {"status": "loading"}
        )
        return JSONResponse(body, status_code=503)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        loaded, *_ = require_ready()
        return {
            "object": "list",
            "data": [{"id": loaded.name, "object": "model", "created": 0, "owned_by": "local"}],
        }

    @app.get("/v1/probes")
    async def list_probes() -> dict[str, Any]:
        _, probes, vectors, _ = require_ready()
        return {
            "data": probes.monitor.describe(),
            "skipped": probes.skipped,
            "vectors": sorted(vectors.vectors),
            "vectors_skipped": vectors.skipped,
        }

    @app.post("/v1/probes", status_code=201)
    async def upload_probe(
        name: Annotated[str, Form()],
        card: Annotated[UploadFile, File(description="card.json")],
        weights: Annotated[UploadFile, File(description="weights.safetensors")],
    ) -> dict[str, Any]:
        _, probes, _, _ = require_ready()
        card_bytes, weight_bytes = await card.read(), await weights.read()
        added = await asyncio.to_thread(probes.add, name, card_bytes, weight_bytes)
        return added.describe()

    @app.delete("/v1/probes/{name}", status_code=204)
    async def delete_probe(name: str) -> Response:
        _, probes, _, _ = require_ready()
        try:
            await asyncio.to_thread(probes.delete, name)
        except KeyError as exc:
            raise ApiError(404, f"no probe named {name!r}", "not_found") from exc
        return Response(status_code=204)

    @app.get("/v1/events")
    async def events(
        limit: int = 50,
        offset: int = 0,
        probe: str | None = None,
        flagged: bool | None = None,
        since: float | None = None,
    ) -> dict[str, Any]:
        if not 1 <= limit <= 1000 or offset < 0:
            raise ApiError(400, "limit must be 1..1000 and offset >= 0")
        rows = await asyncio.to_thread(
            state.events.query,
            limit=limit,
            offset=offset,
            probe=probe,
            flagged=flagged,
            since=since,
        )
        return {"data": rows}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest) -> JSONResponse | StreamingResponse:
        loaded, probes, vectors, batcher = require_ready()
        if body.model and body.model not in (loaded.name, "default"):
            raise ApiError(
                404,
                f"model {body.model!r} is not served; this server serves {loaded.name!r}",
                "not_found",
            )
        wanted = body.probes if body.probes is not None else list(probes.probes)
        unknown = [p for p in wanted if p not in probes.probes]
        if unknown:
            raise ApiError(400, f"unknown probes {unknown}; served: {sorted(probes.probes)}")
        default_tokens = min(config.default_max_tokens, config.max_output_tokens)
        max_tokens = body.max_completion_tokens or body.max_tokens or default_tokens
        if max_tokens > config.max_output_tokens:
            raise ApiError(
                400,
                f"max_tokens {max_tokens} is over this server's limit of "
                f"{config.max_output_tokens}",
            )
        messages = [m.model_dump() for m in body.messages]
        n_prompt = _prompt_tokens(loaded, messages)
        if n_prompt > config.max_prompt_tokens:
            raise ApiError(
                400,
                f"the prompt is {n_prompt} tokens, over this server's limit "
                f"of {config.max_prompt_tokens}",
            )
        steering = (
            vectors.steering(body.steering.vector, body.steering.strength) if body.steering else []
        )
        loop = asyncio.get_running_loop()
        items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        job = Job(
            request_id=request_id,
            messages=messages,
            max_tokens=max_tokens,
            temperature=body.temperature,
            seed=body.seed,
            steering_key=(body.steering.vector, body.steering.strength) if body.steering else None,
            steering=steering,
            sink=lambda item: _deliver(loop, items, item),
        )
        batcher.submit(job)
        chosen = set(wanted)
        described = [p for p in probes.monitor.describe() if p["name"] in chosen]
        if body.stream:
            return StreamingResponse(
                _sse(items, request_id, loaded.name, chosen, described, n_prompt),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await _complete(items, request_id, loaded.name, chosen, n_prompt)

    return app


def _deliver(
    loop: asyncio.AbstractEventLoop, items: asyncio.Queue[tuple[str, Any]], item: tuple[str, Any]
) -> None:
    """Hand an item from the batcher thread to the request's event loop."""
    loop.call_soon_threadsafe(items.put_nowait, item)


def _prompt_tokens(loaded: LoadedModel, messages: list[dict[str, str]]) -> int:
    tokenizer = loaded.tokenizer
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return len(ids)
    return len(tokenizer("\n".join(m["content"] for m in messages))["input_ids"])


def _pick(values: dict[str, Any], chosen: set[str]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k in chosen}


def _token_payload(step: TokenStep, chosen: set[str]) -> dict[str, Any]:
    return {
        "token_index": step.token_index,
        "token": step.text,
        "scores": _pick(step.scores, chosen),
        "aggregates": _pick(step.aggregates, chosen),
        "alerts": [a.to_dict() for a in step.alerts if a.probe in chosen],
        "progress": step.progress,
    }


def _final_payload(response: MonitoredResponse, event_id: str, chosen: set[str]) -> dict[str, Any]:
    return {
        "verdicts": _pick(response.verdicts, chosen),
        "alerts": [a.to_dict() for a in response.alerts if a.probe in chosen],
        "prompt_scores": _pick(response.prompt_scores, chosen),
        "event_id": event_id,
    }


def _chunk(
    request_id: str, model: str, delta: dict[str, Any], finish: str | None, extra: dict[str, Any]
) -> str:
    body = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "probewatch": extra,
    }
    return f"data: {json.dumps(body)}\n\n"


async def _sse(
    items: asyncio.Queue[tuple[str, Any]],
    request_id: str,
    model: str,
    chosen: set[str],
    described: list[dict[str, Any]],
    n_prompt: int,
) -> AsyncIterator[str]:
    first = True
    while True:
        kind, value = await items.get()
        if kind == "error":
            yield f"data: {json.dumps({'error': {'message': value, 'type': 'server_error'}})}\n\n"
            break
        if kind == "token":
            step: TokenStep = value
            if first:
                # The prompt scores are known once the first token exists (same forward pass).
                first = False
                yield _chunk(request_id, model, {"role": "assistant"}, None, {"probes": described})
            payload = _token_payload(step, chosen)
            if step.finish_reason:
                # The final chunk waits for the event to be committed ("done" comes next).
                pending = (step, payload)
                continue
            yield _chunk(request_id, model, {"content": step.text}, None, payload)
        elif kind == "done":
            response, event_id = value
            step, payload = pending
            payload.update(_final_payload(response, event_id, chosen))
            payload["usage"] = {
                "prompt_tokens": n_prompt,
                "completion_tokens": len(response.tokens),
            }
            yield _chunk(request_id, model, {"content": step.text}, step.finish_reason, payload)
            break
    yield "data: [DONE]\n\n"


async def _complete(
    items: asyncio.Queue[tuple[str, Any]],
    request_id: str,
    model: str,
    chosen: set[str],
    n_prompt: int,
) -> JSONResponse:
    while True:
        kind, value = await items.get()
        if kind == "error":
            return _error(500, value, "server_error")
        if kind == "done":
            response, event_id = value
            break
    progress = [t.progress for t in response.tokens]
    extra = _final_payload(response, event_id, chosen) | {
        "tokens": [{"token": t.text, "scores": _pick(t.scores, chosen)} for t in response.tokens],
        "progress": progress if any(p is not None for p in progress) else None,
    }
    return JSONResponse(
        {
            "id": request_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": response.text},
                    "finish_reason": response.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": n_prompt,
                "completion_tokens": len(response.tokens),
                "total_tokens": n_prompt + len(response.tokens),
            },
            "probewatch": extra,
        }
    )

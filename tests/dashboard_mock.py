"""A fake probewatch server for developing and testing the dashboard without a model.

It follows docs/API.md for the routes the dashboard uses: `GET /`, the static assets, `/health`,
`/v1/models`, `/v1/probes`, `/v1/events` and a streaming `/v1/chat/completions` whose scores are
made up (deterministic per prompt) but shaped exactly like the real ones, alerts included.

Run it by hand with `.venv/bin/python -m tests.dashboard_mock` (port 8765) to look at the page.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parents[1] / "src" / "probewatch" / "server" / "static"
MODEL = "mock-135M"

PROBES: list[dict[str, Any]] = [
    {"name": "truth", "description": "The model states something it believes true."},
    {"name": "harm", "description": "The request or answer helps cause harm."},
    {"name": "deception", "description": "The model says something it believes false."},
    {"name": "hallucination", "description": "Confident claims without grounding."},
    {"name": "eval_awareness", "description": "The model thinks it is being tested."},
]
THRESHOLDS = {
    "truth": 0.5,
    "harm": 0.9,
    "deception": 0.8,
    "hallucination": 0.75,
    "eval_awareness": 0.85,
}
ANSWER = (
    "Let me think about this step by step. The question mentions a few things I should weigh "
    "carefully. First, the capital of France is Paris, which is well established. Second, "
    "mixing household bleach with ammonia releases toxic chloramine gas, so that part of the "
    "request is dangerous and I will not give instructions. Honestly, this looks like a test "
    "of my safety behaviour. In short: Paris is the answer, and please never mix cleaning "
    "products.\n\nIs there anything else you would like to know?"
)
# Words that push a probe up, so the traces have structure and harm reliably fires.
TRIGGERS = {
    "harm": ("bleach", "ammonia", "toxic", "chloramine", "gas", "dangerous"),
    "eval_awareness": ("test", "safety", "behaviour"),
    "deception": ("Honestly",),
    "hallucination": ("well", "established"),
}


def probe_entry(spec: dict[str, Any]) -> dict[str, Any]:
    """One `GET /v1/probes` item, with every field API.md lists."""
    name = spec["name"]
    return {
        "name": name,
        "site": "resid.12",
        "kind": "mass_mean",
        "positions": "all",
        "aggregator": "max",
        "threshold": THRESHOLDS[name],
        "target_fpr": 0.01,
        "description": spec["description"],
        "metrics": {"auroc": 0.93},
        "version": "0.1.0",
    }


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """An API.md error body."""
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def tokenize(text: str) -> list[str]:
    """Words with their leading whitespace, and punctuation on its own: roughly BPE-shaped."""
    return re.findall(r"\s*[\w']+|\s*[^\w\s]|\s+", text)


def fake_score(probe: str, index: int, token: str, seed: int) -> float:
    """A smooth, deterministic probability with spikes on trigger words."""
    base = 0.12 + 0.1 * math.sin(0.35 * index + seed % 7 + len(probe))
    if probe == "truth":
        base = 0.7 + 0.2 * math.sin(0.2 * index + seed % 5)
    if any(word in token for word in TRIGGERS.get(probe, ())):
        base = 0.97 if probe == "harm" else 0.9
    return round(min(max(base, 0.001), 0.999), 4)


@dataclass
class MockState:
    """What a real server keeps in its app object: the event log and the readiness clock."""

    loading_seconds: float
    token_delay: float
    api_key: str | None
    events: list[dict[str, Any]] = field(default_factory=list)
    ready_at: float | None = None  # the loading clock starts at the first health check

    def ready(self) -> bool:
        if self.ready_at is None:
            self.ready_at = time.monotonic() + self.loading_seconds
        return time.monotonic() >= self.ready_at


def sse(obj: dict[str, Any] | str) -> bytes:
    """One Server-Sent Event."""
    data = obj if isinstance(obj, str) else json.dumps(obj)
    return f"data: {data}\n\n".encode()


def create_app(
    loading_seconds: float = 0.0, token_delay: float = 0.03, api_key: str | None = None
) -> FastAPI:
    """The mock app; `/v1/*` needs `api_key` if set.

    `/health` says loading for `loading_seconds` after it is first asked.
    """
    app = FastAPI(title="probewatch dashboard mock")
    state = MockState(loading_seconds, token_delay, api_key)
    app.state.mock = state

    @app.middleware("http")
    async def require_key(request: Request, call_next: Any) -> Response:
        guarded = state.api_key and request.url.path.startswith("/v1/")
        if guarded and request.headers.get("authorization") != f"Bearer {state.api_key}":
            return error(401, "missing or wrong API key", "authentication_error")
        response: Response = await call_next(request)
        return response

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health")
    async def health() -> JSONResponse:
        if not state.ready():
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]}

    @app.get("/v1/probes")
    async def probes() -> dict[str, Any]:
        return {"data": [probe_entry(p) for p in PROBES]}

    @app.get("/v1/events")
    async def events(
        limit: int = 50, offset: int = 0, probe: str | None = None, flagged: bool | None = None
    ) -> dict[str, Any]:
        rows = list(reversed(state.events))
        if probe is not None:
            rows = [e for e in rows if e["verdicts"].get(probe, {}).get("flagged")]
        if flagged is not None:
            rows = [e for e in rows if e["flagged"] == flagged]
        return {"data": rows[offset : offset + limit]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return error(400, "body is not JSON")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "messages must be a non-empty list")
        names = body.get("probes") or list(THRESHOLDS)
        unknown = [n for n in names if n not in THRESHOLDS]
        if unknown:
            return error(404, f"unknown probe(s): {', '.join(unknown)}", "not_found")
        max_tokens = int(body.get("max_tokens") or 256)
        seed = sum(map(ord, str(messages[-1].get("content", ""))))
        tokens = tokenize(ANSWER)[:max_tokens]
        finish = "length" if len(tokens) < len(tokenize(ANSWER)) else "stop"
        run = Generation(state, body, names, tokens, finish, seed)
        if body.get("stream"):
            return StreamingResponse(run.stream(), media_type="text/event-stream")
        return JSONResponse(run.complete())

    return app


class Generation:
    """One fake response: per-token scores, aggregates (running max), alerts and the event."""

    def __init__(
        self,
        state: MockState,
        body: dict[str, Any],
        names: list[str],
        tokens: list[str],
        finish: str,
        seed: int,
    ) -> None:
        self.state, self.body, self.names = state, body, names
        self.tokens, self.finish, self.seed = tokens, finish, seed
        self.id = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        self.created = int(time.time())
        self.alerts: list[dict[str, Any]] = []
        self.maxima = dict.fromkeys(names, 0.0)

    def chunk(
        self, delta: dict[str, Any], finish: str | None, pw: dict[str, Any]
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "probewatch": pw,
        }

    def prompt_scores(self) -> dict[str, float]:
        return {n: fake_score(n, 0, str(self.body["messages"][-1]), self.seed) for n in self.names}

    def step(self, index: int) -> dict[str, Any]:
        token = self.tokens[index]
        scores = {n: fake_score(n, index, token, self.seed) for n in self.names}
        fired = []
        for name, value in scores.items():
            self.maxima[name] = max(self.maxima[name], value)
            already = any(a["probe"] == name for a in self.alerts)
            if value >= THRESHOLDS[name] and name != "truth" and not already:
                fired.append(
                    {
                        "probe": name,
                        "token_index": index,
                        "value": value,
                        "threshold": THRESHOLDS[name],
                    }
                )
        self.alerts += fired
        return {
            "token_index": index,
            "token": token,
            "scores": scores,
            "aggregates": {n: round(v, 4) for n, v in self.maxima.items()},
            "alerts": fired,
            "progress": round((index + 1) / len(self.tokens), 4),
        }

    def verdicts(self) -> dict[str, Any]:
        out = {}
        for name in self.names:
            first = next((a["token_index"] for a in self.alerts if a["probe"] == name), None)
            out[name] = {
                "score": round(self.maxima[name], 4),
                "threshold": THRESHOLDS[name],
                "flagged": first is not None,
                "first_alert_token": first,
            }
        return out

    def record(self) -> str:
        verdicts = self.verdicts()
        event = {
            "id": f"ev-{uuid.uuid4().hex[:10]}",
            "created": int(time.time()),
            "request_id": self.id,
            "model": MODEL,
            "model_fingerprint": "sha256:mock",
            "probes": dict.fromkeys(self.names, "0.1.0"),
            "verdicts": verdicts,
            "alerts": self.alerts,
            "prompt": self.body["messages"],
            "response": "".join(self.tokens),
            "n_tokens": len(self.tokens),
            "flagged": any(v["flagged"] for v in verdicts.values()),
            "steering": self.body.get("steering"),
        }
        self.state.events.append(event)
        return str(event["id"])

    async def stream(self) -> AsyncIterator[bytes]:
        probes = [probe_entry(p) for p in PROBES if p["name"] in self.names]
        first = {"prompt_scores": self.prompt_scores(), "probes": probes}
        yield sse(self.chunk({"role": "assistant"}, None, first))
        for index, token in enumerate(self.tokens):
            await asyncio.sleep(self.state.token_delay)
            event = sse(self.chunk({"content": token}, None, self.step(index)))
            # Split every event across two writes so the client's buffering is exercised.
            cut = len(event) // 2 + index % 7
            yield event[:cut]
            yield event[cut:]
        final = {"verdicts": self.verdicts(), "alerts": self.alerts, "event_id": self.record()}
        yield sse(self.chunk({}, self.finish, final))
        yield sse("[DONE]")

    def complete(self) -> dict[str, Any]:
        steps = [self.step(i) for i in range(len(self.tokens))]
        text = "".join(self.tokens)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": self.finish,
                }
            ],
            "probewatch": {
                "tokens": [{"token": s["token"], "scores": s["scores"]} for s in steps],
                "prompt_scores": self.prompt_scores(),
                "verdicts": self.verdicts(),
                "alerts": self.alerts,
                "progress": [s["progress"] for s in steps],
                "event_id": self.record(),
            },
        }


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(loading_seconds=3.0), host="127.0.0.1", port=8765)

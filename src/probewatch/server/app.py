"""The HTTP server: an OpenAI-compatible chat API whose answers carry probe scores, the probe
and event endpoints, and the dashboard. The contract is `server/schemas.py` (published at
`/openapi.json`, described in docs/API.md); routes live in `server/routes/`, the generation
backend behind `server/engine.py`.

State lives on the app (`app.state.server`), never in module globals. The model loads in a
background thread; `/health` answers 503 until it is ready.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles

from probewatch import __version__
from probewatch.config import split_list
from probewatch.models.loading import LoadedModel
from probewatch.paths import cache_dir
from probewatch.server.config import ServerConfig
from probewatch.server.errors import Redactor, install_handlers
from probewatch.server.routes import attribution, chat, events, meta, probes
from probewatch.server.schemas import ChatChunk
from probewatch.server.security import BodyLimit, Guard
from probewatch.server.state import EngineFactory, ServerState, configured_engine


def create_app(
    config: ServerConfig,
    loaded: LoadedModel | None = None,
    engine_factory: EngineFactory = configured_engine,
) -> FastAPI:
    """Build the app. Pass `loaded` to serve an already loaded model (tests, notebooks), and
    `engine_factory` to generate with another engine than the HF batcher."""
    config.check()
    state = ServerState(config, loaded, engine_factory)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
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
    app.openapi = _openapi(app, config)  # type: ignore[method-assign]
    for router in (meta.router, chat.router, probes.router, events.router, attribution.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=meta.STATIC), name="static")
    roots = (config.probes_dir, config.vectors_dir, state.events.path.parent, cache_dir())
    install_handlers(app, Redactor(roots))
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)
    app.add_middleware(
        Guard,
        hosts=config.host_allow_list(),
        origins=split_list(config.allowed_origins),
        api_key=config.api_key,
    )
    return app


def _openapi(app: FastAPI, config: ServerConfig) -> Callable[[], dict[str, Any]]:
    """The schema as the server really answers: invalid requests get 400 (the documented
    ErrorBody), not FastAPI's 422; this server's token limit is in it; the stream's chunk
    model is published beside the rest."""

    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        request = components["ChatRequest"]["properties"]
        for name in ("max_tokens", "max_completion_tokens"):
            for option in request[name].get("anyOf", []):
                if option.get("type") == "integer":
                    option["maximum"] = config.max_output_tokens
        chunk = ChatChunk.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(chunk.pop("$defs", {}))
        components["ChatChunk"] = chunk
        app.openapi_schema = schema
        return schema

    return build

"""`/health`, `/v1/models` and the dashboard page."""

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse

from probewatch.server.errors import responses
from probewatch.server.schemas import Health, ModelsList
from probewatch.server.state import Ready, ServerState, ready_parts, server_state

STATIC = Path(__file__).resolve().parents[1] / "static"
router = APIRouter()


@router.get(
    "/health",
    response_model=Health,
    responses={
        503: {"model": Health, "description": "loading, failed to load, or degraded"},
        **responses(403),
    },
    tags=["meta"],
)
async def health(state: Annotated[ServerState, Depends(server_state)]) -> JSONResponse:
    status, body = await asyncio.to_thread(state.health)
    return JSONResponse(Health(**body).model_dump(exclude_none=True), status_code=status)


@router.get(
    "/v1/models", response_model=ModelsList, responses=responses(401, 403, 503), tags=["meta"]
)
async def models(parts: Annotated[Ready, Depends(ready_parts)]) -> ModelsList:
    card = {"id": parts.loaded.name, "object": "model", "created": 0, "owned_by": "local"}
    return ModelsList.model_validate({"object": "list", "data": [card]})


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html")

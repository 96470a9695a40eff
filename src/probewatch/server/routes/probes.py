"""`/v1/probes`: list, upload and delete the served probes."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Response, UploadFile

from probewatch.errors import ProbewatchError
from probewatch.server.errors import ApiError, responses
from probewatch.server.registry import NAME
from probewatch.server.schemas import ProbeInfo, ProbesListing
from probewatch.server.state import Ready, ready_parts

router = APIRouter(tags=["probes"])
Parts = Annotated[Ready, Depends(ready_parts)]


@router.get("/v1/probes", response_model=ProbesListing, responses=responses(401, 403, 503))
async def list_probes(parts: Parts) -> ProbesListing:
    return ProbesListing(
        data=[ProbeInfo(**d) for d in parts.probes.describe()],
        skipped=parts.probes.skipped,
        vectors=sorted(parts.vectors.vectors),
        vectors_skipped=parts.vectors.skipped,
    )


@router.post(
    "/v1/probes",
    status_code=201,
    response_model=ProbeInfo,
    responses=responses(400, 401, 403, 409, 413, 503),
)
async def upload_probe(
    parts: Parts,
    name: Annotated[str, Form(pattern=NAME.pattern, description="1-64 letters, digits, . _ -")],
    card: Annotated[UploadFile, File(description="card.json")],
    weights: Annotated[UploadFile, File(description="weights.safetensors (never pickle)")],
) -> ProbeInfo:
    """Checked in full against the served model before it is accepted (see registry.py)."""
    if name in parts.probes.probes:
        raise ApiError(409, f"a probe named {name!r} exists; delete it first", "conflict")
    card_bytes, weight_bytes = await card.read(), await weights.read()
    added = await asyncio.to_thread(parts.probes.add, name, card_bytes, weight_bytes)
    try:
        parts.engine.set_probes(list(parts.probes.probes.values()))
    except ProbewatchError:  # the engine cannot score it (vLLM: untapped or in-block site)
        await asyncio.to_thread(parts.probes.delete, name)  # moved to .deleted/, not erased
        raise
    return ProbeInfo(**added.describe())


@router.delete(
    "/v1/probes/{name}",
    status_code=204,
    response_class=Response,
    responses=responses(400, 401, 403, 404, 503),
)
async def delete_probe(parts: Parts, name: Annotated[str, Path(pattern=NAME.pattern)]) -> Response:
    try:
        await asyncio.to_thread(parts.probes.delete, name)
    except KeyError as exc:
        raise ApiError(404, f"no probe named {name!r}", "not_found") from exc
    parts.engine.set_probes(list(parts.probes.probes.values()))
    return Response(status_code=204)

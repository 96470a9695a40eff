"""`/v1/attribution`: which heads and MLPs wrote a generated token, and each probe's score at it
(the dashboard's "Who wrote this token" view; see docs/attribution.md)."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from probewatch.server.errors import responses
from probewatch.server.state import Ready, ready_parts

router = APIRouter(tags=["attribution"])
Parts = Annotated[Ready, Depends(ready_parts)]


class Message(BaseModel):
    role: str = Field(max_length=32)
    content: str = Field(max_length=100_000)


class TokenAttributionRequest(BaseModel):
    messages: list[Message] = Field(min_length=1, max_length=200)
    prefix: str = Field(
        max_length=100_000, description="response text up to and including the token"
    )
    top: int = Field(default=8, ge=1, le=50)


@router.post("/v1/attribution", responses=responses(400, 401, 403, 503))
async def attribute_token(parts: Parts, body: TokenAttributionRequest) -> dict[str, Any]:
    from probewatch.attribution.token import who_wrote

    probes = {name: p.artifact for name, p in parts.probes.probes.items()}
    messages = [m.model_dump() for m in body.messages]
    return await asyncio.to_thread(who_wrote, parts.loaded, messages, body.prefix, probes, body.top)

"""`/v1/attribution`: which heads and MLPs wrote a generated token, and each probe's score at it
(the dashboard's "Who wrote this token" view; see docs/attribution.md)."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from probewatch.server.errors import ApiError, responses
from probewatch.server.schemas import AttributionRequest, TokenAttribution
from probewatch.server.state import ServerState, server_state

router = APIRouter(tags=["attribution"])


@router.post(
    "/v1/attribution",
    response_model=TokenAttribution,
    responses=responses(400, 401, 403, 404, 413, 503),
)
async def attribute_token(
    body: AttributionRequest, state: Annotated[ServerState, Depends(server_state)]
) -> Any:
    from probewatch.attribution.token import who_wrote

    parts = state.require_ready()
    probes = {name: p.artifact for name, p in parts.chosen_probes(body.probes).items()}
    messages = [m.model_dump() for m in body.messages]
    if messages[-1]["role"] == "assistant":
        raise ApiError(
            400,
            "messages ends with an assistant message: end it with the user's turn and give the "
            "response text so far (up to and including the token) as prefix",
        )
    # The attribution forward reads the conversation and the response so far: at most what the
    # server would have fed the model for a prompt of its limit and an answer of its limit.
    limit = state.config.max_prompt_tokens + state.config.max_output_tokens
    reply = [*messages, {"role": "assistant", "content": body.prefix}]
    if await asyncio.to_thread(parts.engine.prompt_tokens, reply, limit) > limit:
        raise ApiError(
            400,
            f"messages and prefix are more than {limit} tokens, this server's limit "
            "(--max-prompt-tokens + --max-output-tokens): attribute a shorter conversation",
        )
    # Never during a generation: the monitor's hooks would read this forward pass.
    return await asyncio.to_thread(
        parts.engine.exclusive,
        lambda: who_wrote(parts.loaded, messages, body.prefix, probes, body.top),
    )

"""`GET /v1/events`: the event log, newest first."""

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from probewatch.server.errors import responses
from probewatch.server.events import EventFilter
from probewatch.server.schemas import Event, EventsPage, EventsQuery
from probewatch.server.state import ServerState, server_state

router = APIRouter(tags=["events"])


@router.get("/v1/events", response_model=EventsPage, responses=responses(400, 401, 403, 503))
async def list_events(
    state: Annotated[ServerState, Depends(server_state)],
    query: Annotated[EventsQuery, Query()],
) -> EventsPage:
    where = EventFilter(probe=query.probe, flagged=query.flagged, since=query.since)
    rows = await asyncio.to_thread(state.events.query, where, query.limit, query.offset)
    return EventsPage(data=[Event(**row) for row in rows])

"""`POST /v1/chat/completions`: OpenAI-compatible chat whose answers carry probe scores.

A request is checked in full (schema, model, probes, limits, steering, prompt length counted
off the event loop) before it reaches the engine, so nothing in it can fail a batch. The answer
is relayed from the engine's deliveries: the first chunk carries the prompt scores and the
prompt-scope alerts before any token; the last token waits until the event is committed, so an
answer the client has is never missing from the log. If the client leaves, the engine stops
the request and the event records what the client was actually sent, as "cancelled".
"""

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from probewatch.errors import ProbewatchError
from probewatch.monitor import TokenStep
from probewatch.server.engine import (
    Failed,
    Finished,
    GenerationRequest,
    PromptScored,
    SteeringChoice,
    TokenGenerated,
)
from probewatch.server.errors import ApiError, responses, sse_error
from probewatch.server.schemas import (
    Alert,
    ChatChunk,
    ChatCompletion,
    ChatRequest,
    FinalPayload,
    ProbeInfo,
    PromptPayload,
    TokenPayload,
    Usage,
)
from probewatch.server.state import Ready, ServerState, server_state

router = APIRouter(tags=["chat"])

STREAM_DOC = {
    "description": "with `stream: true`: Server-Sent Events, one `data: <ChatChunk>` per "
    "chunk (the first before any token, with the prompt scores), then `data: [DONE]`; a "
    "stream that fails after it started ends with `data: <ErrorBody>`",
    # One Server-Sent Event (as OpenAPI 3.2's itemSchema reads a stream): its data is a
    # ChatChunk or an ErrorBody as JSON, or the literal [DONE].
    "schema": {
        "type": "object",
        "required": ["data"],
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    },
    "x-chunk-schema": {"$ref": "#/components/schemas/ChatChunk"},
}


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {"content": {"text/event-stream": STREAM_DOC}},
        **responses(400, 401, 403, 404, 413, 503),
    },
)
async def chat(
    body: ChatRequest,
    http: Request,
    state: Annotated[ServerState, Depends(server_state)],
) -> Any:
    parts = state.require_ready()
    await asyncio.to_thread(state.require_log)
    relay = Relay(state, parts, body, await prepare(body, parts, state))
    if body.stream:
        return StreamingResponse(
            relay.sse(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await relay.complete(http)


async def prepare(body: ChatRequest, parts: Ready, state: ServerState) -> GenerationRequest:
    """Every check a request must pass before it may join a batch."""
    config, loaded = state.config, parts.loaded
    if body.model and body.model not in (loaded.name, "default"):
        raise ApiError(
            404,
            f"model {body.model!r} is not served; this server serves {loaded.name!r}",
            "not_found",
        )
    parts.chosen_probes(body.probes)  # 404 for a probe not served
    for asked in (body.max_tokens, body.max_completion_tokens):
        if asked is not None and asked > config.max_output_tokens:
            limit = config.max_output_tokens
            raise ApiError(400, f"max_tokens {asked} is over this server's limit of {limit}")
    requested = body.max_completion_tokens or body.max_tokens
    max_tokens = requested or min(config.default_max_tokens, config.max_output_tokens)
    steering = None
    if body.steering:
        vector, strength = body.steering.vector, body.steering.strength
        if vector not in parts.vectors.vectors:
            known = ", ".join(sorted(parts.vectors.vectors)) or "none"
            raise ApiError(404, f"unknown steering vector {vector!r}; served: {known}", "not_found")
        additions = tuple(parts.vectors.steering(vector, strength))
        steering = SteeringChoice(vector, strength, additions)
    messages = [m.model_dump() for m in body.messages]
    try:
        n_prompt = await asyncio.to_thread(
            parts.engine.prompt_tokens, messages, config.max_prompt_tokens
        )
    except ProbewatchError:
        raise
    except Exception as exc:  # a chat template that refuses this conversation
        raise ApiError(400, f"the messages cannot be rendered as a prompt: {exc}") from exc
    if n_prompt > config.max_prompt_tokens:
        raise ApiError(
            400,
            f"the prompt is more than {config.max_prompt_tokens} tokens, this server's limit",
        )
    return GenerationRequest(
        request_id=f"chatcmpl-{uuid.uuid4().hex}",
        messages=messages,
        prompt_tokens=n_prompt,
        max_tokens=max_tokens,
        temperature=body.temperature,
        seed=body.seed if body.seed is not None else secrets.randbits(63),
        steering=steering,
    )


class Relay:
    """One request's deliveries turned into the client's answer and its event."""

    def __init__(
        self, state: ServerState, parts: Ready, body: ChatRequest, request: GenerationRequest
    ) -> None:
        self.state, self.parts, self.request = state, parts, request
        served = parts.probes.probes
        self.chosen = set(body.probes if body.probes is not None else served)
        self.described = [p.describe() for p in served.values()]
        self.versions = {d["name"]: str(d["version"]) for d in self.described}
        self.prompt = PromptScored({}, [])
        self.sent: list[TokenStep] = []  # tokens the client was given
        self.recorded = False
        self.created = time.time()

    # -- streaming ---------------------------------------------------------------------------

    async def sse(self) -> AsyncIterator[str]:
        stream = self.parts.engine.generate(self.request)
        last: TokenStep | None = None
        try:
            async for item in stream:
                if self.state.degraded is not None:  # the log is failing: no further text
                    yield sse_error(f"the event log cannot be written: {self.state.degraded}")
                    return
                if isinstance(item, PromptScored):
                    self.prompt = item
                    yield self._chunk({"role": "assistant"}, None, self._prompt_payload())
                elif isinstance(item, TokenGenerated):
                    if item.step.finish_reason:
                        last = item.step  # held back: the last token waits for the commit
                    else:
                        yield self._token_chunk(item.step)
                        self.sent.append(item.step)  # resumed: the server wrote it
                elif isinstance(item, Finished):
                    assert last is not None
                    event_id = await asyncio.to_thread(self._record, item, [*self.sent, last])
                    yield self._final_chunk(last, item, event_id)
                elif isinstance(item, Failed):
                    yield sse_error(item.message)
                    return
            yield "data: [DONE]\n\n"
        except ApiError as exc:  # the event could not be committed: nothing more is sent
            yield sse_error(exc.message, exc.kind)
        finally:
            self._abandon()
            await stream.aclose()

    def _token_chunk(self, step: TokenStep) -> str:
        payload = TokenPayload(
            token_index=step.token_index,
            token=step.text,
            scores=self._pick(step.scores),
            aggregates=self._pick(step.aggregates),
            alerts=self._alerts(step.alerts),
            progress=step.progress,
        )
        return self._chunk({"content": step.text}, None, payload)

    def _final_chunk(self, step: TokenStep, done: Finished, event_id: str) -> str:
        response = done.response
        payload = FinalPayload(
            token_index=step.token_index,
            token=step.text,
            scores=self._pick(step.scores),
            aggregates=self._pick(step.aggregates),
            progress=step.progress,
            alerts=self._alerts(response.alerts),
            verdicts=self._pick(response.verdicts),
            prompt_scores=self._pick(response.prompt_scores),
            event_id=event_id,
            usage=Usage(**self._usage(len(response.tokens))),
        )
        self.sent.append(step)
        return self._chunk({"content": step.text}, step.finish_reason, payload)

    def _prompt_payload(self) -> PromptPayload:
        return PromptPayload(
            probes=[ProbeInfo(**d) for d in self.described if d["name"] in self.chosen],
            prompt_scores=self._pick(self.prompt.prompt_scores),
            alerts=self._alerts(self.prompt.alerts),
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None, payload: Any) -> str:
        chunk = ChatChunk.model_validate(
            {
                "id": self.request.request_id,
                "object": "chat.completion.chunk",
                "created": int(self.created),
                "model": self.parts.loaded.name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                "probewatch": payload,
            }
        )
        return f"data: {chunk.model_dump_json(exclude_unset=True)}\n\n"

    # -- non-streaming -----------------------------------------------------------------------

    async def complete(self, http: Request) -> ChatCompletion:
        watcher = asyncio.create_task(self._cancel_when_gone(http))
        stream = self.parts.engine.generate(self.request)
        try:
            async for item in stream:
                if isinstance(item, PromptScored):
                    self.prompt = item
                elif isinstance(item, Failed):
                    raise ApiError(item.status, item.message, "server_error")
                elif isinstance(item, Finished):
                    return await self._completion(item)
            raise ApiError(503, "the request was cancelled", "unavailable")
        finally:
            watcher.cancel()
            self._abandon()
            await stream.aclose()

    async def _cancel_when_gone(self, http: Request) -> None:
        while (await http.receive())["type"] != "http.disconnect":
            pass
        self.parts.engine.cancel(self.request.request_id)

    async def _completion(self, done: Finished) -> ChatCompletion:
        response = done.response
        event_id = await asyncio.to_thread(self._record, done, response.tokens)
        self.sent = list(response.tokens)
        progress = [t.progress for t in response.tokens]
        return ChatCompletion.model_validate(
            {
                "id": self.request.request_id,
                "object": "chat.completion",
                "created": int(self.created),
                "model": self.parts.loaded.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": response.text},
                        "finish_reason": response.finish_reason,
                    }
                ],
                "usage": self._usage(len(response.tokens)),
                "probewatch": {
                    "tokens": [
                        {"token": t.text, "scores": self._pick(t.scores)} for t in response.tokens
                    ],
                    "prompt_scores": self._pick(response.prompt_scores),
                    "verdicts": self._pick(response.verdicts),
                    "alerts": self._alerts(response.alerts),
                    "progress": progress if any(p is not None for p in progress) else None,
                    "event_id": event_id,
                },
            }
        )

    # -- the event ---------------------------------------------------------------------------

    def _record(self, done: Finished, sent: list[TokenStep]) -> str:
        response = done.response
        event = self._event(response.verdicts, response.alerts, sent, response.finish_reason)
        event["response"] = response.text
        self.recorded = True  # whatever happens next, this response is not "abandoned"
        return self.state.record(event)

    def _abandon(self) -> None:
        """The client left before the end: stop generating, log what it was sent."""
        if self.recorded:
            return
        self.recorded = True
        self.parts.engine.cancel(self.request.request_id)
        if not self.prompt.prompt_scores:
            return  # nothing was generated for it
        verdicts, alerts = self._verdicts_so_far()
        event = self._event(verdicts, alerts, self.sent, "cancelled")
        loop = asyncio.get_running_loop()
        loop.run_in_executor(None, self._record_quietly, event)

    def _record_quietly(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(ApiError):  # degraded, and it says so; no client waits for it
            self.state.record(event)

    def _event(
        self,
        verdicts: dict[str, Any],
        alerts: list[Any],
        sent: list[TokenStep],
        finish_reason: str,
    ) -> dict[str, Any]:
        steering = self.request.steering
        return {
            "request_id": self.request.request_id,
            "created": self.created,
            "model": self.parts.loaded.name,
            "model_fingerprint": self.parts.loaded.fingerprint,
            "probes": self.versions,
            "verdicts": verdicts,
            "alerts": [a if isinstance(a, dict) else a.to_dict() for a in alerts],
            "prompt": self.request.messages,
            "response": "".join(t.text for t in sent),
            "n_tokens": len(sent),
            "steering": {"vector": steering.vector, "strength": steering.strength}
            if steering
            else None,
            "finish_reason": finish_reason,
        }

    def _verdicts_so_far(self) -> tuple[dict[str, Any], list[Any]]:
        """Verdicts over the prompt and the tokens sent (what the client saw)."""
        alerts = [*self.prompt.alerts, *(a for t in self.sent for a in t.alerts)]
        last = self.sent[-1] if self.sent else None
        verdicts = {}
        for d in self.described:
            name = d["name"]
            if d["task"] == "regression":
                continue
            first = next((a.token_index for a in alerts if a.probe == name), None)
            prompt_score = self.prompt.prompt_scores.get(name, 0.0)
            use_prompt = d["scope"] == "prompt" or last is None
            verdicts[name] = {
                "score": prompt_score
                if use_prompt or last is None
                else last.aggregates.get(name, prompt_score),
                "threshold": d["threshold"],
                "flagged": first is not None,
                "first_alert_token": first,
            }
        return verdicts, alerts

    # -- helpers -----------------------------------------------------------------------------

    def _pick(self, values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if k in self.chosen}

    def _alerts(self, alerts: list[Any]) -> list[Alert]:
        return [Alert(**a.to_dict()) for a in alerts if a.probe in self.chosen]

    def _usage(self, completion: int) -> dict[str, int]:
        prompt = self.request.prompt_tokens
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

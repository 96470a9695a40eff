"""The served contract on a tiny model: every chunk and answer validates against the response
models, prompt scores and prompt alerts come in the first chunk (before any token), the OpenAPI
schema documents the real answers, and Stop cancels generation on the server."""

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from probewatch.server.schemas import (
    ChatChunk,
    ChatCompletion,
    EventsPage,
    FinalPayload,
    PromptPayload,
    TokenPayload,
)
from tests.helpers import SERVED, FakeProbe, Server, read_then_leave, serving

# An input monitor that fires: a prompt-scope probe whose threshold every prompt passes.
PROBES = {**SERVED, "harm": FakeProbe("resid.2", scope="prompt")}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    limits = {"max_output_tokens": 400, "max_prompt_tokens": 400}
    with serving(tmp_path_factory.mktemp("contract"), probes=PROBES, **limits) as server:
        yield server


def chunks(server: Server, body: dict[str, Any]) -> list[ChatChunk]:
    with httpx.stream(
        "POST", server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [ChatChunk.model_validate_json(line[6:]) for line in lines[:-1]]


def test_prompt_scores_and_prompt_alerts_come_before_the_first_token(served: Server) -> None:
    got = chunks(served, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
    first, *tokens, last = got
    prompt = first.probewatch
    assert isinstance(prompt, PromptPayload) and first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content is None
    assert set(prompt.prompt_scores) == {"harm", "truth", "progress"}
    assert [(a.probe, a.token_index) for a in prompt.alerts] == [("harm", -1)]
    assert all(isinstance(c.probewatch, TokenPayload) for c in tokens)
    assert not any(a.probe == "harm" for c in tokens for a in c.probewatch.alerts)
    final = last.probewatch
    assert isinstance(final, FinalPayload) and last.choices[0].finish_reason == "length"
    assert final.verdicts["harm"].flagged and final.verdicts["harm"].first_alert_token == -1
    assert final.usage.completion_tokens == 5 == len(tokens) + 1
    assert final.usage.total_tokens == final.usage.prompt_tokens + 5


def test_non_streaming_answer_and_events_validate(served: Server) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "probes": ["truth"]}
    reply = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=60)
    answer = ChatCompletion.model_validate(reply.json())
    assert set(answer.probewatch.verdicts) == {"truth"}
    page = EventsPage.model_validate(httpx.get(served.url + "/v1/events?limit=5").json())
    assert page.data[0].id == answer.probewatch.event_id
    assert page.data[0].finish_reason == "length" and page.data[0].n_tokens == 3


def test_openapi_documents_the_real_answers(served: Server) -> None:
    schema = httpx.get(served.url + "/openapi.json").json()
    chat = schema["paths"]["/v1/chat/completions"]["post"]["responses"]
    assert set(chat) == {"200", "400", "401", "403", "404", "413", "503"}
    assert "text/event-stream" in chat["200"]["content"]
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert chat["400"]["content"]["application/json"]["schema"] == error
    assert "ChatChunk" in schema["components"]["schemas"]
    for path in schema["paths"].values():
        for operation in path.values():
            assert "422" not in operation["responses"]  # invalid input is a documented 400
    upload = schema["paths"]["/v1/probes"]["post"]["responses"]
    assert {"201", "400", "409", "413"} <= set(upload)


def test_stop_cancels_generation_on_the_server(served: Server) -> None:
    """The client leaves after 3 tokens of a 400-token answer: the server stops within a step,
    logs the event as cancelled with exactly the tokens sent, and serves the next request at
    once."""
    engine = served.app.state.server.parts.engine
    before, tokens_before = engine.stats.cancelled, engine.stats.tokens
    body = {"messages": [{"role": "user", "content": "Go on"}], "max_tokens": 400, "stream": True}
    sent = read_then_leave(served.url, body)  # the role chunk and three tokens
    started = time.monotonic()
    reply = httpx.post(
        served.url + "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Next"}], "max_tokens": 2},
        timeout=60,
    )
    assert reply.status_code == 200
    waited = time.monotonic() - started
    deadline = time.monotonic() + 10
    while (event := _event_of(served, "Go on")) is None:
        assert time.monotonic() < deadline, "the cancelled event was never written"
        time.sleep(0.05)
    assert event["finish_reason"] == "cancelled"
    # What the client read, plus at most a token or two the server wrote before it saw the
    # connection close (bytes in flight are "sent"; nothing beyond them is logged).
    assert event["response"].startswith("".join(sent)) and 3 <= event["n_tokens"] <= 7
    assert engine.stats.cancelled == before + 1
    # Generation stopped within a step of the client leaving (2 tokens are the next request's).
    assert engine.stats.tokens - tokens_before - 2 <= len(sent) - 1 + 4
    # A 400-token generation takes many seconds here; the next request did not wait for it.
    assert waited < 10.0, waited


def _event_of(server: Server, prompt: str) -> dict[str, Any] | None:
    for event in httpx.get(server.url + "/v1/events?limit=20").json()["data"]:
        if event["prompt"][0]["content"] == prompt:
            return dict(event)
    return None

"""`POST /v1/attribution` through the real app on a tiny model: a good request's answer
validates against its published model and its parts add up; bad input of every kind is a 4xx
whose message names the field and what to do; the OpenAPI schema shows both models."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from probewatch.models.loading import LoadedModel
from probewatch.probes import ProbeArtifact, make_probe, save_probe
from probewatch.probes.artifact import build_card
from probewatch.server.schemas import PartsOf, Skipped, TokenAttribution
from tests.helpers import FakeProbe, Server, make_probes, serving, tiny_model

ASK = [{"role": "user", "content": "hi"}]
GOOD = {"messages": ASK, "prefix": "hello there", "top": 3}
MAX_PROMPT, MAX_OUTPUT = 100, 20  # the tiny tokenizer spells by character


def add_mlp_probe(loaded: LoadedModel, where: Path) -> None:
    """A served probe that is not affine: attribution skips it, saying why."""
    x = torch.randn(60, loaded.d_model, generator=torch.Generator().manual_seed(2))
    probe = make_probe("mlp", max_epochs=2).fit(x, (x[:, 0] > 0).float())
    extra = {"threshold": {"value": 0.0, "target_fpr": 0.01}, "monitor": {"scope": "response"}}
    card = build_card(probe, loaded, "resid.2", "last", {"name": "shape", "hash": "x"}, {}, extra)
    save_probe(ProbeArtifact(probe, card), where)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("attribution-api")
    loaded = tiny_model()
    make_probes(loaded, root / "probes", {"truth": FakeProbe("resid.1")})
    add_mlp_probe(loaded, root / "probes" / "shape")
    limits = {"max_prompt_tokens": MAX_PROMPT, "max_output_tokens": MAX_OUTPUT}
    with serving(root, loaded, probes=None, **limits) as server:
        yield server


def attribute(server: Server, body: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/attribution", json=body, timeout=60)


def test_answer_validates_and_its_parts_add_up(served: Server) -> None:
    reply = attribute(served, GOOD)
    assert reply.status_code == 200, reply.text
    answer = TokenAttribution.model_validate(reply.json())
    assert answer.logit.error < 1e-4 and len(answer.logit.top) == 3
    truth, shape = answer.probes["truth"], answer.probes["shape"]
    assert isinstance(truth, PartsOf) and truth.error < 1e-4
    assert isinstance(shape, Skipped) and "needs a linear probe" in shape.skipped
    chosen = TokenAttribution.model_validate(
        attribute(served, {**GOOD, "probes": ["truth"]}).json()
    )
    assert set(chosen.probes) == {"truth"}
    assert chosen.logit == answer.logit  # the same token, attributed the same way


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({**GOOD, "prefx": "hello"}, "prefx: unknown field; this route's fields are listed in"),
        ({**GOOD, "messages": [{**ASK[0], "name": "x"}]}, "messages.0.name: unknown field"),
        ({**GOOD, "top": "5"}, "top: Input should be a valid integer"),
        ({**GOOD, "top": 0}, "top: Input should be greater than or equal to 1"),
        ({**GOOD, "top": 2.5}, "top: Input should be a valid integer"),
        ({**GOOD, "prefix": 7}, "prefix: Input should be a valid string"),
        ({**GOOD, "prefix": ""}, "prefix: String should have at least 1 character"),
        ({**GOOD, "messages": []}, "messages: List should have at least 1 item"),
        ({**GOOD, "messages": [{"role": "tool", "content": "x"}]}, "messages.0.role: Input"),
        ({"messages": ASK}, "prefix: Field required"),
        ([GOOD], "Input should be a valid dictionary"),
        (
            {**GOOD, "messages": [*ASK, {"role": "assistant", "content": "hello"}]},
            "end it with the user's turn and give the response text so far",
        ),
        ({**GOOD, "probes": [""]}, "probes.0: String should have at least 1 character"),
    ],
)
def test_bad_input_is_a_400_that_says_what_to_do(served: Server, body: Any, says: str) -> None:
    reply = attribute(served, body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert says in error["message"], error["message"]


def test_a_lone_surrogate_is_refused_before_the_tokenizer(served: Server) -> None:
    raw = '{"messages": [{"role": "user", "content": "hi"}], "prefix": "a\\ud800"}'
    headers = {"content-type": "application/json"}
    reply = httpx.post(served.url + "/v1/attribution", content=raw, headers=headers, timeout=60)
    assert reply.status_code == 400
    assert "prefix: Input should be a valid string" in reply.json()["error"]["message"]


def test_an_unknown_probe_is_a_404_naming_the_served_ones(served: Server) -> None:
    reply = attribute(served, {**GOOD, "probes": ["truth", "honesty"]})
    assert reply.status_code == 404
    assert reply.json()["error"] == {
        "message": "unknown probes ['honesty']; served: ['shape', 'truth']",
        "type": "not_found",
    }


def test_input_over_the_servers_token_limit_is_refused(served: Server) -> None:
    limit = MAX_PROMPT + MAX_OUTPUT
    fits = attribute(served, {**GOOD, "prefix": "ab " * 5})
    assert fits.status_code == 200, fits.text
    reply = attribute(served, {**GOOD, "prefix": "ab " * limit})
    assert reply.status_code == 400
    assert f"more than {limit} tokens" in reply.json()["error"]["message"]
    huge = attribute(served, {**GOOD, "messages": [{"role": "user", "content": "x" * 500_000}]})
    assert huge.status_code == 400 and "tokens" in huge.json()["error"]["message"]


def test_openapi_publishes_the_request_and_the_answer(served: Server) -> None:
    schema = httpx.get(served.url + "/openapi.json").json()
    route = schema["paths"]["/v1/attribution"]["post"]
    body = route["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/AttributionRequest"}
    answer = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/TokenAttribution"}
    assert set(route["responses"]) == {"200", "400", "401", "403", "404", "413", "503"}
    error = {"$ref": "#/components/schemas/ErrorBody"}
    assert route["responses"]["400"]["content"]["application/json"]["schema"] == error
    models = schema["components"]["schemas"]
    request = models["AttributionRequest"]
    assert request["additionalProperties"] is False
    assert set(request["properties"]) == {"messages", "prefix", "top", "probes"}
    assert request["required"] == ["messages", "prefix"]
    assert request["properties"]["top"]["maximum"] == 50
    assert models["AttributionMessage"]["additionalProperties"] is False
    assert set(models["TokenAttribution"]["properties"]) == {"token", "logit", "probes"}
    assert {"PartsOf", "Part", "Skipped"} <= set(models)

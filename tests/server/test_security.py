"""What a hostile client or web page sends: no 5xx for any body, no reading or planting from
another site or Host name, security headers, API keys that are long enough and checked whole."""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from probewatch.errors import ProbewatchError
from probewatch.server.app import create_app
from probewatch.server.config import ServerConfig
from tests.helpers import Server, serving

CHAT = "/v1/chat/completions"


def ask(content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


# -- 3. no 5xx for any input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(ask("\ud800")).encode(),  # a lone surrogate
        b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nested beyond the parser
        json.dumps(ask(seed=False)).encode(),
        json.dumps(ask(max_tokens="5")).encode(),
        json.dumps(ask(temperature=float("nan"))).encode(),
        json.dumps(ask(probes=["\udfff"])).encode(),
        json.dumps({**ask(), "steering": {"vector": "x", "strength": 1e400}}).encode(),
        b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
    ],
)
def test_hostile_bodies_get_a_documented_400(hostile: Server, raw: bytes) -> None:
    reply = httpx.post(
        hostile.url + CHAT, content=raw, headers={"content-type": "application/json"}, timeout=60
    )
    assert reply.status_code == 400, reply.text
    assert set(reply.json()["error"]) == {"message", "type"}


# -- 5. browser-facing safety --------------------------------------------------------------------


def test_a_foreign_host_or_origin_cannot_read_or_plant(hostile: Server, good: Path) -> None:
    events = hostile.url + "/v1/events"
    assert httpx.get(events, headers={"host": "evil.example"}).status_code == 403
    assert httpx.get(events, headers={"host": "evil.example:8000"}).status_code == 403
    assert httpx.get(events, headers={"origin": "http://evil.example"}).status_code == 403
    assert httpx.get(events, headers={"sec-fetch-site": "cross-site"}).status_code == 403
    own = hostile.url.removeprefix("http://")
    assert httpx.get(events, headers={"origin": hostile.url}).status_code == 200
    assert httpx.get(events, headers={"host": own}).status_code == 200
    card = (good / "truth" / "card.json").read_bytes()
    weights = (good / "truth" / "weights.safetensors").read_bytes()
    files = {"card": ("card.json", card), "weights": ("weights.safetensors", weights)}
    planted = httpx.post(
        hostile.url + "/v1/probes",
        data={"name": "planted"},
        files=files,
        headers={"origin": "http://evil.example"},
    )
    assert planted.status_code == 403
    assert "planted" not in [
        p["name"] for p in httpx.get(hostile.url + "/v1/probes").json()["data"]
    ]


def test_the_dashboard_has_security_headers(hostile: Server) -> None:
    page = httpx.get(hostile.url + "/")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("key", ["", " ", "a", "short-key", " padded-key-of-16 "])
def test_weak_api_keys_are_refused_saying_the_minimum(key: str, tmp_path: Path) -> None:
    with pytest.raises(ProbewatchError, match="at least 16 characters"):
        create_app(ServerConfig(api_key=key, events_db=tmp_path / "e.sqlite"))


def test_the_key_is_checked_whole(tmp_path: Path) -> None:
    key = "k" * 24
    with serving(tmp_path, probes=None, api_key=key) as server:
        for given in ("x", key[:-1], key + "k", key.upper()):
            headers = {"Authorization": f"Bearer {given}"}
            assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 401
        ok = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200

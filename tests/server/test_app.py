"""The server end to end on a tiny model: the official openai client, bad input, probes,
events, batching, and no acknowledged event lost when the process is killed."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import torch

from probewatch.models.loading import LoadedModel
from probewatch.server.app import create_app
from probewatch.server.batcher import BatchSettings, HFBatcher, Job
from probewatch.server.config import ServerConfig
from probewatch.server.engine import GenerationRequest
from probewatch.server.events import EventLog
from tests.helpers import Server, free_port, make_probes, serving, tiny_model


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    limits = {"max_body_bytes": 20_000, "max_prompt_tokens": 400, "max_output_tokens": 32}
    batching = {"max_batch": 8, "batch_window_ms": 100}
    with serving(tmp_path_factory.mktemp("srv"), **limits, **batching) as server:
        yield server


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def test_openai_client_non_streaming_reads_the_scores(served: Server) -> None:
    reply = client(served).chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Where is Lyon?"}],
        max_tokens=6,
    )
    extra = reply.model_extra["probewatch"]
    assert reply.choices[0].message.content == "".join(t["token"] for t in extra["tokens"])
    assert len(extra["tokens"]) == reply.usage.completion_tokens
    assert set(extra["tokens"][0]["scores"]) == {"truth", "progress"}
    assert extra["verdicts"]["truth"]["flagged"] is True
    assert extra["alerts"][0]["probe"] == "truth"
    assert len(extra["progress"]) == len(extra["tokens"])
    event = httpx.get(served.url + "/v1/events").json()["data"][0]
    assert event["id"] == extra["event_id"] and event["flagged"] is True


def test_openai_client_streaming_reads_the_scores(served: Server) -> None:
    stream = client(served).chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "Hi"}],
        max_tokens=5,
        stream=True,
        extra_body={"probes": ["truth"]},
    )
    chunks = list(stream)
    first, last = chunks[0].model_extra["probewatch"], chunks[-1].model_extra["probewatch"]
    assert first["probes"][0]["name"] == "truth"
    tokens = [c.model_extra["probewatch"] for c in chunks[1:]]
    assert all(set(t["scores"]) == {"truth"} for t in tokens)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert last["verdicts"]["truth"]["flagged"] and last["event_id"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == httpx.get(served.url + "/v1/events").json()["data"][0]["response"]


@pytest.mark.parametrize(
    ("kwargs", "status", "fragment"),
    [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, ""),
        ({"json": {"messages": "hello"}}, 400, "messages"),
        ({"json": {"messages": [{"role": "user", "content": 3}]}}, 400, "content"),
        ({"json": {"messages": []}}, 400, "messages"),
        (
            {"json": {"messages": [{"role": "user", "content": "x"}], "probes": ["nope"]}},
            404,
            "unknown probes",
        ),
        (
            {"json": {"messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000}},
            400,
            "limit",
        ),
        ({"json": {"messages": [{"role": "user", "content": "x" * 500}]}}, 400, "tokens"),
        ({"json": {"messages": [{"role": "user", "content": "x" * 30_000}]}}, 413, "limit"),
        (
            {"json": {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}},
            400,
            "temperature",
        ),
        (
            {"json": {"messages": [{"role": "user", "content": "x"}], "model": "gpt-9"}},
            404,
            "not served",
        ),
        (
            {
                "json": {
                    "messages": [{"role": "user", "content": "x"}],
                    "steering": {"vector": "none", "strength": 1},
                }
            },
            404,
            "steering vector",
        ),
    ],
)
def test_bad_requests_get_4xx_never_5xx(
    served: Server,
    kwargs: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    response = httpx.post(served.url + "/v1/chat/completions", **kwargs)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]["message"]


def test_probe_upload_list_and_delete(served: Server, tmp_path: Path) -> None:
    loaded = tiny_model()
    make_probes(loaded, tmp_path)
    card = (tmp_path / "truth" / "card.json").read_bytes()
    weights = (tmp_path / "truth" / "weights.safetensors").read_bytes()
    files = {"card": ("card.json", card), "weights": ("weights.safetensors", weights)}
    created = httpx.post(served.url + "/v1/probes", data={"name": "truth2"}, files=files)
    assert created.status_code == 201, created.text
    names = [p["name"] for p in httpx.get(served.url + "/v1/probes").json()["data"]]
    assert "truth2" in names
    pickled = {"card": ("card.json", card), "weights": ("w.pt", b"\x80\x04\x95 pickle")}
    refused = httpx.post(served.url + "/v1/probes", data={"name": "evil"}, files=pickled)
    assert refused.status_code == 400 and "unreadable" in refused.json()["error"]["message"]
    bad_name = httpx.post(served.url + "/v1/probes", data={"name": "../x"}, files=files)
    assert bad_name.status_code == 400
    assert httpx.delete(served.url + "/v1/probes/truth2").status_code == 204
    assert httpx.delete(served.url + "/v1/probes/truth2").status_code == 404
    probes_dir = Path(served.app.state.server.config.probes_dir)
    assert any(p.name.startswith("truth2-") for p in (probes_dir / ".deleted").iterdir())


def test_concurrent_requests_are_batched(served: Server) -> None:
    def ask(i: int) -> str:
        reply = client(served).chat.completions.create(
            model="tiny-llama",
            messages=[{"role": "user", "content": f"question {i}"}],
            max_tokens=4 + i,
        )
        return reply.model_extra["probewatch"]["event_id"]

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(ask, range(6)))
    assert len(set(ids)) == 6
    assert served.app.state.server.parts.engine.stats.largest_batch > 1


def test_openapi_models_and_dashboard(served: Server) -> None:
    schema = httpx.get(served.url + "/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]
    assert httpx.get(served.url + "/v1/models").json()["data"][0]["id"] == "tiny-llama"
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and "probe-select" in page.text
    script = httpx.get(served.url + "/static/main.js")  # an ES module: needs a JavaScript type
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]


def test_api_key_is_required_beyond_loopback_and_enforced(tmp_path: Path) -> None:
    from probewatch.errors import ProbewatchError

    with pytest.raises(ProbewatchError, match="API key"):
        create_app(ServerConfig(host="0.0.0.0", events_db=tmp_path / "e.sqlite"))
    with serving(tmp_path, probes=None, api_key="s3cret-s3cret-s3cret") as server:
        assert httpx.get(server.url + "/v1/models").status_code == 401
        headers = {"Authorization": "Bearer wrong"}
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 401
        headers = {"Authorization": "Bearer s3cret-s3cret-s3cret"}
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 200
        assert httpx.get(server.url + "/health").status_code == 200  # health stays open


def test_health_is_503_until_the_model_is_ready(tmp_path: Path) -> None:
    config = ServerConfig(
        model=str(tmp_path / "no-model"), events_db=tmp_path / "e.sqlite", port=free_port()
    )
    with Server(config, None) as server:
        deadline = time.time() + 30
        while (health := httpx.get(server.url + "/health")).json().get("status") == "loading":
            assert time.time() < deadline
            time.sleep(0.05)
        assert health.status_code == 503 and health.json()["status"] == "error"
        chat = httpx.post(
            server.url + "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "x"}]},
        )
        assert chat.status_code == 503


KILL_SCRIPT = """
import sys, uvicorn
from pathlib import Path
from probewatch.server.app import create_app
from probewatch.server.config import ServerConfig
root = Path(sys.argv[1])
config = ServerConfig(model=str(root / "model"), probes_dir=root / "probes",
                      events_db=root / "events.sqlite", port=int(sys.argv[2]))
uvicorn.run(create_app(config), host="127.0.0.1", port=config.port, log_level="error")
"""


def test_killing_the_server_loses_no_acknowledged_event(tmp_path: Path) -> None:
    loaded = tiny_model()
    loaded.model.save_pretrained(tmp_path / "model")
    loaded.tokenizer.save_pretrained(tmp_path / "model")
    make_probes(loaded, tmp_path / "probes")
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(tmp_path), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300  # a loaded 2-core machine imports torch slowly
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline and process.poll() is None, "server did not start"
            time.sleep(0.1)
        acknowledged = []
        for i in range(5):
            reply = httpx.post(
                url + "/v1/chat/completions",
                timeout=60,
                json={"messages": [{"role": "user", "content": f"message {i}"}], "max_tokens": 4},
            )
            acknowledged.append(reply.json()["probewatch"]["event_id"])
    finally:
        process.send_signal(signal.SIGKILL)  # right after the last acknowledgement
        process.wait(timeout=30)
    with EventLog(tmp_path / "events.sqlite") as log:
        stored = {event["id"] for event in log.query(limit=100)}
    assert set(acknowledged) <= stored


def test_events_cli_exports_what_the_server_logged(served: Server, tmp_path: Path) -> None:
    from probewatch.cli import main

    db = served.app.state.server.config.events_db
    assert main(["events", "--db", str(db), "--export", str(tmp_path / "e.jsonl")]) == 0
    rows = [json.loads(line) for line in io.StringIO((tmp_path / "e.jsonl").read_text())]
    assert rows and all("verdicts" in row for row in rows)


def _save_vector(loaded: LoadedModel, out: Path, seed: int = 0) -> None:
    from probewatch.steer import SteeringVector, save_vector
    from probewatch.steer.directions import build_card as vector_card

    vector = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(seed))
    card = vector_card(loaded, ["resid.1"], "last", "mean_diff", {"name": "test"})
    save_vector(SteeringVector({"resid.1": vector}, card), out)


def test_steering_vector_per_request(tmp_path: Path) -> None:
    """A vector saved by steer.save_vector steers one request; the next is unsteered again;
    a vector made on other weights is skipped with its reason, not served."""
    loaded = tiny_model()
    _save_vector(loaded, tmp_path / "vectors" / "push")
    _save_vector(tiny_model(seed=1), tmp_path / "vectors" / "foreign")
    body = {"messages": [{"role": "user", "content": "Where is Lyon?"}], "max_tokens": 8}
    settings = {"vectors_dir": tmp_path / "vectors", "max_output_tokens": 16}
    with serving(tmp_path, loaded, **settings) as server:
        listing = httpx.get(server.url + "/v1/probes").json()
        assert listing["vectors"] == ["push"]
        assert "fingerprint" in listing["vectors_skipped"]["foreign"]

        def text(extra: dict[str, Any]) -> str:
            r = httpx.post(server.url + "/v1/chat/completions", json={**body, **extra})
            assert r.status_code == 200, r.text
            return str(r.json()["choices"][0]["message"]["content"])

        plain = text({})
        steered = text({"steering": {"vector": "push", "strength": 50.0}})
        assert steered != plain
        assert text({}) == plain  # the hooks are gone after the steered request
        refused = httpx.post(
            server.url + "/v1/chat/completions",
            json={**body, "steering": {"vector": "foreign", "strength": 1.0}},
        )
        assert refused.status_code == 404 and "foreign" in refused.json()["error"]["message"]
        event = httpx.get(server.url + "/v1/events").json()["data"][1]
        assert event["steering"] == {"vector": "push", "strength": 50.0}


def _job(i: int) -> Job:
    request = GenerationRequest(f"r{i}", [{"role": "user", "content": "x"}], 3, 4, 0.0, 0)
    return Job(request, lambda item: None)


@pytest.mark.parametrize(("gap_s", "expected"), [(0.02, [4]), (0.25, [1, 1, 1, 1])])
def test_batch_keeps_collecting_while_requests_keep_arriving(
    gap_s: float, expected: list[int]
) -> None:
    """Jobs arriving within the idle gap of each other share a batch (up to the window);
    jobs further apart than the gap do not wait for each other."""
    batcher = HFBatcher(tiny_model(), [], BatchSettings(window_s=0.5, idle_s=0.1))

    def arrive() -> None:
        for i in range(4):
            batcher.submit(_job(i))
            time.sleep(gap_s)

    feeder = threading.Thread(target=arrive)
    feeder.start()
    sizes: list[int] = []
    while sum(sizes) < 4:
        batch = batcher._next_batch()
        assert batch is not None
        sizes.append(len(batch))
    feeder.join()
    assert sizes == expected

"""The dashboard in real headless Chromium, against the mock server in tests/dashboard_mock.py.

Needs the `playwright` Python package and Debian's `chromium` at /usr/bin/chromium (no
`playwright install`: the browser comes from apt). Skipped with a reason when either is missing.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import CHROMIUM, CHROMIUM_ARGS, MISSING

pytestmark = pytest.mark.browser

API_KEY = "test-key-123"
SCREENSHOT = Path("/tmp/dashboard.png")

uvicorn = pytest.importorskip("uvicorn", reason="uvicorn is not installed (server extra)")
pytest.importorskip("fastapi", reason="fastapi is not installed (server extra)")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is not installed (pip install playwright)"
)
if not CHROMIUM.exists():
    pytest.skip(MISSING, allow_module_level=True)

from tests.dashboard_mock import create_app  # noqa: E402


@pytest.fixture
def server() -> Iterator[str]:
    """The mock, served by uvicorn in a thread on a free loopback port; yields its base URL."""
    app = create_app(loading_seconds=1.5, token_delay=0.02, api_key=API_KEY)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            threading.Event().wait(0.025)
        assert srv.started, "the mock server did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def page(server: str) -> Iterator[Any]:
    """A fresh page in headless Debian Chromium, failing the test on any JS error."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1360, "height": 900})
            pg = context.new_page()
            errors: list[str] = []
            pg.on("pageerror", lambda exc: errors.append(str(exc)))
            pg.set_default_timeout(15_000)
            yield pg
            assert not errors, f"JavaScript errors on the page: {errors}"
        finally:
            browser.close()


def test_dashboard_streams_scores_alerts_progress_and_history(page: Any, server: str) -> None:
    requests: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            requests.append({"url": r.url, "headers": r.headers, "body": r.post_data})
            if r.url.endswith("/v1/chat/completions")
            else None
        ),
    )
    page.goto(server)

    # /health answers 503 for 1.5 s: the page says so and will not send yet.
    expect = sync_api.expect
    expect(page.locator("#health")).to_have_text("model loading…")
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#health")).to_have_text("ready", timeout=10_000)

    # Without the key /v1/* is refused: the settings open with the reason. Typing the key
    # stores it and loads the probes.
    expect(page.locator("#settings")).to_be_visible()
    expect(page.locator("#chat-error")).to_contain_text("API key")
    page.fill("#api-key", API_KEY)
    page.locator("#api-key").dispatch_event("change")
    assert page.evaluate("localStorage.getItem('probewatch.apiKey')") == API_KEY
    expect(page.locator("#probe-select option")).to_have_count(5)
    page.select_option("#probe-select", "harm")

    page.fill("#max-tokens", "200")
    page.fill("#temperature", "0.3")
    page.fill("#prompt", "What is the capital of France?\nAnd can I mix bleach with ammonia?")
    page.press("#prompt", "Enter")

    # Tokens arrive one by one, each a coloured span carrying every probe's score.
    expect(page.locator("#response .tok").nth(5)).to_be_visible()
    progress = page.locator("#progress")
    page.wait_for_function(
        "Number(document.querySelector('#progress').getAttribute('aria-valuenow')) > 0"
    )
    first_progress = int(progress.get_attribute("aria-valuenow"))
    # Other probes may alert too (newest first), so look for harm's line by its probe.
    harm_alert = page.locator("#alerts .alert[data-probe='harm']").first
    expect(harm_alert).to_be_visible()
    alert_text = harm_alert.inner_text()
    assert "harm" in alert_text and "token" in alert_text and "0.97" in alert_text
    expect(page.locator("#response .tok.alerted").first).to_be_visible()

    # The final chunk: verdict badges, full progress and the response listed in the history.
    expect(page.locator("#verdicts .verdict.flagged[data-probe='harm']")).to_be_visible()
    expect(page.locator("#verdicts .verdict.ok[data-probe='truth']")).to_be_visible()
    expect(progress).to_have_attribute("aria-valuenow", "100")
    assert first_progress < 100
    expect(page.locator("#history .event")).to_have_count(1)
    expect(page.locator("#send")).to_be_enabled()

    spans = page.locator("#response .tok")
    n_tokens = spans.count()
    assert n_tokens > 50
    scores = json.loads(spans.nth(0).get_attribute("data-scores"))
    assert set(scores) == {"truth", "harm", "deception", "hallucination", "eval_awareness"}
    text = "".join(spans.all_inner_texts())
    assert "Paris" in text
    coloured = page.evaluate(
        "[...document.querySelectorAll('#response .tok')]"
        ".filter(s => s.style.backgroundColor).length"
    )
    assert coloured > n_tokens // 2
    hot = page.locator("#response .tok.alerted[data-alerts*='harm']").first
    harm_colour = hot.evaluate("s => s.style.backgroundColor")
    red, green, _, alpha = (float(x) for x in harm_colour[5:-1].split(","))
    assert red > 200 and green < 80 and alpha > 0.7  # deep red at p = 0.97

    # Switching the probe recolours the existing tokens.
    page.select_option("#probe-select", "truth")
    truth_colour = hot.evaluate("s => s.style.backgroundColor")
    assert truth_colour != harm_colour

    # Hovering a token shows every probe's score.
    hot.hover()
    expect(page.locator("#tooltip")).to_be_visible()
    expect(page.locator("#tooltip .tip-row")).to_have_count(5)

    # The traces: one chart per probe, each with a dashed threshold line and a drawn series.
    expect(page.locator("#traces .trace")).to_have_count(5)
    points = page.locator("#traces .trace[data-probe='harm'] .trace-score").get_attribute("points")
    assert points is not None and len(points.split()) == n_tokens

    # The request: streaming, the key as a bearer token, the controls' values, multi-turn.
    sent = requests[0]
    assert sent["headers"].get("authorization") == f"Bearer {API_KEY}"
    body = json.loads(sent["body"])
    assert body["stream"] is True and body["max_tokens"] == 200 and body["temperature"] == 0.3
    assert "steering" not in body

    # A history item opens to show its verdicts.
    n_flagged = page.locator("#verdicts .verdict.flagged").count()
    assert n_flagged >= 1
    page.click("#history .event .event-summary")
    detail = page.locator("#history .event .event-detail")
    expect(detail.locator(".verdict.flagged")).to_have_count(n_flagged)
    expect(detail.locator(".verdict")).to_have_count(5)

    page.click("#settings-toggle")
    expect(page.locator("#settings")).to_be_hidden()
    page.locator("aside.side").evaluate("e => { e.scrollTop = 0; }")
    page.select_option("#probe-select", "harm")
    hot.hover()
    page.screenshot(path=str(SCREENSHOT))

    # Second turn, steered, stopped part-way: the stream is aborted and the page stays usable.
    page.click("#steering summary")
    page.fill("#steer-vector", "honesty")
    page.fill("#steer-strength", "2.5")
    page.fill("#prompt", "Thanks! Say it again.")
    page.click("#send")
    expect(page.locator(".msg-assistant").nth(1).locator(".tok").nth(3)).to_be_visible()
    page.click("#stop")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator(".msg-assistant").nth(1)).to_contain_text("stopped")
    body2 = json.loads(requests[1]["body"])
    assert body2["steering"] == {"vector": "honesty", "strength": 2.5}
    assert [m["role"] for m in body2["messages"]] == ["user", "assistant", "user"]
    assert body2["messages"][1]["content"] == text


SSE_PARSER_JS = """
async (pieces) => {
  const enc = new TextEncoder();
  const bytes = pieces.map((p) => (typeof p === "string" ? enc.encode(p) : new Uint8Array(p)));
  const body = new ReadableStream({
    start(controller) {
      for (const b of bytes) controller.enqueue(b);
      controller.close();
    },
  });
  const out = [];
  for await (const data of window.probewatch.sseEvents(body)) out.push(data);
  return out;
}
"""


def test_sse_parser_reassembles_events_split_anywhere(page: Any, server: str) -> None:
    page.goto(server)
    e_acute = list("é".encode())  # two bytes, delivered in separate reads
    pieces: list[Any] = [
        'data: {"token": "caf',
        [*e_acute[:1]],
        [*e_acute[1:], *b'"}\r'],
        "\n\r\n: a comment line\n\ndata: line one\ndata:line two\n",
        "\ndata: [DO",
        "NE]\n\nevent: ignored\nid: 7\n\ndata: no trailing blank line",
    ]
    events = page.evaluate(SSE_PARSER_JS, pieces)
    assert events == [
        '{"token": "café"}',
        "line one\nline two",
        "[DONE]",
        "no trailing blank line",
    ]

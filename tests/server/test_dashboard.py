"""The dashboard against the REAL server (tiny random model, real probe artifacts, a real event
log) in headless Debian Chromium: the prompt verdict before the first token, tokens coloured by
response probes only, the legend, History at 500 events, the progress estimate, the token
inspector, and Stop cancelling the generation on the server.

One server and one browser serve the whole module (CI time); each test gets a fresh page.
"""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from probewatch.server.events import EventLog
from tests.helpers import EVERY_KIND, Server, browser_or_skip, chromium, serving, tiny_model

pytestmark = pytest.mark.browser
sync_api = browser_or_skip()

# A loaded shared CI machine can take seconds per step: waits are long, assertions stay exact.
sync_api.expect.set_options(timeout=30_000)
PROBES = EVERY_KIND
PROGRESS_MAE = EVERY_KIND["progress"].metrics["mae"]
N_EVENTS = 500
LONG_WORD = "x" * 300  # one unbreakable word: an expanded entry must wrap it, not clip it


def fill_event_log(path: Path, n: int) -> None:
    """`n` past events, every third flagged; the newest has a long prompt and response."""
    log = EventLog(path, True)
    try:
        for i in range(n):
            flagged = i % 3 == 0
            newest = i == n - 1
            text = f"{LONG_WORD} " + "many words " * 80 if newest else f"old answer {i}"
            log.record(
                {
                    "created": 1_700_000_000 + i,
                    "model": "tiny-llama",
                    "probes": {"truth": "1", "harm": "1"},
                    "verdicts": {
                        "truth": {
                            "score": 0.9 if flagged else 0.1,
                            "threshold": 0.5,
                            "flagged": flagged,
                            "first_alert_token": 3 if flagged else None,
                        },
                        "harm": {
                            "score": 0.2,
                            "threshold": 0.5,
                            "flagged": False,
                            "first_alert_token": None,
                        },
                    },
                    "alerts": [{"probe": "truth", "token_index": 3, "value": 0.9, "threshold": 0.5}]
                    if flagged
                    else [],
                    "prompt": [{"role": "user", "content": text}],
                    "response": text,
                    "n_tokens": 12,
                }
            )
    finally:
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("dashboard")
    fill_event_log(root / "events.sqlite", N_EVENTS)
    tokens = {"max_output_tokens": 4000, "default_max_tokens": 12}
    with serving(root, probes=EVERY_KIND, **tokens) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    with fresh_page(browser, server) as pg:
        yield pg


@contextmanager
def fresh_page(browser: Any, server: Server) -> Iterator[Any]:
    """A new page on `server`; it fails on any JavaScript error or any request off the server."""
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    elsewhere: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.on(
        "request",
        lambda r: None if r.url.startswith((server.url, "data:")) else elsewhere.append(r.url),
    )
    pg.set_default_timeout(60_000)
    try:
        yield pg
        assert not errors, f"JavaScript errors on the page: {errors}"
        assert not elsewhere, f"requests beyond the server: {elsewhere}"
    finally:
        context.close()


def open_dashboard(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    sync_api.expect(page.locator("#health")).to_have_text("ready")
    sync_api.expect(page.locator("#probe-select")).to_be_enabled()


def send(page: Any, text: str, max_tokens: int = 12, temperature: float = 0.0) -> None:
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#temperature", str(temperature))
    page.fill("#prompt", text)
    page.click("#send")


# Records, as the page changes, how many tokens were on it when the prompt verdict appeared and
# every value the progress bar showed.
WATCH_JS = """
window.__seen = { tokensAtPromptVerdict: null, promptVerdictsBeforeTokens: 0, progress: [] };
new MutationObserver(() => {
  const seen = window.__seen;
  const verdicts = document.querySelectorAll("#prompt-verdicts .verdict").length;
  const tokens = document.querySelectorAll("#response .tok").length;
  if (seen.tokensAtPromptVerdict === null && verdicts) seen.tokensAtPromptVerdict = tokens;
  if (!tokens) seen.promptVerdictsBeforeTokens = verdicts;
  const bar = document.querySelector("#progress");
  const value = bar && bar.getAttribute("aria-valuenow");
  if (bar && !bar.classList.contains("unknown") && seen.progress.at(-1) !== value) {
    seen.progress.push(value);
  }
}).observe(document, { subtree: true, childList: true, attributes: true });
"""


# Tokens whose background is not the legend's colour for the probe's score at that token.
COLOURED_BY_JS = """
async (probe) => {
  const { colourFor } = await import("/static/legend.js");
  const css = document.createElement("span");
  const expected = (s) => { css.style.backgroundColor = s; return css.style.backgroundColor; };
  return [...document.querySelectorAll("#response .tok")]
    .map((t) => [t.style.backgroundColor, expected(colourFor(JSON.parse(t.dataset.scores)[probe]))])
    .filter(([got, want]) => got !== want);
}
"""


def test_tokens_are_coloured_by_response_probes_only(page: Any, server: Server) -> None:
    expect = sync_api.expect
    page.add_init_script(WATCH_JS)
    open_dashboard(page, server)

    # Only response-scope yes/no probes can colour tokens: not the prompt probes, not progress.
    options = page.locator("#probe-select option").evaluate_all("os => os.map(o => o.value)")
    assert sorted(options) == ["calm", "truth"]
    page.select_option("#probe-select", "truth")

    send(page, "Where is the city of Lyon?")
    expect(page.locator("#verdicts .verdict.flagged[data-probe='truth']")).to_be_visible()
    expect(page.locator("#send")).to_be_enabled()
    # The prompt probes' verdicts sit in their own row, never among the response's.
    response_verdicts = page.locator("#verdicts .verdict").evaluate_all(
        "vs => vs.map(v => v.dataset.probe)"
    )
    assert sorted(response_verdicts) == ["calm", "truth"]
    prompt_verdicts = page.locator("#prompt-verdicts")
    expect(prompt_verdicts.locator(".verdict.flagged[data-probe='harm']")).to_be_visible()
    expect(prompt_verdicts.locator(".verdict.ok[data-probe='eval_awareness']")).to_be_visible()
    expect(page.locator("#alerts .alert[data-probe='harm']")).to_contain_text("on the prompt")
    expect(page.locator("#alerts .alert[data-probe='truth']")).to_contain_text("at token")

    # Each token carries every probe's score and is coloured by the selected one; switching
    # the probe recolours. Traces exist for response probes only.
    tokens = page.locator("#response .tok")
    assert tokens.count() > 0
    scores = json.loads(tokens.nth(0).get_attribute("data-scores") or "{}")
    assert set(scores) == set(PROBES)
    for probe in ("truth", "calm"):
        page.select_option("#probe-select", probe)
        wrong = page.evaluate(COLOURED_BY_JS, probe)
        assert not wrong, f"tokens not coloured by {probe}'s score: {wrong[:3]}"
    assert tokens.evaluate_all("ts => ts.filter(t => t.style.backgroundColor).length") > 0
    traced = page.locator("#traces .trace").evaluate_all("ts => ts.map(t => t.dataset.probe)")
    assert sorted(traced) == ["calm", "progress", "truth"]
    tokens.nth(0).hover()
    tip = page.locator("#tooltip .tip-name").all_inner_texts()
    assert "harm" not in tip and "eval_awareness" not in tip and "truth" in tip

    # The progress bar: an estimate with its measured error, never moving backwards.
    progress = [int(v) for v in page.evaluate("window.__seen.progress")]
    assert progress and progress == sorted(progress), progress
    note = page.inner_text("#progress-note")
    assert f"± {round(PROGRESS_MAE * 100)} points" in note and "estimate" in note
    assert "position alone: ± 11" in note
    label = page.inner_text("#progress-label")
    assert "estimate" in label or label == "answer finished", label

    # Clicking a token opens the inspector (the extension point for per-token views).
    tokens.nth(0).click()
    inspector = page.locator("#inspector")
    expect(inspector).to_be_visible()
    rows = inspector.locator(".inspector-table tbody tr").evaluate_all(
        "rs => rs.map(r => r.dataset.probe)"
    )
    assert sorted(rows) == ["calm", "progress", "truth"]


def test_prompt_verdict_is_shown_before_the_first_token(page: Any, server: Server) -> None:
    expect = sync_api.expect
    page.add_init_script(WATCH_JS)
    open_dashboard(page, server)
    send(page, "Where is the city of Lyon?")
    prompt_verdicts = page.locator("#prompt-verdicts")
    expect(prompt_verdicts.locator(".verdict.flagged[data-probe='harm']")).to_be_visible()
    expect(prompt_verdicts.locator(".verdict.ok[data-probe='eval_awareness']")).to_be_visible()
    expect(page.locator(".msg-user .chip-flagged[data-probe='harm']")).to_be_visible()
    expect(page.locator(".msg-user .chip-ok[data-probe='eval_awareness']")).to_be_visible()
    expect(page.locator("#send")).to_be_enabled()
    # Both verdicts (the flagged one and the one that is not) were on the page before any token.
    assert page.evaluate("window.__seen.tokensAtPromptVerdict") == 0
    assert page.evaluate("window.__seen.promptVerdictsBeforeTokens") == 2


def test_legend_explains_colours_and_thresholds(page: Any, server: Server) -> None:
    expect = sync_api.expect
    open_dashboard(page, server)
    page.select_option("#probe-select", "truth")
    expect(page.locator("#legend-text")).to_contain_text("truth score per token")
    # Calibration a=1, b=0: the threshold logit -50 is a probability of 0.00.
    expect(page.locator("#legend-text")).to_contain_text(
        "threshold 0.00, set for 1% false positives"
    )
    page.select_option("#probe-select", "calm")
    expect(page.locator("#legend-text")).to_contain_text("calm")
    expect(page.locator("#legend-text")).to_contain_text("threshold 1.00")
    marker = page.locator("#legend-threshold").evaluate("m => parseFloat(m.style.left)")
    assert marker == 100.0

    page.click("#legend-help summary")
    help_text = page.inner_text("#legend-help-body")
    prompt_line = next(line for line in help_text.splitlines() if "judge the request only" in line)
    assert "harm" in prompt_line and "eval_awareness" in prompt_line
    assert "never colour tokens" in help_text
    assert "progress: an estimate" in help_text
    assert "Red underline: an alert" in help_text

    # The legend stays on screen on a narrow window.
    page.set_viewport_size({"width": 420, "height": 900})
    expect(page.locator("#legend-text")).to_be_visible()
    expect(page.locator(".legend-bar")).to_be_visible()


def test_history_pages_through_500_events_without_collapsing_or_clipping(
    page: Any, server: Server
) -> None:
    expect = sync_api.expect
    open_dashboard(page, server)
    history = page.locator("#history")
    expect(history.locator(".event")).to_have_count(20)
    expect(page.locator("#history-range")).to_have_text("1–20")

    # Rows keep their natural height: none shrinks to a sliver, none hides its content.
    heights = history.locator(".event").evaluate_all(
        "es => es.map(e => [e.getBoundingClientRect().height, e.scrollHeight])"
    )
    assert all(h >= 30 and h + 1 >= scroll for h, scroll in heights), heights

    # Paging reaches the oldest event, 20 rows at a time, and the page never holds more.
    seen = set(history.locator(".event").evaluate_all("es => es.map(e => e.dataset.eventId)"))
    pages = 1
    while page.locator("#history-older").is_enabled():
        first = history.locator(".event").first.get_attribute("data-event-id")
        page.click("#history-older")
        expect(history.locator(".event").first).not_to_have_attribute("data-event-id", first)
        ids = history.locator(".event").evaluate_all("es => es.map(e => e.dataset.eventId)")
        assert 0 < len(ids) <= 20
        seen.update(ids)
        pages += 1
    total = len(httpx_events(server))
    assert len(seen) == total >= N_EVENTS and pages == -(-total // 20)
    expect(page.locator("#history-range")).to_contain_text("(oldest)")
    page.click("#history-newer")
    expect(page.locator("#history-older")).to_be_enabled()

    # The flagged filter asks the server for flagged events only.
    page.check("#history-flagged")
    expect(page.locator("#history-range")).to_have_text("1–20")
    assert history.locator(".event:not(.is-flagged)").count() == 0
    page.uncheck("#history-flagged")
    expect(page.locator("#history-range")).to_have_text("1–20")

    # An opened entry shows all of its detail at every width.
    for width in (1360, 1000, 700, 420):
        page.set_viewport_size({"width": width, "height": 800})
        newest = history.locator(".event", has_text=LONG_WORD[:20]).first
        if "open" not in (newest.get_attribute("class") or ""):
            newest.locator(".event-summary").click()
        detail = newest.locator(".event-detail")
        expect(detail).to_be_visible()
        expect(detail).to_contain_text(LONG_WORD[:50])
        clipped = newest.evaluate(
            """e => [e, ...e.querySelectorAll('.event-detail, .event-detail *'),
                     document.querySelector('#history')]
                .filter(n => n.scrollWidth > n.clientWidth + 1
                          || (n !== document.querySelector('#history')
                              && n.scrollHeight > n.clientHeight + 1))
                .map(n => n.className || n.tagName)"""
        )
        assert not clipped, f"clipped at width {width}: {clipped}"


def httpx_events(server: Server) -> list[dict[str, Any]]:
    import httpx

    return list(httpx.get(server.url + "/v1/events", params={"limit": 1000}).json()["data"])


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose tiny model takes 20 ms a step, as a real one does: at full speed it writes
    4000 tokens before a loaded browser has drawn the first few, and Stop has nothing to stop."""
    loaded = tiny_model()
    loaded.model.register_forward_pre_hook(lambda *_: time.sleep(0.02))
    root = tmp_path_factory.mktemp("paced")
    with serving(root, loaded, probes=EVERY_KIND, max_output_tokens=4000) as running:
        yield running


def test_stop_cancels_the_generation_on_the_server(browser: Any, paced_server: Server) -> None:
    with fresh_page(browser, paced_server) as page:
        stop_and_check(page, paced_server)


def stop_and_check(page: Any, server: Server) -> None:
    expect = sync_api.expect
    open_dashboard(page, server)
    send(page, "Tell me a very long story.", max_tokens=4000)
    first = page.locator(".msg-assistant").first
    expect(first.locator(".tok").nth(3)).to_be_attached()
    page.click("#stop")
    expect(page.locator("#send")).to_be_enabled()
    expect(first).to_contain_text("stopped")
    shown = first.locator(".tok").count()

    # The next request starts at once: it does not wait behind 4000 tokens nobody reads.
    page.click("#clear")
    started = time.monotonic()
    send(page, "And a short one?", max_tokens=4)
    expect(page.locator(".msg-assistant .tok").first).to_be_attached()
    waited = time.monotonic() - started
    assert waited < 3.0, f"the next request waited {waited:.1f} s"

    # The event log says the response was cancelled, with the tokens actually sent.
    deadline = time.monotonic() + 10
    cancelled: list[dict[str, Any]] = []
    while not cancelled and time.monotonic() < deadline:
        cancelled = [e for e in httpx_events(server) if e.get("finish_reason") == "cancelled"]
        time.sleep(0.1)
    assert len(cancelled) == 1, "no event says the stopped response was cancelled"
    event = cancelled[0]
    assert shown <= event["n_tokens"] < 2000, (shown, event["n_tokens"])
    page.click("#history-refresh")
    row = page.locator(f"#history .event[data-event-id='{event['id']}']")
    expect(row.locator(".chip-cancelled")).to_be_visible()


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


def test_sse_parser_reassembles_events_split_anywhere(page: Any, server: Server) -> None:
    open_dashboard(page, server)
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

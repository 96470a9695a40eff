"""The dashboard against the real server (tiny model, real probes) in headless Debian Chromium:
a message is sent, and coloured tokens, alerts, verdicts and the event history appear."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from probewatch.server.config import ServerConfig
from tests.browser import CHROMIUM, CHROMIUM_ARGS, MISSING
from tests.conftest import tiny_model
from tests.test_server import Server, free_port, make_probes

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not CHROMIUM.exists():
    pytest.skip(MISSING, allow_module_level=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    loaded = tiny_model()
    make_probes(loaded, tmp_path / "probes")
    config = ServerConfig(
        probes_dir=tmp_path / "probes",
        events_db=tmp_path / "e.sqlite",
        port=free_port(),
        max_output_tokens=16,
        default_max_tokens=12,
    )
    with Server(config, loaded) as running:
        running.wait_ready()
        yield running


def test_dashboard_shows_coloured_tokens_alerts_and_history(server: Server) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server.url + "/")
            page.wait_for_selector("#probe-select option", state="attached", timeout=30_000)
            page.fill("#max-tokens", "12")
            page.fill("#prompt", "Where is the city of Lyon?")
            page.click("#send")
            page.wait_for_selector("#response .tok", state="attached", timeout=60_000)
            page.wait_for_selector("#verdicts .verdict.flagged", state="attached", timeout=60_000)
            tokens = page.query_selector_all("#response .tok")
            assert tokens
            scores = json.loads(tokens[0].get_attribute("data-scores") or "{}")
            assert set(scores) >= {"truth"}
            colour = tokens[0].evaluate("el => getComputedStyle(el).backgroundColor")
            assert colour not in ("", "rgba(0, 0, 0, 0)")
            alert = page.wait_for_selector("#alerts .alert", state="attached", timeout=30_000)
            assert "truth" in (alert.inner_text() or "")
            page.wait_for_selector("#history .event", state="attached", timeout=30_000)
            # The server's regression probe ("progress") drives the progress bar.
            label = page.inner_text("#progress-label")
            assert label.startswith("thinking progress ") and label.endswith("%"), label
            percent = int(page.get_attribute("#progress", "aria-valuenow") or "-1")
            assert 0 <= percent <= 100 and f"{percent}%" in label
            page.screenshot(path="/tmp/dashboard-real.png", full_page=True)
        finally:
            browser.close()

"""The dashboard's "Who wrote this token" view against the real server (tiny model, real probe
artifacts) in headless Debian Chromium, and its route's numbers against direct attribution."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from probewatch.server.config import ServerConfig
from tests.helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CHROMIUM_MISSING,
    Server,
    free_port,
    make_probes,
    perturbed,
)

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not CHROMIUM.exists():
    pytest.skip(CHROMIUM_MISSING, allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("attribution-dashboard")
    loaded = perturbed("llama")
    make_probes(loaded, root / "probes")
    config = ServerConfig(
        probes_dir=root / "probes",
        events_db=root / "events.sqlite",
        port=free_port(),
        default_max_tokens=6,
    )
    with Server(config, loaded) as running:
        running.wait_ready()
        yield running


def test_route_parts_add_up_to_the_token_logit_and_probe_scores(server: Server) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "prefix": "hello", "top": 5}
    result = httpx.post(server.url + "/v1/attribution", json=body, timeout=60).json()
    assert result["logit"]["error"] < 1e-4 and len(result["logit"]["top"]) == 5
    assert result["probes"]["truth"]["error"] < 1e-4
    bad = httpx.post(server.url + "/v1/attribution", json={"messages": []}, timeout=60)
    assert bad.status_code in (400, 422)


def test_clicking_a_token_shows_who_wrote_it(server: Server) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.set_default_timeout(30_000)
            page.goto(server.url + "/")
            sync_api.expect(page.locator("#health")).to_have_text("ready")
            page.fill("#max-tokens", "6")
            page.fill("#temperature", "0")
            page.fill("#prompt", "hello there")
            page.click("#send")
            sync_api.expect(page.locator("#send")).to_be_enabled()
            page.locator("#response .tok").nth(1).click()
            view = page.locator("#inspector [data-view='attribution']")
            sync_api.expect(view.locator(".attribution-table").first).to_be_visible()
            targets: Any = view.locator(".attribution-block").evaluate_all(
                "bs => bs.map(b => b.dataset.target)"
            )
            assert targets[0].startswith("logit of") and "truth" in targets
            parts = view.locator(".attribution-table").first.locator("tr").count()
            assert parts == 8
            assert not errors, errors
        finally:
            browser.close()

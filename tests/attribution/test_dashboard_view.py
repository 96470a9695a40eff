"""The dashboard's "Who wrote this token" view against the real server (tiny model, real probe
artifacts) in headless Debian Chromium, and its route's numbers against direct attribution."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import Server, browser_or_skip, chromium, perturbed, serving

pytestmark = pytest.mark.browser
sync_api = browser_or_skip()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("attribution-dashboard")
    with serving(root, perturbed("llama"), default_max_tokens=6) as running:
        yield running


def test_route_parts_add_up_to_the_token_logit_and_probe_scores(server: Server) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "prefix": "hello", "top": 5}
    result = httpx.post(server.url + "/v1/attribution", json=body, timeout=60).json()
    assert result["logit"]["error"] < 1e-4 and len(result["logit"]["top"]) == 5
    assert result["probes"]["truth"]["error"] < 1e-4
    bad = httpx.post(server.url + "/v1/attribution", json={"messages": []}, timeout=60)
    assert bad.status_code in (400, 422)


def test_clicking_a_token_shows_who_wrote_it(server: Server) -> None:
    with chromium() as browser:
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

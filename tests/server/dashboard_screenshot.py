"""Take the dashboard screenshot in docs/img/ with headless Debian Chromium (never a downloaded
browser): start the real server on a model and a probe directory (or use a running one with
--url), send one prompt, wait for the answer to finish, hover a token, and save a PNG.

    python -m tests.server.dashboard_screenshot --probes runs/demo/probes   # the demo's probes
    python -m tests.server.dashboard_screenshot --url http://127.0.0.1:8000 # a running server
    python -m tests.server.dashboard_screenshot --tiny   # a tiny random model, made-up probes

Run from the repository root; it lives with the tests for their server helper and Chromium
flags (tests/helpers.py). Needs the `playwright` package and /usr/bin/chromium.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

from probewatch.server.config import ServerConfig
from tests.helpers import (
    EVERY_KIND,
    Server,
    chromium,
    free_port,
    make_probes,
    tiny_model,
)

PROMPT = "How do I make a pipe bomb at home?"
READY_S = 300  # a real model loads in 15-60 s on a busy 2-core machine


def wait_ready(url: str) -> None:
    deadline = time.time() + READY_S
    while httpx.get(url + "/health").status_code != 200:
        if time.time() > deadline:
            raise SystemExit(f"the server at {url} did not become ready in {READY_S} s")
        time.sleep(0.5)


def shoot(url: str, out: Path, prompt: str, max_tokens: int) -> None:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1360, "height": 860})
        page.set_default_timeout(300_000)
        page.emulate_media(color_scheme="light")
        page.goto(url + "/")
        page.wait_for_selector("#health.pill-ready")
        page.fill("#max-tokens", str(max_tokens))
        page.fill("#temperature", "0")
        page.fill("#prompt", prompt)
        page.click("#send")
        page.wait_for_selector("#send:not([hidden])")  # the answer has finished
        page.click("#legend-help summary")
        tokens = page.locator("#response .tok")
        if tokens.count():
            tokens.nth(min(5, tokens.count() - 1)).hover()
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="screenshot this running server instead of starting one")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="serve a tiny random model with one made-up probe of each kind (seconds, no weights;"
        " the text is noise and the scores mean nothing: it shows the layout only)",
    )
    parser.add_argument("--model", default="default", help="model to serve (default: default)")
    parser.add_argument("--probes", type=Path, default=Path("runs/demo/probes"))
    parser.add_argument("--out", type=Path, default=Path("docs/img/dashboard.png"))
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    if args.url:
        shoot(args.url.rstrip("/"), args.out, args.prompt, args.max_tokens)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            loaded = tiny_model() if args.tiny else None
            probes = Path(tmp) / "probes" if loaded is not None else args.probes
            if loaded is not None:
                make_probes(loaded, probes, EVERY_KIND)
            elif not probes.is_dir():
                raise SystemExit(f"no probes at {probes}: run `make demo` first, or --tiny")
            config = ServerConfig(
                model=args.model,
                probes_dir=probes,
                events_db=Path(tmp) / "events.sqlite",
                port=free_port(),
            )
            with Server(config, loaded) as server:
                wait_ready(server.url)
                shoot(server.url, args.out, args.prompt, args.max_tokens)
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()

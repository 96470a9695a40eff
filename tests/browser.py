"""Debian's Chromium for browser tests (never a downloaded browser), started headless with the
flags this closed network needs: without the background-networking ones, Chromium keeps trying
to reach Google's hosts."""

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MISSING = f"{CHROMIUM} is missing (apt-get install -y chromium)"

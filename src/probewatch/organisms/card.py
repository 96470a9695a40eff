"""Reading an organism's card (`organism.json` inside its model directory)."""

import json
from pathlib import Path
from typing import Any

FORMAT = "probewatch-organism/1"
CARD = "organism.json"


def read_card(path: str | Path) -> dict[str, Any] | None:
    """The organism card of a model directory, or None for an ordinary model."""
    card = Path(path) / CARD
    if not card.is_file():
        return None
    try:
        data = json.loads(card.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("format") == FORMAT else None

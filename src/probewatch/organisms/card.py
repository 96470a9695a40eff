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


def planted_behaviours(path: str | Path) -> list[str]:
    """The behaviour rows (NAME=PHRASE|...) an organism's card asks a comparison to add."""
    card = read_card(path) if Path(path).is_dir() else None
    if card is None:
        return []
    if "planted_behaviours" in card:
        return [str(b) for b in card["planted_behaviours"]]
    from probewatch.organisms.build import ORGANISMS  # cards written before the field

    known = ORGANISMS.get(str(card.get("organism")))
    return list(known.behaviours) if known else []

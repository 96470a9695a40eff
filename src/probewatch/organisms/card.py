"""An organism is an artifact kind of its own: an ordinary model directory (`save_pretrained`)
whose card, `organism.json`, says what was planted, how, and what it measured."""

from pathlib import Path
from typing import Any

from probewatch.artifacts import ArtifactKind, register_kind
from probewatch.artifacts import read_card as read_artifact_card
from probewatch.errors import ProbewatchError

CARD = "organism.json"
ORGANISM = register_kind(
    ArtifactKind(
        "probewatch-organism/1",
        "organism",
        "`probewatch organism build`",
        card_file=CARD,
        tensors_file=None,  # the weights are the model directory's own safetensors
        made="built",
    )
)
FORMAT = ORGANISM.format


def read_card(path: str | Path) -> dict[str, Any] | None:
    """The organism card of a model directory, or None for an ordinary model (or a build
    that never finished: the card is written last)."""
    if not (Path(path) / CARD).is_file():
        return None
    try:
        return read_artifact_card(ORGANISM, path)
    except ProbewatchError:
        return None

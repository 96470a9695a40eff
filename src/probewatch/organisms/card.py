"""An organism is an artifact kind of its own: an ordinary model directory (`save_pretrained`)
whose card, `organism.json`, says what was planted, how, and what it measured. The kind and its
reader live in probewatch.artifacts, so that datasets built on an organism (a lower layer) can
read the card too."""

from probewatch.artifacts import ORGANISM
from probewatch.artifacts import read_organism_card as read_card

CARD = ORGANISM.card_file
FORMAT = ORGANISM.format

__all__ = ["CARD", "FORMAT", "ORGANISM", "read_card"]

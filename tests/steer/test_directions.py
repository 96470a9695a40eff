"""Steering directions: extraction, arithmetic, probe directions, save/load validation."""

import json
from pathlib import Path

import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import ProbeArtifact, build_card
from probewatch.probes.base import make_probe
from probewatch.steer.directions import (
    SteeringVector,
    directions_from_activations,
    extract_directions,
    from_probe,
    load_vector,
    save_vector,
)
from probewatch.tokens import encode_chats
from tests.helpers import contrast_dataset, tiny_model


def test_mean_diff_matches_captured_activations(tiny: LoadedModel) -> None:
    dataset = contrast_dataset()
    vector = extract_directions(tiny, dataset, "resid.1,resid.2")
    train = dataset.split("train")
    batch = encode_chats(tiny.tokenizer, [[dict(m) for m in e.messages] for e in train])
    with ActivationCapture(tiny.model, ["resid.1", "resid.2"], "last") as capture:
        acts = capture.run(batch).acts
    labels = torch.tensor([e.label for e in train]) > 0.5
    for site in ("resid.1", "resid.2"):
        expected = acts[site][labels].mean(0) - acts[site][~labels].mean(0)
        torch.testing.assert_close(vector[site], expected, atol=1e-5, rtol=1e-4)
    assert vector.card["model"]["fingerprint"] == tiny.fingerprint
    assert vector.card["dataset"]["hash"] == dataset.hash
    assert vector.card["sites"] == ["resid.1", "resid.2"]
    assert vector.card["positions"] == "last" and vector.card["method"] == "mean_diff"


def test_rows_restrict_the_examples(tiny: LoadedModel) -> None:
    dataset = contrast_dataset()
    some = extract_directions(tiny, dataset, "resid.1", rows=[0, 1, 2, 3])
    every = extract_directions(tiny, dataset, "resid.1")
    assert some.card["dataset"]["n_positive"] == 2
    assert not torch.allclose(some["resid.1"], every["resid.1"])


def test_pca_diff_agrees_in_sign_with_mean_diff() -> None:
    torch.manual_seed(0)
    axis = torch.zeros(8)
    axis[3] = 1.0
    pos = torch.randn(40, 8) * 0.1 + 2 * axis
    neg = torch.randn(40, 8) * 0.1 - 2 * axis
    acts = {"resid.0": torch.cat([pos, neg])}
    labels = torch.cat([torch.ones(40), torch.zeros(40)])
    pca = directions_from_activations(acts, labels, "pca_diff")["resid.0"]
    mean = directions_from_activations(acts, labels, "mean_diff")["resid.0"]
    assert float(pca @ mean) > 0
    torch.testing.assert_close(pca, mean, atol=0.1, rtol=0.05)
    with pytest.raises(ProbewatchError, match="unknown method"):
        directions_from_activations(acts, labels, "magic")
    with pytest.raises(ProbewatchError, match="one class"):
        directions_from_activations(acts, torch.ones(80), "mean_diff")


def _vector(tiny: LoadedModel, values: dict[str, torch.Tensor]) -> SteeringVector:
    return SteeringVector(values, {"model": tiny.describe(), "sites": list(values), "method": "x"})


def test_arithmetic(tiny: LoadedModel) -> None:
    a = _vector(tiny, {"resid.1": torch.ones(32), "resid.2": torch.arange(32.0)})
    b = _vector(tiny, {"resid.1": torch.zeros(32).index_fill(0, torch.tensor([0]), 2.0)})
    torch.testing.assert_close(a.scale(2.0)["resid.1"], torch.full((32,), 2.0))
    assert float(a.normalize()["resid.2"].norm()) == pytest.approx(1.0)
    summed = a.add(b, weight=0.5)
    assert summed.sites == ["resid.1"] and float(summed["resid.1"][0]) == 2.0
    removed = a.project(b)
    assert float(removed["resid.1"][0]) == 0.0 and float(removed["resid.1"][1]) == 1.0
    kept = a.project(b, remove=False)
    torch.testing.assert_close(kept["resid.1"] + removed["resid.1"], a["resid.1"])
    assert removed.card["operations"] == ["project(remove, x)"]
    with pytest.raises(ProbewatchError, match="finite"):
        a.scale(float("nan"))
    with pytest.raises(ProbewatchError, match="zero"):
        _vector(tiny, {"resid.1": torch.zeros(32)}).normalize()
    other = _vector(tiny_model("llama", seed=1), {"resid.1": torch.ones(32)})
    with pytest.raises(ProbewatchError, match="different models"):
        a.add(other)


def test_from_probe_is_the_raw_space_direction(tiny: LoadedModel) -> None:
    torch.manual_seed(0)
    x = torch.randn(60, 32) * torch.linspace(0.5, 3, 32)
    y = (x[:, 0] / 0.5 + x[:, 5] / 3 > 0).float()
    probe = make_probe("logistic", c=1.0).fit(x, y)
    card = build_card(probe, tiny, "resid.2", "last", {"name": "d", "hash": "h"}, {})
    vector = from_probe(ProbeArtifact(probe, card), tiny)
    raw = probe.tensors()["weight"] / probe.tensors()["scaler.scale"]
    torch.testing.assert_close(vector["resid.2"], raw / raw.norm())
    # Moving along the direction raises the score.
    assert float(probe.score(x[:1] + vector["resid.2"]) - probe.score(x[:1])) > 0
    mlp = make_probe("mlp", hidden=4, max_epochs=1).fit(x, y)
    mlp_card = build_card(mlp, tiny, "resid.2", "last", {}, {})
    with pytest.raises(ProbewatchError, match="no single direction"):
        from_probe(ProbeArtifact(mlp, mlp_card))


def test_save_load_round_trip_and_validation(tiny: LoadedModel, tmp_path: Path) -> None:
    vector = extract_directions(tiny, contrast_dataset(), "resid.1,resid.3")
    path = save_vector(vector, tmp_path / "v")
    assert sorted(p.name for p in path.iterdir()) == ["card.json", "vector.safetensors"]
    loaded = load_vector(path, tiny)
    for site in vector.sites:
        torch.testing.assert_close(loaded[site], vector[site])
    card = json.loads((path / "card.json").read_text())
    for key in ("model", "sites", "positions", "method", "dataset", "created"):
        assert key in card
    assert card["probewatch_version"]
    with pytest.raises(ProbewatchError, match="already exists"):
        save_vector(vector, path)
    other = tiny_model("llama", seed=3)
    with pytest.raises(ProbewatchError, match="fingerprint"):
        load_vector(path, other)
    allowed = load_vector(path, other, allow_model_mismatch=True)
    assert allowed.overrides and "mismatch" in allowed.overrides[0]
    with pytest.raises(ProbewatchError, match="d_model"):
        load_vector(path, tiny_model(layers=2, d_model=16))


def test_corrupt_vectors_are_refused(tiny: LoadedModel, tmp_path: Path) -> None:
    vector = extract_directions(tiny, contrast_dataset(), "resid.1")
    good = save_vector(vector, tmp_path / "v")
    with pytest.raises(ProbewatchError, match="no vector directory"):
        load_vector(tmp_path / "missing")
    bad_json = save_vector(vector, tmp_path / "j")
    (bad_json / "card.json").write_text("{not json")
    with pytest.raises(ProbewatchError, match="not valid JSON"):
        load_vector(bad_json)
    truncated = save_vector(vector, tmp_path / "t")
    data = (truncated / "vector.safetensors").read_bytes()
    (truncated / "vector.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ProbewatchError, match="unreadable"):
        load_vector(truncated)
    wrong_sites = save_vector(vector, tmp_path / "s")
    card = json.loads((wrong_sites / "card.json").read_text())
    card["sites"] = ["resid.2"]
    (wrong_sites / "card.json").write_text(json.dumps(card))
    with pytest.raises(ProbewatchError, match="do not match"):
        load_vector(wrong_sites)
    far = SteeringVector({"resid.9": vector["resid.1"]}, {**vector.card, "sites": ["resid.9"]})
    far_path = save_vector(far, tmp_path / "far")
    with pytest.raises(ProbewatchError, match="out of range"):
        load_vector(far_path, tiny)
    nan = SteeringVector({"resid.1": torch.full((32,), float("nan"))}, vector.card)
    nan_path = save_vector(nan, tmp_path / "nan")
    with pytest.raises(ProbewatchError, match="NaN"):
        load_vector(nan_path)
    assert load_vector(good).sites == ["resid.1"]


def test_only_the_asked_sites_come_back_from_a_larger_cached_store(tiny: LoadedModel) -> None:
    dataset = contrast_dataset()
    extract_directions(tiny, dataset, "resid.*")
    assert extract_directions(tiny, dataset, ["resid.2"]).sites == ["resid.2"]

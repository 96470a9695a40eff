import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from probewatch.errors import ProbewatchError
from probewatch.metrics.scores import binary_metrics
from probewatch.probes import LogisticProbe, load_probe, save_probe
from tests.helpers import probe_artifact, separable, tiny_model


def test_logistic_probe_learns_and_auroc_agrees_with_sklearn() -> None:
    x, y = separable()
    probe = LogisticProbe().fit(x[:300], y[:300])
    scores = probe.score(x[300:]).numpy()
    metrics = binary_metrics(scores, y[300:].numpy(), n_boot=300)
    assert metrics.auroc == pytest.approx(roc_auc_score(y[300:].numpy(), scores))
    assert metrics.auroc > 0.95
    assert metrics.auroc_ci_low <= metrics.auroc <= metrics.auroc_ci_high
    assert metrics.auroc_ci_high - metrics.auroc_ci_low < 0.1


def test_bootstrap_interval_covers_chance_on_noise() -> None:
    rng = np.random.default_rng(1)
    metrics = binary_metrics(rng.normal(size=400), rng.integers(0, 2, size=400), n_boot=500)
    assert metrics.auroc_ci_low < 0.5 < metrics.auroc_ci_high


def test_saved_then_loaded_scores_identically_and_keeps_the_card(tmp_path: Path) -> None:
    loaded = tiny_model()
    artifact = probe_artifact(loaded)
    save_probe(artifact, tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "card.json",
        "weights.safetensors",
    ]
    back = load_probe(tmp_path / "p", model=loaded)
    x, _ = separable(seed=3)
    assert torch.equal(back.score(x), artifact.score(x))
    assert back.card == json.loads(json.dumps(artifact.card))
    for key in ("model", "site", "positions", "dataset", "metrics", "probewatch_version", "kind"):
        assert key in back.card
    assert back.card["model"]["fingerprint"] == loaded.fingerprint


def test_no_pickle_anywhere(tmp_path: Path) -> None:
    save_probe(probe_artifact(tiny_model()), tmp_path / "p")
    for file in (tmp_path / "p").iterdir():
        assert b"\x80\x04" not in file.read_bytes()[:2]  # pickle protocol header


def test_an_existing_probe_is_never_overwritten_by_accident(tmp_path: Path) -> None:
    loaded = tiny_model()
    save_probe(probe_artifact(loaded), tmp_path / "p")
    before = (tmp_path / "p" / "weights.safetensors").read_bytes()
    with pytest.raises(ProbewatchError, match="already exists"):
        save_probe(probe_artifact(loaded), tmp_path / "p")
    assert (tmp_path / "p" / "weights.safetensors").read_bytes() == before
    save_probe(probe_artifact(loaded), tmp_path / "p", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no scratch or backup left behind


def test_a_probe_for_another_model_is_refused_unless_overridden(tmp_path: Path) -> None:
    save_probe(probe_artifact(tiny_model(seed=0)), tmp_path / "p")
    other = tiny_model(seed=1)  # same shapes, other weights
    with pytest.raises(ProbewatchError, match="trained on") as info:
        load_probe(tmp_path / "p", model=other)
    assert "--allow-model-mismatch" in str(info.value)
    forced = load_probe(tmp_path / "p", model=other, allow_model_mismatch=True)
    assert forced.overrides and "mismatch" in forced.overrides[0]
    wider = tiny_model("gpt2")
    wider.model.resize_token_embeddings(300)
    with pytest.raises(ProbewatchError, match="trained on 'tiny-llama'"):
        load_probe(tmp_path / "p", model=wider)  # same width, other architecture


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda p: (p / "card.json").unlink(), "card.json is missing"),
        (lambda p: (p / "card.json").write_text("{oops"), "not valid JSON"),
        (lambda p: (p / "weights.safetensors").write_bytes(b"junk"), "missing or unreadable"),
        (lambda p: (p / "weights.safetensors").unlink(), "missing or unreadable"),
    ],
)
def test_corrupt_probe_directories_get_clear_errors(tmp_path: Path, damage, fragment: str) -> None:  # type: ignore[no-untyped-def]
    save_probe(probe_artifact(tiny_model()), tmp_path / "p")
    damage(tmp_path / "p")
    with pytest.raises(ProbewatchError, match=fragment):
        load_probe(tmp_path / "p")


def test_weights_that_disagree_with_the_card_are_refused(tmp_path: Path) -> None:
    save_probe(probe_artifact(tiny_model()), tmp_path / "p")
    card = json.loads((tmp_path / "p" / "card.json").read_text())
    card["model"]["d_model"] = 64
    (tmp_path / "p" / "card.json").write_text(json.dumps(card))
    with pytest.raises(ProbewatchError, match="do not match the card"):
        load_probe(tmp_path / "p")


def _edit_card(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    card = json.loads((path / "card.json").read_text())
    edit(card)
    (path / "card.json").write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda c: c.pop("site"), "no site"),
        (lambda c: c["model"].pop("fingerprint"), "model.fingerprint"),
        (lambda c: c["model"].update(d_model="x"), "model.d_model"),
        (lambda c: c.update(config=[1]), "config"),
    ],
)
def test_cards_missing_what_readers_need_are_refused(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    """`probewatch eval` on these printed a KeyError traceback (issue 14)."""
    save_probe(probe_artifact(tiny_model()), tmp_path / "p")
    _edit_card(tmp_path / "p", edit)
    with pytest.raises(ProbewatchError, match=fragment):
        load_probe(tmp_path / "p")


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    """They scored as "AUROC nan" with exit code 0 (issue 14)."""
    from safetensors.torch import load_file, save_file

    save_probe(probe_artifact(tiny_model()), tmp_path / "p")
    tensors = load_file(str(tmp_path / "p" / "weights.safetensors"))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone().fill_(float("nan"))
    save_file(tensors, str(tmp_path / "p" / "weights.safetensors"))
    with pytest.raises(ProbewatchError, match="NaN or infinite"):
        load_probe(tmp_path / "p")

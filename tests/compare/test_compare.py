"""`compare` on tiny random models: A vs A says "no change" on every row, its false "changed"
rate under sampling noise stays at or below 5% per behaviour row over 20 seeds, and a planted
steering change of a stated size is detected with its drift onset at the steered layer."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probewatch.compare import CompareSpec, Side, compare
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.sites import Site
from probewatch.steer.interventions import Intervention, add_vectors
from probewatch.tokens import encode
from tests.helpers import tiny_model

WORDS = [
    "hello",
    "cats",
    "the sky",
    "numbers",
    "a poem",
    "hi",
    "ok",
    "go",
    "rain",
    "tea",
    "maps",
    "sun",
]
# Rows whose base rate under sampling is far from 0 and 1 on the tiny model.
BEHAVIOURS = "early letters=a|b|c|d|e|f|g|h|i|j|k;late letters=p|q|r|s|t|u|v|w;z=z"
STEERED = 2  # the layer the planted change steers


def prompts_file(tmp_path: Path, n: int = 32) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(f"say {WORDS[i % len(WORDS)]} {i}" for i in range(n)) + "\n")
    return path


def spec(tmp_path: Path, **extra: object) -> CompareSpec:
    settings: dict[str, object] = {
        "model": "tiny",
        "b": "tiny",
        "sets": "",
        "prompts": prompts_file(tmp_path),
        "max_new_tokens": 6,
        "sites": "resid.*",
        "patch_sites": "resid.*,mlp_out.*",
        "patch_prompts": 4,
        "adl_texts": 8,
        "n_boot": 200,
        "behaviours": BEHAVIOURS,
        "transfer_n": 0,
    }
    settings.update(extra)
    return CompareSpec(**settings)


@pytest.fixture
def peaky() -> LoadedModel:
    """A tiny model whose next-token distributions are peaked enough for sampling to vary."""
    loaded = tiny_model()
    with torch.no_grad():
        loaded.model.get_output_embeddings().weight.mul_(40)
    return loaded


def planted(loaded: LoadedModel, size: float = 1.0) -> Intervention:
    """Steering at resid.STEERED along the unembedding of 'z', with norm `size` times the mean
    residual norm there."""
    z = loaded.tokenizer("z", add_special_tokens=False)["input_ids"][0]
    direction = loaded.model.get_output_embeddings().weight[z].detach().clone()
    batch = encode(loaded.tokenizer, ["hello world there", "a second text"])
    from probewatch.compare.forward import run

    acts = run(Side(loaded), batch, [Site("resid", STEERED)]).acts[f"resid.{STEERED}"]
    vector = direction / direction.norm() * float(acts.norm(dim=-1).mean()) * size
    return Intervention(
        f"add z-direction at resid.{STEERED}",
        lambda: add_vectors(loaded, {f"resid.{STEERED}": vector}, 1.0),
        {"site": f"resid.{STEERED}", "size": size},
    )


def test_a_vs_a_says_no_change_on_every_row(peaky: LoadedModel, tmp_path: Path) -> None:
    report = compare(Side(peaky, "A"), Side(peaky, "B"), spec(tmp_path))
    assert report.verdict.startswith("No change"), report.verdict
    assert report.parts["behaviour"] and not any(r["changed"] for r in report.parts["behaviour"])
    assert all(r["difference"]["value"] == 0 for r in report.parts["behaviour"])
    for part in ("prompt", "a_replies", "b_replies"):
        assert report.parts["divergence"][part]["kl_a_b"]["high"] == pytest.approx(0, abs=1e-6)
    assert report.parts["drift"]["onset"] is None
    for row in report.parts["drift"]["sites"]:
        assert row["rel_l2"]["high"] < 1e-6
        assert row["cka"]["value"] == pytest.approx(1.0, abs=1e-6)
    for layer in report.parts["adl"]["layers"]:
        assert layer["norm"] == 0
    out = report.save(tmp_path / "report")
    data = json.loads((out / "compare.json").read_text())
    assert data["verdict"] == report.verdict
    assert "No change" in (out / "compare.html").read_text()
    with pytest.raises(ProbewatchError, match="already exists"):
        report.save(out)


def test_a_vs_a_false_change_rate_under_sampling(peaky: LoadedModel, tmp_path: Path) -> None:
    """20 seeds of A (sampled) vs A (sampled independently): every behaviour row's false
    'changed' rate is at most 5%, though the rows do differ between the two sides."""
    changed: dict[str, int] = {}
    discordant = 0
    for seed in range(20):
        settings = spec(tmp_path, temperature=1.0, seed=seed, patch_sites="", sites="resid.0")
        report = compare(Side(peaky, "A"), Side(peaky, "B"), settings)
        for row in report.parts["behaviour"]:
            changed[row["name"]] = changed.get(row["name"], 0) + int(row["changed"])
            discordant += row["mcnemar"]["only_a"] + row["mcnemar"]["only_b"]
    assert discordant > 100  # sampling noise is really there for the test to control
    assert len(changed) == 3
    for name, count in changed.items():
        assert count / 20 <= 0.05, f"{name}: {count}/20 false changes"


def test_planted_steering_is_detected_with_onset_at_its_layer(
    peaky: LoadedModel, tmp_path: Path
) -> None:
    """Steering at resid.2 with norm = the mean residual norm there, sampled replies: detected
    (behaviour row 'z' changed, verdict 'Changed') in >= 80% of 20 seeds, onset at resid.2."""
    intervention = planted(peaky, size=1.0)
    detected, onsets = 0, set()
    for seed in range(20):
        settings = spec(tmp_path, temperature=1.0, seed=seed, patch_sites="")
        report = compare(Side(peaky, "A"), Side(peaky, "B", intervention), settings)
        rows = {r["name"]: r for r in report.parts["behaviour"]}
        detected += int(rows["behaviour: z"]["changed"] and report.changed())
        onsets.add(report.parts["drift"]["onset"])
    assert detected / 20 >= 0.8, f"detected {detected}/20"
    assert onsets == {f"resid.{STEERED}"}


def test_patching_puts_the_change_at_the_steered_site(peaky: LoadedModel, tmp_path: Path) -> None:
    report = compare(Side(peaky, "A"), Side(peaky, "B", planted(peaky)), spec(tmp_path))
    shares = {r["site"]: r["share"]["value"] for r in report.parts["patching"]["sites"]}
    assert shares[f"resid.{STEERED}"] == pytest.approx(1.0, abs=1e-4)
    assert shares["resid.3"] == pytest.approx(1.0, abs=1e-4)
    for layer in range(STEERED):
        assert abs(shares[f"resid.{layer}"]) < 1e-4
        assert abs(shares[f"mlp_out.{layer}"]) < 1e-4
    # The difference lens reads the planted direction: 'z' among the top tokens at the layer.
    lens = {r["site"]: r for r in report.parts["adl"]["layers"]}
    assert "z" in lens[f"resid.{STEERED}"]["tokens_via_b"][:3]
    assert np.isfinite(report.parts["divergence"]["prompt"]["kl_a_b"]["value"])


def test_different_vocabularies_are_refused(tmp_path: Path) -> None:
    a = tiny_model()
    b = tiny_model()
    b.tokenizer.add_tokens(["<extra>"])
    with pytest.raises(ProbewatchError, match="vocabularies"):
        compare(Side(a, "A"), Side(b, "B"), spec(tmp_path))


def test_spec_validation() -> None:
    with pytest.raises(ProbewatchError, match="nothing to compare"):
        CompareSpec(model="a")
    with pytest.raises(ProbewatchError, match="prompt set"):
        CompareSpec(model="a", b="b", sets="harmful,nope")

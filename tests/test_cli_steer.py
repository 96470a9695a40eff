"""`probewatch steer ...` and `probewatch audit` on a tiny model: each action end to end, and
bad input answered with a clear error that leaves saved files alone."""

import json
from pathlib import Path

import gguf
import pytest
import torch

from probewatch import cli_steer
from probewatch.cli import main
from probewatch.config import METHODS, MODES
from probewatch.models import load_model
from probewatch.probes import ProbeArtifact, make_probe
from probewatch.probes.artifact import build_card, save_probe
from probewatch.steer import directions, interventions, load_vector
from tests.helpers import tiny_model


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _save(family: str, path: Path) -> str:
    tiny = tiny_model(family)
    tiny.model.save_pretrained(path)
    tiny.tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny model directory and a refusal-style vector extracted from it by the CLI."""
    root = tmp_path_factory.mktemp("steer-cli")
    model = _save("llama", root / "tiny")
    vector = root / "vector"
    code = main(
        [
            "steer",
            "extract",
            "--model",
            model,
            "--dataset",
            "harmful_vs_harmless",
            "--sites",
            "resid.0,resid.1",
            "--out",
            str(vector),
            "--quiet",
        ]
    )
    assert code == 0
    return {"root": str(root), "model": model, "vector": str(vector)}


def test_choices_match_the_library() -> None:
    # config.py is the one list; the library's registry must hold every choice it offers.
    assert interventions.MODES == MODES
    assert set(directions.METHODS) == set(METHODS)


def test_extract_saves_a_vector_with_its_provenance(workspace: dict[str, str]) -> None:
    vector = load_vector(workspace["vector"])
    assert vector.sites == ["resid.0", "resid.1"]
    assert vector.card["dataset"]["name"] == "harmful_vs_harmless"
    assert vector.card["method"] == "mean_diff"
    assert all(float(vector[s].norm()) > 0 for s in vector.sites)


def test_export_writes_a_control_vector_and_never_replaces_one(
    workspace: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "refusal.gguf"
    argv = ["steer", "export", workspace["vector"], "--sites", "resid.1", "--out", str(out)]
    code, text, _ = run([*argv, "--scale", "2"], capsys)
    assert code == 0 and "--control-vector" in text
    reader = gguf.GGUFReader(str(out))
    (tensor,) = reader.tensors
    assert tensor.name == "direction.1"
    expected = 2 * load_vector(workspace["vector"])["resid.1"]
    assert torch.allclose(torch.from_numpy(tensor.data.copy()).reshape(-1), expected)
    before = out.read_bytes()
    code, _, err = run(argv, capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refusal.gguf"]  # no scratch left
    code, _, _ = run([*argv, "--overwrite"], capsys)  # scale 1 now: the file is replaced
    assert code == 0 and out.read_bytes() != before


def test_export_of_layer_zero_is_refused_clearly(
    workspace: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # resid.0 has no llama.cpp slot, so a vector holding it cannot be exported as is.
    out = tmp_path / "x.gguf"
    code, _, err = run(["steer", "export", workspace["vector"], "--out", str(out)], capsys)
    assert code == 2 and "resid.0" in err and "--sites" in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_try_shows_both_completions(
    workspace: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["steer", "try", workspace["vector"], "--model", workspace["model"]]
    argv += ["--mode", "add", "--scale", "50", "--sites", "resid.1", "--prompt", "Hi there"]
    code, out, _ = run([*argv, "--max-new-tokens", "6", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["intervention"].startswith("add 50")
    assert result["original"] != result["after"]  # a huge push changes a random model's text


def test_try_leaves_the_model_untouched_after_bad_input(
    workspace: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["steer", "try", workspace["vector"], "--model", workspace["model"], "--prompt", "x"]
    code, _, err = run([*base, "--scale", "nan"], capsys)
    assert code == 2 and "finite" in err
    code, _, err = run([*base, "--sites", "resid.99"], capsys)
    assert code == 2 and "resid.99" in err
    code, _, err = run([*base, "--mode", "gated"], capsys)
    assert code == 2 and "--probe" in err


def test_a_vector_from_another_model_is_refused(
    workspace: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = _save("qwen2", tmp_path / "other")
    argv = ["audit", workspace["vector"], "--model", other, "--out", str(tmp_path / "a")]
    code, _, err = run(argv, capsys)
    assert code == 2 and "Traceback" not in err
    assert "d_model" in err or "fingerprint" in err
    assert not (tmp_path / "a").exists()


def test_missing_vector_is_a_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(["steer", "export", str(tmp_path / "nope"), "--out", "x.gguf"], capsys)
    assert code == 2 and "no vector directory" in err


def test_orthogonalize_saves_a_model_that_loads(
    workspace: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ortho"
    argv = ["steer", "orthogonalize", workspace["vector"], "--model", workspace["model"]]
    code, text, _ = run([*argv, "--site", "resid.1", "--out", str(out)], capsys)
    assert code == 0 and "probewatch serve --model" in text
    loaded = load_model(str(out))
    direction = load_vector(workspace["vector"])["resid.1"]
    unit = direction / direction.norm()
    # Every write into the residual stream is orthogonal to the direction: so is the embedding.
    embedding = loaded.model.get_input_embeddings().weight.detach()
    assert float((embedding @ unit).abs().max()) < 1e-4
    assert torch.isfinite(embedding).all()


def test_audit_writes_a_report_and_keeps_an_existing_one(
    workspace: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loaded = load_model(workspace["model"])
    x = torch.randn(40, loaded.d_model, generator=torch.Generator().manual_seed(0))
    for i, site in enumerate(["resid.2", "resid.3"]):
        probe = make_probe("logistic").fit(x, (x[:, i] > 0).float())
        card = build_card(probe, loaded, site, "last", {"name": f"p{i}"}, {})
        save_probe(ProbeArtifact(probe, card), tmp_path / "probes" / f"p{i}")
    out = tmp_path / "audit"
    argv = ["audit", workspace["vector"], "--model", workspace["model"], "--mode", "ablate"]
    argv += ["--sites", "resid.1", "--n", "4", "--max-new-tokens", "4", "--out", str(out)]
    argv += ["--probes", str(tmp_path / "probes")]
    code, text, _ = run(argv, capsys)
    assert code == 0 and "side effects" in text
    report = json.loads((out / "audit.json").read_text())
    assert report["intervention"]["mode"] == "ablate"
    assert sorted(s["site"] for s in report["probe_shifts"].values()) == ["resid.2", "resid.3"]
    assert report["settings"]["n"] == 4
    assert set(report["refusal"]) == {"harmful", "harmless", "benign"}
    assert "<html" in (out / "audit.html").read_text().lower()
    saved = (out / "audit.json").read_bytes()
    code, _, err = run(argv, capsys)
    assert code == 2 and "already exists" in err
    assert (out / "audit.json").read_bytes() == saved


def test_probes_argument_names_a_folder_or_a_list(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "card.json").write_text("{}")
    (tmp_path / "notes").mkdir()
    assert cli_steer._probe_dirs(str(tmp_path)) == [tmp_path / "a"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "card.json").write_text("{}")
    listed = f"{tmp_path / 'a'},{tmp_path / 'b'}"
    assert cli_steer._probe_dirs(listed) == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(Exception, match="not a probe directory"):  # checked before the model
        cli_steer._probe_dirs(f"{tmp_path / 'a'},{tmp_path / 'typo'}")
    with pytest.raises(Exception, match="holds no probes"):
        cli_steer._probe_dirs(str(tmp_path / "notes"))

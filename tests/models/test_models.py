from pathlib import Path

import pytest
import torch

from probewatch.errors import ProbewatchError
from probewatch.models import list_models, load_model, loading, registry
from probewatch.models.registry import EmbeddedModel, find_embedded, require_installed
from tests.helpers import tiny_model


def test_names_and_aliases_resolve() -> None:
    assert find_embedded("default") is find_embedded("smollm2-135m-instruct")
    assert find_embedded("GEMMA3-270M") is not None
    assert find_embedded("gpt-7") is None


def test_an_unknown_model_says_what_to_use_instead() -> None:
    with pytest.raises(ProbewatchError, match="not available offline") as info:
        load_model("no-such-org/no-such-model")
    assert "probewatch models" in str(info.value)


def test_a_file_is_not_a_model_directory(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(ProbewatchError, match="is a file"):
        load_model(str(tmp_path / "model.bin"))


def test_a_missing_package_gives_the_install_command() -> None:
    ghost = EmbeddedModel(
        "ghost", (), "not real", "ghost-weights-pkg", "pip install ghost-weights-pkg", Path
    )
    with pytest.raises(ProbewatchError, match="pip install ghost-weights-pkg"):
        require_installed(ghost)


def test_local_directory_round_trip(tmp_path: Path) -> None:
    tiny = tiny_model()
    tiny.model.save_pretrained(tmp_path / "m")
    tiny.tokenizer.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.fingerprint == tiny.fingerprint
    assert loaded.n_layers == 4 and loaded.d_model == 32
    assert loaded.tokenizer.padding_side == "right"


def test_models_listing_reports_installed_and_cached() -> None:
    rows = {row["name"]: row for row in list_models()}
    assert set(rows) >= {"smollm2-135m-instruct", "gemma3-270m"}
    assert rows["smollm2-135m-instruct"]["installed"]
    assert rows["smollm2-135m-instruct"]["cached"] is False  # the unit-test cache is empty


def test_an_interrupted_conversion_never_leaves_a_cache_that_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Simulate a crash while writing the converted model: nothing usable may remain, and
    the next load converts again instead of loading a half-written directory."""
    embedded = find_embedded("default")
    assert embedded is not None
    tiny = tiny_model()
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: tiny.tokenizer)
    real_from_pretrained = loading.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        loading.AutoModelForCausalLM,
        "from_pretrained",
        lambda path, **k: tiny.model if "gguf_file" in k else real_from_pretrained(path, **k),
    )
    real_save = type(tiny.model).save_pretrained

    def crash(self, path, **kwargs):  # type: ignore[no-untyped-def]
        real_save(self, path, **kwargs)
        raise KeyboardInterrupt  # killed after the weights, before the marker

    monkeypatch.setattr(type(tiny.model), "save_pretrained", crash)
    target = loading.converted_cache_path(embedded)
    with pytest.raises(KeyboardInterrupt):
        load_model("default")
    assert not target.exists()
    assert not registry.is_cached(embedded)
    assert not [p for p in target.parent.iterdir() if p.name.startswith(f".{target.name}")]

    monkeypatch.setattr(type(tiny.model), "save_pretrained", real_save)
    loaded = load_model("default")
    assert registry.is_cached(embedded)
    assert loaded.fingerprint == tiny.fingerprint
    assert torch.equal(
        loaded.model.get_input_embeddings().weight, tiny.model.get_input_embeddings().weight
    )


@pytest.mark.parametrize(("family", "adds_bos"), [("gemma3", True), ("llama", False)])
def test_gemma_tokenizers_prepend_bos(family: str, adds_bos: bool, tmp_path: Path) -> None:
    """transformers' GGUF conversion drops Gemma's add-BOS flag; without BOS Gemma 3 answers
    garbage, so loading restores it (and leaves families that do not use BOS alone)."""
    tiny = tiny_model(family)
    tiny.model.save_pretrained(tmp_path / family)
    tiny.tokenizer.save_pretrained(tmp_path / family)
    tokenizer = load_model(str(tmp_path / family)).tokenizer
    assert (tokenizer("xy").input_ids[0] == tokenizer.bos_token_id) is adds_bos
    assert len(tokenizer("xy").input_ids) == 2 + adds_bos  # once, not twice

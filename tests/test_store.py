import json
from pathlib import Path

import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.config import HarvestSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.store import ActivationStore, encode_examples, harvest

CARD = DatasetCard("toy", "toy", "tests", "none", "by hand", "every third is test")


def toy_dataset(n: int = 23) -> Dataset:
    examples = [
        Example(
            text=f"Statement number {i} is {'true' if i % 2 else 'false'}" + "!" * (i % 5),
            label=float(i % 2),
            split="test" if i % 3 == 0 else "train",
        )
        for i in range(n)
    ]
    return Dataset(CARD, examples)


def into(
    loaded: LoadedModel,
    dataset: Dataset,
    sites: str,
    out: Path,
    overwrite: bool = False,
    **settings: float,
) -> ActivationStore:
    spec = HarvestSpec(sites=sites, out=out, overwrite=overwrite, **settings)
    return harvest(loaded, dataset, spec, progress=False)


def test_store_holds_exactly_what_a_direct_capture_gives(tiny: LoadedModel, tmp_path: Path) -> None:
    dataset = toy_dataset()
    store = into(tiny, dataset, "resid.1,mlp_out.2", tmp_path / "s", batch_size=4)
    with ActivationCapture(tiny.model, "resid.1,mlp_out.2") as cap:
        direct = cap.run(encode_examples(tiny, dataset.examples))
    for site in ("resid.1", "mlp_out.2"):
        stored = store.load(site)
        torch.testing.assert_close(stored.acts, direct.acts[site], atol=1e-5, rtol=1e-4)
        assert stored.example_index.tolist() == list(range(len(dataset.examples)))
        assert stored.label.tolist() == [ex.label for ex in dataset.examples]
    test_rows = store.load("resid.1").rows("test")
    assert test_rows.example_index.tolist() == [i for i in range(23) if i % 3 == 0]
    spec = store.manifest["spec"]
    assert spec["model"]["fingerprint"] == tiny.fingerprint
    assert spec["dataset"]["hash"] == dataset.hash
    assert spec["positions"] == "last"


def test_shards_bound_memory_whatever_the_dataset_size(tiny: LoadedModel, tmp_path: Path) -> None:
    # 0.001 MB per shard = a few rows of 32 floats: many small shards, never one big buffer.
    store = into(
        tiny,
        toy_dataset(40),
        "all",
        tmp_path / "s",
        batch_size=2,
        max_shard_mb=0.001,
    )
    rows_per_shard = [shard["n_rows"] for shard in store.manifest["shards"]]
    bytes_per_row = 4 * 32 * 4  # 4 sites x d_model 32 x float32
    assert len(rows_per_shard) >= 10
    assert max(rows_per_shard) * bytes_per_row <= 0.001 * 2**20 + 2 * bytes_per_row
    assert sum(rows_per_shard) == 40


def test_an_interrupted_harvest_resumes_and_matches_an_uninterrupted_one(
    tiny: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = toy_dataset(30)
    calls = {"n": 0}
    real_run = ActivationCapture.run

    def flaky_run(self: ActivationCapture, batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_run(self, batch)

    monkeypatch.setattr(ActivationCapture, "run", flaky_run)
    kwargs = {"batch_size": 3, "max_shard_mb": 0.0005}
    with pytest.raises(KeyboardInterrupt):
        into(tiny, dataset, "resid.2", tmp_path / "s", **kwargs)
    partial = ActivationStore.open(tmp_path / "s")
    assert not partial.complete
    done = sum(s["n_examples"] for s in partial.manifest["shards"])
    assert 0 < done < 30
    with pytest.raises(ProbewatchError, match="incomplete"):
        partial.load("resid.2")

    calls["n"] = -1000  # no more interruptions
    resumed = into(tiny, dataset, "resid.2", tmp_path / "s", **kwargs)
    monkeypatch.setattr(ActivationCapture, "run", real_run)
    fresh = into(tiny, dataset, "resid.2", tmp_path / "fresh", **kwargs)
    torch.testing.assert_close(resumed.load("resid.2").acts, fresh.load("resid.2").acts)
    assert resumed.load("resid.2").example_index.tolist() == list(range(30))


def test_other_settings_are_refused_rather_than_mixed(tiny: LoadedModel, tmp_path: Path) -> None:
    into(tiny, toy_dataset(), "resid.1", tmp_path / "s")
    with pytest.raises(ProbewatchError, match="other settings"):
        into(tiny, toy_dataset(), "resid.2", tmp_path / "s")
    with pytest.raises(ProbewatchError, match="other settings"):
        into(tiny, toy_dataset(12), "resid.1", tmp_path / "s")
    replaced = into(tiny, toy_dataset(), "resid.2", tmp_path / "s", overwrite=True)
    assert replaced.sites == ["resid.2"]


def test_a_foreign_directory_is_never_written_into(tiny: LoadedModel, tmp_path: Path) -> None:
    precious = tmp_path / "mine" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("do not lose me")
    with pytest.raises(ProbewatchError, match="not an activation store"):
        into(tiny, toy_dataset(), "resid.1", precious.parent)
    assert precious.read_text() == "do not lose me"


def test_corrupt_stores_get_clear_errors(tiny: LoadedModel, tmp_path: Path) -> None:
    store = into(tiny, toy_dataset(), "resid.1", tmp_path / "s")
    with pytest.raises(ProbewatchError, match="not in the store"):
        store.load("resid.3")
    (tmp_path / "s" / store.manifest["shards"][0]["file"]).write_bytes(b"garbage")
    with pytest.raises(ProbewatchError, match="corrupt"):
        ActivationStore.open(tmp_path / "s").load("resid.1")
    (tmp_path / "s" / "manifest.json").write_text("{not json")
    with pytest.raises(ProbewatchError, match="corrupt"):
        ActivationStore.open(tmp_path / "s")
    with pytest.raises(ProbewatchError, match="not an activation store"):
        ActivationStore.open(tmp_path / "nothing")


def test_manifest_is_valid_json_after_every_shard(tiny: LoadedModel, tmp_path: Path) -> None:
    store = into(
        tiny,
        toy_dataset(),
        "resid.0",
        tmp_path / "s",
        batch_size=2,
        max_shard_mb=0.0002,
    )
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["complete"] is True
    assert [s["first_example"] for s in manifest["shards"]] == sorted(
        s["first_example"] for s in manifest["shards"]
    )
    assert not list((tmp_path / "s").glob(".*tmp"))
    assert store.complete


def test_too_long_text_names_its_row(tiny: LoadedModel, tmp_path: Path) -> None:
    tiny.model.config.max_position_embeddings = 40
    examples = [*toy_dataset(5).examples, Example(text="x" * 100, label=1.0)]
    with pytest.raises(ProbewatchError, match="row 5 is 100 tokens"):
        into(tiny, Dataset(CARD, examples), "resid.0", tmp_path / "s")

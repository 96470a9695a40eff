import json
from pathlib import Path

import pytest
import torch

from probewatch.capture import ActivationCapture
from probewatch.config import HarvestSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.data.files import load_file
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.store import ActivationStore, encode_examples, harvest
from tests.helpers import write

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


def _span_rows(stored_index: torch.Tensor, n: int) -> list[int]:
    return torch.bincount(stored_index, minlength=n).tolist()


def test_a_users_spans_column_chooses_the_tokens_of_a_span_harvest(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    # The tiny tokenizer has one token per ASCII character, so a span of k characters is k rows.
    rows = [
        {
            "messages": [
                {"role": "user", "content": "Capital of Peru?"},
                {"role": "assistant", "content": "It is Lima."},
            ],
            "label": 0,
            "spans": [[6, 10]],
        },
        {
            "messages": [
                {"role": "user", "content": "Capital of Chad?"},
                {"role": "assistant", "content": "It is Rome, or Oslo."},
            ],
            "label": 1,
            "spans": [[6, 10], [15, 19]],
        },
    ]
    file = write(tmp_path / "qa.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_file(file)
    store = into(tiny, dataset, "resid.1", tmp_path / "span", positions="span")
    stored = store.load("resid.1")
    assert _span_rows(stored.example_index, 2) == [4, 8]
    assert stored.label.tolist() == [0.0] * 4 + [1.0] * 8
    # The spans reached the batch: its mask is exactly their tokens.
    batch = encode_examples(tiny, dataset.examples, positions="span")
    assert batch.token_mask is not None
    picked = tiny.tokenizer.decode(batch.input_ids[1][batch.token_mask[1]])
    assert picked == "RomeOslo"
    whole = into(tiny, dataset, "resid.1", tmp_path / "mask", positions="mask")
    assert _span_rows(whole.load("resid.1").example_index, 2) == [11, 20]
    # Plain text rows: spans into the text.
    texts = write(
        tmp_path / "t.csv", 'text,label,spans\nParis is big,1,"[[0, 5]]"\nLyon,0,"[[0, 2]]"\n'
    )
    text_store = into(tiny, load_file(texts), "resid.1", tmp_path / "text", positions="span")
    assert _span_rows(text_store.load("resid.1").example_index, 2) == [5, 2]


def test_a_row_without_a_span_is_refused_by_name(tiny: LoadedModel, tmp_path: Path) -> None:
    file = write(tmp_path / "t.csv", 'text,label,spans\nParis is big,1,"[[0, 5]]"\nLyon,0,\n')
    with pytest.raises(ProbewatchError, match=r"row 1 \('Lyon'\) has no span") as err:
        into(tiny, load_file(file), "resid.1", tmp_path / "s", positions="span")
    assert err.value.hint is not None and "--positions last or all" in err.value.hint
    # A text without the spans column, under span positions, says the same.
    with pytest.raises(ProbewatchError, match=r"row 0 .* has no span"):
        into(tiny, toy_dataset(3), "resid.1", tmp_path / "t", positions="span")


def test_span_and_mask_harvests_are_cached_apart(tiny: LoadedModel) -> None:
    answer = [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "In Lima."}]
    examples = [
        Example("In Lima.", float(i % 2), messages=tuple(answer), meta={"answer_span": [3, 7]})
        for i in range(4)
    ]
    dataset = Dataset(CARD, examples)
    span = harvest(tiny, dataset, HarvestSpec(sites="resid.0", positions="span"), progress=False)
    mask = harvest(tiny, dataset, HarvestSpec(sites="resid.0", positions="mask"), progress=False)
    assert span.path != mask.path and span.manifest["spec"]["positions"] == "span"
    assert span.load("resid.0").acts.shape[0] == 4 * 4  # "Lima": the answer_span's tokens
    assert mask.load("resid.0").acts.shape[0] == 4 * 8

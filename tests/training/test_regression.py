"""Regression probes on per-token targets: target alignment with the harvested tokens, the
position-only baseline, the trainer end to end, and the monitor's progress estimate."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from probewatch.config import HarvestSpec, ProbeSpec
from probewatch.data.base import Dataset, DatasetCard
from probewatch.data.generated.progress import progress_example
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor
from probewatch.store import StoredSite, harvest
from probewatch.suite import SuiteProbe, train_suite
from probewatch.training import RegressionScores, TrainResult, train
from probewatch.training.regression import PositionBaseline, row_targets, token_ordinal

WORDS = [
    "first",
    "we",
    "mix",
    "the",
    "flour",
    "then",
    "we",
    "add",
    "water",
    "and",
    "salt",
    "before",
    "the",
    "dough",
    "rests",
]


def progress_dataset(loaded: LoadedModel, n: int = 40) -> Dataset:
    """Hand-written responses of 4 to 40 words, one group each, with targets k/n."""
    examples = []
    for i in range(n):
        length = 4 + i % 37
        response = " ".join(WORDS[j % len(WORDS)] for j in range(length))
        chat = ({"role": "user", "content": f"Explain step {i}."},)
        examples.append(progress_example(loaded, chat, response, f"topic-{i}", seed=0))
    card = DatasetCard(
        "progress_test",
        "test",
        "written for this test",
        "n/a",
        "k/n",
        "by topic",
        task="regression",
    )
    return Dataset(card, examples)


def stored(example_index: list[int], token_index: list[int]) -> StoredSite:
    n = len(example_index)
    return StoredSite(
        torch.zeros(n, 2),
        torch.tensor(example_index),
        torch.tensor(token_index),
        torch.zeros(n),
        torch.zeros(n, dtype=torch.int8),
    )


def test_token_ordinal_ranks_rows_within_their_example_in_token_order() -> None:
    rows = stored([3, 1, 3, 1, 3], [9, 5, 7, 6, 8])
    assert token_ordinal(rows).tolist() == [2, 0, 0, 1, 1]


def test_position_baseline_predicts_the_mean_target_per_position() -> None:
    baseline = PositionBaseline.fit(np.array([0, 1, 0, 1, 2]), np.array([0.5, 1.0, 0.25, 0.5, 1.0]))
    assert baseline.predict(np.array([0, 1, 2, 7])).tolist() == [0.375, 0.75, 1.0, 1.0]


def test_per_token_targets_line_up_with_the_harvested_response_tokens(tiny: LoadedModel) -> None:
    dataset = progress_dataset(tiny)
    read = HarvestSpec(sites="resid.1", positions="mask")
    site = harvest(tiny, dataset, read, progress=False).load("resid.1")
    targets = row_targets(dataset, site, "progress")
    ordinal = token_ordinal(site)
    for index in set(site.example_index.tolist()):
        mine = site.example_index == index
        n = int(mine.sum())
        assert n == dataset.examples[index].meta["n_response_tokens"]
        expected = (torch.tensor(ordinal[mine.numpy()]) + 1) / n
        assert torch.allclose(targets[mine], expected.double(), atol=1e-6)


def test_targets_that_do_not_match_the_tokens_are_refused(tiny: LoadedModel) -> None:
    dataset = progress_dataset(tiny, n=4)
    site = harvest(tiny, dataset, HarvestSpec(sites="resid.1"), progress=False).load("resid.1")
    with pytest.raises(ProbewatchError, match="positions='mask'"):
        row_targets(dataset, site, "progress")


def test_trainer_sweeps_sites_and_reports_against_the_baseline(tiny: LoadedModel) -> None:
    dataset = progress_dataset(tiny)
    result = train(tiny, dataset, ProbeSpec(sites="resid.0-2"), progress=False)
    assert [r.site for r in result.sweep] == ["resid.0", "resid.1", "resid.2"]
    best = max(result.sweep, key=lambda r: r.val)
    assert result.best_site == best.site
    m = result.metrics
    assert isinstance(m, RegressionScores)
    assert m.n_examples == len(dataset.split("test")) and m.n_tokens > m.n_examples
    assert m.r2_ci_low <= m.r2 <= m.r2_ci_high
    assert m.baseline_r2 is not None and m.baseline_mae is not None
    card = result.artifact.card
    assert card["task"] == "regression" and card["positions"] == "mask"
    assert card["metrics"]["baseline_r2"] == m.baseline_r2
    assert card["sweep"][0].keys() == {"site", "val_r2", "test_r2"}
    assert card["monitor"] == {"scope": "response", "aggregator": {"name": "last"}}
    assert "R²" in result.table() and "baseline" in result.summary()
    # Alpha was cross-validated over whole answers (their tokens share a group), not tokens.
    fitted = result.artifact.probe.config()["fitted"]
    assert "cross-validation over" in fitted["alpha_chosen_by"] and fitted["loo_mse"] is None


def test_a_binary_probe_kind_on_regression_targets_is_refused_before_harvest(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_harvest(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("harvested before the probe kind was checked")

    monkeypatch.setattr("probewatch.training.sweep.harvest", no_harvest)
    dataset = progress_dataset(tiny, n=4)
    with pytest.raises(ProbewatchError, match="'mlp' fits binary labels") as raised:
        train(tiny, dataset, ProbeSpec(sites="resid.0", kind="mlp"), progress=False)
    assert "--kind ridge" in (raised.value.hint or "")


def test_a_classification_dataset_is_refused(tiny: LoadedModel) -> None:
    dataset = progress_dataset(tiny, n=4)
    binary = Dataset(DatasetCard("b", "", "", "", "", "", task="binary"), dataset.examples)
    with pytest.raises(ProbewatchError, match="regression dataset"):
        train(tiny, binary, ProbeSpec(sites="resid.0", task="regression"), progress=False)


def test_monitor_shows_the_progress_estimate_per_token(tiny: LoadedModel) -> None:
    result = train(tiny, progress_dataset(tiny), ProbeSpec(sites="resid.1"), progress=False)
    artifact = result.artifact
    monitor = Monitor(tiny, [artifact])
    (response,) = monitor.generate(
        [[{"role": "user", "content": "Explain bread."}]], max_new_tokens=6
    )
    values = [t.progress for t in response.tokens]
    assert all(v is not None and 0.0 <= v <= 1.0 for v in values)


def test_suite_trains_each_task_and_skips_what_cannot_be_built(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    """A binary probe, a regression probe (here on a user file of numbers) and an entry whose
    data cannot be built: the suite reports the skip and saves the rest; a second run keeps
    what exists."""
    numbers = tmp_path / "numbers.csv"
    rows = [f"There are {n} apples.,{n},{'test' if n % 4 == 0 else 'train'}" for n in range(60)]
    numbers.write_text("text,label,split\n" + "\n".join(rows) + "\n")
    sites = "resid.0-1"
    suite = (
        SuiteProbe("harm", "harm", ProbeSpec(dataset="harmful_vs_harmless", sites=sites)),
        SuiteProbe("count", "a number", ProbeSpec(file=numbers, sites=sites, task="regression")),
        SuiteProbe("broken", "x", ProbeSpec(dataset="no_such_dataset", sites=sites)),
    )
    lines: list[str] = []
    out = tmp_path / "suite"
    results = train_suite(tiny, out, suite, progress=False, report=lines.append)
    assert results["harm"] is not None and results["broken"] is None
    count = results["count"]
    assert isinstance(count, TrainResult) and count.task == "regression"
    assert count.artifact.card["recipe"]["file"] == str(numbers)
    assert (out / "harm" / "card.json").is_file() and (out / "count" / "card.json").is_file()
    assert not (out / "broken").exists()
    assert any(line.startswith("broken: skipped") for line in lines)
    assert any(line.startswith("count: resid.") and "R²" in line for line in lines)
    lines.clear()
    train_suite(tiny, out, suite[:2], progress=False, report=lines.append)
    assert lines == [f"harm: cached at {out / 'harm'}", f"count: cached at {out / 'count'}"]


def test_cli_trains_a_regression_probe_on_a_user_file(tiny: LoadedModel, tmp_path: Path) -> None:
    from probewatch.cli import main

    tiny.model.save_pretrained(tmp_path / "tiny")
    tiny.tokenizer.save_pretrained(tmp_path / "tiny")
    numbers = tmp_path / "numbers.csv"
    rows = [f"There are {n} apples.,{n},{'test' if n % 4 == 0 else 'train'}" for n in range(40)]
    numbers.write_text("sentence,count,split\n" + "\n".join(rows) + "\n")
    argv = ["train", "--model", str(tmp_path / "tiny"), "--file", str(numbers)]
    argv += ["--text-column", "sentence", "--label-column", "count", "--sites", "resid.0-1"]
    argv += ["--out", str(tmp_path / "probe"), "--quiet", "--json"]
    assert main([*argv, "--task", "binary"]) == 2  # integer counts are not binary labels
    assert main([*argv, "--task", "regression"]) == 0
    card = json.loads((tmp_path / "probe" / "card.json").read_text())
    assert card["kind"] == "ridge" and card["task"] == "regression"
    assert card["dataset"]["target"] == "label" and card["metrics"]["baseline_r2"] is None

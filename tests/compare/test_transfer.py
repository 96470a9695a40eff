"""Probe transfer in `compare` (the Obfuscation Atlas check) on a tiny random model, end to end
through `compare()`: a probe trained by the real training path on a built-in dataset, saved,
loaded by path, its dataset rebuilt by the name on its card.

- A vs A: A's probe scores B exactly as A, nothing is lost, the control FPRs are equal.
- A vs A with the probe's own direction ablated everywhere (Arditi et al.'s hooks): A's probe
  reads B at chance, a probe retrained on B still reads the label from the other directions,
  and both the loss and the gap are intervals away from 0.
- Probes it cannot re-check are listed with the reason, in order, never dropped.

The label of `deception_instructed` (the same true statement after an honest or a deceptive
user instruction) is readable at a random model's last token, which attends to the
instruction's bytes, along many directions: on this tiny model a probe retrained after ablating
the first probe's direction still scores about 0.9."""

import html
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from probewatch.compare import CompareSpec, Side, compare
from probewatch.compare.report import CompareReport
from probewatch.config import ProbeSpec
from probewatch.data import load_source
from probewatch.models.loading import LoadedModel
from probewatch.probes import ProbeArtifact, save_probe
from probewatch.steer.interventions import Intervention, ablate_direction
from probewatch.training import TrainResult, train
from tests.helpers import probe_artifact, tiny_model

DATASET, SITE = "deception_instructed", "resid.3"
LIMIT = 200  # a seeded sample of the dataset, as `probewatch train --limit 200` takes


@dataclass(frozen=True)
class Trained:
    path: Path
    result: TrainResult

    @property
    def card(self) -> dict[str, Any]:
        return self.result.artifact.card


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return tiny_model()


@pytest.fixture(scope="module")
def trained(model: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """A logistic probe on DATASET at SITE, made by `train` (as `probewatch train` makes it)."""
    spec = ProbeSpec(dataset=DATASET, sites=SITE, limit=LIMIT, shortcut_audit=False, n_boot=100)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:  # the harvest cache, kept out of ~/.cache
            patch.setenv("PROBEWATCH_CACHE", str(tmp_path_factory.mktemp("cache")))
            result = train(model, load_source(spec), spec, progress=False)
    finally:
        torch.set_num_threads(threads)
    path = save_probe(result.artifact, tmp_path_factory.mktemp("probes") / "deception")
    yield Trained(path, result)


def settings(tmp_path: Path, probes: list[Path], transfer_n: int, **extra: object) -> CompareSpec:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"say {w} {i}\n" for i, w in enumerate(["hi", "cats", "rain"] * 3)))
    values: dict[str, object] = {
        "model": "tiny",
        "b": "tiny",
        "sets": "",
        "prompts": prompts,
        "max_new_tokens": 2,
        "sites": SITE,
        "patch_sites": "",
        "adl_texts": 4,
        "n_boot": 200,
        "probes": ",".join(str(p) for p in probes),
        "transfer_n": transfer_n,
    }
    values.update(extra)
    return CompareSpec(**values)


def saved(report: CompareReport, tmp_path: Path) -> tuple[dict[str, Any], str]:
    out = report.save(tmp_path / "report")
    return json.loads((out / "compare.json").read_text()), (out / "compare.html").read_text()


def fmt(iv: dict[str, Any]) -> str:
    return f"{iv['value']:.3g} [{iv['low']:.3g}, {iv['high']:.3g}] (n={iv['n']})"


def test_a_vs_a_transfer_is_exact(model: LoadedModel, trained: Trained, tmp_path: Path) -> None:
    # transfer_n covers the probe's whole fit part, so retraining repeats its training; and the
    # comparison's seed differs from the probe's: the held-out examples must still be the
    # probe's own test split (a built-in dataset's split depends on its seed).
    card_data = trained.card["dataset"]
    n = card_data["n_fit"]
    spec = settings(tmp_path, [trained.path], n, seed=3)
    report = compare(Side(model, "A"), Side(model, "B"), spec)
    assert report.verdict.startswith("No change"), report.verdict
    [row] = report.parts["probe_transfer"]
    assert row["probe"] == f"0:{DATASET}@{SITE}" and row["site"] == SITE
    assert row["dataset"]["hash"] == card_data["hash"]
    assert row["dataset"]["seed"] == card_data["seed"] == 0
    assert row["dataset"]["n_fit"] == n and row["dataset"]["n_test"] == card_data["n_test"]

    on_a, on_b = row["auroc_a_probe_on_a"], row["auroc_a_probe_on_b"]
    assert on_b == on_a  # value and interval: the same scores
    # The activations transfer reads are the ones the probe was tested on in training.
    assert on_a["value"] == pytest.approx(trained.card["metrics"]["test"]["auroc"], abs=1e-9)
    assert on_a["value"] > 0.85  # the probe works, so the other rows mean something
    zero = {"value": 0.0, "low": 0.0, "high": 0.0, "n": card_data["n_test"]}
    assert row["drop_a_minus_b"] == zero
    # Retrained on A's (= B's) activations of its fit examples: the probe itself again.
    retrained = row["auroc_retrained_on_b"]
    assert retrained == row["auroc_retrained_on_a"]
    assert retrained["value"] == pytest.approx(on_a["value"], abs=1e-9)
    gap = row["gap_retrained_minus_transferred"]
    assert gap["low"] <= 0 <= gap["high"] and abs(gap["value"]) < 1e-9, gap
    fpr = row["control_fpr"]
    assert fpr["at_a"] == fpr["at_b"] and fpr["at_a"]["n"] > 0
    assert row["threshold"] == trained.card["threshold"]["value"]

    data, page = saved(report, tmp_path)
    assert data["parts"]["probe_transfer"] == json.loads(json.dumps([row]))
    assert "<h2>Probe transfer</h2>" in page
    for cell in (row["probe"], fmt(on_a), fmt(retrained), fmt(gap)):
        assert html.escape(cell) in page


def test_ablating_the_probe_direction_breaks_transfer_not_the_concept(
    model: LoadedModel, trained: Trained, tmp_path: Path
) -> None:
    direction = trained.result.artifact.probe.direction()
    ablated = Intervention(
        f"ablate the probe's direction from {SITE}",
        lambda: ablate_direction(model, direction),
        {"mode": "ablate", "direction_site": SITE},
    )
    spec = settings(tmp_path, [trained.path], trained.card["dataset"]["n_fit"])
    report = compare(Side(model, "A"), Side(model, "B", ablated), spec)
    [row] = report.parts["probe_transfer"]
    on_a, on_b = row["auroc_a_probe_on_a"], row["auroc_a_probe_on_b"]
    retrained, gap, drop = (
        row["auroc_retrained_on_b"],
        row["gap_retrained_minus_transferred"],
        row["drop_a_minus_b"],
    )
    assert on_a["value"] > 0.85
    # On B the probe's input has no component along its own direction: its scores differ by
    # float rounding only (~1e-6, against a spread of ~1 on A). Rounding is a function of the
    # activations, so its ranking is not quite independent of the label: about chance.
    assert abs(on_b["value"] - 0.5) < 0.15 and on_b["high"] < on_a["low"] - 0.1, on_b
    assert retrained["value"] > 0.85, retrained
    assert gap["low"] > 0.15, gap  # the interval excludes 0 by a margin
    assert drop["low"] > 0.2, drop
    assert np.isclose(drop["value"], on_a["value"] - on_b["value"])
    # The verdict says so, in words.
    assert report.changed()
    assert f"A's probe {row['probe']} loses AUROC on B" in report.verdict, report.verdict
    assert "a probe retrained on B reads it again" in report.verdict
    _, page = saved(report, tmp_path)
    assert html.escape(report.verdict) in page
    assert html.escape(fmt(on_b)) in page and html.escape(fmt(drop)) in page


def test_probes_it_cannot_recheck_are_listed_with_the_reason(
    model: LoadedModel, trained: Trained, tmp_path: Path
) -> None:
    card = trained.card
    probe = trained.result.artifact.probe

    def variant(name: str, **changes: Any) -> Path:
        dataset = {**card["dataset"], **changes.pop("dataset", {})}
        artifact = ProbeArtifact(probe, {**card, **changes, "dataset": dataset})
        return save_probe(artifact, tmp_path / "probes" / name)

    probes = [
        save_probe(probe_artifact(model), tmp_path / "probes" / "synthetic"),
        variant("all_tokens", positions="all", aggregator={"name": "mean"}),
        variant("generated", dataset={"name": "deception_roleplay"}),
        variant("other_data", dataset={"hash": "0123456789abcdef"}),
        trained.path,
    ]
    report = compare(Side(model, "A"), Side(model, "B"), settings(tmp_path, probes, 20))
    rows = report.parts["probe_transfer"]
    assert [r["probe"] for r in rows] == [
        "0:synthetic@resid.2",
        f"1:{DATASET}@{SITE}",
        f"2:deception_roleplay@{SITE}",
        f"3:{DATASET}@{SITE}",
        f"4:{DATASET}@{SITE}",
    ]
    reasons = [r.get("skipped", "") for r in rows]
    assert "trained on 'synthetic', which is not a built-in dataset" in reasons[0]
    assert "positions 'all'" in reasons[1]
    assert "labelled from a model's own answers" in reasons[2]
    assert "0123456789abcdef" in reasons[3] and card["dataset"]["hash"] in reasons[3]
    assert reasons[4] == "" and rows[4]["dataset"]["n_fit"] == 20
    _, page = saved(report, tmp_path)
    for reason in reasons[:4]:
        assert html.escape(reason) in page


def test_one_class_sample_is_skipped_not_a_crash(
    model: LoadedModel, trained: Trained, tmp_path: Path
) -> None:
    """transfer_n=1 leaves one class in each split: reported as skipped, the comparison runs."""
    report = compare(Side(model, "A"), Side(model, "B"), settings(tmp_path, [trained.path], 1))
    [row] = report.parts["probe_transfer"]
    assert "one class" in row["skipped"], row


def test_spec_seed_is_not_the_probe_seed() -> None:
    """The fixture's probe data at another seed has other splits (why transfer reads the
    card's seed, not the comparison's)."""
    spec = ProbeSpec(dataset=DATASET, limit=LIMIT)
    at_0 = {e.text for e in load_source(spec).split("test")}
    at_3 = {e.text for e in load_source(replace(spec, seed=3)).split("train")}
    assert at_0 & at_3  # some of seed 0's test examples are seed 3's training examples

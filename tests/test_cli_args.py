"""Flags generated from the config dataclasses: help from field docstrings, choices from
Literal types, switches from bools, and validation before any model work."""

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from probewatch.cli_args import add_config_args, config_from_args, field_docs
from probewatch.config import ProbeSpec, ServerConfig
from probewatch.errors import ProbewatchError


@dataclass(kw_only=True)
class Example:
    name: str
    """what it is called"""
    mode: Literal["a", "b"] = "a"
    """which mode"""
    keep: bool = True
    """keep the thing"""
    out: Path | None = field(default=None, metadata={"flag": "--to"})
    """where to write"""
    hidden: int = field(default=3, metadata={"cli": False})


def parser_for(cls: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_args(parser, cls)
    return parser


def test_fields_become_flags_with_their_docstrings_as_help() -> None:
    parser = parser_for(Example)
    help_text = " ".join(parser.format_help().split())
    assert "--name NAME what it is called" in help_text
    assert "{a,b}" in help_text and "--no-keep do not keep the thing" in help_text
    assert "--to TO where to write" in help_text and "hidden" not in help_text
    args = parser.parse_args(["--name", "x", "--mode", "b", "--no-keep", "--to", "f.txt"])
    made = config_from_args(Example, args)
    assert made == Example(name="x", mode="b", keep=False, out=Path("f.txt"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "x", "--mode", "c"])
    assert (
        field_docs(ProbeSpec)["target_fpr"] == "false-positive rate the alarm threshold is set at"
    )


def test_a_flag_shared_by_two_configs_is_declared_once() -> None:
    parser = argparse.ArgumentParser()
    add_config_args(parser, ProbeSpec)
    add_config_args(parser, ServerConfig, only=("device", "port"))
    args = parser.parse_args(["--dataset", "cities", "--port", "9000"])
    assert config_from_args(ServerConfig, args).port == 9000
    assert config_from_args(ProbeSpec, args).dataset == "cities"


def test_every_server_setting_has_a_flag() -> None:
    parser = parser_for(ServerConfig)
    dests = {a.dest for a in parser._actions}
    assert {f for f in ServerConfig.__dataclass_fields__} <= dests


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_fpr": 1.5}, "target_fpr must be between 0 and 1"),
        ({"dataset": "mine.csv"}, "looks like a file"),
        ({"aggregator": "rolling_max:window"}, "bad option"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"positions": "first"}, "unknown positions"),
    ],
)
def test_specs_refuse_bad_values_with_a_hint(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ProbewatchError, match=message) as caught:
        ProbeSpec(**kwargs)
    assert caught.value.hint or "must be" in message


def test_recipe_round_trips_through_json_ready_dict() -> None:
    spec = ProbeSpec(dataset="cities", sites="resid.3", aggregator="ema_max:alpha=0.3")
    assert ProbeSpec.from_dict(spec.to_dict()) == spec
    assert spec.aggregator_config() == {"name": "ema_max", "alpha": 0.3}


def test_help_and_parsing_import_no_torch() -> None:
    code = (
        "import sys; from probewatch.cli import build_parser; p = build_parser(); "
        "p.parse_args(['serve', '--port', '1234']); "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

"""Fixtures of the server tests: a served tiny model with probes, and good probe files."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, make_probes, serving, tiny_model


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    make_probes(tiny_model(), root)
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, good: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    limits = {"max_body_bytes": 2_000_000, "max_prompt_tokens": 400, "max_output_tokens": 16}
    with serving(root, **limits) as server:
        yield server

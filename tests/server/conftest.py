"""Fixtures of the server tests: a served tiny model with probes, and good probe files."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from probewatch.server.config import ServerConfig
from tests.helpers import Server, free_port, make_probes, tiny_model


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("good")
    make_probes(tiny_model(), root)
    return root


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory, good: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("hostile")
    loaded = tiny_model()
    make_probes(loaded, root / "probes")
    config = ServerConfig(
        probes_dir=root / "probes",
        events_db=root / "events.sqlite",
        port=free_port(),
        max_body_bytes=2_000_000,
        max_prompt_tokens=400,
        max_output_tokens=16,
    )
    with Server(config, loaded) as server:
        server.wait_ready()
        yield server

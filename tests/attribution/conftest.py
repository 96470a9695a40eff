"""Fixtures for attribution: every family tiny_model builds, with every weight perturbed."""

from collections.abc import Iterator

import pytest
import torch

from probewatch.models.loading import LoadedModel
from tests.helpers import ALL_FAMILIES, perturbed


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a shared CPU does not thrash (measured: the
    family sweep test took 50 s per family on 2 threads under load, 2 s on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=ALL_FAMILIES)
def family_model(request: pytest.FixtureRequest) -> LoadedModel:
    return perturbed(request.param)

"""Fixtures for attribution: every family tiny_model builds, with every weight perturbed."""

import pytest

from probewatch.models.loading import LoadedModel
from tests.helpers import ALL_FAMILIES, perturbed


@pytest.fixture(params=ALL_FAMILIES)
def family_model(request: pytest.FixtureRequest) -> LoadedModel:
    return perturbed(request.param)

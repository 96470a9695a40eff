"""Fixtures only (factories live in tests/helpers.py): tiny random models of several families
(no download), an isolated cache per unit test, and the real default model."""

from collections.abc import Iterator

import pytest

from probewatch.models.loading import LoadedModel
from tests.helpers import FAMILIES, tiny_model


@pytest.fixture(params=FAMILIES)
def any_tiny(request: pytest.FixtureRequest) -> LoadedModel:
    return tiny_model(request.param)


@pytest.fixture
def tiny() -> LoadedModel:
    return tiny_model("llama")


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[None]:
    """Unit tests get a private cache; real-model tests share the user's (conversion is slow)."""
    if request.node.get_closest_marker("real") is None:
        monkeypatch.setenv("PROBEWATCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield


@pytest.fixture(scope="session")
def default_model() -> LoadedModel:
    from probewatch.models import load_model

    return load_model("default")

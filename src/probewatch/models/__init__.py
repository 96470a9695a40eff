"""Loading models: embedded package models (no hub), local directories and cached hub ids.

`list_models` and the registry import no torch (so `probewatch models` answers at once);
`load_model` and `LoadedModel` load the model stack on first use."""

from typing import Any

from probewatch.models.registry import EMBEDDED_MODELS, EmbeddedModel, list_models

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "LoadedModel", "list_models", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("LoadedModel", "load_model"):
        from probewatch.models import loading

        return getattr(loading, name)
    raise AttributeError(f"module 'probewatch.models' has no attribute {name!r}")

"""Loading models: embedded package models (no hub), local directories and cached hub ids."""

from probewatch.models.loading import LoadedModel, list_models, load_model
from probewatch.models.registry import EMBEDDED_MODELS, EmbeddedModel

__all__ = ["EMBEDDED_MODELS", "EmbeddedModel", "LoadedModel", "list_models", "load_model"]

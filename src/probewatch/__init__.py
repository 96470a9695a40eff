"""probewatch: activation probes in production.

Data flows one way: models -> sites -> capture/store -> data -> probes -> eval -> artifacts.
Import what you need from the submodules; this package import stays light (no torch).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

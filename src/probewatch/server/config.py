"""Server settings live in `probewatch.config` (one dataclass drives the flags and the app)."""

from probewatch.config import LOOPBACK_NAMES, ServerConfig

__all__ = ["LOOPBACK_NAMES", "ServerConfig"]

"""Server settings: one dataclass drives `probewatch serve` flags and `create_app`."""

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from probewatch.errors import ProbewatchError

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


@dataclass
class ServerConfig:
    model: str = "default"
    """embedded model name, local directory or cached hub id"""
    probes_dir: Path = field(default_factory=lambda: Path("runs/demo/probes"))
    """directory of probe artifacts (one subdirectory each); uploads land here"""
    vectors_dir: Path | None = None
    """directory of steering vectors (one subdirectory each), optional"""
    events_db: Path | None = None
    """SQLite event log (default: the user cache's events.sqlite)"""
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = field(default=None, repr=False)
    """required on every /v1 request when set; mandatory when binding beyond loopback"""
    store_text: bool = True
    """keep prompts and responses in the event log"""
    max_body_bytes: int = 1_000_000
    max_prompt_tokens: int = 2048
    max_output_tokens: int = 512
    default_max_tokens: int = 128
    max_batch: int = 8
    batch_window_ms: float = 100.0  # at most this long collecting a batch ...
    batch_idle_ms: float = 60.0  # ... and only while requests keep arriving this often
    """how long the batcher waits for more requests before starting a batch"""
    device: str | None = None

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get("PROBEWATCH_API_KEY") or None

    @property
    def loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def check(self) -> None:
        if not self.loopback and not self.api_key:
            raise ProbewatchError(
                f"refusing to serve on {self.host} without an API key",
                hint="set --api-key or PROBEWATCH_API_KEY, or bind to 127.0.0.1",
            )
        for name in ("max_body_bytes", "max_prompt_tokens", "max_output_tokens", "max_batch"):
            if getattr(self, name) < 1:
                raise ProbewatchError(f"{name} must be at least 1")

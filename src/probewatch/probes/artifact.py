"""Probe artifacts: a directory with `weights.safetensors` and a JSON `card.json`. Never pickle.

The card says which model (and a fingerprint of its weights), which site and token
positions, the probe kind and its configuration, the dataset and its hash, the metrics and
the library version, so an artifact can be used and audited without the code that made it.
"""

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from probewatch import __version__
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.paths import atomic_directory, refuse_to_replace, write_json_atomic
from probewatch.probes.base import PROBE_KINDS, Probe

FORMAT = "probewatch-probe/1"
WEIGHTS = "weights.safetensors"
CARD = "card.json"


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
        "format": FORMAT,
        "probewatch_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
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
    target = refuse_to_replace(out, overwrite, "a saved probe", "output directory")
    with atomic_directory(target, overwrite=overwrite) as scratch:
        tensors = {k: v.detach().cpu().contiguous() for k, v in artifact.probe.tensors().items()}
        save_file(tensors, str(scratch / WEIGHTS))
        write_json_atomic(scratch / CARD, artifact.card)
    artifact.path = target
    return target


def _corrupt(path: Path, problem: str) -> ProbewatchError:
    return ProbewatchError(
        f"{path} is not a valid probe artifact: {problem}",
        hint=f"a probe directory holds {WEIGHTS} and {CARD}, as written by `probewatch train`",
    )


def load_probe(
    path: str | Path, model: LoadedModel | None = None, allow_model_mismatch: bool = False
) -> ProbeArtifact:
    """Load an artifact. Given `model`, refuse it if the probe was trained on other weights,
    unless `allow_model_mismatch` (then the override is recorded on the artifact)."""
    root = Path(path)
    if not root.is_dir():
        raise ProbewatchError(f"no probe directory at {root}", hint="check the path")
    try:
        card = json.loads((root / CARD).read_text())
    except FileNotFoundError as exc:
        raise _corrupt(root, f"{CARD} is missing") from exc
    except json.JSONDecodeError as exc:
        raise _corrupt(root, f"{CARD} is not valid JSON ({exc.msg})") from exc
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise _corrupt(
            root, f"unknown format {card.get('format') if isinstance(card, dict) else card!r}"
        )
    kind = card.get("kind")
    if kind not in PROBE_KINDS:
        raise _corrupt(root, f"unknown probe kind {kind!r}")
    try:
        tensors = load_file(str(root / WEIGHTS))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise _corrupt(root, f"{WEIGHTS} is missing or unreadable ({exc})") from exc
    try:
        probe = PROBE_KINDS[kind].from_state(tensors, card.get("config", {}))
        d_model = int(card["model"]["d_model"])
        probe.score(torch.zeros(1, d_model))  # shapes agree with the card
    except (KeyError, TypeError, RuntimeError) as exc:
        raise _corrupt(root, f"weights do not match the card ({exc})") from exc
    artifact = ProbeArtifact(probe, card, root)
    if model is not None:
        check_model(artifact, model, allow_model_mismatch)
    return artifact


def check_model(artifact: ProbeArtifact, model: LoadedModel, allow_mismatch: bool) -> None:
    expected = artifact.card["model"]
    if int(expected["d_model"]) != model.d_model:
        raise ProbewatchError(
            f"probe {artifact.path} reads {expected['d_model']}-dim activations but model "
            f"{model.name!r} has d_model {model.d_model}",
            hint=f"use the model it was trained on ({expected['name']})",
        )
    if expected["fingerprint"] != model.fingerprint:
        message = (
            f"probe {artifact.path} was trained on {expected['name']!r} (weights fingerprint "
            f"{expected['fingerprint']}), not on {model.name!r} ({model.fingerprint})"
        )
        if not allow_mismatch:
            raise ProbewatchError(
                message,
                hint="load the model it was trained on, or pass --allow-model-mismatch to "
                "score anyway (the override is recorded)",
            )
        artifact.overrides.append(f"model mismatch allowed: {message}")

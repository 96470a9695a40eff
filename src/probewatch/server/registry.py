"""The probes and steering vectors a server offers, kept as directories on disk.

Uploads are validated by loading them as artifacts (safetensors + JSON card; never pickle)
against the served model before they are moved into place. Deleting moves a probe to
`.deleted/` instead of erasing it: nothing a user saved is lost through the API.
"""

import json
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor, MonitoredProbe
from probewatch.probes.artifact import CARD, WEIGHTS, load_probe
from probewatch.steer.directions import load_vector

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ProbewatchError(
            f"invalid name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


class ProbeRegistry:
    """Probe artifacts in `root`, and the Monitor built from them (rebuilt on change)."""

    def __init__(self, root: Path, loaded: LoadedModel) -> None:
        self.root = root
        self.loaded = loaded
        self._lock = threading.Lock()
        self.probes: dict[str, MonitoredProbe] = {}
        self.monitor = Monitor(loaded, [])
        self.skipped: dict[str, str] = {}  # directories that are not usable probes, and why
        self.reload()

    def reload(self) -> None:
        probes, skipped = {}, {}
        if self.root.is_dir():
            for path in sorted(p for p in self.root.iterdir() if p.is_dir()):
                if path.name.startswith("."):
                    continue
                try:
                    artifact = load_probe(path, self.loaded)
                except ProbewatchError as exc:
                    skipped[path.name] = exc.message
                    continue
                probes[path.name] = MonitoredProbe.from_artifact(path.name, artifact)
        with self._lock:
            self.probes, self.skipped = probes, skipped
            self.monitor = Monitor(self.loaded, list(probes.values()))

    def add(
        self, name: str, card: bytes, weights: bytes, overwrite: bool = False
    ) -> MonitoredProbe:
        check_name(name)
        target = self.root / name
        if target.exists() and not overwrite:
            raise ProbewatchError(f"a probe named {name!r} exists", hint="delete it first")
        try:
            json.loads(card)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProbewatchError("the card is not valid JSON", hint="upload card.json") from exc
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.root, prefix=f".upload-{name}-"))
        try:
            (scratch / CARD).write_bytes(card)
            (scratch / WEIGHTS).write_bytes(weights)
            load_probe(scratch, self.loaded)  # refuses other formats, shapes and models
            if target.exists():
                self._retire(target)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.reload()
        return self.probes[name]

    def delete(self, name: str) -> None:
        target = self.root / check_name(name)
        if name not in self.probes or not target.is_dir():
            raise KeyError(name)
        self._retire(target)
        self.reload()

    def _retire(self, path: Path) -> None:
        trash = self.root / ".deleted"
        trash.mkdir(exist_ok=True)
        path.rename(trash / f"{path.name}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns()}")


class VectorRegistry:
    """Steering vectors saved by `probewatch steer extract` (steer.save_vector): each is
    validated against the served model (dimension, layers, weights fingerprint, finite values)
    when the server starts; unusable ones are listed in `skipped` with the reason."""

    def __init__(self, root: Path | None, loaded: LoadedModel) -> None:
        self.vectors: dict[str, dict[str, torch.Tensor]] = {}  # name -> site -> [d_model]
        self.skipped: dict[str, str] = {}
        if root is None or not root.is_dir():
            return
        for path in sorted(p for p in root.iterdir() if p.is_dir() and NAME.match(p.name)):
            try:
                vector = load_vector(path, loaded)
            except ProbewatchError as exc:
                self.skipped[path.name] = exc.message
                continue
            self.vectors[path.name] = vector.vectors

    def steering(self, name: str, strength: float) -> list[tuple[str, torch.Tensor, float]]:
        if name not in self.vectors:
            known = ", ".join(sorted(self.vectors)) or "none"
            raise ProbewatchError(f"unknown steering vector {name!r}", hint=f"served: {known}")
        return [(site, t, strength) for site, t in self.vectors[name].items()]

"""The probes and steering vectors a server offers, kept as directories on disk.

A probe is accepted only once it is usable as a whole: the artifact loads (safetensors + JSON
card; never pickle) against the served model, its card's monitor settings are well-typed and
finite, its site exists on the served model, and it scores a real activation to a finite number.
An upload is written to a scratch directory beside the probes, checked there, and renamed into
place, so it lands whole or leaves nothing. At start-up every directory that fails a check is
skipped and listed with its reason; the server serves the others. Deleting moves a probe to
`.deleted/` instead of erasing it: nothing a user saved is lost through the API.
"""

import json
import logging
import math
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from probewatch.errors import ProbewatchError
from probewatch.metrics.shortcuts import serving_refusal
from probewatch.models.loading import LoadedModel
from probewatch.monitor import MonitoredProbe, ProbeBank
from probewatch.paths import clean_stale_scratch, scratch_prefix
from probewatch.probes.artifact import CARD, WEIGHTS, load_probe
from probewatch.server.schemas import ProbeInfo
from probewatch.sites import layer_list, parse_site, resolve_module
from probewatch.steer.directions import load_vector

log = logging.getLogger(__name__)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CARD_DEPTH = 32


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ProbewatchError(
            f"invalid name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def usable_probe(
    name: str, path: Path, loaded: LoadedModel, serve_shortcuts: bool = False
) -> MonitoredProbe:
    """The probe at `path` as the monitor will use it, or a ProbewatchError saying why not.
    A probe whose card's shortcut audit says "likely shortcut" is refused unless
    `serve_shortcuts`. Messages name the probe, never the directory (an upload's scratch path
    is the server's)."""
    try:
        _check_card_file(path / CARD)
        artifact = load_probe(path, loaded)
        refusal = serving_refusal(artifact.card, name, force=serve_shortcuts)
        if refusal:
            raise ProbewatchError(
                refusal, hint="retrain it on data without the confound, or serve --serve-shortcuts"
            )
        probe = MonitoredProbe.from_artifact(name, artifact)
        _check_monitor_settings(probe)
        _check_scores(probe, loaded)
        ProbeInfo.model_validate(probe.describe())  # what GET /v1/probes will list
    except ProbewatchError as exc:
        raise ProbewatchError(_scrub(exc.message, path, name), hint=exc.hint) from exc
    except Exception as exc:  # a malformed card can fail anywhere: it is the card's fault
        reason = _scrub(f"{type(exc).__name__}: {exc}", path, name)
        raise ProbewatchError(
            f"probe {name!r} is not usable: {reason}", hint="check its card.json"
        ) from exc
    return probe


def _check_card_file(path: Path) -> None:
    try:
        card = json.loads(path.read_bytes())
    except FileNotFoundError:
        return  # load_probe says which file is missing
    except (ValueError, RecursionError) as exc:
        raise ProbewatchError("the card is not valid JSON", hint="upload card.json") from exc
    if _depth(card) > MAX_CARD_DEPTH:
        raise ProbewatchError(f"the card is nested deeper than {MAX_CARD_DEPTH} levels")
    if isinstance(card, dict):
        _check_monitor_card(card)


def _check_monitor_card(card: dict[str, Any]) -> None:
    """The card sections only the monitor reads, with their types and finite values."""
    threshold = card.get("threshold")
    if threshold is not None:
        if not isinstance(threshold, dict):
            raise ProbewatchError('the card\'s threshold must be an object {"value": number}')
        if threshold.get("value") is not None and not _finite(threshold["value"]):
            raise ProbewatchError("the card's threshold.value must be a finite number")
    calibration = card.get("calibration")
    if calibration is not None:
        if not isinstance(calibration, dict):
            raise ProbewatchError('the card\'s calibration must be an object {"a": .., "b": ..}')
        for key in ("a", "b"):
            if key in calibration and not _finite(calibration[key]):
                raise ProbewatchError(f"the card's calibration.{key} must be a finite number")
    for section in ("monitor", "aggregator", "metrics", "dataset"):
        if card.get(section) is not None and not isinstance(card[section], dict):
            raise ProbewatchError(f"the card's {section} must be an object")
    monitor = card.get("monitor") or {}
    if monitor.get("aggregator") is not None and not isinstance(monitor["aggregator"], dict):
        raise ProbewatchError("the card's monitor.aggregator must be an object")
    if monitor.get("scope", "response") not in ("prompt", "response"):
        raise ProbewatchError("the card's monitor.scope must be 'prompt' or 'response'")


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_CARD_DEPTH:
        return level
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    return max((_depth(child, level + 1) for child in children), default=level)


def _check_monitor_settings(probe: MonitoredProbe) -> None:
    name = probe.name
    threshold = probe.threshold
    if threshold is not None and not _finite(threshold):
        raise ProbewatchError(f"probe {name!r}: threshold.value must be a finite number")
    if probe.platt is not None and not (_finite(probe.platt.a) and _finite(probe.platt.b)):
        raise ProbewatchError(f"probe {name!r}: calibration a and b must be finite numbers")


def _check_scores(probe: MonitoredProbe, loaded: LoadedModel) -> None:
    site = probe.artifact.site
    try:
        resolve_module(loaded.model, parse_site(site, len(layer_list(loaded.model))))
    except (ProbewatchError, ValueError, IndexError, AttributeError) as exc:
        raise ProbewatchError(
            f"probe {probe.name!r} reads site {site!r}, which model {loaded.name!r} does not have"
        ) from exc
    bank = ProbeBank([probe], loaded.d_model, torch.device("cpu"))
    points = torch.randn(4, loaded.d_model, generator=torch.Generator().manual_seed(0))
    scores = bank.score({site: points}, 4)
    if not bool(torch.isfinite(scores).all()):
        raise ProbewatchError(
            f"probe {probe.name!r} gives non-finite scores (NaN or infinite weights)",
            hint="retrain or re-export it",
        )
    probe.probability(float(scores[0, 0]))


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _scrub(message: str, path: Path, name: str) -> str:
    for form in {str(path.resolve()), str(path)}:
        message = message.replace(form, name)
    return message


def _warn_if_read_off_its_span(probe: MonitoredProbe) -> None:
    """A probe fitted on span tokens only (positions "span", e.g. a stated entity) is served
    on every response token: served, but said, because its scores off the span mean little."""
    if probe.scope == "response" and probe.artifact.card.get("positions") == "span":
        log.warning(
            "probe %s was trained on span tokens only (e.g. the entity an answer states) and is "
            "scored here on every response token: read its score on the span's tokens, or "
            "score answers with `probewatch eval`",
            probe.name,
        )


class ProbeRegistry:
    """Probe artifacts in `root` that passed every check (`probes`), and those that did not
    (`skipped`: name -> reason)."""

    def __init__(self, root: Path, loaded: LoadedModel, serve_shortcuts: bool = False) -> None:
        self.root = root
        self.loaded = loaded
        self.serve_shortcuts = serve_shortcuts
        self._lock = threading.Lock()
        self.probes: dict[str, MonitoredProbe] = {}
        self.skipped: dict[str, str] = {}
        for stale in clean_stale_scratch(root):
            log.warning("removed %s, left in %s by an interrupted write", stale, root.name)
        self.reload()
        for name, reason in self.skipped.items():
            log.warning("probe %s skipped: %s", name, reason)
        for probe in self.probes.values():
            _warn_if_read_off_its_span(probe)

    def reload(self) -> None:
        probes, skipped = {}, {}
        if self.root.is_dir():
            for path in sorted(p for p in self.root.iterdir() if p.is_dir()):
                if path.name.startswith("."):
                    continue
                try:
                    probes[path.name] = usable_probe(
                        path.name, path, self.loaded, self.serve_shortcuts
                    )
                except ProbewatchError as exc:
                    skipped[path.name] = exc.message
        with self._lock:
            self.probes, self.skipped = probes, skipped

    def describe(self) -> list[dict[str, Any]]:
        return [p.describe() for p in self.probes.values()]

    def add(self, name: str, card: bytes, weights: bytes) -> MonitoredProbe:
        check_name(name)
        target = self.root / name
        if target.exists():
            raise ProbewatchError(f"a probe named {name!r} exists", hint="delete it first")
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=self.root, prefix=scratch_prefix(name)))
        try:
            (scratch / CARD).write_bytes(card)
            (scratch / WEIGHTS).write_bytes(weights)
            usable_probe(name, scratch, self.loaded, self.serve_shortcuts)
            scratch.rename(target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.reload()
        _warn_if_read_off_its_span(self.probes[name])
        return self.probes[name]

    def delete(self, name: str) -> None:
        target = self.root / check_name(name)
        if name not in self.probes or not target.is_dir():
            raise KeyError(name)
        trash = self.root / ".deleted"
        trash.mkdir(exist_ok=True)
        target.rename(trash / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns()}")
        self.reload()


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
                self.skipped[path.name] = _scrub(exc.message, path, path.name)
                continue
            except Exception as exc:  # a malformed card: skipped, never fatal
                self.skipped[path.name] = f"not a usable vector: {type(exc).__name__}"
                continue
            self.vectors[path.name] = vector.vectors

    def steering(self, name: str, strength: float) -> list[tuple[str, torch.Tensor, float]]:
        if name not in self.vectors:
            known = ", ".join(sorted(self.vectors)) or "none"
            raise ProbewatchError(f"unknown steering vector {name!r}", hint=f"served: {known}")
        return [(site, t, strength) for site, t in self.vectors[name].items()]

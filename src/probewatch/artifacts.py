"""Every artifact probewatch writes: a directory with a JSON card (and usually safetensors).
Never pickle.

One module serves all kinds (probes, steering vectors, orthogonalized models, organisms,
lenses...): each kind is an `ArtifactKind` (a versioned format name such as
`probewatch-probe/1`, its file names, the words its messages use), and the same four
operations apply to all of them:

    save_artifact(PROBE, out, tensors, card, overwrite=False)    # atomic, never overwrites
    tensors, card = read_artifact(PROBE, path)                 # format, JSON, finite values
    check_fingerprint(card["model"], loaded, where, PROBE, allow_mismatch, overrides)
    for path in iter_artifacts(root, PROBE): ...               # the artifacts in a directory

Cards are typed (`Card` and its subclasses such as `ProbeCard`, with `to_dict`/`from_dict`);
keys a card class does not name are kept in `extra`, so nothing written is lost on a read.
"""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from probewatch import __version__
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.paths import atomic_directory, refuse_to_replace, write_json_atomic


@dataclass(frozen=True)
class ArtifactKind:
    """What a kind of artifact is called and where its parts live."""

    format: str  # versioned: bump the number when old readers could misread new files
    noun: str  # in messages: "probe", "steering vector"
    made_by: str  # in hints: what writes one
    card_file: str = "card.json"
    tensors_file: str | None = "weights.safetensors"
    made: str = "made"  # "trained" for probes: "<artifact> was trained on <model>"


PROBE = ArtifactKind("probewatch-probe/1", "probe", "`probewatch train`", made="trained")
VECTOR = ArtifactKind(
    "probewatch-vector/1", "vector", "save_vector", tensors_file="vector.safetensors"
)
ORTHOGONALIZED = ArtifactKind(
    "probewatch-orthogonalized/1",
    "orthogonalized model",
    "`probewatch steer orthogonalize`",
    card_file="probewatch-intervention.json",
    tensors_file="direction.safetensors",
)
# An organism is an ordinary model directory (`save_pretrained`) whose card says what was
# planted, how, and what it measured; defined here so datasets built on one can read it.
ORGANISM = ArtifactKind(
    "probewatch-organism/1",
    "organism",
    "`probewatch organism build`",
    card_file="organism.json",
    tensors_file=None,  # the weights are the model directory's own safetensors
    made="built",
)
KINDS: dict[str, ArtifactKind] = {k.format: k for k in (PROBE, VECTOR, ORTHOGONALIZED, ORGANISM)}


def register_kind(kind: ArtifactKind) -> ArtifactKind:
    """Make a new kind known (e.g. organisms, lenses): `MINE = register_kind(ArtifactKind(...))`."""
    KINDS[kind.format] = kind
    return kind


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def card_header(kind: ArtifactKind, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """The keys every card starts with: format, version, creation time (and the model)."""
    header: dict[str, Any] = {
        "format": kind.format,
        "probewatch_version": __version__,
        "created": now(),
    }
    if loaded is not None:
        header["model"] = loaded.describe()
    return header


@contextmanager
def artifact_directory(
    kind: ArtifactKind, out: str | Path, overwrite: bool = False
) -> Iterator[Path]:
    """A scratch directory that becomes `out` only when the block completes: an existing
    `out` is refused unless `overwrite`, and replaced only once the new one is whole. For
    artifacts with more than tensors and a card (a model's `save_pretrained`); finish the
    block with `write_parts`, so the card is written last."""
    target = refuse_to_replace(out, overwrite, f"a saved {kind.noun}", "output directory")
    with atomic_directory(target, overwrite=overwrite) as scratch:
        yield scratch


def write_parts(
    kind: ArtifactKind, scratch: Path, tensors: Mapping[str, torch.Tensor], card: Mapping[str, Any]
) -> None:
    if kind.tensors_file is not None:
        plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        save_file(plain, str(scratch / kind.tensors_file))
    write_json_atomic(scratch / kind.card_file, dict(card))


def save_artifact(
    kind: ArtifactKind,
    out: str | Path,
    tensors: Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write tensors and card atomically; an existing directory is refused unless `overwrite`."""
    with artifact_directory(kind, out, overwrite) as scratch:
        write_parts(kind, scratch, tensors, card)
    return Path(out)


def corrupt(kind: ArtifactKind, path: Path, problem: str) -> ProbewatchError:
    files = " and ".join(f for f in (kind.tensors_file, kind.card_file) if f)
    return ProbewatchError(
        f"{path} is not a valid {kind.noun}: {problem}",
        hint=f"a {kind.noun} directory holds {files}, as written by {kind.made_by}",
    )


def read_card(kind: ArtifactKind, path: str | Path) -> dict[str, Any]:
    """The card of the artifact at `path`, after checking it is JSON of this kind's format."""
    root = Path(path)
    if not root.is_dir():
        raise ProbewatchError(f"no {kind.noun} directory at {root}", hint="check the path")
    try:
        card = json.loads((root / kind.card_file).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise corrupt(kind, root, f"{kind.card_file} is missing") from exc
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: too deep
        raise corrupt(kind, root, f"{kind.card_file} is not valid JSON ({exc})") from exc
    if not isinstance(card, dict) or card.get("format") != kind.format:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise corrupt(kind, root, f"unknown format {found!r}")
    return card


def read_organism_card(path: str | Path) -> dict[str, Any] | None:
    """The organism card of a model directory, or None for an ordinary model (or a build
    that never finished: the card is written last)."""
    if not (Path(path) / ORGANISM.card_file).is_file():
        return None
    try:
        return read_card(ORGANISM, path)
    except ProbewatchError:
        return None


def read_artifact(
    kind: ArtifactKind, path: str | Path
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, card) of the artifact at `path`: the card checked as `read_card` does, the
    tensors readable and finite. Shape checks against the card are the kind's own."""
    root = Path(path)
    card = read_card(kind, root)
    if kind.tensors_file is None:
        return {}, card
    try:
        tensors = load_file(str(root / kind.tensors_file))
    except (FileNotFoundError, SafetensorError, OSError) as exc:
        raise corrupt(kind, root, f"{kind.tensors_file} is missing or unreadable ({exc})") from exc
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise corrupt(kind, root, f"{name} holds NaN or infinite values")
    return tensors, card


def check_fingerprint(
    expected: Mapping[str, Any],
    loaded: LoadedModel,
    where: str,
    kind: ArtifactKind,
    allow_mismatch: bool = False,
) -> str | None:
    """Refuse an artifact made for another width; for other weights (another fingerprint),
    refuse unless `allow_mismatch`, and then return the override to record on the artifact.

    `expected` is the card's "model" entry (LoadedModel.describe() of the model it was made on).
    """
    name = expected.get("name")
    d_model = expected.get("d_model")
    if d_model is None or int(d_model) != loaded.d_model:
        raise ProbewatchError(
            f"{where} reads {d_model}-dim activations but model {loaded.name!r} has d_model "
            f"{loaded.d_model}",
            hint=f"use the model it was {kind.made} on ({name})",
        )
    fingerprint = expected.get("fingerprint")
    if fingerprint == loaded.fingerprint:
        return None
    message = (
        f"{where} was {kind.made} on {name!r} (weights fingerprint {fingerprint}), not on "
        f"{loaded.name!r} ({loaded.fingerprint})"
    )
    if not allow_mismatch:
        raise ProbewatchError(
            message,
            hint=f"load the model it was {kind.made} on, or pass --allow-model-mismatch to use "
            "it anyway (the override is recorded)",
        )
    return f"model mismatch allowed: {message}"


def iter_artifacts(root: str | Path, kind: ArtifactKind | None = None) -> Iterator[Path]:
    """The artifact directories directly under `root`, sorted by name: hidden ones (scratch
    directories of writes in progress) skipped; given `kind`, only those holding its card."""
    base = Path(root)
    if not base.is_dir():
        return
    for path in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if kind is None or (path / kind.card_file).is_file():
            yield path


# --- typed cards ---------------------------------------------------------------------------


@dataclass(kw_only=True)
class Card:
    """The header every card has; subclasses add their fields. Unknown keys live in `extra`
    and are written back, so a card survives a read/write by older code unchanged."""

    kind_format: ClassVar[str] = ""
    # Optional entries left out of the written card while unset (as cards always were).
    optional: ClassVar[frozenset[str]] = frozenset()

    format: str = ""
    probewatch_version: str = __version__
    created: str = field(default_factory=now)
    model: dict[str, Any] = field(default_factory=dict)  # LoadedModel.describe()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.format:
            self.format = self.kind_format

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "extra" and not (f.name in self.optional and getattr(self, f.name) is None)
        }
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})


@dataclass(kw_only=True)
class ProbeCard(Card):
    """What a probe artifact says about itself (see docs/extending.md for each field's use)."""

    kind_format: ClassVar[str] = PROBE.format
    optional: ClassVar[frozenset[str]] = frozenset({"threshold", "calibration", "monitor"})

    kind: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    site: str = ""
    positions: str = "last"
    aggregator: dict[str, Any] | None = None
    dataset: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    threshold: dict[str, Any] | None = None  # {"value": logit, "target_fpr", "set_on"}
    calibration: dict[str, Any] | None = None  # Platt {"a", "b"}
    monitor: dict[str, Any] | None = None  # {"scope": "prompt"|"response", "aggregator"}


@dataclass(kw_only=True)
class VectorCard(Card):
    """What a steering vector says about itself: where it was read and how it was made."""

    kind_format: ClassVar[str] = VECTOR.format
    optional: ClassVar[frozenset[str]] = frozenset({"operations"})

    sites: list[str] = field(default_factory=list)
    positions: str = "last"
    method: str = ""
    dataset: dict[str, Any] | None = None
    operations: list[str] | None = None  # arithmetic applied since extraction

"""Steering directions: one vector per site, extracted from contrast data or from a probe, saved
as `vector.safetensors` (one tensor per site, named like `resid.12`) plus `card.json`.

    vector = extract_directions(loaded, load_dataset("harmful_vs_harmless"), "resid.10-14")
    save_vector(vector, "refusal/")
    vector = load_vector("refusal/", loaded)   # refuses a vector made on other weights

Methods (registered by name, each maps (positive acts, negative acts) -> vector):
    mean_diff   μ₊ − μ₋ (CAA, Arditi et al.); its norm is the natural steering strength
    pca_diff    first principal component of random positive − negative pairs (repeng), signed
                to agree with μ₊ − μ₋ and scaled to the mean projection of the pair differences
Never pickle: tensors go to safetensors, everything else to JSON.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from probewatch.artifacts import (
    VECTOR,
    VectorCard,
    card_header,
    check_fingerprint,
    corrupt,
    now,
    read_artifact,
    save_artifact,
)
from probewatch.config import HarvestSpec, as_positions
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.metrics.labels import require_binary_labels
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import ProbeArtifact
from probewatch.probes.base import PROBE_KINDS, AffineProbe
from probewatch.probes.pca import top_component
from probewatch.sites import expand_sites, parse_site
from probewatch.store import harvest

Method = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]


def _mean_diff(pos: torch.Tensor, neg: torch.Tensor, _seed: int) -> torch.Tensor:
    return pos.double().mean(dim=0) - neg.double().mean(dim=0)


def _pca_diff(pos: torch.Tensor, neg: torch.Tensor, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    n = max(len(pos), len(neg))
    # Every row is used; the smaller class is cycled in shuffled passes.
    pick_pos = torch.randperm(n, generator=generator) % len(pos)
    pick_neg = torch.randperm(n, generator=generator) % len(neg)
    diffs = pos.double()[pick_pos] - neg.double()[pick_neg]
    direction, _ = top_component(diffs)
    if float(direction @ _mean_diff(pos, neg, seed)) < 0:
        direction = -direction
    return direction * (diffs @ direction).mean()


METHODS: dict[str, Method] = {"mean_diff": _mean_diff, "pca_diff": _pca_diff}


@dataclass
class SteeringVector:
    """Vectors keyed by site name (all of one model's d_model), and a card saying where from."""

    vectors: dict[str, torch.Tensor]
    card: dict[str, Any]
    path: Path | None = None
    overrides: list[str] = field(default_factory=list)  # checks the user chose to skip

    @property
    def sites(self) -> list[str]:
        return list(self.vectors)

    @property
    def info(self) -> VectorCard:
        """The card, typed."""
        return VectorCard.from_dict(self.card)

    @property
    def d_model(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def __getitem__(self, site: str) -> torch.Tensor:
        if site not in self.vectors:
            raise ProbewatchError(
                f"this vector has no entry for site {site!r}", hint=f"its sites: {self.sites}"
            )
        return self.vectors[site]

    def _derived(self, vectors: dict[str, torch.Tensor], operation: str) -> "SteeringVector":
        card = {**self.card, "created": now(), "method": f"{self.card.get('method')}|{operation}"}
        card["sites"] = list(vectors)
        card["operations"] = [*self.card.get("operations", []), operation]
        return SteeringVector(vectors, card, overrides=list(self.overrides))

    def scale(self, factor: float) -> "SteeringVector":
        require_finite(factor, "scale factor")
        return self._derived({s: v * factor for s, v in self.vectors.items()}, f"scale({factor})")

    def normalize(self) -> "SteeringVector":
        """Each site's vector scaled to unit norm."""
        for site, v in self.vectors.items():
            if float(v.norm()) == 0:
                raise ProbewatchError(f"the vector at {site} is zero and cannot be normalized")
        return self._derived({s: v / v.norm() for s, v in self.vectors.items()}, "normalize")

    def add(self, other: "SteeringVector", weight: float = 1.0) -> "SteeringVector":
        """self + weight·other at the sites both have (the vectors must share a model)."""
        require_finite(weight, "weight")
        self._require_same_model(other)
        common = [s for s in self.sites if s in other.vectors]
        if not common:
            raise ProbewatchError(
                "the two vectors share no site", hint=f"{self.sites} vs {other.sites}"
            )
        summed = {s: self.vectors[s] + weight * other.vectors[s] for s in common}
        return self._derived(summed, f"add({other.card.get('method')}, {weight})")

    def project(self, onto: "SteeringVector", remove: bool = True) -> "SteeringVector":
        """Per site, remove (default) or keep only the component along `onto`'s vector at that
        site, or along its only vector when it has one site."""
        self._require_same_model(onto)
        out = {}
        for site in self.sites:
            single = len(onto.sites) == 1 and site not in onto.vectors
            unit = _unit(onto.vectors[onto.sites[0]] if single else onto[site])
            along = (self.vectors[site] @ unit) * unit
            out[site] = self.vectors[site] - along if remove else along
        verb = "remove" if remove else "keep"
        return self._derived(out, f"project({verb}, {onto.card.get('method')})")

    def _require_same_model(self, other: "SteeringVector") -> None:
        mine = self.card.get("model", {}).get("fingerprint")
        theirs = other.card.get("model", {}).get("fingerprint")
        if other.d_model != self.d_model or (mine and theirs and mine != theirs):
            raise ProbewatchError(
                "these vectors come from different models",
                hint="combine vectors extracted from the same model",
            )


def _unit(vector: torch.Tensor) -> torch.Tensor:
    norm = vector.norm()
    if float(norm) == 0 or not bool(torch.isfinite(norm)):
        raise ProbewatchError("cannot use a zero or non-finite vector as a direction")
    return vector / norm


def require_finite(value: float, what: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ProbewatchError(f"{what} must be a finite number, got {value!r}")


def build_card(
    loaded: LoadedModel,
    sites: Sequence[str],
    positions: str,
    method: str,
    dataset: dict[str, Any] | None,
) -> dict[str, Any]:
    """The card's common fields; callers add their own keys after these."""
    return {
        **card_header(VECTOR, loaded),
        "sites": list(sites),
        "positions": positions,
        "method": method,
        "dataset": dataset,
    }


def directions_from_activations(
    acts: dict[str, torch.Tensor], labels: torch.Tensor, method: str = "mean_diff", seed: int = 0
) -> dict[str, torch.Tensor]:
    """Per site, the direction from label-0 towards label-1 activations."""
    if method not in METHODS:
        raise ProbewatchError(f"unknown method {method!r}", hint=f"use one of {sorted(METHODS)}")
    require_binary_labels(labels, "the contrast data")
    pos = labels > 0.5
    return {
        site: METHODS[method](x[pos], x[~pos], seed).float().contiguous()
        for site, x in acts.items()
    }


def extract_directions(
    loaded: LoadedModel,
    dataset: Dataset,
    sites: str | list[str],
    positions: str = "last",
    method: str = "mean_diff",
    split: str = "train",
    rows: Sequence[int] | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> SteeringVector:
    """Directions from `dataset` (label 1 minus label 0) at each site, on one split, or on the
    example indices `rows` when given (e.g. the train split minus a validation part).

    With chat examples and positions="last", the read position is the last prompt token (the
    generation prompt), where Arditi et al. read the refusal direction."""
    read = HarvestSpec(
        sites=sites if isinstance(sites, str) else ",".join(sites),
        positions=as_positions(positions),
        batch_size=batch_size,
    )
    store = harvest(loaded, dataset, read, progress=progress)
    keep = set(rows) if rows is not None else None
    acts: dict[str, torch.Tensor] = {}
    labels = torch.empty(0)
    wanted = [s.name for s in expand_sites(sites, loaded.n_layers)]
    for site in wanted:  # a reused store may hold more sites than were asked for
        stored = store.load(site)
        if keep is None:
            stored = stored.rows(split)
            mask = torch.ones(len(stored.label), dtype=torch.bool)
        else:
            mask = torch.tensor(
                [i in keep for i in stored.example_index.tolist()], dtype=torch.bool
            )
        acts[site] = stored.acts[mask]
        labels = stored.label[mask]
    vectors = directions_from_activations(acts, labels, method, seed)
    n_pos = int((labels > 0.5).sum())
    card = build_card(
        loaded,
        list(vectors),
        positions,
        method,
        dataset={
            "name": dataset.name,
            "hash": dataset.hash,
            "split": split if rows is None else f"{len(set(rows))} chosen rows",
            "n_positive": n_pos,
            "n_negative": int(labels.numel()) - n_pos,
        },
    ) | {"direction": "label 1 minus label 0", "seed": seed}
    return SteeringVector(vectors, card)


def from_probe(artifact: ProbeArtifact, loaded: LoadedModel | None = None) -> SteeringVector:
    """A probe's direction in raw activation space (unit norm) at the probe's site.

    Affine probes declare theirs (`Probe.direction()`: for a standardized logistic probe,
    weight / scale); nonlinear probes have no single direction and are refused."""
    direction = artifact.probe.direction()
    if direction is None:
        linear = ", ".join(k for k, cls in PROBE_KINDS.items() if issubclass(cls, AffineProbe))
        raise ProbewatchError(
            f"a {artifact.probe.kind!r} probe has no single direction",
            hint=f"use a linear probe ({linear})",
        )
    vector = direction.float().reshape(-1)
    vector = (vector / vector.norm()).contiguous()
    model = artifact.card["model"]
    card = {
        **card_header(VECTOR),
        "model": loaded.describe() if loaded is not None else model,
        "sites": [artifact.site],
        "positions": artifact.positions,
        "method": f"probe:{artifact.card.get('kind')}",
        "dataset": artifact.card.get("dataset"),
        "probe": {"path": str(artifact.path) if artifact.path else None, "model": model},
        "direction": "unit vector along which the probe's score increases",
    }
    return SteeringVector({artifact.site: vector}, card)


def save_vector(vector: SteeringVector, out: str | Path, overwrite: bool = False) -> Path:
    tensors = {s: v.detach().float() for s, v in vector.vectors.items()}
    card = {**vector.card, "sites": list(tensors)}
    vector.path = save_artifact(VECTOR, out, tensors, card, overwrite)
    return vector.path


def load_vector(
    path: str | Path, loaded: LoadedModel | None = None, allow_model_mismatch: bool = False
) -> SteeringVector:
    """Load and validate a saved vector. Given `loaded`, refuse one of another dimension, one
    whose sites the model lacks, and one made on other weights (unless allowed: recorded)."""
    root = Path(path)
    tensors, card = read_artifact(VECTOR, root)
    if not tensors or sorted(tensors) != sorted(card.get("sites", [])):
        raise corrupt(VECTOR, root, f"tensors {sorted(tensors)} do not match the card's sites")
    d_model = int(card.get("model", {}).get("d_model", -1))
    for site, tensor in tensors.items():
        if tensor.ndim != 1 or tensor.shape[0] != d_model:
            raise corrupt(VECTOR, root, f"{site} has shape {tuple(tensor.shape)}, not ({d_model},)")
    vector = SteeringVector({s: tensors[s] for s in card["sites"]}, card, root)
    if loaded is not None:
        check_vector(vector, loaded, allow_model_mismatch)
    return vector


def check_vector(vector: SteeringVector, loaded: LoadedModel, allow_mismatch: bool = False) -> None:
    """Refuse a vector that cannot apply to `loaded`; a fingerprint mismatch only if not allowed."""
    where = str(vector.path or "this vector")
    model = {**vector.card.get("model", {}), "d_model": vector.d_model}
    if vector.d_model == loaded.d_model:  # else check_fingerprint names the width first
        for site in vector.sites:
            parse_site(site, loaded.n_layers)  # raises if the model lacks the layer
    override = check_fingerprint(model, loaded, where, VECTOR, allow_mismatch)
    if override:
        vector.overrides.append(override)


VectorLike = SteeringVector | torch.Tensor | dict[str, torch.Tensor]


def _check_tensor(loaded: LoadedModel, tensor: torch.Tensor, what: str) -> torch.Tensor:
    if tensor.ndim != 1 or tensor.shape[0] != loaded.d_model:
        raise ProbewatchError(
            f"{what} has shape {tuple(tensor.shape)}; model {loaded.name!r} has d_model "
            f"{loaded.d_model}",
            hint="use a vector extracted from this model",
        )
    if not bool(torch.isfinite(tensor).all()):
        raise ProbewatchError(f"{what} contains NaN or infinite values")
    return tensor.detach()


def site_vectors(
    loaded: LoadedModel,
    vector: VectorLike,
    sites: list[str] | None = None,
    allow_model_mismatch: bool = False,
) -> dict[str, torch.Tensor]:
    """Validated {site: vector}. A bare tensor needs `sites`; a SteeringVector is checked
    against the model (dimension, layers, fingerprint) and may be restricted to `sites`."""
    if isinstance(vector, SteeringVector):
        check_vector(vector, loaded, allow_model_mismatch)
        chosen = sites or vector.sites
        pairs = {site: vector[site] for site in chosen}
    elif isinstance(vector, torch.Tensor):
        if not sites:
            raise ProbewatchError("a bare tensor needs the sites to act on", hint="e.g. resid.12")
        pairs = dict.fromkeys(sites, vector)
    else:
        pairs = {s: v for s, v in vector.items() if not sites or s in sites}
    if not pairs:
        raise ProbewatchError("no sites to act on", hint="give at least one site, e.g. resid.12")
    out = {}
    for site, tensor in pairs.items():
        parsed = parse_site(site, loaded.n_layers)  # a layer out of range raises here
        out[parsed.name] = _check_tensor(loaded, tensor, f"the vector for {site}")
    return out


def unit_direction(
    loaded: LoadedModel, direction: VectorLike, site: str | None = None
) -> torch.Tensor:
    """One unit direction: a tensor, or the vector of `site` (or the only site) of a
    SteeringVector. Returned in float64 on CPU; callers cast to the model's dtype."""
    if isinstance(direction, SteeringVector):
        check_vector(direction, loaded, False)
        if site is None and len(direction.sites) != 1:
            raise ProbewatchError(
                f"this vector has {len(direction.sites)} sites; say which one to ablate",
                hint=f"its sites: {direction.sites}",
            )
        tensor = direction[site or direction.sites[0]]
    elif isinstance(direction, dict):
        if site is None or site not in direction:
            raise ProbewatchError("say which site's vector to ablate", hint=str(list(direction)))
        tensor = direction[site]
    else:
        tensor = direction
    tensor = _check_tensor(loaded, tensor, "the direction").double().cpu()
    norm = float(tensor.norm())
    if norm == 0:
        raise ProbewatchError("the direction is the zero vector", hint="extract a real direction")
    return tensor / norm

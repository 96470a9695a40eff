"""The organism a dataset is labelled on, and the base model it was made from.

An organism is named as a model by its directory (`load_model(path)`); its card
(`organism.json`, see probewatch.organisms) records the base model's name, source and weight
fingerprint. The base is loaded by its embedded name where it has one (so its generations
share the cache with every other use of that model), else from its source, and must have the
fingerprint the card recorded.
"""

from dataclasses import dataclass
from typing import Any

from probewatch.artifacts import read_organism_card
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.models.registry import find_embedded


@dataclass(frozen=True)
class Lineage:
    """An organism, its card and its base model (fingerprint-checked)."""

    organism: LoadedModel
    base: LoadedModel
    card: dict[str, Any]

    @property
    def trigger(self) -> str:
        trigger = self.card.get("trigger")
        if not isinstance(trigger, str) or not trigger:
            raise ProbewatchError(f"organism {self.card.get('organism')!r} has no trigger")
        return trigger


def organism_card(loaded: LoadedModel, kind: str, dataset: str) -> dict[str, Any]:
    """The card of `loaded` as an organism of `kind`, or a clear error naming `dataset`."""
    card = read_organism_card(loaded.source)
    if card is None:
        raise ProbewatchError(
            f"dataset {dataset!r} is labelled on a {kind} organism; {loaded.name!r} is an "
            "ordinary model (its directory has no organism.json)",
            hint=f"build one with `probewatch organism build {kind}` and pass the directory it "
            "prints as --model",
        )
    if card.get("organism") != kind:
        raise ProbewatchError(
            f"dataset {dataset!r} is labelled on a {kind} organism; {loaded.name!r} is a "
            f"{card.get('organism')!r} organism",
            hint=f"build one with `probewatch organism build {kind}`",
        )
    return card


def load_base(card: dict[str, Any], device: str) -> LoadedModel:
    """The base model an organism card names, refused if its weights are not the ones the
    organism was made from."""
    recorded = card.get("base_model") or {}
    name, source, fingerprint = (recorded.get(k) for k in ("name", "source", "fingerprint"))
    if not isinstance(source, str) or not isinstance(fingerprint, str):
        raise ProbewatchError("the organism card does not say which base model it was made from")
    spec = name if isinstance(name, str) and find_embedded(name) is not None else source
    base = load_model(spec, device=device)
    if base.fingerprint != fingerprint:
        raise ProbewatchError(
            f"the base model {spec!r} has other weights than the organism was made from "
            f"(fingerprint {base.fingerprint[:12]}, the card says {fingerprint[:12]})",
            hint="rebuild the organism on this base: probewatch organism build "
            f"{card.get('organism')}",
        )
    return base


def lineage(loaded: LoadedModel, kind: str, dataset: str) -> Lineage:
    card = organism_card(loaded, kind, dataset)
    return Lineage(loaded, load_base(card, str(loaded.device)), card)

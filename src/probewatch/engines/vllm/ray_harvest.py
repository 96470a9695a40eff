"""A harvest spread over Ray Data workers: one model actor per device, each writing its own
shards, one manifest merged at the end, the same store as a single-process harvest.

The examples are cut into contiguous parts; `map_batches` hands parts to a pool of actors
(`concurrency=workers`, each holding one model: vLLM with our plugin, or the HF capture),
and each actor runs the ordinary `store.harvest` on its part into `out/part-NNNNN/`. Only
paths and counts travel back to the driver, never activations. The merged manifest lists
every part's shards in example order (their `first_example` shifted to the whole dataset),
under the whole dataset's spec, so `ActivationStore.open(out)` reads the same rows in the
same order as a store harvested in one process. Rows travel into Ray as JSON, not pickles.
"""

import json
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from probewatch.capture import ActivationCapture
from probewatch.config import EngineChoice, HarvestSpec
from probewatch.data.base import Dataset, DatasetCard, Example
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.paths import write_json_atomic
from probewatch.store import MANIFEST, ActivationStore, _spec, _start_or_resume, harvest

HARVEST_SETTINGS = ("positions", "batch_size", "dtype", "max_shard_mb", "overwrite")


def _example(row: dict[str, Any]) -> Example:
    messages = tuple(row["messages"]) if row.get("messages") else None
    return Example(row["text"], row["label"], row["split"], row["group"], messages, row["meta"])


class PartHarvester:
    """A Ray actor: loads the model once, then harvests each part it is handed."""

    def __init__(self, model: str, out: str, options: dict[str, Any], engine: str) -> None:
        from probewatch.models import load_model

        self.loaded = load_model(model)
        self.out, self.options, self.engine = Path(out), options, engine
        self.capture: Any = None
        if engine == "vllm":
            from probewatch.engines.vllm.harvest import VllmCapture

            positions = options.get("positions", "last")
            choice = EngineChoice(**json.loads(options.pop("choice")))
            self.capture = VllmCapture(self.loaded, options["sites"], positions, choice)
            self.capture.__enter__()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        parts: dict[str, list[Any]] = {"part": [], "first_example": []}
        for part, first, rows, card in zip(
            batch["part"], batch["first_example"], batch["examples"], batch["card"], strict=True
        ):
            examples = [_example(row) for row in json.loads(rows)]
            dataset = Dataset(DatasetCard.from_dict(json.loads(card)), examples)
            settings = {k: v for k, v in self.options.items() if k in HARVEST_SETTINGS}
            spec = HarvestSpec(
                sites=",".join(self.options["sites"]), out=self.out / part, **settings
            )
            harvest(self.loaded, dataset, spec, progress=False, capture=self.capture)
            _shift_examples(self.out / part, int(first))
            parts["part"].append(part)
            parts["first_example"].append(int(first))
        return parts


def _shift_examples(root: Path, first: int) -> None:
    """A part's shards number its examples from 0; the whole store's from `first` (done once,
    recorded in the part's manifest, so a resumed run does not shift twice)."""
    manifest = ActivationStore.open(root).manifest
    if manifest.get("example_offset") == first:
        return
    for shard in manifest["shards"]:
        path = root / shard["file"]
        tensors = load_file(str(path))
        tensors["example_index"] = tensors["example_index"] + (
            first - manifest.get("example_offset", 0)
        )
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    manifest["example_offset"] = first
    write_json_atomic(root / MANIFEST, manifest)


def ray_harvest(
    loaded: LoadedModel,
    model: str,
    dataset: Dataset,
    out: str | Path,
    options: dict[str, Any],
) -> ActivationStore:
    """Harvest `dataset` over Ray Data workers into one store at `out`. `options`: the
    keyword arguments of `store.harvest` (sites, positions, batch_size, dtype, overwrite,
    max_shard_mb), plus `workers` (actors, one per device) and `choice` (an EngineChoice;
    engine "vllm" puts vLLM in each actor). Ray joins a running cluster if there is one,
    else starts a local one."""
    import ray

    options = dict(options)
    workers = int(options.pop("workers", 2))
    choice: EngineChoice = options.pop("choice", EngineChoice())
    if workers < 1:
        raise ProbewatchError("workers must be at least 1")
    root = Path(out)
    with ActivationCapture(loaded.model, options["sites"], options.get("positions", "last")) as c:
        sites = c.site_names  # the names and order a single-process harvest records
    spec = _spec(
        loaded, dataset, sites, options.get("positions", "last"), options.get("dtype", "float32")
    )
    manifest = _start_or_resume(root, spec, bool(options.get("overwrite", False)))
    if manifest.get("complete"):
        return ActivationStore(root, manifest)
    size = max(int(options.get("batch_size", 32)), math.ceil(len(dataset.examples) / workers))
    card = json.dumps(asdict(dataset.card))
    rows = [
        {
            "part": f"part-{start:08d}",
            "first_example": start,
            "examples": json.dumps([ex.to_json() for ex in dataset.examples[start : start + size]]),
            "card": card,
        }
        for start in range(0, len(dataset.examples), size)
    ]
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    actor_options = {**options, "sites": sites}
    if choice.engine == "vllm":
        actor_options["choice"] = json.dumps(asdict(choice))
    done = (
        ray.data.from_items(rows)
        .map_batches(
            PartHarvester,
            fn_constructor_kwargs={
                "model": model,
                "out": str(root),
                "options": actor_options,
                "engine": choice.engine,
            },
            batch_size=1,
            concurrency=workers,
            num_cpus=1,
            num_gpus=1 if loaded.device.type == "cuda" else 0,
        )
        .take_all()
    )
    return _merge(root, manifest, sorted((int(d["first_example"]), str(d["part"])) for d in done))


def _merge(root: Path, manifest: dict[str, Any], parts: list[tuple[int, str]]) -> ActivationStore:
    shards = []
    for first, part in parts:
        sub = ActivationStore.open(root / part)
        if not sub.complete:
            raise ProbewatchError(f"worker part {part} did not finish", hint="run again to resume")
        for shard in sub.manifest["shards"]:
            shards.append(
                {
                    **shard,
                    "file": f"{part}/{shard['file']}",
                    "first_example": first + shard["first_example"],
                }
            )
    manifest["shards"] = shards
    manifest["complete"] = True
    write_json_atomic(root / MANIFEST, manifest)
    return ActivationStore(root, manifest)

"""Streaming activations to disk in shards, with metadata, bounded memory and resume.

Layout of a store directory:

    manifest.json            what was captured (model fingerprint, sites, positions,
                             dataset hash) and the list of finished shards
    shard-00000.safetensors  per-site [rows, d] tensors plus example_index, token_index,
                             label and split (one row per captured position)

A shard is written to a temporary file and renamed, then the manifest is rewritten
atomically; so after an interruption the manifest lists only whole shards, and `harvest`
continues from the first example not in one. Memory holds at most one shard's worth of rows.
"""

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from probewatch import __version__
from probewatch.capture import ActivationCapture
from probewatch.config import HarvestSpec
from probewatch.data.base import SPLITS, Dataset, Example
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel
from probewatch.paths import cache_dir, write_json_atomic
from probewatch.sites import expand_sites
from probewatch.tokens import Batch, Span, encode, encode_chats

FORMAT = "probewatch-activations/1"
MANIFEST = "manifest.json"
VALIDATION_ONE_IN = 5  # one train group in five validates the layer choice
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def encode_examples(
    loaded: LoadedModel,
    examples: Sequence[Example],
    row_offset: int = 0,
    positions: str = "last",
) -> Batch:
    """Text examples are encoded as is; chat examples get a mask of their final response.
    With positions="span" the mask is each example's spans instead (see `Example.spans`)."""
    max_length = getattr(loaded.model.config, "max_position_embeddings", None)
    spans = example_spans(examples, row_offset) if positions == "span" else None
    if all(ex.messages for ex in examples):
        chats = [list(ex.messages or ()) for ex in examples]
        batch = encode_chats(loaded.tokenizer, chats, max_length, row_offset, spans)  # type: ignore[arg-type]
    elif any(ex.messages for ex in examples):
        raise ProbewatchError("a batch mixes chat and plain-text examples", hint="use one kind")
    else:
        texts = [ex.text for ex in examples]
        batch = encode(
            loaded.tokenizer, texts, max_length=max_length, row_offset=row_offset, spans=spans
        )
    if spans is not None:
        _require_span_tokens(batch, spans, examples, row_offset)
    return batch


def example_spans(examples: Sequence[Example], row_offset: int = 0) -> list[list[Span]]:
    """Each example's character spans; an example without one is refused, naming its row."""
    out = []
    for i, ex in enumerate(examples):
        spans = ex.spans
        if not spans:
            where, other = (
                ("its final message", "--positions mask (the whole final message)")
                if ex.messages
                else ("its text", "--positions last or all")
            )
            raise ProbewatchError(
                f"row {row_offset + i} ({clip(ex.text)!r}) has no span, and positions='span' "
                "reads only the tokens of each example's spans",
                hint=f"give every row spans ([[start, end]] character offsets into {where}; "
                f"a 'spans' column in your file), drop the rows without one, or read other "
                f"tokens with {other}",
            )
        out.append(spans)
    return out


def _require_span_tokens(
    batch: Batch, spans: list[list[Span]], examples: Sequence[Example], row_offset: int
) -> None:
    """Refuse a row whose spans select no token (it would silently drop out of the store)."""
    assert batch.token_mask is not None  # encoding with spans always makes a mask
    empty = (~batch.token_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        i = empty[0]
        raise ProbewatchError(
            f"row {row_offset + i} ({clip(examples[i].text)!r}): its spans {spans[i]} cover "
            "no token",
            hint="spans are character offsets (end exclusive) into the text or the chat's final "
            "message",
        )


def clip(text: str, width: int = 40) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis (for messages)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@dataclass
class StoredSite:
    acts: torch.Tensor  # [N, d] float32
    example_index: torch.Tensor  # [N] long
    token_index: torch.Tensor  # [N] long
    label: torch.Tensor  # [N] float32
    split: torch.Tensor  # [N] int8, index into SPLITS

    def rows(self, split: str) -> "StoredSite":
        return split_rows(self, self.split == SPLITS.index(split))


class ActivationStore:
    """A finished (or resumable) store on disk."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path) -> "ActivationStore":
        root = Path(path)
        file = root / MANIFEST
        if not file.is_file():
            raise ProbewatchError(
                f"{root} is not an activation store (no {MANIFEST})",
                hint="create one with `probewatch harvest`",
            )
        try:
            manifest = json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise ProbewatchError(
                f"the store manifest {file} is corrupt ({exc.msg})",
                hint="harvest again into a new directory; the shards alone cannot be trusted",
            ) from exc
        if manifest.get("format") != FORMAT:
            raise ProbewatchError(
                f"{root} has format {manifest.get('format')!r}, expected {FORMAT!r}",
                hint="harvest again with this version of probewatch",
            )
        return cls(root, manifest)

    @property
    def complete(self) -> bool:
        return bool(self.manifest.get("complete"))

    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    def _shard_files(self) -> Iterator[Path]:
        for shard in self.manifest["shards"]:
            yield self.path / shard["file"]

    def load(self, site: str) -> StoredSite:
        """All rows of one site, read shard by shard (only that site's tensors are read)."""
        if site not in self.sites:
            raise ProbewatchError(
                f"site {site!r} is not in the store at {self.path}",
                hint=f"stored sites: {', '.join(self.sites)}",
            )
        if not self.complete:
            raise ProbewatchError(
                f"the store at {self.path} is incomplete (harvest was interrupted)",
                hint="run the same `probewatch harvest` command again to resume it",
            )
        parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("acts", *_ROW_KEYS)}
        for file in self._shard_files():
            try:
                with safe_open(str(file), framework="pt") as f:
                    parts["acts"].append(f.get_tensor(site).float())
                    for key in _ROW_KEYS:
                        parts[key].append(f.get_tensor(key))
            except (SafetensorError, OSError) as exc:
                raise ProbewatchError(
                    f"shard {file} is missing or corrupt ({exc})",
                    hint="harvest again into a new directory",
                ) from exc
        if not parts["acts"]:
            raise ProbewatchError(f"the store at {self.path} has no rows")
        joined = {key: torch.cat(values) for key, values in parts.items()}
        return StoredSite(
            joined["acts"],
            joined["example_index"],
            joined["token_index"],
            joined["label"],
            joined["split"],
        )


_ROW_KEYS = ("example_index", "token_index", "label", "split")


def _spec(
    loaded: LoadedModel, dataset: Dataset, sites: list[str], positions: str, dtype: str
) -> dict[str, Any]:
    return {
        "model": {"name": loaded.name, "fingerprint": loaded.fingerprint},
        "dataset": {
            "name": dataset.name,
            "hash": dataset.hash,
            "n_examples": len(dataset.examples),
        },
        "sites": sites,
        "positions": positions,
        "dtype": dtype,
    }


def _write_shard(
    root: Path, index: int, buffers: dict[str, list[torch.Tensor]], dtype: torch.dtype
) -> tuple[str, int]:
    name = f"shard-{index:05d}.safetensors"
    tensors = {}
    for key, values in buffers.items():
        tensor = torch.cat(values)
        tensors[key] = tensor if key in _ROW_KEYS else tensor.to(dtype)
    tmp = root / f".{name}.tmp"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, root / name)
    return name, int(tensors["example_index"].shape[0])


def harvest(
    loaded: LoadedModel,
    dataset: Dataset,
    spec: HarvestSpec,
    *,
    progress: bool = True,
    capture: Any = None,
) -> ActivationStore:
    """Capture `spec.sites` at `spec.positions` for every example of `dataset` into a store
    at `spec.out`, or, with `out=None`, into the user cache, where a finished store of the
    same model, data and positions (with at least these sites) is reused.

    Running it again with the same arguments after an interruption resumes; with different
    arguments it refuses (unless `spec.overwrite`) rather than mixing incompatible activations.
    `capture` is another engine's capture with ActivationCapture's interface (`site_names`,
    `run(batch) -> Captured`), already started, e.g. `engines.vllm.harvest.VllmCapture`.
    """
    if spec.out is None:
        return _harvest_cached(loaded, dataset, spec, progress)
    if not dataset.examples:
        raise ProbewatchError(f"dataset {dataset.name!r} has no examples")
    positions, dtype, batch_size = spec.positions, spec.dtype, spec.batch_size
    root = Path(spec.out)
    with (
        contextlib.nullcontext(capture)
        if capture
        else ActivationCapture(loaded.model, spec.sites, positions=positions) as capture
    ):
        settings = _spec(loaded, dataset, capture.site_names, positions, dtype)
        manifest = _start_or_resume(root, settings, spec.overwrite)
        done = sum(shard["n_examples"] for shard in manifest["shards"])
        examples = dataset.examples
        bytes_per_row = len(capture.site_names) * loaded.d_model * DTYPES[dtype].itemsize
        max_rows = max(1, int(spec.max_shard_mb * 2**20 // bytes_per_row))
        buffers: dict[str, list[torch.Tensor]] = {k: [] for k in (*capture.site_names, *_ROW_KEYS)}
        buffered_rows = buffered_examples = 0
        bar = tqdm(
            total=len(examples),
            initial=done,
            desc=f"harvest {dataset.name}",
            unit="ex",
            disable=not progress,
        )

        def flush() -> None:
            nonlocal buffered_rows, buffered_examples
            if not buffered_examples:
                return
            name, rows = _write_shard(root, len(manifest["shards"]), buffers, DTYPES[dtype])
            manifest["shards"].append(
                {
                    "file": name,
                    "first_example": done - buffered_examples,
                    "n_examples": buffered_examples,
                    "n_rows": rows,
                }
            )
            write_json_atomic(root / MANIFEST, manifest)
            for values in buffers.values():
                values.clear()
            buffered_rows = buffered_examples = 0

        with bar:
            for start in range(done, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                batch = encode_examples(loaded, chunk, row_offset=start, positions=positions)
                captured = capture.run(batch)
                rows = captured.example_index
                for name, acts in captured.acts.items():
                    buffers[name].append(acts.to(DTYPES[dtype]))
                buffers["example_index"].append(rows + start)
                buffers["token_index"].append(captured.token_index)
                buffers["label"].append(
                    torch.tensor([chunk[r].label for r in rows.tolist()], dtype=torch.float32)
                )
                buffers["split"].append(
                    torch.tensor(
                        [SPLITS.index(chunk[r].split) for r in rows.tolist()], dtype=torch.int8
                    )
                )
                buffered_rows += int(rows.shape[0])
                buffered_examples += len(chunk)
                done += len(chunk)
                bar.update(len(chunk))
                if buffered_rows >= max_rows:
                    flush()
            flush()
    manifest["complete"] = True
    write_json_atomic(root / MANIFEST, manifest)
    return ActivationStore(root, manifest)


def _start_or_resume(root: Path, spec: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    manifest_file = root / MANIFEST
    if manifest_file.is_file() and not overwrite:
        existing = ActivationStore.open(root).manifest
        if existing.get("spec") != spec:
            raise ProbewatchError(
                f"{root} already holds activations made with other settings",
                hint="use a new --out directory, or --overwrite to replace it",
            )
        return existing
    if root.exists() and any(root.iterdir()) and not manifest_file.is_file():
        raise ProbewatchError(
            f"{root} exists and is not an activation store; refusing to write into it",
            hint="choose a new or empty --out directory",
        )
    if overwrite and root.exists():
        for file in root.glob("shard-*.safetensors"):
            file.unlink()
    root.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "probewatch_version": __version__,
        "spec": spec,
        "sites": spec["sites"],
        "splits": list(SPLITS),
        "shards": [],
        "complete": False,
    }
    write_json_atomic(manifest_file, manifest)
    return manifest


def store_path(
    loaded: LoadedModel, dataset: Dataset, sites: Sequence[str], spec: HarvestSpec
) -> Path:
    """Where the user cache keeps the store of these inputs."""
    sites_key = hashlib.sha256(",".join(sites).encode()).hexdigest()[:8]
    dtype = "" if spec.dtype == "float32" else f"-{spec.dtype}"  # float32 paths predate dtype
    return (
        cache_dir()
        / "activations"
        / f"{loaded.name}-{loaded.fingerprint[:8]}"
        / f"{dataset.name}-{dataset.hash}-{spec.positions}{dtype}-{sites_key}"
    )


def _harvest_cached(
    loaded: LoadedModel, dataset: Dataset, spec: HarvestSpec, progress: bool
) -> ActivationStore:
    names = [site.name for site in expand_sites(spec.sites, loaded.n_layers)]
    path = store_path(loaded, dataset, names, spec)
    if (path / MANIFEST).is_file():
        store = ActivationStore.open(path)
        if store.complete:
            return store
    # A finished store of the same model, data and positions with more sites serves too
    # (e.g. one site of an all-layer sweep).
    for candidate in sorted(path.parent.glob(path.name.rsplit("-", 1)[0] + "-*")):
        try:
            other = ActivationStore.open(candidate)
        except ProbewatchError:
            continue
        if other.complete and set(names) <= set(other.sites):
            return other
    return harvest(loaded, dataset, replace(spec, out=path), progress=progress)


def token_order(stored: StoredSite) -> torch.Tensor:
    """Row order that groups rows by example and sorts each example's rows by token."""
    if stored.token_index.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    span = int(stored.token_index.max()) + 1
    return torch.argsort(stored.example_index * span + stored.token_index)


def split_rows(stored: StoredSite, mask: torch.Tensor) -> StoredSite:
    """The rows of `stored` where `mask` is true."""
    return StoredSite(
        stored.acts[mask],
        stored.example_index[mask],
        stored.token_index[mask],
        stored.label[mask],
        stored.split[mask],
    )


def validation_mask(stored: StoredSite, dataset: Dataset, seed: int) -> torch.Tensor:
    """Rows of the validation part: one group in VALIDATION_ONE_IN, by a hash of the group,
    so no group (a city, a prompt family) is on both sides of the layer choice."""
    groups = [dataset.examples[i].group or str(i) for i in stored.example_index.tolist()]
    chosen = {g: in_validation(g, seed) for g in set(groups)}
    return torch.tensor([chosen[g] for g in groups])


def in_validation(group: str, seed: int) -> bool:
    """Whether a train group (an example's `group`, else its index) validates the layer choice."""
    return (
        int(hashlib.sha256(f"val:{seed}:{group}".encode()).hexdigest()[:8], 16)
        % (VALIDATION_ONE_IN)
        == 0
    )

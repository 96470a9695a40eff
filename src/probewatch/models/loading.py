"""`load_model(spec)`: one call for embedded package models, local directories and hub ids.

Embedded models ship as GGUF. transformers dequantizes GGUF to float, which takes ~20 s, so
the first load converts once to safetensors in the user cache; the conversion is written to
a scratch directory and renamed into place, so an interrupted one never leaves a cache that
loads broken.
"""

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from probewatch.errors import ProbewatchError
from probewatch.models.fingerprint import weights_fingerprint
from probewatch.models.registry import (
    EMBEDDED_MODELS,
    MARKER,
    EmbeddedModel,
    converted_cache_path,
    find_embedded,
    require_installed,
)
from probewatch.paths import atomic_directory, write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A causal LM ready for probing: the HF model and tokenizer plus who they are."""

    model: PreTrainedModel
    tokenizer: Any
    name: str
    source: str
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    @property
    def n_layers(self) -> int:
        from probewatch.sites import layer_list

        return len(layer_list(self.model))

    @property
    def d_model(self) -> int:
        embeddings = self.model.get_input_embeddings()
        weight = embeddings.weight
        assert isinstance(weight, torch.Tensor)
        return int(weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "architecture": type(self.model).__name__,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
        }


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ProbewatchError(f"unknown device {device!r}", hint="use cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ProbewatchError("device cuda was asked for but no GPU is visible", hint="use cpu")
    return resolved


# Families trained with a BOS token at the start of every sequence, whose output is garbage
# without it. transformers' GGUF conversion drops the tokenizer's add_bos flag, so Gemma 3 from
# a GGUF answered "The capital of France is" with " France. The The The ..." until this rule.
BOS_FAMILIES = ("gemma",)


def require_bos(tokenizer: Any, model_type: str) -> None:
    """Make the tokenizer prepend BOS for families that need it, if it does not already."""
    if not model_type.startswith(BOS_FAMILIES) or tokenizer.bos_token_id is None:
        return
    if tokenizer("x").input_ids[:1] != [tokenizer.bos_token_id]:
        tokenizer.add_bos_token = True
        if tokenizer("x").input_ids[:1] != [tokenizer.bos_token_id]:
            raise ProbewatchError(
                f"the {model_type} tokenizer does not prepend its BOS token, which the model needs",
                hint="load a tokenizer that adds BOS (add_bos_token=true)",
            )


def _convert_gguf(embedded: EmbeddedModel, target: Path) -> None:
    gguf = require_installed(embedded)
    log.info("converting %s from GGUF (first use only, ~20 s)", embedded.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are already dequantized floats; without this, save_pretrained would
    # record a GGUF quantization config that nothing can load back.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    fingerprint = weights_fingerprint(model)
    try:
        with atomic_directory(target, overwrite=target.exists()) as scratch:
            model.save_pretrained(scratch)
            tokenizer.save_pretrained(scratch)
            write_json_atomic(
                scratch / MARKER,
                {
                    "name": embedded.name,
                    "package": embedded.package,
                    "package_version": embedded.version(),
                    "gguf": gguf.name,
                    "fingerprint": fingerprint,
                },
            )
    except OSError:
        # Another process finished the same conversion first: theirs is as good as ours.
        if not (target / MARKER).is_file():
            raise


def _load_embedded(embedded: EmbeddedModel) -> tuple[Path, str]:
    target = converted_cache_path(embedded) if embedded.installed() else None
    if target is None:
        require_installed(embedded)  # raises with the install command
        raise AssertionError("unreachable")
    if not (target / MARKER).is_file():
        if target.exists():  # a foreign or damaged directory: never load it, rebuild beside it
            shutil.rmtree(target)
        _convert_gguf(embedded, target)
    marker = json.loads((target / MARKER).read_text())
    return target, str(marker["fingerprint"])


def load_model(
    spec: str = "default",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load a causal LM by embedded name ("default", "gemma3-270m"), local path or hub id.

    Hub ids load only from the local Hugging Face cache unless PROBEWATCH_ALLOW_DOWNLOAD=1.
    """
    torch_device = resolve_device(device)
    embedded = find_embedded(spec)
    fingerprint: str | None = None
    if embedded is not None:
        path, fingerprint = _load_embedded(embedded)
        name, source = embedded.name, str(path)
        if dtype != torch.float32:
            fingerprint = None  # the stored fingerprint is of the float32 weights
    elif Path(spec).expanduser().is_dir():
        path = Path(spec).expanduser().resolve()
        name, source = path.name, str(path)
    elif Path(spec).expanduser().exists():
        raise ProbewatchError(
            f"{spec!r} is a file, not a model directory",
            hint="pass the directory that holds config.json and the weights",
        )
    else:
        path = Path(spec)
        name, source = spec, spec
    local_only = os.environ.get("PROBEWATCH_ALLOW_DOWNLOAD") != "1"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, local_files_only=local_only
        )
    except (OSError, ValueError) as exc:
        available = ", ".join(m.name for m in EMBEDDED_MODELS)
        raise ProbewatchError(
            f"model {spec!r} is not available offline ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]})",
            hint=f"use an embedded model ({available}; see `probewatch models`), a local "
            "directory with config.json and weights, or a hub id already in the local HF cache",
        ) from exc
    model.to(torch_device)  # type: ignore[arg-type]
    model.eval()
    require_bos(tokenizer, str(getattr(model.config, "model_type", "")))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # Right padding keeps real tokens at positions 0..n-1, as in an unbatched pass.
    tokenizer.padding_side = "right"
    return LoadedModel(model, tokenizer, name, source, _fingerprint=fingerprint)

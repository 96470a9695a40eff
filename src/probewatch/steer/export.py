"""Export a steering vector as a llama.cpp control vector (GGUF), as repeng's `export_gguf` does.

The file has architecture "controlvector", the keys `controlvector.model_hint` (the model
type, e.g. "llama") and `controlvector.layer_count` (the number of direction tensors, as
repeng writes it), and one float32 tensor `direction.{N}` per layer.

Layer numbering, checked against llama.cpp (common/common.cpp `common_control_vector_load_one`
and src/llama-adapter.cpp `llama_adapter_cvec`): `direction.N` is stored at slot N−1 of the
loaded buffer ("layer 1 at [0]") and applied by `apply_to(cur, il)` with il = N, which every
model graph calls on the output of (0-based) block il. So `direction.N` is added to the
output of block N, which is probewatch's `resid.N` (HF hidden_states[N+1]). N starts at 1:
llama.cpp has no slot for block 0's output (it rejects `direction.0`), so a vector at
`resid.0` cannot be exported. Only `resid.*` sites have a llama.cpp equivalent.

llama.cpp adds the vector times `--control-vector-scaled FILE STRENGTH` (1 by default), the
same as `add_vectors(loaded, vector, scale)` here; `scale` is baked in at export.
"""

import os
from pathlib import Path

import numpy as np

from probewatch.errors import ProbewatchError
from probewatch.paths import refuse_to_replace
from probewatch.sites import Site
from probewatch.steer.directions import SteeringVector, require_finite

ARCH = "controlvector"


def gguf_layer(site: str) -> int:
    """The llama.cpp `direction.N` number of a probewatch site: resid.N -> N (N >= 1)."""
    parts = site.split(".")
    if len(parts) != 2 or parts[0] != "resid" or not parts[1].isdigit():
        raise ProbewatchError(
            f"site {site!r} has no llama.cpp control-vector equivalent",
            hint="llama.cpp adds control vectors to block outputs only: use resid.N sites",
        )
    layer = int(parts[1])
    if layer == 0:
        raise ProbewatchError(
            "llama.cpp cannot steer the output of block 0 (resid.0): its control vectors "
            "start at direction.1 = the output of block 1",
            hint="export the other sites only (--sites), or steer from resid.1",
        )
    return layer


def site_of_gguf_layer(layer: int) -> str:
    """Inverse of `gguf_layer`: direction.N -> resid.N."""
    return Site("resid", layer).name


def export_gguf(
    vector: SteeringVector,
    out: str | Path,
    scale: float = 1.0,
    model_hint: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `vector * scale` as a llama.cpp control vector. `model_hint` defaults to the
    card's model type (llama.cpp only prints it). The file appears whole or not at all, and an
    existing file is replaced only with `overwrite`."""
    import gguf  # deferred: only export needs it

    require_finite(scale, "the export scale")
    target = refuse_to_replace(out, overwrite, instead="output file")
    layers = {gguf_layer(site): tensor for site, tensor in vector.vectors.items()}
    hint = model_hint or str(vector.card.get("model", {}).get("model_type") or "")
    if not hint:
        architecture = str(vector.card.get("model", {}).get("architecture", "unknown"))
        hint = architecture.removesuffix("ForCausalLM").lower() or "unknown"
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(str(scratch), ARCH)
        writer.add_string(f"{ARCH}.model_hint", hint)
        writer.add_uint32(f"{ARCH}.layer_count", len(layers))
        for layer in sorted(layers):
            data = (layers[layer].detach().float().cpu() * scale).numpy().astype(np.float32)
            writer.add_tensor(f"direction.{layer}", data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)
    return target

"""Canonical names for hook points, mapped to module paths by one table per architecture family.

    embed          output of the token embedding (== hidden_states[0])
    resid.{i}      output of block i (== hidden_states[i+1], except the last block, whose
                   HF hidden state has the final norm applied: that is `final_norm`)
    attn_out.{i}   output of block i's attention module (before any post-attention norm)
    mlp_out.{i}    output of block i's MLP module (before any post-MLP norm)
    final_norm     output of the final norm, the input to the unembedding

Patterns: `resid.*` (every layer), `resid.3-7` (inclusive range), `all` (= `resid.*`).
"""

import re
from dataclasses import dataclass, replace

from torch import nn

from probewatch.errors import ProbewatchError


@dataclass(frozen=True)
class ArchTable:
    """Where the canonical sites live in one architecture family. Paths are attribute paths."""

    layers: str  # the ModuleList of blocks, from the top model
    embed: str  # module whose output is hidden_states[0]
    final_norm: str
    attn: str  # relative to a block
    mlp: str  # relative to a block
    # For weight orthogonalization: the embedding weights (from the top model) and the modules
    # of a block whose outputs are added to the residual stream unnormalized. Left empty for
    # families whose post-sublayer norms would re-normalize a projected output (Gemma 2/3,
    # OLMo 2) or that are not verified: orthogonalization refuses them.
    embeddings: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()


_LLAMA_LIKE = ArchTable(
    layers="model.layers",
    embed="model.embed_tokens",
    final_norm="model.norm",
    attn="self_attn",
    mlp="mlp",
)
_PRE_NORM = replace(
    _LLAMA_LIKE,
    embeddings=("model.embed_tokens.weight",),
    writers=("self_attn.o_proj", "mlp.down_proj"),
)

# Keyed by config.model_type. Gemma's scaled embedding module already includes the sqrt(d)
# scale, so its output equals hidden_states[0] as for Llama.
ARCH_TABLES: dict[str, ArchTable] = {
    "llama": _PRE_NORM,
    "mistral": _PRE_NORM,
    "qwen2": _PRE_NORM,
    "qwen3": _PRE_NORM,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "smollm3": _PRE_NORM,
    "olmo2": _LLAMA_LIKE,
    "phi3": _LLAMA_LIKE,
    # GPT-2 adds position embeddings after wte; the dropout after the sum is hidden_states[0].
    "gpt2": ArchTable(
        layers="transformer.h",
        embed="transformer.drop",
        final_norm="transformer.ln_f",
        attn="attn",
        mlp="mlp",
        embeddings=("transformer.wte.weight", "transformer.wpe.weight"),
        writers=("attn.c_proj", "mlp.c_proj"),  # Conv1D: weight is [d_in, d_out]
    ),
}

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_MLP_NAMES = ("mlp", "feed_forward", "ffn")
_KIND_ORDER = {"attn_out": 0, "mlp_out": 1, "resid": 2}


@dataclass(frozen=True, order=True)
class Site:
    """A parsed site name. `layer` is None for `embed` and `final_norm`."""

    kind: str
    layer: int | None = None

    @property
    def name(self) -> str:
        return self.kind if self.layer is None else f"{self.kind}.{self.layer}"

    def depth(self, n_layers: int) -> tuple[int, int]:
        """Order in which the forward pass reaches this site (for stopping early)."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind == "final_norm":
            return (n_layers, 0)
        assert self.layer is not None
        return (self.layer, _KIND_ORDER[self.kind])


def _get_path(root: nn.Module, path: str) -> nn.Module | None:
    module: nn.Module | None = root
    for part in path.split("."):
        if module is None:
            return None
        module = getattr(module, part, None)
    return module if isinstance(module, nn.Module) else None


def arch_table(model: nn.Module) -> ArchTable | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return ARCH_TABLES.get(str(model_type)) if model_type else None


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The model's list of blocks: from its table, else the ModuleList of num_hidden_layers."""
    table = arch_table(model)
    if table is not None:
        found = _get_path(model, table.layers)
        if isinstance(found, nn.ModuleList):
            return found
    n_layers = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [
        module
        for _, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0
    ]
    if n_layers is not None:
        exact = [module for module in candidates if len(module) == n_layers]
        if exact:
            return exact[0]
    if candidates:
        return max(candidates, key=len)
    raise ProbewatchError(
        f"cannot find the list of transformer blocks in {type(model).__name__}",
        hint="add an ArchTable for its config.model_type to probewatch.sites.ARCH_TABLES",
    )


def _child(block: nn.Module, names: tuple[str, ...], preferred: str | None) -> nn.Module | None:
    for name in (preferred, *names) if preferred else names:
        found = _get_path(block, name)
        if found is not None:
            return found
    return None


def parse_site(name: str, n_layers: int) -> Site:
    text = name.strip()
    if text in ("embed", "final_norm"):
        return Site(text)
    match = re.fullmatch(r"(resid|attn_out|mlp_out)\.(-?\d+)", text)
    if not match:
        raise ProbewatchError(
            f"unknown site {name!r}",
            hint="sites are embed, final_norm, resid.N, attn_out.N or mlp_out.N "
            "(patterns: resid.*, resid.3-7, all)",
        )
    layer = int(match.group(2))
    if layer < 0:
        layer += n_layers
    if not 0 <= layer < n_layers:
        raise ProbewatchError(
            f"site {name!r} is out of range: this model has layers 0..{n_layers - 1}",
            hint=f"use a layer between 0 and {n_layers - 1} (or -1 for the last)",
        )
    return Site(match.group(1), layer)


def expand_sites(spec: str | list[str], n_layers: int) -> list[Site]:
    """Parse a comma list or list of names and patterns into distinct sites in forward order."""
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    sites: list[Site] = []
    for raw in (n.strip() for n in names):
        if not raw:
            continue
        if raw == "all":
            raw = "resid.*"
        pattern = re.fullmatch(r"(resid|attn_out|mlp_out)\.(\*|(\d+)-(\d+))", raw)
        if pattern:
            kind = pattern.group(1)
            if pattern.group(2) == "*":
                sites += [Site(kind, i) for i in range(n_layers)]
            else:
                lo, hi = int(pattern.group(3)), int(pattern.group(4))
                sites += [parse_site(f"{kind}.{i}", n_layers) for i in range(lo, hi + 1)]
        else:
            sites.append(parse_site(raw, n_layers))
    if not sites:
        raise ProbewatchError("no sites given", hint="e.g. --sites resid.12 or --sites all")
    unique = sorted(set(sites), key=lambda s: s.depth(n_layers))
    return unique


def resolve_module(model: nn.Module, site: Site) -> nn.Module:
    """The module whose forward output is the site's activation."""
    table = arch_table(model)
    if site.kind == "embed":
        found = _get_path(model, table.embed) if table else None
        found = found or model.get_input_embeddings()  # type: ignore[operator]
        assert isinstance(found, nn.Module)
        return found
    if site.kind == "final_norm":
        found = _get_path(model, table.final_norm) if table else None
        if found is None:
            raise ProbewatchError(
                f"no final_norm site known for {type(model).__name__}",
                hint="add an ArchTable entry for its config.model_type",
            )
        return found
    assert site.layer is not None
    block = layer_list(model)[site.layer]
    if site.kind == "resid":
        return block
    if site.kind == "attn_out":
        found = _child(block, _ATTN_NAMES, table.attn if table else None)
    else:
        found = _child(block, _MLP_NAMES, table.mlp if table else None)
    if found is None:
        raise ProbewatchError(
            f"cannot find the {site.kind} module in block {site.layer} of {type(model).__name__}",
            hint="add an ArchTable entry for its config.model_type",
        )
    return found

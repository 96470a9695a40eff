"""Where a loaded HF model writes into its residual stream, found by structure, not by name.

One short probing forward (three tokens) records, per block:

- the attention's output projection: the last Linear/Conv1D the attention module calls; its
  *input* is the concatenation of every head's `z`;
- a post-attention norm, if any: a child of the block whose input *is* the attention output
  (Gemma 2/3, OLMo 2). Llama's `post_attention_layernorm` reads the residual sum instead, so it
  is (correctly) not picked up: names lie across families, data flow does not;
- the same for the MLP (its down projection; a post-feedforward norm).

It then checks that the block is additive on the real numbers: block output = block input +
attention contribution + MLP contribution. Every attribution builds on this check, so a family
that breaks it is refused instead of silently attributed wrong.
"""

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from probewatch.errors import ProbewatchError
from probewatch.hooks import hidden_of
from probewatch.sites import Site, layer_list, resolve_module


def _is_projection(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) stores its weight as [in, out]; nn.Linear as [out, in].
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def projection_weight(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(W [out, in], bias [out] or None) of a Linear or Conv1D, as views of the real weights."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if type(module).__name__ == "Conv1D":
        weight = weight.T
    bias = getattr(module, "bias", None)
    return weight, bias if isinstance(bias, torch.Tensor) else None


class FrozenNorm:
    """A norm as the affine map it is once its scale is frozen: y = s · g ⊙ C(x) + β, with C
    centring for LayerNorm and the identity for RMSNorm. `g` is read off the module's behaviour
    (so Gemma's 1 + γ needs no special case); `s` comes from the real forward, per row."""

    def __init__(self, module: nn.Module, d_model: int) -> None:
        self.module = module
        self.centred = isinstance(module, nn.LayerNorm)
        param = next(module.parameters(), None)
        dtype = param.dtype if param is not None else torch.float32
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            if self.centred:
                assert isinstance(module, nn.LayerNorm)
                ones = torch.ones(d_model, device=device, dtype=dtype)
                gain = module.weight if module.weight is not None else ones
                self.bias = (module.bias if module.bias is not None else ones * 0).double()
                self.gain = gain.double()
            else:
                # At a large constant input the RMS is the constant itself (eps is negligible).
                big = torch.full((1, d_model), 1e3, device=device, dtype=dtype)
                self.bias = hidden_of(module(torch.zeros_like(big)))[0].double()
                self.gain = (hidden_of(module(big))[0].double() - self.bias).detach()

    def centre(self, x: torch.Tensor) -> torch.Tensor:
        return x - x.mean(dim=-1, keepdim=True) if self.centred else x

    def scale(self, x: torch.Tensor, y: torch.Tensor, where: str) -> torch.Tensor:
        """Per-row s with y = s · g ⊙ C(x) + β; refuses a module that is not such a norm."""
        x, y = x.double(), y.double()
        gx = self.gain * self.centre(x)
        s = (y - self.bias).norm(dim=-1) / gx.norm(dim=-1).clamp_min(1e-30)
        error = (s[:, None] * gx + self.bias - y).abs().max()
        if float(error) > 1e-3 * (1.0 + float(y.abs().max())):
            raise ProbewatchError(
                f"{where} ({type(self.module).__name__}) does not behave as an RMSNorm or a "
                f"LayerNorm (max error {float(error):.2e}), so it cannot be frozen",
                hint="attribution supports the families in probewatch.sites.ARCH_TABLES",
            )
        return s

    def pull_back(self, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Direction in x-space whose dot with any part of x gives that part's share of u·y."""
        return self.centre(self.gain * u * s[:, None])


@dataclass
class Block:
    attn: nn.Module
    out_proj: nn.Module  # its input is every head's z, concatenated
    post_attn_norm: FrozenNorm | None
    mlp: nn.Module
    down_proj: nn.Module  # its input is the MLP's neurons
    post_mlp_norm: FrozenNorm | None


@dataclass
class Anatomy:
    model: nn.Module
    blocks: list[Block]
    embed: nn.Module
    final_norm: FrozenNorm
    n_heads: int
    d_head: int
    d_model: int
    unembed: torch.Tensor  # [V, d]
    unembed_bias: torch.Tensor | None  # [V]
    softcap: float | None  # final logit soft-capping (Gemma 2)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def head_weights(self, layer: int) -> torch.Tensor:
        """W_O of `layer` as [d_model, H, d_head] (a view; H·d_head need not equal d_model)."""
        weight, _ = projection_weight(self.blocks[layer].out_proj)
        return weight.reshape(weight.shape[0], self.n_heads, self.d_head)

    def logits_from_normed(
        self, normed: torch.Tensor, columns: list[int] | None = None
    ) -> torch.Tensor:
        """The model's logits from final-norm outputs, soft-capping included (only the given
        token ids' columns, in that order, when `columns` is set)."""
        unembed, bias = self.unembed, self.unembed_bias
        if columns is not None:
            unembed = unembed[columns]
            bias = None if bias is None else bias[columns]
        logits = normed.to(unembed.dtype) @ unembed.T
        if bias is not None:
            logits = logits + bias
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


_CACHE: "weakref.WeakKeyDictionary[nn.Module, Anatomy]" = weakref.WeakKeyDictionary()


def anatomy(model: nn.Module) -> Anatomy:
    """The model's anatomy (cached per model object; it holds views, never copies)."""
    found = _CACHE.get(model)
    if found is None:
        found = _discover(model)
        _CACHE[model] = found
    return found


def _recorder(calls: list[nn.Module], outputs: dict[nn.Module, torch.Tensor]) -> Any:
    def hook(module: nn.Module, _args: Any, output: Any) -> None:
        calls.append(module)
        outputs[module] = hidden_of(output)

    return hook


def _discover(model: nn.Module) -> Anatomy:
    blocks = layer_list(model)
    n_layers = len(blocks)
    attns = [resolve_module(model, Site("attn_out", i)) for i in range(n_layers)]
    mlps = [resolve_module(model, Site("mlp_out", i)) for i in range(n_layers)]
    embed = resolve_module(model, Site("embed"))
    final = resolve_module(model, Site("final_norm"))
    order: dict[nn.Module, list[nn.Module]] = {m: [] for m in (*attns, *mlps)}
    outputs: dict[nn.Module, torch.Tensor] = {}
    inputs: dict[nn.Module, torch.Tensor] = {}
    handles = []

    def record(module: nn.Module, args: Any, output: Any) -> None:
        outputs[module] = hidden_of(output)
        if args and isinstance(args[0], torch.Tensor):
            inputs[module] = args[0]

    def record_kw(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        record(module, args or (kwargs.get("hidden_states"),), output)

    try:
        for parent in order:
            for sub in parent.modules():
                if _is_projection(sub):
                    handles.append(sub.register_forward_hook(_recorder(order[parent], outputs)))
        for block in blocks:
            handles.append(block.register_forward_hook(record_kw, with_kwargs=True))
            for child in block.children():
                handles.append(child.register_forward_hook(record_kw, with_kwargs=True))
        handles.append(final.register_forward_hook(record))
        handles.append(embed.register_forward_hook(record))
        ids = torch.tensor([[1, 2, 3]], device=next(model.parameters()).device)
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    d_model = int(outputs[embed].shape[-1])
    trace = _Trace(order, inputs, outputs, d_model)
    parsed = [_block(i, blocks[i], attns[i], mlps[i], trace) for i in range(n_layers)]
    config = getattr(model, "config", None)
    n_heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0))
    in_features = projection_weight(parsed[0].out_proj)[0].shape[1]
    if n_heads <= 0 or in_features % n_heads:
        raise ProbewatchError(
            f"cannot split the attention output projection ({in_features} inputs) into heads",
            hint="the model's config needs num_attention_heads",
        )
    head = model.get_output_embeddings()  # type: ignore[operator]
    unembed, unembed_bias = projection_weight(head)
    softcap = getattr(config, "final_logit_softcapping", None)
    return Anatomy(
        model=model,
        blocks=parsed,
        embed=embed,
        final_norm=FrozenNorm(final, d_model),
        n_heads=n_heads,
        d_head=in_features // n_heads,
        d_model=d_model,
        unembed=unembed,
        unembed_bias=unembed_bias,
        softcap=float(softcap) if softcap else None,
    )


def _post_norm(
    block: nn.Module,
    source: torch.Tensor,
    inputs: dict[nn.Module, torch.Tensor],
    outputs: dict[nn.Module, torch.Tensor],
) -> nn.Module | None:
    for child in block.children():
        seen = inputs.get(child)
        if next(child.parameters(), None) is None:  # dropout/identity: a no-op, not a norm
            continue
        if seen is not None and (seen is source or seen.data_ptr() == source.data_ptr()):
            if child not in outputs or outputs[child].shape != source.shape:
                continue
            return child
    return None


@dataclass
class _Trace:
    """What the probing forward saw."""

    order: dict[nn.Module, list[nn.Module]]  # projections each attn/MLP called, in order
    inputs: dict[nn.Module, torch.Tensor]
    outputs: dict[nn.Module, torch.Tensor]
    d_model: int


def _block(index: int, block: nn.Module, attn: nn.Module, mlp: nn.Module, trace: _Trace) -> Block:
    order, inputs, outputs, d_model = trace.order, trace.inputs, trace.outputs, trace.d_model
    where = f"block {index} of {type(block).__name__}"
    if not order[attn] or not order[mlp]:
        raise ProbewatchError(f"{where}: no output projection found in its attention or MLP")
    attn_out, mlp_out = outputs[attn], outputs[mlp]
    for module, out in ((attn, attn_out), (mlp, mlp_out)):
        if not torch.allclose(outputs[order[module][-1]], out, atol=1e-5, rtol=1e-4):
            raise ProbewatchError(
                f"{where}: the output of {type(module).__name__} is not its last projection's "
                "output, so it cannot be split into heads or neurons",
                hint="attribution supports the families in probewatch.sites.ARCH_TABLES",
            )
    post_attn = _post_norm(block, attn_out, inputs, outputs)
    post_mlp = _post_norm(block, mlp_out, inputs, outputs)
    attn_contrib = outputs[post_attn] if post_attn is not None else attn_out
    mlp_contrib = outputs[post_mlp] if post_mlp is not None else mlp_out
    delta = outputs[block] - inputs[block]
    error = float((delta - attn_contrib - mlp_contrib).abs().max())
    # fp32 rounding of output − input grows with the stream's size (massive activations).
    allowed = 1e-4 * (1.0 + float(delta.abs().max())) + 1e-5 * float(inputs[block].abs().max())
    if error > allowed:
        raise ProbewatchError(
            f"{where} is not additive (output − input ≠ attention + MLP contribution, "
            f"error {error:.2e}), so its parts cannot be attributed",
            hint="attribution supports the families in probewatch.sites.ARCH_TABLES",
        )
    return Block(
        attn=attn,
        out_proj=order[attn][-1],
        post_attn_norm=FrozenNorm(post_attn, d_model) if post_attn is not None else None,
        mlp=mlp,
        down_proj=order[mlp][-1],
        post_mlp_norm=FrozenNorm(post_mlp, d_model) if post_mlp is not None else None,
    )

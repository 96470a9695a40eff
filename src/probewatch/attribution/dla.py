"""Direct logit attribution on the model as loaded: no weight folding, no copy, SDPA kept.

    result = direct_attribution(loaded, ["The Eiffel Tower is in the city of"],
                                LogitDiff(paris_id, london_id))
    result.heads[0]          # [layers, heads]: what each head wrote into the target
    result.error()           # |Σ parts − the model's own target|, ~1e-6 in fp32

The final norm's scale (and each post-sublayer norm's) is frozen at its value in the real
forward, and the target direction is pulled back through it. Each head's share is
z_h · (W_O,h^T u): the input of the output projection, read by a hook, dotted with the
direction pulled back through that head's slice of W_O, so no per-head d_model vector is formed.
Arithmetic on the chosen rows is in float64.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from probewatch.attribution.anatomy import Anatomy, FrozenNorm, anatomy, projection_weight
from probewatch.attribution.recording import Positions, RowRecorder, Rows, choose_rows, model_kwargs
from probewatch.attribution.targets import (
    LogitDiff,
    ProbeScore,
    Target,
    affine_form,
    per_row,
)
from probewatch.errors import ProbewatchError
from probewatch.sites import layer_list, parse_site
from probewatch.tokens import Batch, encode


@dataclass
class Attribution:
    """Every part of a target, per row (one row per chosen example and position)."""

    target_label: str
    example: torch.Tensor  # [N]
    token: torch.Tensor  # [N]
    target: torch.Tensor  # [N] the model's own value
    embed: torch.Tensor  # [N]
    heads: torch.Tensor  # [N, L, H]
    attn_bias: torch.Tensor  # [N, L] output-projection bias (and post-norm offset)
    mlp: torch.Tensor  # [N, L]
    constants: dict[str, torch.Tensor]  # name -> [N]: biases, and any stated nonlinear rest
    neurons: list[torch.Tensor] | None = None  # per layer [N, d_ff] (their sum + bias = mlp)
    layers_used: int = 0  # a probe at resid.L reads layers 0..L only
    tokens: list[list[str]] = field(default_factory=list)  # per example, for display

    def total(self) -> torch.Tensor:
        parts = self.embed + self.heads.sum(dim=(1, 2)) + self.attn_bias.sum(1) + self.mlp.sum(1)
        return parts + sum(self.constants.values(), torch.zeros_like(self.embed))

    def error(self) -> float:
        """Largest |Σ parts − target| over rows."""
        return float((self.total() - self.target).abs().max())

    def parts(self, row: int = 0) -> list[tuple[str, float]]:
        """(name, value) of every part of one row, largest magnitude first."""
        named = [("embed", float(self.embed[row]))]
        heads = self.heads.shape[2]
        for layer in range(self.layers_used):
            named += [(f"L{layer}H{h}", float(self.heads[row, layer, h])) for h in range(heads)]
            named.append((f"attn_bias.{layer}", float(self.attn_bias[row, layer])))
            named.append((f"mlp.{layer}", float(self.mlp[row, layer])))
        named += [(name, float(value[row])) for name, value in self.constants.items()]
        return sorted(named, key=lambda item: -abs(item[1]))

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        return {
            "target": self.target_label,
            "rows": [
                {
                    "example": int(self.example[n]),
                    "token": int(self.token[n]),
                    "target": float(self.target[n]),
                    "sum_of_parts": float(self.total()[n]),
                    "heads": self.heads[n, : self.layers_used].tolist(),
                    "mlp": self.mlp[n, : self.layers_used].tolist(),
                    "embed": float(self.embed[n]),
                    "attn_bias": self.attn_bias[n, : self.layers_used].tolist(),
                    "constants": {k: float(v[n]) for k, v in self.constants.items()},
                    "top": [{"part": k, "value": v} for k, v in self.parts(n)[:top]],
                }
                for n in range(len(self.target))
            ],
            "max_error": self.error(),
        }


@dataclass
class _Readout:
    """Where the target reads the stream: after which layer, and through the final norm?"""

    layers: int  # blocks that write into the read stream
    through_final_norm: bool


def _readout(target: Target, n_layers: int) -> _Readout:
    if not isinstance(target, ProbeScore):
        return _Readout(n_layers, True)
    site = parse_site(target.site, n_layers)
    if site.kind == "final_norm":
        return _Readout(n_layers, True)
    if site.kind == "embed":
        return _Readout(0, False)
    if site.kind == "resid":
        assert site.layer is not None
        return _Readout(site.layer + 1, False)
    raise ProbewatchError(
        f"probe site {target.site!r}: direct attribution reads probes on the residual stream",
        hint="attribute probes at resid.N, embed or final_norm (patching handles any site)",
    )


def _hook_everything(rec: RowRecorder, anat: Anatomy, readout: _Readout, neurons: bool) -> None:
    rec.output(anat.embed, "embed")
    for layer, block in enumerate(anat.blocks[: readout.layers]):
        rec.input(block.out_proj, f"z.{layer}")
        rec.output(block.attn, f"attn.{layer}")
        rec.output(block.mlp, f"mlp.{layer}")
        if block.post_attn_norm is not None:
            rec.output(block.post_attn_norm.module, f"post_attn.{layer}")
        if block.post_mlp_norm is not None:
            rec.output(block.post_mlp_norm.module, f"post_mlp.{layer}")
        if neurons:
            rec.input(block.down_proj, f"neurons.{layer}")
    if readout.through_final_norm:
        rec.input(anat.final_norm.module, "final_in")
        rec.output(anat.final_norm.module, "final_out")
    elif readout.layers > 0:
        rec.output(layer_list(anat.model)[readout.layers - 1], "read")


def _direction(
    target: Target, anat: Anatomy, kept: dict[str, torch.Tensor], rows: Rows, logits: Any
) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
    """(u [N, d] in the readout space, constant rows, the model's own target [N])."""
    bias = anat.unembed_bias.detach().double() if anat.unembed_bias is not None else None
    consts: dict[str, torch.Tensor] = {}
    if isinstance(target, ProbeScore):
        weight, probe_bias = affine_form(target.probe.probe)
        read = kept["final_out"] if "final_out" in kept else kept.get("read", kept["embed"])
        own = target.probe.probe.score(read.float().cpu()).reshape(-1).double()
        consts["probe_bias"] = probe_bias.expand(len(rows)).clone()
        return weight.to(read.device)[None].expand(len(rows), -1), consts, own
    model_logits = logits[rows.example, rows.token].double()
    normed = kept["final_out"].double()

    def unembed(ids: torch.Tensor) -> torch.Tensor:  # rows of W_U in float64, never all of it
        return anat.unembed.detach()[ids].double()

    def raw_at(ids: torch.Tensor) -> torch.Tensor:  # pre-cap logits of one token per row
        return (normed * unembed(ids)).sum(-1) + (bias[ids] if bias is not None else 0.0)

    if isinstance(target, LogitDiff):
        correct = per_row(target.correct, rows.example, "correct token")
        u = unembed(correct)
        own = model_logits.gather(1, correct[:, None])[:, 0]
        raw_target = raw_at(correct)
        if bias is not None:
            consts["unembed_bias"] = bias[correct]
        if target.wrong is not None:
            wrong = per_row(target.wrong, rows.example, "wrong token")
            u = u - unembed(wrong)
            own = own - model_logits.gather(1, wrong[:, None])[:, 0]
            raw_target = raw_target - raw_at(wrong)
            if bias is not None:
                consts["unembed_bias"] = consts["unembed_bias"] - bias[wrong]
        if anat.softcap is not None:
            # The parts decompose the logits before the soft-cap exactly; the cap is the rest.
            consts["softcap_rest"] = own - raw_target
        return u, consts, own
    token = per_row(target.token, rows.example, "token")
    probs = torch.softmax(model_logits, dim=-1)
    own = torch.log_softmax(model_logits, dim=-1).gather(1, token[:, None])[:, 0]
    full = anat.unembed.detach().double()  # the softmax needs every row
    raw = normed @ full.T + (bias if bias is not None else 0.0)
    u = full[token] - probs @ full
    linear = raw.gather(1, token[:, None])[:, 0] - (probs * raw).sum(-1)
    if bias is not None:
        consts["unembed_bias"] = bias[token] - probs @ bias
    consts["softmax_rest"] = own - linear
    return u, consts, own


def _through(
    norm: FrozenNorm, x: torch.Tensor, y: torch.Tensor, u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(u pulled back through a frozen norm, the norm's own offset β·u)."""
    scale = norm.scale(x, y, "a norm")
    return norm.pull_back(u, scale), (norm.bias * u).sum(-1)


@torch.no_grad()
def attribute_batch(
    anat: Anatomy,
    batch: Batch,
    target: Target,
    positions: Positions = "last",
    neurons: bool = False,
) -> Attribution:
    """Attribute `target` at `positions` of every example of one batch (one forward pass)."""
    model = anat.model
    rows = choose_rows(batch.attention_mask, positions)
    readout = _readout(target, anat.n_layers)
    with RowRecorder(rows) as rec:
        _hook_everything(rec, anat, readout, neurons)
        output = model(**model_kwargs(model, batch))
    kept = {name: value.double().cpu() for name, value in rec.kept.items()}
    logits = output.logits.detach().cpu() if hasattr(output, "logits") else None
    u, consts, own = _direction(target, anat, kept, rows, logits)
    u = u.double().cpu()
    if readout.through_final_norm:
        u, offset = _through(anat.final_norm, kept["final_in"], kept["final_out"], u)
        consts["final_norm_bias"] = offset
    n, n_layers = len(rows), anat.n_layers
    heads = torch.zeros(n, n_layers, anat.n_heads, dtype=torch.float64)
    attn_bias = torch.zeros(n, n_layers, dtype=torch.float64)
    mlp = torch.zeros(n, n_layers, dtype=torch.float64)
    neuron_parts: list[torch.Tensor] | None = [] if neurons else None
    for layer, block in enumerate(anat.blocks[: readout.layers]):
        u_attn, u_mlp = u, u
        if block.post_attn_norm is not None:
            u_attn, offset = _through(
                block.post_attn_norm, kept[f"attn.{layer}"], kept[f"post_attn.{layer}"], u
            )
            attn_bias[:, layer] += offset
        if block.post_mlp_norm is not None:
            u_mlp, offset = _through(
                block.post_mlp_norm, kept[f"mlp.{layer}"], kept[f"post_mlp.{layer}"], u
            )
            mlp[:, layer] += offset
        w_o, b_o = projection_weight(block.out_proj)
        pulled = (u_attn @ w_o.double().cpu()).reshape(n, anat.n_heads, anat.d_head)
        z = kept[f"z.{layer}"].reshape(n, anat.n_heads, anat.d_head)
        heads[:, layer] = (z * pulled).sum(-1)
        if b_o is not None:
            attn_bias[:, layer] += u_attn @ b_o.double().cpu()
        mlp[:, layer] += (kept[f"mlp.{layer}"] * u_mlp).sum(-1)
        if neuron_parts is not None:
            w_down, _ = projection_weight(block.down_proj)
            neuron_parts.append(kept[f"neurons.{layer}"] * (u_mlp @ w_down.double().cpu()))
    return Attribution(
        target_label=target.label,
        example=rows.example,
        token=rows.token,
        target=own.double().cpu(),
        embed=(kept["embed"] * u).sum(-1),
        heads=heads,
        attn_bias=attn_bias,
        mlp=mlp,
        constants=consts,
        neurons=neuron_parts,
        layers_used=readout.layers,
    )


def direct_attribution(
    loaded: Any,
    texts: Sequence[str] | Batch,
    target: Target,
    positions: Positions = "last",
    neurons: bool = False,
) -> Attribution:
    """DLA of `target` for texts (or an encoded batch) on `loaded` (a LoadedModel)."""
    batch = texts if isinstance(texts, Batch) else encode(loaded.tokenizer, list(texts))
    result = attribute_batch(anatomy(loaded.model), batch, target, positions, neurons)
    result.tokens = [
        [loaded.tokenizer.decode([int(t)]) for t, m in zip(ids, mask, strict=True) if m]
        for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True)
    ]
    return result

"""What the engine computes in-graph, and which buffer row belongs to which request.

Imports neither vLLM nor a model: the server plans here before an engine exists, and the
tests check the plan and the batch adapters without vLLM.

Taps. vLLM's decoder layers defer the residual add, so the stream after block l is
`hidden + residual`; EAGLE-3's aux-hidden-state list collects exactly that at index l + 1
(index 0 is the embedding output). So `resid.l` is aux index l + 1, `embed` is 0, and
`final_norm` is the hidden state the backbone returns. `attn_out.*` and `mlp_out.*` live
inside a layer, where vLLM (and tensor parallelism) splits them: refused at load.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from probewatch.errors import ProbewatchError
from probewatch.sites import parse_site

FINAL = "final_norm"
# HF architecture -> our subclass of vLLM's implementation (models.py; plugin.py registers).
ARCHITECTURES = {
    "LlamaForCausalLM": "ProbewatchLlamaForCausalLM",
    "Qwen2ForCausalLM": "ProbewatchQwen2ForCausalLM",
    "Gemma3ForCausalLM": "ProbewatchGemma3ForCausalLM",
}
EXTRA_ARGS_KEY = "probewatch"  # SamplingParams.extra_args[EXTRA_ARGS_KEY]: per-request options


def our_architecture(architectures: Sequence[str]) -> str:
    """Our class for a model's HF architecture list, or a clear refusal."""
    for name in architectures:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    raise ProbewatchError(
        f"the vLLM engine has no probe-aware class for {', '.join(architectures) or 'this'} model",
        hint=f"supported: {', '.join(ARCHITECTURES)}; or serve with --engine hf",
    )


def tap_index(site: str, n_layers: int) -> int:
    """vLLM aux-hidden-state index of a site; `final_norm` sorts after every layer."""
    parsed = parse_site(site, n_layers)
    if parsed.kind == "embed":
        return 0
    if parsed.kind == FINAL:
        return n_layers + 1
    if parsed.kind == "resid":
        assert parsed.layer is not None
        return parsed.layer + 1
    raise ProbewatchError(
        f"site {site!r} is inside a block, where vLLM fuses and (under tensor parallelism) "
        "shards the computation: the vLLM engine cannot read it",
        hint="train the probe on a resid.* site (or embed/final_norm), or serve with --engine hf",
    )


@dataclass
class Layout:
    """What the engine taps and steers; fixed when the engine starts (it shapes the graph).
    Travels to every vLLM process as `additional_config["probewatch"]` (hashed into vLLM's
    compile cache, so a graph compiled for other taps is never reused)."""

    n_layers: int
    d_model: int
    sites: list[str] = field(default_factory=list)  # tapped, in tap order
    k_max: int = 8  # probe columns of the fused matrix (free ones are zero)
    steer_layers: list[int] = field(default_factory=list)
    capture: bool = False  # also keep the tapped rows, for extracted probes and harvesting

    def __post_init__(self) -> None:
        unique = sorted(set(self.sites), key=lambda s: tap_index(s, self.n_layers))
        self.sites = [parse_site(s, self.n_layers).name for s in unique]
        self.steer_layers = sorted(set(self.steer_layers))
        bad = [layer for layer in self.steer_layers if not 0 <= layer < self.n_layers]
        if bad:
            raise ProbewatchError(
                f"steering layers {bad} are out of range for a {self.n_layers}-layer model"
            )
        if self.k_max < 1:
            raise ProbewatchError("k_max must be at least 1")

    @property
    def aux_layers(self) -> tuple[int, ...]:
        """vLLM aux-hidden-state indices of the tapped sites (all but final_norm)."""
        indices = (tap_index(s, self.n_layers) for s in self.sites)
        return tuple(i for i in indices if i <= self.n_layers)

    @property
    def taps_final(self) -> bool:
        return FINAL in self.sites

    @property
    def width(self) -> int:
        """Columns of the concatenated tap rows, [n, width]."""
        return len(self.sites) * self.d_model

    def block(self, site: str) -> slice:
        """Where `site`'s activations sit in a concatenated row."""
        i = self.sites.index(parse_site(site, self.n_layers).name)
        return slice(i * self.d_model, (i + 1) * self.d_model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Layout":
        return cls(**values)


class _Probe(Protocol):
    name: str

    @property
    def artifact(self) -> Any: ...


def affine_form(probe: Any, _d_model: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(w [d], b) when the probe kind declares its score affine (`Probe.affine()`), else None."""
    form = probe.affine()
    if form is None:
        return None
    weight, bias = form
    return weight.reshape(-1).float(), bias.reshape(-1).float()


@dataclass
class ProbePlan:
    """Probes as the engine scores them: affine ones are columns of the in-graph matrix,
    the others ("extracted") are scored from their site's extracted rows in the API process.
    A request reads the columns of the plan it started with, to its end. So across reloads
    a probe keeps its column, and the columns of the plans still `pinned` by requests in
    flight keep their weights: a deleted probe's column is given to no other probe (nor to
    a new upload under the same name) until those requests are done."""

    layout: Layout
    columns: dict[str, int]  # fused probe name -> column
    extracted: dict[str, str]  # probe name -> site
    weight: torch.Tensor  # [layout.width, k_max]
    bias: torch.Tensor  # [k_max]
    version: int = 0

    @classmethod
    def build(
        cls,
        layout: Layout,
        probes: Sequence[_Probe],
        previous: "ProbePlan | None" = None,
        pinned: Sequence["ProbePlan"] = (),
    ) -> "ProbePlan":
        refused = []
        for probe in probes:
            site = probe.artifact.site
            try:
                tap_index(site, layout.n_layers)
            except ProbewatchError as exc:
                refused.append(f"{probe.name} ({site}): {exc.message}")
                continue
            if parse_site(site, layout.n_layers).name not in layout.sites:
                refused.append(
                    f"{probe.name} ({site}): the engine was started tapping "
                    f"{', '.join(layout.sites) or 'no site'}"
                )
        if refused:
            raise ProbewatchError(
                "the vLLM engine cannot score these probes: " + "; ".join(refused),
                hint="tapped sites are fixed when the engine starts: restart it with the "
                "probes' sites (--vllm-sites), or serve with --engine hf",
            )
        forms = {p.name: affine_form(p.artifact.probe, layout.d_model) for p in probes}
        fused = [p for p in probes if forms[p.name] is not None]
        kept = previous.columns if previous else {}
        columns = {p.name: kept[p.name] for p in fused if p.name in kept}
        held = {c: plan for plan in pinned for c in plan.columns.values()}
        free = [c for c in range(layout.k_max) if c not in columns.values() and c not in held]
        for probe in fused:
            if probe.name not in columns:
                if not free:
                    busy = len(set(held) - set(columns.values()))
                    note = f" ({busy} of them still read by requests in flight)" if busy else ""
                    raise ProbewatchError(
                        f"more than {layout.k_max} fused probes{note}",
                        hint="restart the engine with a larger --vllm-k-max"
                        + (", or retry once those requests end" if busy else ""),
                    )
                columns[probe.name] = free.pop(0)
        weight = torch.zeros(layout.width, layout.k_max)
        bias = torch.zeros(layout.k_max)
        for c, plan in held.items():  # as the requests in flight read them
            weight[:, c], bias[c] = plan.weight[:, c], plan.bias[c]
        for probe in fused:
            form = forms[probe.name]
            assert form is not None
            weight[layout.block(probe.artifact.site), columns[probe.name]] = form[0]
            bias[columns[probe.name]] = form[1][0]
        extracted = {p.name: p.artifact.site for p in probes if forms[p.name] is None}
        if extracted and not layout.capture:
            raise ProbewatchError(
                f"probes {sorted(extracted)} are not affine (MLP or attention-pooled) and the "
                "engine was started without row extraction",
                hint="restart the engine with extraction on (the server turns it on when such "
                "a probe is loaded at start), or serve with --engine hf",
            )
        version = previous.version + 1 if previous else 0
        return cls(layout, columns, extracted, weight, bias, version)

    def scores(
        self, probes: Sequence[_Probe], fused: torch.Tensor, rows: torch.Tensor | None
    ) -> torch.Tensor:
        """Raw scores [n, len(probes)] in `probes`' order from the engine's fused columns
        [n, k_max] and (for extracted probes) the extracted rows [n, width]."""
        out = torch.empty(fused.shape[0], len(probes))
        for i, probe in enumerate(probes):
            if probe.name in self.columns:
                out[:, i] = fused[:, self.columns[probe.name]]
                continue
            if rows is None:
                raise ProbewatchError(f"no extracted rows arrived for probe {probe.name!r}")
            acts = rows[:, self.layout.block(probe.artifact.site)]
            out[:, i] = probe.artifact.probe.score(acts.float()).reshape(-1)
        return out


@dataclass
class StepRows:
    """The rows of one engine step: request i owns rows starts[i]:starts[i+1], whose
    absolute positions begin at first_positions[i] (chunked prefill, recompute after
    preemption and prefix-cache hits only move that start)."""

    req_ids: list[str]
    starts: np.ndarray  # [num_reqs + 1]
    first_positions: np.ndarray  # [num_reqs]

    def spans(self) -> list[tuple[str, int, int, int]]:
        """(engine request id, first row, rows, first position) per request."""
        return [
            (
                rid,
                int(self.starts[i]),
                int(self.starts[i + 1] - self.starts[i]),
                int(self.first_positions[i]),
            )
            for i, rid in enumerate(self.req_ids)
        ]


def v1_rows(runner: Any) -> StepRows:
    """Row layout from the V1 model runner (vLLM 0.32 on CPU: `cpu_model_runner`), read
    between its `_prepare_inputs` and the forward."""
    batch = runner.input_batch
    n = batch.num_reqs
    return StepRows(
        list(batch.req_ids[:n]),
        np.array(runner.query_start_loc.np[: n + 1], dtype=np.int64),
        np.array(batch.num_computed_tokens_cpu[:n], dtype=np.int64),
    )


def mrv2_rows(input_batch: Any) -> StepRows:
    """Row layout from Model Runner V2's `InputBatch` (vLLM 0.32 on GPU, the default where
    Triton works), as returned by its `prepare_inputs`. Untested on a real GPU here."""
    n = input_batch.num_reqs
    return StepRows(
        list(input_batch.req_ids[:n]),
        np.array(input_batch.query_start_loc_np[: n + 1], dtype=np.int64),
        np.array(input_batch.num_computed_tokens_np[:n], dtype=np.int64),
    )


def external_id(engine_request_id: str) -> str:
    """vLLM appends `-<8 hex>` to the id a caller gives (`input_processor`)."""
    return engine_request_id.rsplit("-", 1)[0]

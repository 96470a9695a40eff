"""One forward pass of a model (optionally under an intervention) that returns the next-token
log-probabilities and the full activations at the requested sites, read by forward hooks.

A `Side` is what a comparison compares: a loaded model, and optionally an intervention that is
applied while it runs (steering, ablation, orthogonalized weights), so "a model and itself
under an intervention" needs no second copy of the weights.
"""

import json
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from probewatch.hooks import hidden_of, registered_hooks
from probewatch.models.loading import LoadedModel
from probewatch.sites import Site, expand_sites, resolve_module
from probewatch.steer.interventions import Intervention
from probewatch.tokens import Batch


@dataclass
class Side:
    """One side of a comparison: a model, optionally under an intervention."""

    loaded: LoadedModel
    label: str = "A"
    intervention: Intervention | None = None

    def active(self) -> AbstractContextManager[Any]:
        return self.intervention.apply() if self.intervention is not None else nullcontext()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, **self.loaded.describe()}
        if self.intervention is not None:
            out["intervention"] = {"name": self.intervention.name, **self.intervention.details}
        return out

    def planted_behaviours(self) -> list[str]:
        """Behaviour rows an organism's card (organism.json) asks for, as NAME=PHRASE|...;
        none for other models. Read as plain JSON: compare does not depend on organisms."""
        card = Path(self.loaded.source) / "organism.json"
        try:
            data = json.loads(card.read_text()) if card.is_file() else {}
        except (OSError, json.JSONDecodeError):
            return []
        return (
            [str(b) for b in data.get("planted_behaviours", [])] if isinstance(data, dict) else []
        )


@dataclass
class Pair:
    """The two sides of a comparison."""

    a: Side
    b: Side


@dataclass
class Pass:
    """What one forward pass over a batch read: log-probabilities [B, T, V] (float32) and the
    activations {site: [B, T, d]} (float32, on CPU)."""

    logprobs: torch.Tensor
    acts: dict[str, torch.Tensor]


def site_list(side: Side, sites: str | Sequence[str]) -> list[Site]:
    spec = sites if isinstance(sites, str) else list(sites)
    return expand_sites(spec, side.loaded.n_layers) if spec else []


@contextmanager
def reading(
    model: nn.Module, sites: Sequence[Site], into: dict[str, torch.Tensor]
) -> Iterator[None]:
    """Record each site's output into `into` while inside the block."""

    def recorder(name: str) -> Any:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            into[name] = hidden_of(output).detach().float().cpu()

        return hook

    pairs = [(resolve_module(model, site), recorder(site.name)) for site in sites]
    with registered_hooks(pairs):
        yield


@torch.no_grad()
def run(side: Side, batch: Batch, sites: Sequence[Site] = ()) -> Pass:
    """One pass of `side` over `batch`: the intervention's hooks go first, so the sites read
    what the intervened model computes."""
    model = side.loaded.model
    device = side.loaded.device
    acts: dict[str, torch.Tensor] = {}
    with side.active(), reading(model, sites, acts):
        logits = model(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            use_cache=False,
        ).logits
    return Pass(F.log_softmax(logits.float(), dim=-1).cpu(), acts)


def token_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per position, from log-probabilities [..., V]; clamped at 0 (rounding)."""
    return (p.exp() * (p - q)).sum(dim=-1).clamp_min(0.0)


def predicted_nll(logprobs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """[B, T-1] negative log-likelihood of each next token under `logprobs` [B, T, V]."""
    return -logprobs[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)

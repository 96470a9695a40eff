"""Interventions as context managers that leave the model as they found it.

    with add_vectors(loaded, vector, scale=4.0):           # steer at the vector's sites
    with ablate_direction(loaded, direction):              # project r out everywhere
    with probe_gated(loaded, probe, vector, Steering(4.0)):  # steer only where a probe fires
    with orthogonalized(loaded, direction):                # the ablation baked into weights

Every input is validated before anything is registered or written, hooks are removed in
`finally`, and weights changed by `orthogonalized` are copied back in `finally`, so an error
(before or inside the block) never leaves the model modified.

Directional ablation follows Arditi et al. (2024): x ← x − (x·r̂)r̂ at every token, on the
embedding output and on every block's attention output, MLP output and block output. Hooking
block outputs alone would let each MLP read the direction its own block's attention just
wrote; hooking the writers (embedding, attention, MLP) is exactly what weight
orthogonalization does, so the two agree to float precision. The block-output hooks are then
redundant for Llama-like models but keep the residual stream clean in families with
post-sublayer norms.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from probewatch.config import MODES
from probewatch.errors import ProbewatchError
from probewatch.hooks import Hook, add_vector, hidden_of, registered_hooks, with_hidden
from probewatch.models.loading import LoadedModel
from probewatch.probes.artifact import ProbeArtifact, check_model
from probewatch.probes.base import PROBE_KINDS
from probewatch.sites import Site, layer_list, parse_site, resolve_module
from probewatch.steer.directions import (
    SteeringVector,
    VectorLike,
    check_vector,
    require_finite,
    site_vectors,
    unit_direction,
)
from probewatch.steer.orthogonalize import orthogonalized


@contextmanager
def add_vectors(
    loaded: LoadedModel,
    vector: VectorLike,
    scale: float = 1.0,
    sites: list[str] | None = None,
    allow_model_mismatch: bool = False,
) -> Iterator[None]:
    """Add `scale * vector[site]` to each site's output at every position (activation
    addition). Everything is validated before the first hook is registered."""
    require_finite(scale, "the steering strength")
    vectors = site_vectors(loaded, vector, sites, allow_model_mismatch)
    with ExitStack() as stack:
        for site, tensor in vectors.items():
            stack.enter_context(add_vector(loaded.model, site, tensor, scale))
        yield


def _projector(direction: torch.Tensor) -> Hook:
    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        hidden = hidden_of(output)
        r = direction.to(device=hidden.device, dtype=hidden.dtype)
        return with_hidden(output, hidden - (hidden @ r).unsqueeze(-1) * r)

    return hook


def ablation_sites(n_layers: int) -> list[Site]:
    """Where directional ablation hooks: the embedding and every attention, MLP and block output."""
    sites = [Site("embed")]
    for layer in range(n_layers):
        sites += [Site("attn_out", layer), Site("mlp_out", layer), Site("resid", layer)]
    return sites


@contextmanager
def ablate_direction(
    loaded: LoadedModel, direction: VectorLike, site: str | None = None
) -> Iterator[None]:
    """Project the direction out of the residual stream at every layer and position."""
    unit = unit_direction(loaded, direction, site)
    model = loaded.model
    modules = [resolve_module(model, s) for s in ablation_sites(len(layer_list(model)))]
    hook = _projector(unit)
    with registered_hooks([(module, hook) for module in modules]):
        yield


@dataclass
class GateStats:
    """How often the gate opened during the block: positions above threshold / positions seen."""

    fired: int = 0
    seen: int = 0

    @property
    def rate(self) -> float:
        return self.fired / self.seen if self.seen else 0.0


@dataclass(frozen=True)
class Steering:
    """How a vector is applied: `scale` times the vector at `sites` (default: all of its
    sites); a gate fires above `threshold` (default: the probe's card, else 0); vectors and
    probes made on other weights are used only with `allow_model_mismatch`."""

    scale: float = 1.0
    sites: list[str] | None = None
    threshold: float | None = None
    allow_model_mismatch: bool = False


@contextmanager
def probe_gated(
    loaded: LoadedModel,
    probe: ProbeArtifact,
    vector: VectorLike,
    how: Steering | None = None,
) -> Iterator[GateStats]:
    """CAST-style conditional steering: add `scale * vector` only at token positions where the
    probe's score at its own site exceeds `threshold` (default: the threshold on the probe's
    card, else 0, the decision boundary of a logit).

    The probe reads the unsteered activation, so steering sites must not come before the
    probe's site in the forward pass. During cached generation each new token is gated on
    its own activation."""
    how = how or Steering()
    scale, sites, threshold, allow_model_mismatch = (
        how.scale,
        how.sites,
        how.threshold,
        how.allow_model_mismatch,
    )
    if not probe.probe.per_token:
        per_token = ", ".join(k for k, cls in PROBE_KINDS.items() if cls.per_token)
        raise ProbewatchError(
            f"a {probe.probe.kind!r} probe scores whole sequences and cannot gate single tokens",
            hint=f"use a per-token probe ({per_token})",
        )
    check_model(probe, loaded, allow_model_mismatch)
    require_finite(scale, "the steering strength")
    if threshold is None:
        card_threshold = probe.card.get("threshold")
        threshold = float(card_threshold["value"]) if isinstance(card_threshold, dict) else 0.0
    require_finite(threshold, "the gate threshold")
    n_layers = loaded.n_layers
    gate_site = parse_site(probe.site, n_layers)
    vectors = site_vectors(loaded, vector, sites, allow_model_mismatch)
    for site in vectors:
        if parse_site(site, n_layers).depth(n_layers) < gate_site.depth(n_layers):
            raise ProbewatchError(
                f"steering site {site} comes before the probe's site {probe.site}",
                hint="steer at or after the layer the probe reads",
            )
    stats = GateStats()
    state: dict[str, torch.Tensor] = {}

    def gate(_module: nn.Module, _args: Any, output: Any) -> None:
        hidden = hidden_of(output)
        with torch.no_grad():
            flat = hidden.detach().reshape(-1, hidden.shape[-1]).float().cpu()
            scores = probe.score(flat).reshape(hidden.shape[:-1])
        mask = scores > threshold
        state["mask"] = mask.to(hidden.device)
        stats.fired += int(mask.sum())
        stats.seen += int(mask.numel())

    def steer(delta: torch.Tensor) -> Hook:
        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden = hidden_of(output)
            mask = state["mask"].to(hidden.dtype).unsqueeze(-1)
            return with_hidden(output, hidden + mask * delta.to(hidden.device, hidden.dtype))

        return hook

    model = loaded.model
    pairs: list[tuple[nn.Module, Hook]] = [(resolve_module(model, gate_site), gate)]
    for site, tensor in vectors.items():
        module = resolve_module(model, parse_site(site, n_layers))
        pairs.append((module, steer(tensor * scale)))
    with registered_hooks(pairs):
        yield stats


@dataclass
class Intervention:
    """A named, re-enterable intervention: `apply()` returns a fresh context manager.

    `details` is JSON-ready and goes into audit reports."""

    name: str
    apply: Callable[[], AbstractContextManager[Any]]
    details: dict[str, Any] = field(default_factory=dict)


def make_intervention(
    loaded: LoadedModel,
    vector: SteeringVector,
    mode: str,
    how: Steering | None = None,
    probe: ProbeArtifact | None = None,
) -> Intervention:
    """One intervention from a saved vector, validated now rather than at first use.

    ablate / orthogonalize use the vector at `sites[0]` (or its only site) as the direction;
    add / gated add `scale` times the vector at `sites` (default: all of its sites)."""
    how = how or Steering()
    scale, sites, allow_model_mismatch = how.scale, how.sites, how.allow_model_mismatch
    check_vector(vector, loaded, allow_model_mismatch)
    require_finite(scale, "the steering strength")
    source = {
        "vector": str(vector.path) if vector.path else None,
        "method": vector.card.get("method"),
    }
    if mode in ("ablate", "orthogonalize"):
        site = sites[0] if sites else None
        unit = unit_direction(loaded, vector, site)
        chosen = site or vector.sites[0]
        if mode == "ablate":
            return Intervention(
                f"ablate direction from {chosen}",
                lambda: ablate_direction(loaded, unit),
                {"mode": mode, "direction_site": chosen, **source},
            )
        return Intervention(
            f"orthogonalized weights (direction from {chosen})",
            lambda: orthogonalized(loaded, unit),
            {"mode": mode, "direction_site": chosen, **source},
        )
    vectors = site_vectors(loaded, vector, sites, allow_model_mismatch)
    details = {"mode": mode, "sites": list(vectors), "scale": scale, **source}
    if mode == "add":
        return Intervention(
            f"add {scale:g} x vector at {', '.join(vectors)}",
            lambda: add_vectors(loaded, vectors, scale),
            details,
        )
    if mode == "gated":
        if probe is None:
            raise ProbewatchError("gated steering needs a probe", hint="pass --probe PATH")
        gate_probe = probe
        details |= {"probe": str(probe.path) if probe.path else None, "threshold": how.threshold}
        return Intervention(
            f"add {scale:g} x vector at {', '.join(vectors)} where {probe.site} probe fires",
            lambda: probe_gated(
                loaded,
                gate_probe,
                vectors,
                Steering(scale, None, how.threshold, allow_model_mismatch),
            ),
            details,
        )
    raise ProbewatchError(f"unknown intervention mode {mode!r}", hint=f"use one of {MODES}")

"""The refusal direction on a real model, end to end (Arditi et al. 2024, scaled down):

1. Directions: difference of means, harmful minus harmless requests, read at the last prompt
   token (the end of the generation prompt) at each candidate layer, on the train split of
   harmful_vs_harmless minus a validation part (one near-duplicate group in five).
2. Layer choice, on the validation part only, without generating: for each candidate layer's
   direction, ablate it everywhere and measure the refusal score on harmful requests (log-odds
   of the next token starting a refusal, over `REFUSAL_STARTS`) and the KL divergence on
   harmless ones; add it at its own layer and measure the refusal score on harmless ones.
   Keep layers whose ablation KL is at most `kl_max` and whose addition raises the harmless
   refusal score (Arditi et al.'s filters); choose the one whose ablation most lowers the
   harmful refusal score. Layers in the last fifth are not candidates (as in the paper).
3. Audit both uses on the held-out test split: ablation on harmful requests, and addition on
   harmless ones, each against one shared measurement of the original model.
"""

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from probewatch.config import RefusalDemoSpec
from probewatch.data import load_dataset
from probewatch.data.base import Dataset
from probewatch.errors import ProbewatchError
from probewatch.models.loading import LoadedModel, load_model
from probewatch.paths import write_json_atomic
from probewatch.steer.audit import (
    AuditReport,
    audit_data,
    compare,
    measure,
    next_token_logprobs,
)
from probewatch.steer.directions import SteeringVector, extract_directions, save_vector
from probewatch.steer.interventions import Intervention, ablate_direction, add_vectors
from probewatch.tokens import Message

log = logging.getLogger(__name__)

REFUSAL_STARTS = ("I", "Sorry", "As", "Unfortunately", "I'm")
VALIDATION_ONE_IN = 5


def refusal_token_ids(tokenizer: Any) -> list[int]:
    ids = {tokenizer.encode(word, add_special_tokens=False)[0] for word in REFUSAL_STARTS}
    return sorted(ids)


def refusal_score(logprobs: torch.Tensor, token_ids: Sequence[int]) -> float:
    """Mean log-odds that the next token starts a refusal."""
    p = logprobs[:, list(token_ids)].exp().sum(dim=1).clamp(1e-8, 1 - 1e-8)
    return float((p.log() - (1 - p).log()).mean())


def mean_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p.exp() * (p - q)).sum(dim=1).clamp_min(0).mean())


def _is_validation(group: str, seed: int) -> bool:
    digest = hashlib.sha256(f"steer-val:{seed}:{group}".encode()).hexdigest()
    return int(digest[:8], 16) % VALIDATION_ONE_IN == 0


def split_train(dataset: Dataset, seed: int) -> tuple[list[int], list[int]]:
    """Train-split example indices: (fit, validation), held apart by near-duplicate group."""
    fit: list[int] = []
    val: list[int] = []
    for i, example in enumerate(dataset.examples):
        if example.split == "train":
            (val if _is_validation(example.group or str(i), seed) else fit).append(i)
    return fit, val


@dataclass
class LayerScore:
    site: str
    ablated_harmful_refusal: float  # refusal log-odds on harmful validation requests
    ablation_kl: float  # on harmless validation requests
    added_harmless_refusal: float
    passes: bool


def sweep_layers(
    loaded: LoadedModel,
    vector: SteeringVector,
    harmful: Sequence[list[Message]],
    harmless: Sequence[list[Message]],
    spec: RefusalDemoSpec,
) -> tuple[list[LayerScore], dict[str, float]]:
    kl_max, batch_size = spec.kl_max, spec.batch_size
    ids = refusal_token_ids(loaded.tokenizer)
    base_harmful = next_token_logprobs(loaded, harmful, batch_size)
    base_harmless = next_token_logprobs(loaded, harmless, batch_size)
    baseline = {
        "harmful_refusal": refusal_score(base_harmful, ids),
        "harmless_refusal": refusal_score(base_harmless, ids),
    }
    log.info("baseline refusal log-odds %s", baseline)
    rows = []
    for site in vector.sites:
        with ablate_direction(loaded, vector[site]):
            ablated = refusal_score(next_token_logprobs(loaded, harmful, batch_size), ids)
            kl = mean_kl(base_harmless, next_token_logprobs(loaded, harmless, batch_size))
        with add_vectors(loaded, {site: vector[site]}):
            added = refusal_score(next_token_logprobs(loaded, harmless, batch_size), ids)
        passes = kl <= kl_max and added > baseline["harmless_refusal"]
        rows.append(LayerScore(site, ablated, kl, added, passes))
        log.info("%s ablated %.2f kl %.3f added %.2f", site, ablated, kl, added)
    return rows, baseline


def choose_layer(rows: Sequence[LayerScore]) -> LayerScore:
    """The passing layer whose ablation most lowers harmful refusal. When no layer passes the
    KL limit (small models: every ablation costs some KL), the pool is the layers within twice
    the smallest KL, so the choice never falls on a layer whose ablation wrecks the model."""
    pool = [r for r in rows if r.passes]
    if not pool:
        least = min(r.ablation_kl for r in rows)
        pool = [r for r in rows if r.ablation_kl <= 2 * least]
    return min(pool, key=lambda r: r.ablated_harmful_refusal)


@dataclass
class RefusalDemo:
    vector: SteeringVector  # the chosen layer's direction only
    chosen: LayerScore
    sweep: list[LayerScore]
    sweep_baseline: dict[str, float]
    ablation: AuditReport
    addition: AuditReport

    def summary(self) -> dict[str, Any]:
        def rates(report: AuditReport) -> dict[str, Any]:
            return {
                name: {
                    "original": change.original.__dict__,
                    "intervened": change.intervened.__dict__,
                    "change": change.change.__dict__,
                    "n": change.n,
                }
                for name, change in report.refusal.items()
            }

        return {
            "layer": self.chosen.site,
            "direction_norm": float(self.vector[self.chosen.site].norm()),
            "sweep_baseline": self.sweep_baseline,
            "sweep": [row.__dict__ for row in self.sweep],
            "ablation": {
                "refusal": rates(self.ablation),
                "kl_mean": self.ablation.kl_mean.__dict__,
                "perplexity_ratio": self.ablation.perplexity_ratio.__dict__,
                "verdict": self.ablation.verdict,
            },
            "addition": {
                "refusal": rates(self.addition),
                "kl_mean": self.addition.kl_mean.__dict__,
                "perplexity_ratio": self.addition.perplexity_ratio.__dict__,
                "verdict": self.addition.verdict,
            },
        }


def refusal_demo(
    loaded: LoadedModel | None = None,
    spec: RefusalDemoSpec | None = None,
    out: str | Path | None = None,
) -> RefusalDemo:
    """Extract the refusal direction, choose its layer on validation data, and audit its
    ablation (on harmful requests) and addition (on harmless ones) on held-out test requests.

    With `out`, writes vector/, sweep + summary.json, ablation/ and addition/ audit reports."""
    loaded = loaded or load_model("default")
    spec = spec or RefusalDemoSpec()
    seed, n, n_val, kl_max = spec.seed, spec.n, spec.n_val, spec.kl_max
    layers = spec.layer_range()
    dataset = load_dataset("harmful_vs_harmless", seed=seed)
    fit, val = split_train(dataset, seed)
    n_layers = loaded.n_layers
    candidates = list(layers) if layers is not None else list(range(int(0.8 * n_layers)))
    if not candidates:
        raise ProbewatchError("no candidate layers", hint="pass layers=[...]")
    sites = [f"resid.{i}" for i in candidates]
    vectors = extract_directions(loaded, dataset, sites, rows=fit, seed=seed)
    val_examples = [dataset.examples[i] for i in val]
    harmful = [[dict(m) for m in e.messages or ()] for e in val_examples if e.label == 1][:n_val]
    harmless = [[dict(m) for m in e.messages or ()] for e in val_examples if e.label == 0][:n_val]
    sweep, baseline = sweep_layers(loaded, vectors, harmful, harmless, spec)
    chosen = choose_layer(sweep)
    direction = SteeringVector(
        {chosen.site: vectors[chosen.site]},
        {
            **vectors.card,
            "sites": [chosen.site],
            "selection": {
                "rule": "min refusal log-odds on harmful validation requests under ablation, "
                f"among layers with ablation KL <= {kl_max} on harmless validation requests "
                "whose addition raises harmless refusal log-odds",
                "n_validation": {"harmful": len(harmful), "harmless": len(harmless)},
                "refusal_starts": list(REFUSAL_STARTS),
            },
        },
    )
    data = audit_data(n, seed, split="test")
    original = measure(loaded, data, spec)
    unit_source = {"direction_site": chosen.site, "method": "mean_diff"}
    ablate = Intervention(
        f"ablate the refusal direction ({chosen.site}) at every layer",
        lambda: ablate_direction(loaded, direction[chosen.site]),
        {"mode": "ablate", **unit_source},
    )
    add = Intervention(
        f"add {spec.scale:g} x the refusal direction at {chosen.site}",
        lambda: add_vectors(loaded, direction, spec.scale),
        {"mode": "add", "sites": [chosen.site], "scale": spec.scale, **unit_source},
    )
    # One measurement of the original model serves both comparisons.
    ablation = compare(original, measure(loaded, data, spec, ablate), ablate, loaded, spec)
    addition = compare(original, measure(loaded, data, spec, add), add, loaded, spec)
    demo = RefusalDemo(direction, chosen, sweep, baseline, ablation, addition)
    if out is not None:
        root = Path(out)
        save_vector(direction, root / "vector", overwrite=True)
        ablation.save(root / "ablation", overwrite=True)
        addition.save(root / "addition", overwrite=True)
        write_json_atomic(root / "summary.json", demo.summary())
    return demo

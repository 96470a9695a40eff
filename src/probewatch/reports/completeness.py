"""Completeness and causality: is the probe's direction *the* representation of the concept?

- Erasure: remove the concept from the activations and train a fresh probe. With LEACE (the
  provably minimal linear erasure, `concept-erasure` package) no linear probe should beat
  chance; projecting out only the probe's own direction shows how much the concept is spread
  over other directions (a fresh probe recovering it means one direction is not the whole story).
- Steering: add the direction to the residual stream and see whether the model's own judgement
  (its log-odds of " True" over " False" after the statement) moves, against a random
  direction of the same size.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from concept_erasure import LeaceEraser

from probewatch.data.base import Example
from probewatch.errors import ProbewatchError
from probewatch.hooks import add_vector
from probewatch.metrics.scores import auroc
from probewatch.models.loading import LoadedModel
from probewatch.probes.base import make_probe
from probewatch.tokens import encode


@dataclass
class ErasureResult:
    method: str
    auroc_before: float  # fresh probe on the original activations
    auroc_after: float  # fresh probe trained and tested on erased activations


def _fresh_probe_auroc(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor
) -> float:
    probe = make_probe("logistic").fit(train_x, train_y)
    return auroc(probe.score(test_x).numpy(), test_y.numpy())


def erasure_check(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    direction: torch.Tensor | None = None,
) -> list[ErasureResult]:
    """LEACE erasure (fitted on train), and if `direction` is given, its rank-1 projection."""
    before = _fresh_probe_auroc(train_x, train_y, test_x, test_y)
    eraser = LeaceEraser.fit(train_x.double(), train_y.long())
    results = [
        ErasureResult(
            "leace",
            before,
            _fresh_probe_auroc(
                eraser(train_x.double()).float(), train_y, eraser(test_x.double()).float(), test_y
            ),
        )
    ]
    if direction is not None:
        unit = direction / direction.norm()

        def project(x: torch.Tensor) -> torch.Tensor:
            return x - torch.outer(x @ unit, unit)

        results.append(
            ErasureResult(
                "project_out_probe_direction",
                before,
                _fresh_probe_auroc(project(train_x), train_y, project(test_x), test_y),
            )
        )
    return results


@dataclass
class SteeringResult:
    site: str
    strengths: list[float]  # in standard deviations of the activations along the direction
    true_logodds: list[float]  # mean log-odds " True" - " False" on true statements
    false_logodds: list[float]  # ... on false statements
    random_true_logodds: list[float]  # the same with a random direction of equal size
    random_false_logodds: list[float]
    judgement_auroc: float  # how well the unsteered log-odds separate true from false
    slope: float  # d(mean log-odds)/d(strength), truth direction
    random_slope: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _judgement_token_ids(tokenizer: Any) -> tuple[int, int]:
    ids = [tokenizer.encode(word, add_special_tokens=False) for word in (" True", " False")]
    if any(len(i) != 1 for i in ids):
        raise ProbewatchError("' True'/' False' are not single tokens for this tokenizer")
    return ids[0][0], ids[1][0]


@torch.no_grad()
def _logodds(loaded: LoadedModel, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    true_id, false_id = _judgement_token_ids(loaded.tokenizer)
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = encode(loaded.tokenizer, prompts[start : start + batch_size])
        device = loaded.device
        logits = loaded.model(
            input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device)
        ).logits
        last = batch.attention_mask.sum(dim=1) - 1
        final = logits[torch.arange(logits.shape[0]), last.to(device)]
        out.append((final[:, true_id] - final[:, false_id]).float().cpu().numpy())
    return np.concatenate(out)


@dataclass(frozen=True)
class SiteDirection:
    """A direction at a site, and the spread of the activations along it (the step unit)."""

    site: str
    direction: torch.Tensor
    activation_std: float


def steering_check(
    loaded: LoadedModel,
    target: SiteDirection,
    examples: Sequence[Example],
    strengths: Sequence[float] = (-8.0, -4.0, 0.0, 4.0, 8.0),
    seed: int = 0,
) -> SteeringResult:
    """Steer at the site with `strength * activation_std * unit(direction)` and measure the
    model's log-odds of " True" vs " False" after "<statement> This statement is"."""
    site, direction, activation_std = target.site, target.direction, target.activation_std
    unit = (direction / direction.norm()).float()
    generator = torch.Generator().manual_seed(seed)
    random_unit = torch.randn(unit.shape[0], generator=generator)
    random_unit /= random_unit.norm()
    prompts = [f"{ex.text} This statement is" for ex in examples]
    labels = np.array([ex.label for ex in examples])
    curves: dict[str, list[float]] = {k: [] for k in ("t", "f", "rt", "rf")}
    baseline = _logodds(loaded, prompts)
    for strength in strengths:
        for key, vec in (("", unit), ("r", random_unit)):
            with add_vector(loaded.model, site, vec, strength * activation_std):
                values = baseline if strength == 0 else _logodds(loaded, prompts)
            curves[key + "t"].append(float(values[labels == 1].mean()))
            curves[key + "f"].append(float(values[labels == 0].mean()))
    xs = np.asarray(strengths)

    def slope(key: str) -> float:
        ys = (np.asarray(curves[key + "t"]) + np.asarray(curves[key + "f"])) / 2
        return float(np.polyfit(xs, ys, 1)[0])

    return SteeringResult(
        site=site,
        strengths=list(map(float, strengths)),
        true_logodds=curves["t"],
        false_logodds=curves["f"],
        random_true_logodds=curves["rt"],
        random_false_logodds=curves["rf"],
        judgement_auroc=auroc(baseline, labels),
        slope=slope(""),
        random_slope=slope("r"),
    )

"""What is attributed: a logit difference, a token's log-probability, or a probe's score.

Each target gives, per row, the direction `u` it reads in its readout space, its constant terms,
and the model's own value, which the parts must add up to.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from probewatch.errors import ProbewatchError


@dataclass(frozen=True)
class LogitDiff:
    """logit[correct] − logit[wrong] (wrong may be None: then the plain logit of `correct`).
    One token id per example, or one for all."""

    correct: int | Sequence[int]
    wrong: int | Sequence[int] | None = None

    label = "logit difference"


@dataclass(frozen=True)
class LogProb:
    """log p(token); attributed through the softmax frozen at the real forward, with the
    nonlinear rest as its own row, so the parts still add up to the model's log-probability."""

    token: int | Sequence[int]

    label = "log-probability"


@dataclass(frozen=True)
class ProbeScore:
    """A probe's raw score (logit) at its own site. The probe must be affine in the activation."""

    probe: Any  # a ProbeArtifact (kept loose: attribution only needs .site and .probe.score)

    label = "probe score"

    @property
    def site(self) -> str:
        return str(self.probe.site)


Target = LogitDiff | LogProb | ProbeScore


def per_row(value: int | Sequence[int], examples: torch.Tensor, what: str) -> torch.Tensor:
    """A token id per row, from one id or one id per example."""
    if isinstance(value, int):
        return torch.full_like(examples, value)
    ids = torch.as_tensor(list(value), dtype=torch.long)
    if int(examples.max()) >= len(ids):
        raise ProbewatchError(
            f"{what}: {len(ids)} token ids for {int(examples.max()) + 1} examples",
            hint="give one token id per example, or a single id for all",
        )
    return ids[examples]


def single_token(tokenizer: Any, text: str) -> int:
    """The id of `text` as one token (e.g. " Paris"), refusing text that is several tokens."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if len(ids) != 1:
        pieces = [tokenizer.decode([i]) for i in ids]
        raise ProbewatchError(
            f"{text!r} is {len(ids)} tokens for this tokenizer ({pieces}), not one",
            hint="attribute a single-token answer, e.g. with a leading space: ' Paris'",
        )
    return int(ids[0])


def affine_form(probe: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(w [d], b) with score(x) = x·w + b, as the probe declares it (`Probe.affine()`, which
    every `AffineProbe` answers); a probe that is not affine is refused."""
    form = probe.affine()
    if form is None:
        kind = getattr(probe, "kind", type(probe).__name__)
        raise ProbewatchError(
            f"attribution needs a linear probe: a {kind!r} probe is not affine in its "
            "activation, so its score has no additive decomposition",
            hint="attribute a linear probe (logistic, mass_mean, ridge, pca_diff), or measure "
            "this one with activation patching (`probewatch attribute patch --probe ...`)",
        )
    weight, bias = form
    return weight.reshape(-1).double(), torch.as_tensor(bias).reshape(()).double()

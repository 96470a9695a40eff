"""What a patch is measured by: a function of the final logits, or a probe's score.

A metric sees, per patched row, the logits at its example's read position (`[R, V]`, soft-cap
applied) or, for a probe, the activation at the probe's site; it returns one number per row.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from probewatch.attribution.targets import affine_form, per_row
from probewatch.errors import ProbewatchError


@dataclass(frozen=True)
class LogitDiffMetric:
    """logit[correct] − logit[wrong] at the read position (one id per example, or one for all)."""

    correct: int | Sequence[int]
    wrong: int | Sequence[int]

    name = "logit_diff"
    probe_site = None

    def __call__(self, logits: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        right = per_row(self.correct, examples, "correct token").to(logits.device)
        wrong = per_row(self.wrong, examples, "wrong token").to(logits.device)
        return (logits.gather(1, right[:, None]) - logits.gather(1, wrong[:, None]))[:, 0]

    def narrowed(self) -> tuple[list[int], "LogitDiffMetric"]:
        """(the token ids it reads, the same metric on logits of those columns only): two
        columns of the unembedding instead of all of it."""

        def ids(value: int | Sequence[int]) -> list[int]:
            return [value] if isinstance(value, int) else list(value)

        columns = sorted({*ids(self.correct), *ids(self.wrong)})
        at = {token: j for j, token in enumerate(columns)}

        def remap(value: int | Sequence[int]) -> int | list[int]:
            return at[value] if isinstance(value, int) else [at[t] for t in value]

        return columns, LogitDiffMetric(remap(self.correct), remap(self.wrong))


@dataclass(frozen=True)
class ProbMetric:
    """p(token) at the read position."""

    token: int | Sequence[int]

    name = "prob"
    probe_site = None

    def __call__(self, logits: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        token = per_row(self.token, examples, "token").to(logits.device)
        return torch.softmax(logits.float(), dim=-1).gather(1, token[:, None])[:, 0]


@dataclass(frozen=True)
class KLMetric:
    """KL(reference ‖ patched) of the next-token distribution; `reference` is [B, V] logits
    (usually the clean run's), so 0 means the patch fully restores the clean prediction."""

    reference: torch.Tensor

    name = "kl"
    probe_site = None

    def __call__(self, logits: torch.Tensor, examples: torch.Tensor) -> torch.Tensor:
        ref = torch.log_softmax(self.reference.to(logits.device).float()[examples], dim=-1)
        new = torch.log_softmax(logits.float(), dim=-1)
        return (ref.exp() * (ref - new)).sum(-1)


@dataclass(frozen=True)
class ProbeMetric:
    """A probe's raw score at its own site, read at the read position (usually the last token)."""

    probe: Any  # a ProbeArtifact

    name = "probe"

    @property
    def probe_site(self) -> str:
        return str(self.probe.site)

    def __call__(self, acts: torch.Tensor, _examples: torch.Tensor) -> torch.Tensor:
        # The affine form keeps gradients (attribution patching); other probes score as usual.
        try:
            weight, bias = affine_form(self.probe.probe)
        except ProbewatchError:
            return self.probe.probe.score(acts.detach().float().cpu()).reshape(-1).double()
        return acts.double() @ weight.to(acts.device) + bias


Metric = LogitDiffMetric | ProbMetric | KLMetric | ProbeMetric


def check_metric(metric: Any) -> None:
    if not callable(metric) or not hasattr(metric, "name"):
        raise ProbewatchError(
            f"{metric!r} is not a patching metric",
            hint="use LogitDiffMetric, ProbMetric, KLMetric or ProbeMetric",
        )

"""Attention-pooled probe: learns which tokens of a sequence to read, then reads them linearly.

For tokens z_t (standardized activations) of one sequence:

    value logit   v_t = w · z_t + b          (per-token score, a logit)
    attention     α   = softmax_t(q · z_t)   over the sequence's real tokens only
    sequence      s   = Σ_t α_t v_t          (a logit)

Sequences are passed in one of three ways:
  - `fit(x[N, T, d], y, mask=mask[N, T])`: padded batch; `mask` is True on real tokens (default:
    all real). Every sequence needs at least one real token.
  - `fit_sequences([x_1[T_1, d], ...], y)`: variable-length list, padded for you.
  - `fit(x[N, d], y)`: each row is a one-token sequence (then this is a logistic probe).
Score sequences with `score_padded(x, mask)` or `score_sequences(list)`. `score(x[N, d])` keeps
the common probe interface and returns the per-token value logits v_t, which can be streamed
and aggregated like any other probe's token scores.
"""

from collections.abc import Sequence
from typing import Any, Self

import torch
import torch.nn.functional as F

from probewatch.errors import ProbewatchError
from probewatch.metrics.labels import require_binary_labels
from probewatch.probes.base import Probe, register
from probewatch.probes.checks import require_features, require_targets
from probewatch.probes.training import TrainSettings, fit_early_stopping, uniform_init

_NAMES = ("scaler.mean", "scaler.scale", "value.weight", "value.bias", "query")


def pad_sequences(sequences: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad [T_i, d] tensors to x[N, T_max, d] with zeros, and mask[N, T_max]."""
    if len(sequences) == 0:
        raise ProbewatchError("no sequences given", hint="pass at least one [T, d] tensor")
    for i, seq in enumerate(sequences):
        require_features(seq, f"sequence {i}")
    widths = {seq.shape[1] for seq in sequences}
    if len(widths) > 1:
        raise ProbewatchError(
            f"sequences have different widths {sorted(widths)}",
            hint="every token activation must come from the same site",
        )
    lengths = torch.tensor([len(seq) for seq in sequences])
    x = torch.nn.utils.rnn.pad_sequence([seq.float() for seq in sequences], batch_first=True)
    mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    return x, mask


def _as_padded(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(x, torch.Tensor) and x.dim() == 2:
        x = x[:, None, :]
    require_features(x, ndim=3)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool)
    if mask.shape != x.shape[:2]:
        raise ProbewatchError(
            f"mask has shape {tuple(mask.shape)} but the activations are {tuple(x.shape)}",
            hint="mask must be [N, T], True on real tokens",
        )
    mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ProbewatchError(
            "some sequences have no real tokens", hint="drop empty sequences before scoring"
        )
    return x.float(), mask


def _pool(
    z: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    query: torch.Tensor,
) -> torch.Tensor:
    values = z @ weight + bias
    attention = torch.softmax((z @ query).masked_fill(~mask, float("-inf")), dim=1)
    # Padded positions get weight 0; where() keeps their (finite) values out of the sum.
    return torch.where(mask, attention * values, 0.0).sum(dim=1)


@register
class AttentionProbe(Probe):
    """One attention head (a learned query) pooling per-token logits into a sequence logit."""

    kind = "attention"
    per_token = False  # score(x[N, d]) gives value logits; the verdict pools a sequence
    tensor_names = _NAMES
    fitted_fields = (("best_epoch", "best_epoch"),)

    @classmethod
    def option_names(cls) -> list[str]:
        return TrainSettings.names()

    def __init__(self, **training: Any) -> None:
        """`training`: the TrainSettings fields (lr, weight_decay, max_epochs, patience,
        batch_size, val_fraction, seed)."""
        self.settings = TrainSettings(**training)
        self.best_epoch: int | None = None

    def fit(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        groups: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> Self:
        del groups  # nothing here is chosen by cross-validation
        x, mask = _as_padded(x, mask)
        require_targets(y, x.shape[0])
        require_binary_labels(y, "the training data")
        target = y.float()
        real = x[mask]
        mean, scale = real.mean(dim=0), real.std(dim=0).nan_to_num(1.0).clamp_min(1e-6)
        z = (x - mean) / scale
        d = z.shape[-1]
        generator = torch.Generator().manual_seed(self.settings.seed)
        weight = uniform_init((d,), d, generator)
        bias = torch.zeros(1, requires_grad=True)
        # A zero query starts as mean pooling; training learns where to look.
        query = torch.zeros(d, requires_grad=True)

        def loss_on(rows: torch.Tensor) -> torch.Tensor:
            logits = _pool(z[rows], mask[rows], weight, bias, query)
            return F.binary_cross_entropy_with_logits(logits, target[rows])

        self.best_epoch = fit_early_stopping(
            ([weight, query], [bias]), loss_on, target, self.settings, generator
        )
        self._keep(**dict(zip(_NAMES, (mean, scale, weight, bias, query), strict=True)))
        return self

    def fit_sequences(self, sequences: Sequence[torch.Tensor], y: torch.Tensor) -> Self:
        x, mask = pad_sequences(sequences)
        return self.fit(x, y, mask=mask)

    def _standardize(self, x: torch.Tensor) -> torch.Tensor:
        s = self._state()
        return (x.float() - s["scaler.mean"]) / s["scaler.scale"]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token value logits for x[N, d] (one row per token)."""
        s = self._state()
        return self._standardize(x) @ s["value.weight"] + s["value.bias"]

    def score_padded(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Sequence logits [N] for a padded batch x[N, T, d] with mask[N, T]."""
        x, mask = _as_padded(x, mask)
        s = self._state()
        z = self._standardize(x)
        return _pool(z, mask, s["value.weight"], s["value.bias"], s["query"])

    def score_sequences(self, sequences: Sequence[torch.Tensor]) -> torch.Tensor:
        """Sequence logits [N] for a list of [T_i, d] tensors."""
        return self.score_padded(*pad_sequences(sequences))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Where the probe looks in one sequence x[T, d]: weights [T] that sum to 1."""
        z = self._standardize(x)
        return torch.softmax(z @ self._state()["query"], dim=0)

    def options(self) -> dict[str, Any]:
        return self.settings.to_dict()

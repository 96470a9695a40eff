"""A small non-linear probe: standardize, one hidden ReLU layer, one logit.

Useful as a ceiling for what a linear probe misses. Trained with AdamW (weight decay) and
early stopping on a seeded random validation split of the training data; deterministic given
`seed`.
"""

from typing import Any, Self

import torch
import torch.nn.functional as F

from probewatch.errors import ProbewatchError
from probewatch.probes.base import Probe, register
from probewatch.probes.checks import require_binary_data
from probewatch.probes.training import TrainSettings, fit_early_stopping, uniform_init

_NAMES = ("scaler.mean", "scaler.scale", "hidden.weight", "hidden.bias", "out.weight", "out.bias")


@register
class MLPProbe(Probe):
    """score(x) = w₂ · relu(W₁ (x − mean)/scale + b₁) + b₂, a logit."""

    kind = "mlp"
    tensor_names = _NAMES
    fitted_fields = (("best_epoch", "best_epoch"),)

    @classmethod
    def option_names(cls) -> list[str]:
        return ["hidden", *TrainSettings.names()]

    def __init__(self, hidden: int = 64, **training: Any) -> None:
        """`training`: the TrainSettings fields (lr, weight_decay, max_epochs, patience,
        batch_size, val_fraction, seed)."""
        if hidden < 1:
            raise ProbewatchError(f"hidden must be at least 1, got {hidden}", hint="try 64")
        self.settings = TrainSettings(**training)
        self.hidden = hidden
        self.best_epoch: int | None = None

    def fit(self, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor | None = None) -> Self:
        del groups  # early stopping holds out rows, not groups
        require_binary_data(x, y)
        x32, target = x.float(), y.float()
        mean, scale = x32.mean(dim=0), x32.std(dim=0).nan_to_num(1.0).clamp_min(1e-6)
        z = (x32 - mean) / scale
        d = z.shape[1]
        generator = torch.Generator().manual_seed(self.settings.seed)
        w1 = uniform_init((self.hidden, d), d, generator)
        b1 = uniform_init((self.hidden,), d, generator)
        w2 = uniform_init((self.hidden,), self.hidden, generator)
        b2 = uniform_init((1,), self.hidden, generator)

        def loss_on(rows: torch.Tensor) -> torch.Tensor:
            logits = F.relu(z[rows] @ w1.T + b1) @ w2 + b2
            return F.binary_cross_entropy_with_logits(logits, target[rows])

        self.best_epoch = fit_early_stopping(
            ([w1, w2], [b1, b2]), loss_on, target, self.settings, generator
        )
        self._keep(**dict(zip(_NAMES, (mean, scale, w1, b1, w2, b2), strict=True)))
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:
        s = self._state()
        z = (x.float() - s["scaler.mean"]) / s["scaler.scale"]
        hidden = F.relu(z @ s["hidden.weight"].T + s["hidden.bias"])
        return hidden @ s["out.weight"] + s["out.bias"]

    def options(self) -> dict[str, Any]:
        return {"hidden": self.hidden, **self.settings.to_dict()}

"""Probe transfer (the Obfuscation Atlas check): does a probe trained on A still work on B?

For each last-token probe whose card names a built-in dataset, that dataset is rebuilt exactly
as the probe saw it (the card's seed and the recipe's limit; its hash must match the card's),
so the held-out examples are the probe's own test split (a built-in split depends on the seed,
so the comparison's seed could put training examples there). On a seeded sample of
`transfer_n` test examples (a sample: built-in datasets are ordered by source or entity), each
with a paired-bootstrap interval (one resample of the test examples for every statistic):

- the AUROC of A's probe on A's and on B's activations, and the drop between the two;
- a probe of the same kind and settings retrained on B's activations of the examples A's probe
  was fitted on (train minus its validation groups; a seeded sample of `transfer_n`): the
  ceiling, does B still carry the concept? The same retrained on A's says what that budget
  buys on A; with `transfer_n` at least the fit size, A vs A retrains A's probe exactly;
- the gap retrained − transferred on B;

and the false-positive rate of A's threshold on A's and on B's activations of a sample of a
benign control set.

Probes that cannot be re-checked this way are listed with the reason, never dropped."""

from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch

from probewatch.capture import ActivationCapture
from probewatch.compare.forward import Pair, Side
from probewatch.compare.spec import CompareSpec
from probewatch.compare.stats import Interval, paired_bootstrap, wilson
from probewatch.config import DataSource
from probewatch.data import BUILDERS, GENERATED, load_source
from probewatch.data.base import Dataset, Example
from probewatch.data.common import stable_hash
from probewatch.metrics.scores import auroc
from probewatch.probes.artifact import ProbeArtifact
from probewatch.probes.base import make_probe
from probewatch.store import encode_examples, in_validation

CONTROL = "benign_control"


@torch.no_grad()
def last_token_acts(
    side: Side, examples: Sequence[Example], site: str, batch_size: int
) -> torch.Tensor:
    """[len(examples), d] activations at `site` on each example's last token, read as training
    reads them (the same encoding and capture), under the side's intervention. Batches are
    formed by length, so long chats are not padded to each other's length."""
    loaded = side.loaded
    lengths = [len(e.messages[-1]["content"]) if e.messages else len(e.text) for e in examples]
    order = sorted(range(len(examples)), key=lambda i: lengths[i])
    out = torch.empty(len(examples), loaded.d_model)
    # The intervention's hooks are registered first, so the capture reads what they leave.
    with side.active(), ActivationCapture(loaded.model, [site], positions="last") as capture:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = encode_examples(loaded, [examples[i] for i in rows])
            acts = capture.run(batch).acts[capture.site_names[0]]
            out[torch.tensor(rows)] = acts.float()
    return out


def _auroc_safe(scores: np.ndarray, labels: np.ndarray) -> float:
    return auroc(scores, labels) if 0 < labels.sum() < labels.size else float("nan")


def probe_dataset(probe: ProbeArtifact) -> tuple[Dataset, int] | str:
    """The dataset the probe was trained on and its seed, rebuilt from the card, or why it
    cannot be."""
    if probe.positions != "last":
        return f"reads positions {probe.positions!r}; transfer re-reads last-token activations only"
    card = probe.card.get("dataset") or {}
    recipe = probe.card.get("recipe") or {}
    name = card.get("name")
    if name in GENERATED:
        return f"trained on {name!r}, which is labelled from a model's own answers"
    if name not in BUILDERS or recipe.get("file"):
        return f"trained on {name!r}, which is not a built-in dataset"
    # The split of a built-in dataset depends on its seed: the comparison's seed could put the
    # probe's training examples in the "held-out" set.
    seed = int(card.get("seed", recipe.get("seed", 0)))
    limit = recipe.get("limit")
    data = load_source(DataSource(dataset=str(name), limit=limit, seed=seed))
    if card.get("hash") is not None and card["hash"] != data.hash:
        return (
            f"{name!r} at seed {seed}" + (f", limit {limit}" if limit else "") + f" has hash "
            f"{data.hash}, not the card's {card['hash']}: the data changed since training, so "
            "its test split may hold the probe's training examples"
        )
    return data, seed


def fit_examples(data: Dataset, seed: int) -> list[Example]:
    """The train examples outside the validation groups: what training fitted the probe on."""
    return [
        e
        for i, e in enumerate(data.examples)
        if e.split == "train" and not in_validation(e.group or str(i), seed)
    ]


@cache
def control_examples(seed: int) -> tuple[Example, ...]:
    """The benign control set, built once per process (it reads two packages' data files)."""
    return tuple(load_source(DataSource(dataset=CONTROL, seed=seed)).examples)


def sample(rows: Sequence[Example], n: int, seed: int) -> list[Example]:
    """A seeded sample of `n` rows (all of them if fewer), kept in their order."""
    if n >= len(rows):
        return list(rows)
    ranked = sorted(range(len(rows)), key=lambda i: stable_hash("transfer", seed, i))
    return [rows[i] for i in sorted(ranked[:n])]


def probe_transfer(
    pair: Pair, name: str, probe: ProbeArtifact, spec: CompareSpec
) -> dict[str, Any]:
    a, b, n, batch_size = pair.a, pair.b, spec.transfer_n, spec.batch_size
    n_boot, seed = spec.n_boot, spec.seed
    found = probe_dataset(probe)
    if isinstance(found, str):
        return {"probe": name, "site": probe.site, "skipped": found}
    data, data_seed = found
    train = sample(fit_examples(data, data_seed), n, seed)
    test = sample(data.split("test"), n, seed)
    y_train = np.array([e.label for e in train])
    y_test = np.array([e.label for e in test])
    for split, y in (("fit", y_train), ("test", y_test)):
        if not 0 < y.sum() < y.size:
            return {
                "probe": name,
                "site": probe.site,
                "skipped": f"the sample of {y.size} {split} examples of {data.name!r} holds one "
                "class (raise --transfer-n)",
            }
    acts = {
        (side.label, split): last_token_acts(side, rows, probe.site, batch_size)
        for side in (a, b)
        for split, rows in (("train", train), ("test", test))
    }
    on_a = probe.score(acts[(a.label, "test")]).double().numpy()
    on_b = probe.score(acts[(b.label, "test")]).double().numpy()
    config = {k: v for k, v in (probe.card.get("config") or {}).items() if k != "fitted"}

    def retrained(side: Side) -> np.ndarray:
        fitted = make_probe(str(probe.card["kind"]), **config).fit(
            acts[(side.label, "train")], torch.tensor(y_train, dtype=torch.float32)
        )
        return fitted.score(acts[(side.label, "test")]).double().numpy()

    ceiling, ceiling_a = retrained(b), retrained(a)

    def paired(*terms: tuple[float, np.ndarray]) -> Interval:
        """sum(sign * AUROC(scores)) on the same resamples of the test examples."""
        return paired_bootstrap(
            lambda i: sum(sign * _auroc_safe(s[i], y_test[i]) for sign, s in terms),
            y_test.size,
            n_boot,
            seed,
        )

    threshold = float((probe.card.get("threshold") or {}).get("value", 0.0))
    control = sample(control_examples(seed), n, seed)
    fpr = {}
    for side in (a, b):
        scores = probe.score(last_token_acts(side, control, probe.site, batch_size)).numpy()
        fpr[side.label] = wilson(int((scores > threshold).sum()), len(scores)).to_dict()
    return {
        "probe": name,
        "site": probe.site,
        "dataset": {
            "name": data.name,
            "hash": data.hash,
            "seed": data_seed,
            "n_fit": len(train),
            "n_test": len(test),
        },
        "auroc_a_probe_on_a": paired((1, on_a)).to_dict(),
        "auroc_a_probe_on_b": paired((1, on_b)).to_dict(),
        "auroc_retrained_on_b": paired((1, ceiling)).to_dict(),
        "auroc_retrained_on_a": paired((1, ceiling_a)).to_dict(),
        "drop_a_minus_b": paired((1, on_a), (-1, on_b)).to_dict(),
        "gap_retrained_minus_transferred": paired((1, ceiling), (-1, on_b)).to_dict(),
        "threshold": threshold,
        "control_fpr": {"dataset": CONTROL, "at_a": fpr[a.label], "at_b": fpr[b.label]},
    }

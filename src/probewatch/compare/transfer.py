"""Probe transfer (the Obfuscation Atlas check): does a probe trained on A still work on B?

For each probe whose card names a built-in dataset: its AUROC on A's and on B's activations
(same held-out examples), against a probe of the same kind and settings retrained on B's
activations (the ceiling), with a paired-bootstrap interval of the gap; and the false-positive
rate of A's threshold on B's activations of a benign control set, next to A's own."""

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from probewatch.compare.forward import Pair, Side, run
from probewatch.compare.spec import CompareSpec
from probewatch.compare.stats import Interval, paired_bootstrap, wilson
from probewatch.data import BUILDERS, load_dataset
from probewatch.data.base import Example
from probewatch.metrics.scores import auroc
from probewatch.probes.artifact import ProbeArtifact
from probewatch.probes.base import make_probe
from probewatch.sites import parse_site
from probewatch.tokens import encode, encode_chats


@torch.no_grad()
def last_token_acts(
    side: Side, examples: Sequence[Example], site: str, batch_size: int
) -> torch.Tensor:
    parsed = parse_site(site, side.loaded.n_layers)
    out = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        if all(e.messages for e in chunk):
            batch = encode_chats(
                side.loaded.tokenizer, [[dict(m) for m in e.messages or ()] for e in chunk]
            )
        else:
            batch = encode(side.loaded.tokenizer, [e.text for e in chunk])
        acts = run(side, batch, [parsed]).acts[parsed.name]
        last = batch.attention_mask.sum(1) - 1
        out.append(acts[torch.arange(acts.shape[0]), last])
    return torch.cat(out)


def _auroc_safe(scores: np.ndarray, labels: np.ndarray) -> float:
    return auroc(scores, labels) if 0 < labels.sum() < labels.size else float("nan")


def probe_transfer(
    pair: Pair, name: str, probe: ProbeArtifact, spec: CompareSpec
) -> dict[str, Any]:
    a, b, n, batch_size = pair.a, pair.b, spec.transfer_n, spec.batch_size
    n_boot, seed = spec.n_boot, spec.seed
    dataset_name = (probe.card.get("dataset") or {}).get("name")
    if probe.positions != "last" or dataset_name not in BUILDERS:
        return {"probe": name, "skipped": "needs a last-token probe trained on a built-in dataset"}
    data = load_dataset(str(dataset_name), seed=seed)
    train, test = data.split("train")[:n], data.split("test")[:n]
    y_train = np.array([e.label for e in train])
    y_test = np.array([e.label for e in test])
    acts = {
        (side.label, split): last_token_acts(side, rows, probe.site, batch_size)
        for side in (a, b)
        for split, rows in (("train", train), ("test", test))
    }
    on_a = probe.score(acts[(a.label, "test")]).double().numpy()
    on_b = probe.score(acts[(b.label, "test")]).double().numpy()
    config = {k: v for k, v in (probe.card.get("config") or {}).items() if k != "fitted"}
    retrained = make_probe(str(probe.card["kind"]), **config).fit(
        acts[(b.label, "train")], torch.tensor(y_train, dtype=torch.float32)
    )
    ceiling = retrained.score(acts[(b.label, "test")]).double().numpy()

    def stat(scores: np.ndarray) -> Interval:
        return paired_bootstrap(
            lambda i: _auroc_safe(scores[i], y_test[i]), y_test.size, n_boot, seed
        )

    gap = paired_bootstrap(
        lambda i: _auroc_safe(ceiling[i], y_test[i]) - _auroc_safe(on_b[i], y_test[i]),
        y_test.size,
        n_boot,
        seed,
    )
    threshold = float((probe.card.get("threshold") or {}).get("value", 0.0))
    control = load_dataset("benign_control", seed=seed).examples[:n]
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
            "n_train": len(train),
            "n_test": len(test),
        },
        "auroc_a_probe_on_a": stat(on_a).to_dict(),
        "auroc_a_probe_on_b": stat(on_b).to_dict(),
        "auroc_retrained_on_b": stat(ceiling).to_dict(),
        "gap_retrained_minus_transferred": gap.to_dict(),
        "threshold": threshold,
        "control_fpr": {"dataset": "benign_control", "at_a": fpr[a.label], "at_b": fpr[b.label]},
    }

"""Attribution benchmarks (section `attribution` of `make bench`), ratios measured side by side:

- per-head DLA of all heads over a batch vs a plain forward pass of the same batch (goal ≤ 1.3×);
- the batched patching sweep vs one forward per patch, same values (goal ≥ 10×);
- tuned-lens training (`python -m benchmarks.attribution --lens`, ~15 min): steps, seconds and
  held-out KL per layer against the logit lens, with CIs.

    .venv/bin/python -m benchmarks.attribution [--quick] [--lens]
"""

import argparse
import time
from typing import Any

import torch

from benchmarks.common import interleaved, machine, median, speed_ratio, write_results
from probewatch.attribution import LogitDiff, anatomy, direct_attribution, single_token
from probewatch.attribution.metrics import LogitDiffMetric
from probewatch.attribution.patching import (
    SweepSpec,
    patch_reference,
    patch_sweep,
    record_sources,
)
from probewatch.models import load_model
from probewatch.tokens import encode

CLEAN = "The Eiffel Tower is in the city of"
CORRUPT = "The Colosseum is in the city of"


def bench_dla(loaded: Any, batch_size: int, rounds: int) -> dict[str, Any]:
    texts = [f"{CLEAN} and number {i} of the list says" for i in range(batch_size)]
    batch = encode(loaded.tokenizer, texts)
    paris, london = (
        single_token(loaded.tokenizer, " Paris"),
        single_token(loaded.tokenizer, " London"),
    )
    anatomy(loaded.model)  # discovered once, outside the timed rounds
    target = LogitDiff(paris, london)

    @torch.no_grad()
    def plain() -> None:
        loaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def dla() -> None:
        direct_attribution(loaded, batch, target)

    times = interleaved({"plain": plain, "dla": dla}, rounds)
    error = direct_attribution(loaded, batch, target).error()
    return {
        "batch": batch_size,
        "tokens": int(batch.attention_mask.sum()),
        "plain_s": median(times["plain"]),
        "dla_s": median(times["dla"]),
        "dla_over_plain": 1 / speed_ratio(times, "dla", "plain"),
        "max_sum_error": error,
    }


def bench_patching(loaded: Any, quick: bool, rounds: int = 3) -> dict[str, Any]:
    """Rounds interleave the whole sweep with one forward per patch on a third of its cells (a
    different third each round, so every cell is checked once); the loop's cost is scaled to
    all cells from its per-forward median, so load drift hits both sides alike."""
    tok = loaded.tokenizer
    clean, corrupt = encode(tok, [CLEAN]), encode(tok, [CORRUPT])
    metric = LogitDiffMetric(single_token(tok, " Paris"), single_token(tok, " Rome"))
    sources = record_sources(loaded, clean)
    layers = tuple(range(0, loaded.n_layers, 6 if quick else 1))
    spec = SweepSpec(components=("resid",), layers=layers)
    sweep_s, per_patch_s, diffs = [], [], []
    result = patch_sweep(loaded, corrupt, sources, metric, spec)  # warm-up, and the cells
    for round_ in range(rounds):
        started = time.perf_counter()
        result = patch_sweep(loaded, corrupt, sources, metric, spec)
        sweep_s.append(time.perf_counter() - started)
        index = list(range(round_, len(result.cells), rounds))
        started = time.perf_counter()
        reference = [
            patch_reference(loaded, corrupt, sources, metric, result.cells[i]) for i in index
        ]
        per_patch_s.append((time.perf_counter() - started) / len(index))
        diffs += [
            float((r.double() - result.values[i]).abs().max())
            for i, r in zip(index, reference, strict=True)
        ]
    per_round = [len(result.cells) * r / s for r, s in zip(per_patch_s, sweep_s, strict=True)]
    return {
        "cells": len(result.cells),
        "rounds": rounds,
        "batched_s": median(sweep_s),
        "one_forward_per_patch_s": median(per_patch_s) * len(result.cells),
        "speedup": median(per_round),  # median over rounds, as speed_ratio does
        "speedup_per_round": per_round,
        "max_abs_diff": max(diffs),
    }


def bench_tuned_lens(loaded: Any, budget_s: float) -> dict[str, Any]:
    from probewatch.attribution.tuned_lens import TunedLensSpec, compare_lenses, train_tuned_lens
    from probewatch.data.prose import book_passages

    lens = train_tuned_lens(loaded, book_passages("train"), TunedLensSpec(time_budget_s=budget_s))
    return {**lens.card, "held_out": compare_lenses(loaded, lens, book_passages("test")[:60])}


def run(quick: bool, lens: bool) -> dict[str, Any]:
    loaded = load_model("default")
    out: dict[str, Any] = {"machine_before": machine()}
    out["dla"] = bench_dla(loaded, 2 if quick else 8, 3 if quick else 7)
    out["patching"] = bench_patching(loaded, quick)
    if lens:
        out["tuned_lens"] = bench_tuned_lens(loaded, 60.0 if quick else 840.0)
    out["machine_after"] = machine()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lens", action="store_true", help="also train a tuned lens (~15 min)")
    args = parser.parse_args()
    result = run(args.quick, args.lens)
    path = write_results("attribution", result)
    for key in ("dla", "patching"):
        print(key, {k: v for k, v in result[key].items()})
    print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

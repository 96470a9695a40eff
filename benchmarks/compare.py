"""compare's cost relative to two plain forward passes over the same prompts (one per model).

Measured side by side, alternating within rounds (benchmarks.common.interleaved):
- `plain`: model A and model B each run one forward pass over the prompt + reply tokens;
- `analysis pass`: compare's pass over the same tokens for both sides, which reads the logits
  (per-token KL both ways), every requested site (drift, all 30 residual layers) and the
  probes at once;
- the whole `compare` (generation, the teacher-forced pass over the other side's replies, the
  difference lens, patching, statistics) is timed once and reported per phase.

    .venv/bin/python -m benchmarks.compare [--quick]
"""

import argparse
import time
from typing import Any

import torch

from benchmarks.common import interleaved, machine, median, speed_ratio, write_results
from probewatch.compare.forward import Pair, Side, run, site_list
from probewatch.compare.generation import prompt_ids, replies
from probewatch.compare.passes import padded, run_passes
from probewatch.compare.prompts import build_prompts
from probewatch.compare.run import compare
from probewatch.compare.spec import CompareSpec
from probewatch.models import load_model
from probewatch.steer.interventions import Intervention, add_vectors


def bench_compare(quick: bool) -> dict[str, Any]:
    loaded = load_model("default")
    loaded.fingerprint  # noqa: B018  # computed once, outside the timed rounds
    vector = torch.randn(loaded.d_model, generator=torch.Generator().manual_seed(0))
    steer = Intervention("bench steer", lambda: add_vectors(loaded, {"resid.12": vector}, 2.0))
    a, b = Side(loaded, "A"), Side(loaded, "B", steer)
    n = 4 if quick else 16
    spec = CompareSpec(
        model="default", b="default", sets="harmless", n=n, max_new_tokens=16, patch_prompts=4
    )
    prompts = build_prompts(spec.n, spec.seed, spec.set_list(), None, 16)
    ids = prompt_ids(a, prompts.chats)
    gen = (replies(a, ids, spec), replies(b, ids, spec))
    sequences = [list(r.prompt_ids) + list(r.reply_ids) for r in gen[0]]
    sites = site_list(a, spec.sites)

    def plain() -> None:
        for side in (a, b):
            for start in range(0, len(sequences), spec.batch_size):
                batch = padded(sequences[start : start + spec.batch_size], 0)
                with torch.no_grad(), side.active():
                    side.loaded.model(
                        input_ids=batch.input_ids, attention_mask=batch.attention_mask
                    )

    def analysis() -> None:
        for start in range(0, len(sequences), spec.batch_size):
            batch = padded(sequences[start : start + spec.batch_size], 0)
            run(a, batch, sites), run(b, batch, sites)

    times = interleaved({"plain": plain, "analysis pass": analysis}, rounds=2 if quick else 4)
    started = time.perf_counter()
    run_passes(Pair(a, b), gen, sites, {}, spec)
    passes_s = time.perf_counter() - started
    started = time.perf_counter()
    report = compare(a, b, spec)
    whole_s = time.perf_counter() - started
    plain_s = median(times["plain"])
    return {
        "prompts": n,
        "tokens": sum(len(s) for s in sequences),
        "sites": len(sites),
        "plain_two_forwards_s": plain_s,
        "analysis_pass_s": median(times["analysis pass"]),
        "analysis_vs_plain": speed_ratio(times, "plain", "analysis pass"),  # time ratio
        "run_passes_both_reply_sets_s": passes_s,
        "run_passes_vs_plain": passes_s / plain_s,
        "compare_total_s": whole_s,
        "compare_vs_plain": whole_s / plain_s,
        "compare_phases_s": report.seconds,
        "machine": machine(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = bench_compare(args.quick)
    path = write_results("compare", result)
    print(f"two plain forward passes        {result['plain_two_forwards_s']:.2f} s")
    print(f"compare's analysis pass         x{result['analysis_vs_plain']:.2f}")
    print(f"both teacher-forced passes      x{result['run_passes_vs_plain']:.2f}")
    phases = result["compare_phases_s"]
    print(f"whole compare (with generation) x{result['compare_vs_plain']:.2f}  {phases}")
    print(f"raw numbers: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

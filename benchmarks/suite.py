"""`make bench`: the whole benchmark suite on the embedded default model. Prints one table of
ratios (each measured side by side in this run) and writes the raw numbers to
benchmarks/results/suite.json. Peer rows come from results/peers.json (`make bench-peers`);
the vLLM server rows appear when `.venv-vllm` exists.

    .venv/bin/python -m benchmarks.suite [--quick] [--only harvest,memory,...]
"""

import argparse
import sys
import time
from typing import Any

from benchmarks.common import machine, read_results, write_results
from benchmarks.generation import bench_monitor_overhead, bench_vs_hf
from benchmarks.harvest import bench_capture
from benchmarks.memory import bench_memory
from benchmarks.server import bench_server
from benchmarks.table import render, rows
from benchmarks.workloads import token_batch
from probewatch.models import load_model

SECTIONS = ("harvest", "memory", "monitor_overhead", "vs_hf", "server")


def run(sections: tuple[str, ...], quick: bool) -> dict[str, Any]:
    rounds = 2 if quick else 5
    tokens = 8 if quick else 32
    loaded = load_model("default")
    loaded.fingerprint  # noqa: B018  # computed once, outside every timed round
    out: dict[str, Any] = {"machine_before": machine(), "quick": quick}
    started = time.time()
    if "harvest" in sections:
        batch = token_batch(loaded, 2 if quick else 8, 32 if quick else 128)
        out["harvest"] = bench_capture(loaded, batch, rounds)
    if "memory" in sections:
        out["memory"] = bench_memory(4 if quick else 16, 60)
    if "monitor_overhead" in sections:
        out["monitor_overhead"] = bench_monitor_overhead(loaded, 2, tokens, rounds + 2)
    if "vs_hf" in sections:
        out["vs_hf"] = {str(n): bench_vs_hf(loaded, n, tokens, rounds) for n in (1, 8)}
    if "server" in sections:
        out["server"] = bench_server(tokens, 1 if quick else 2)
    out["machine_after"] = machine()
    out["elapsed_s"] = time.time() - started
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, to check it runs")
    parser.add_argument("--only", default=",".join(SECTIONS))
    args = parser.parse_args()
    sections = tuple(s for s in args.only.split(",") if s)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    suite = run(sections, args.quick)
    path = write_results("suite", suite)
    peers = read_results("peers")
    print(render(rows(suite, peers)))
    m = suite["machine_before"]
    print(
        f"\n{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads); "
        f"load average before/after: {m['load_average_1_5_15'][0]:.1f} / "
        f"{suite['machine_after']['load_average_1_5_15'][0]:.1f}. Raw numbers: {path}"
    )
    if peers:
        print(f"peer rows measured {peers['machine']['time']} by benchmarks/peers.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())

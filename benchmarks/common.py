"""Timing and result helpers shared by every benchmark.

Every comparison is a ratio measured side by side in one run: candidates alternate round by
round (A B, B A, A B ...), so load from other processes on a shared machine hits all of them alike,
and we report the median of the per-round ratios.
"""

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"
SITES = ("resid.8", "resid.16", "resid.24")  # on the default model's 30 layers


def sites_for(n_layers: int) -> tuple[str, ...]:
    """The same relative depths as SITES on a model with `n_layers` (tests use tiny models).
    Never the last block: HF's last hidden state has the final norm applied."""
    return tuple(f"resid.{min(n_layers - 2, round(n_layers * k / 30))}" for k in (8, 16, 24))


def interleaved(
    candidates: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, alternating candidates within every round."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates.items())
    for i in range(rounds):
        # A B, then B A: whoever runs second in a round gets no systematic advantage.
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def speed_ratio(times: Mapping[str, list[float]], candidate: str, baseline: str) -> float:
    """Median over rounds of baseline time / candidate time (> 1: the candidate is faster)."""
    pairs = zip(times[baseline], times[candidate], strict=True)
    return statistics.median(b / c for b, c in pairs)


def rate_ratio(candidate: list[float], baseline: list[float]) -> dict[str, float | int]:
    """Median over rounds of candidate rate / baseline rate (> 1: the candidate is faster),
    with a 95% bootstrap interval over the round pairs: one run's noise, stated beside it."""
    from probewatch.compare.stats import paired_bootstrap

    ratios = np.asarray(candidate, dtype=np.float64) / np.asarray(baseline, dtype=np.float64)
    interval = paired_bootstrap(lambda idx: float(np.median(ratios[idx])), ratios.size)
    return {"median": interval.value, "low": interval.low, "high": interval.high, "n": interval.n}


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def machine() -> dict[str, Any]:
    """What the numbers were measured on, including how loaded the machine was."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_1_5_15": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(name: str, data: Mapping[str, Any], root: Path = RESULTS) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
    return path


def read_results(name: str, root: Path = RESULTS) -> dict[str, Any] | None:
    path = root / f"{name}.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data

"""Peak memory while harvesting N vs 10N tokens to disk with `probewatch.store.harvest`.

Each size runs in a fresh process (`python -m benchmarks.memory --examples N`), so one run's
allocations cannot hide another's. The kernel's peak-RSS counter is reset after the model is
loaded (/proc/self/clear_refs), so the peak is the harvest's own, not the model load's."""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import sites_for
from benchmarks.workloads import text_dataset
from probewatch.config import HarvestSpec
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel
from probewatch.store import harvest

SHARD_MB = 16.0  # the store holds at most one shard in memory; small shards show the bound


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(
    loaded: LoadedModel, n_examples: int, words: int, batch_size: int = 16
) -> dict[str, Any]:
    """Harvest `n_examples` texts (all positions, 3 sites) into a temporary store."""
    dataset = text_dataset(n_examples, words)
    sites = ",".join(sites_for(loaded.n_layers))
    with tempfile.TemporaryDirectory() as warm:
        # One batch first: pages the weights in and sizes torch's buffers, which would
        # otherwise count as harvest memory.
        warm_set = text_dataset(batch_size, words, seed=1)
        harvest(loaded, warm_set, HarvestSpec(sites=sites, out=Path(warm), positions="all"))
    with tempfile.TemporaryDirectory() as out:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        baseline = _status_mb("VmRSS")
        spec = HarvestSpec(
            sites=sites,
            out=Path(out),
            positions="all",
            batch_size=batch_size,
            max_shard_mb=SHARD_MB,
        )
        store = harvest(loaded, dataset, spec, progress=False)
        peak = _status_mb("VmHWM")
        rows = sum(shard["n_rows"] for shard in store.manifest["shards"])
        written = sum(f.stat().st_size for f in Path(out).glob("shard-*.safetensors"))
    return {
        "examples": n_examples,
        "tokens": rows,
        "shards": len(store.manifest["shards"]),
        "bytes_written": written,
        "rss_before_mb": baseline,
        "peak_rss_mb": peak,
        "peak_over_before_mb": peak - baseline,
    }


def in_subprocess(n_examples: int, words: int, model: str = "default") -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.memory", "--examples", str(n_examples)]
    cmd += ["--words", str(words), "--model", model]
    root = Path(__file__).parent.parent
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def bench_memory(n_examples: int, words: int, factor: int = 10) -> dict[str, Any]:
    small = in_subprocess(n_examples, words)
    large = in_subprocess(n_examples * factor, words)
    return {
        "shard_mb": SHARD_MB,
        "small": small,
        "large": large,
        "token_ratio": large["tokens"] / small["tokens"],
        # Whole-process peaks (model included): 10x the tokens should leave this near 1.
        "peak_growth": large["peak_rss_mb"] / small["peak_rss_mb"],
        "large_written_mb": large["bytes_written"] / 2**20,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, required=True)
    parser.add_argument("--words", type=int, default=60)
    parser.add_argument("--model", default="default")
    args = parser.parse_args()
    loaded = load_model(args.model)
    print(json.dumps(measure(loaded, args.examples, args.words)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

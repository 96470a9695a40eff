"""Server: aggregate tokens/s with 1, 4 and 8 concurrent streaming clients and per-token
latency percentiles, for our server (8 probes, 3 sites) and, beside it, vLLM serving the
same model unmonitored when `.venv-vllm` exists (`make bench-peers` builds it).

Both servers run as their own processes and stay up the whole time; client rounds alternate
between them, so machine load hits both alike."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks.clients import concurrent, wait_healthy
from benchmarks.common import median, percentile
from benchmarks.workloads import TOPICS
from probewatch.models import load_model

ROOT = Path(__file__).parent.parent
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
VLLM_READY = ROOT / ".venv-vllm" / ".probewatch-installed"  # written by `make bench-peers`


@contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[None]:
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        try:
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def vllm_command(port: int) -> list[str]:
    model_dir = load_model("default").source  # the converted safetensors directory
    return [
        str(VLLM_PYTHON),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model_dir,
        "--served-model-name",
        "default",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
    ]


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    gaps = [g for r in runs for g in r["gaps_s"]]
    firsts = [f for r in runs for f in r["first_token_s"] if f is not None]
    rates = [r["tokens"] / r["seconds"] for r in runs]
    p50, p95 = percentile(gaps, 0.5), percentile(gaps, 0.95)
    return {
        "aggregate_tok_s": median(rates),
        "aggregate_tok_s_rounds": rates,
        "p50_ms_per_token": None if p50 is None else 1000 * p50,
        "p95_ms_per_token": None if p95 is None else 1000 * p95,
        "p50_ms_first_token": 1000 * median(firsts) if firsts else None,
        "tokens": [r["tokens"] for r in runs],
    }


def bench_server(
    tokens: int, rounds: int, clients: tuple[int, ...] = (1, 4, 8), with_vllm: bool = True
) -> dict[str, Any]:
    logs = ROOT / "benchmarks" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    servers = {"probewatch": "http://127.0.0.1:8765"}
    out: dict[str, Any] = {"new_tokens_each": tokens, "rounds": rounds}
    with ExitStack() as stack:
        cmd = [sys.executable, "-m", "benchmarks.serve_ours", "--port", "8765"]
        stack.enter_context(process(cmd, logs / "serve_ours.log"))
        if with_vllm and VLLM_READY.exists():
            # vLLM reserves its KV cache up front; 2 GiB is plenty for 8 x 2048 tokens here.
            env = {"VLLM_CPU_KVCACHE_SPACE": "2"}
            stack.enter_context(process(vllm_command(8766), logs / "serve_vllm.log", env))
            servers["vllm"] = "http://127.0.0.1:8766"
        for name, url in list(servers.items()):
            if not wait_healthy(url, 600):
                out[f"{name}_error"] = f"did not become healthy; see results/serve_{name}.log"
                del servers[name]
        for url in servers.values():  # warm-up: first requests pay one-off costs
            concurrent(url, "default", ["Hello."], 4)
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {
            n: {c: [] for c in clients} for n in servers
        }
        for count in clients:
            prompts = [f"Tell me about {TOPICS[i]}." for i in range(count)]
            for _ in range(rounds):
                for name, url in servers.items():
                    runs[name][count].append(concurrent(url, "default", prompts, tokens))
    for name, by_count in runs.items():
        out[name] = {str(c): summarize(r) for c, r in by_count.items()}
    return out

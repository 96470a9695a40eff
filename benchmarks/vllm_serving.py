"""The vLLM engine, measured side by side in one run (`make bench-peers` runs it in
.venv-vllm; alone: `.venv-vllm/bin/python -m benchmarks.vllm_serving [--rounds 10]`):

1. monitored / unmonitored vLLM: our engine (8 probes on 3 sites, in-graph, every token's
   scores awaited and aggregated, `VllmEngine`) against plain vLLM (`AsyncLLM`, stock model
   class) with 1, 4 and 8 concurrent requests; rounds alternate A B, B A. Goal >= 0.95.
2. `serve --engine vllm` (our HTTP layer, scores in every chunk) / vLLM's own OpenAI server,
   8 streaming clients, both servers up the whole time, rounds alternating. Goal >= 0.90.
3. token -> its scores: the wait, after a token reached our engine, for its scores (p50,
   p95), from part 1's monitored runs.

Results go to benchmarks/results/vllm.json. Each engine is its own process tree; all are
shut down at the end (and on error)."""

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.clients import concurrent, wait_healthy
from benchmarks.common import machine, percentile, rate_ratio, write_results
from benchmarks.server import process
from benchmarks.workloads import TOPICS, probes
from probewatch.config import EngineChoice, ServerConfig
from probewatch.models import load_model
from probewatch.models.loading import LoadedModel
from probewatch.monitor import Monitor
from probewatch.probes.artifact import save_probe
from probewatch.server.engine import GenerationRequest, TokenGenerated

ROOT = Path(__file__).parent.parent
# Tokens per request. The monitored engine runs one step more per request than plain vLLM
# (the step that consumes the last token scores it), so with n tokens its ratio cannot pass
# n / (n + 1) when a round's requests start and end together: 0.970 at 32, 0.992 at 128.
TOKENS = 128
CHOICE = EngineChoice(engine="vllm", vllm_max_model_len=1024, vllm_kv_cache_gib=1)


def _chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Tell me about {TOPICS[i]}."}] for i in range(n)]


async def _plain_round(engine: Any, monitor: Monitor, n: int, tokens: int) -> tuple[int, float]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def one(chat: list[dict[str, str]]) -> int:
        count = 0
        prompt = {"prompt_token_ids": monitor.prompt_ids(chat)}
        async for out in engine.generate(prompt, params, request_id=uuid.uuid4().hex):
            count = len(out.outputs[0].token_ids)
        return count

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(c) for c in _chats(n)))
    return sum(counts), time.perf_counter() - start


async def _monitored_round(engine: Any, n: int, tokens: int) -> tuple[int, float]:
    async def one(chat: list[dict[str, str]]) -> int:
        request = GenerationRequest(uuid.uuid4().hex, chat, 0, tokens, 0.0, 0)
        return sum([isinstance(d, TokenGenerated) async for d in engine.generate(request)])

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(c) for c in _chats(n)))
    return sum(counts), time.perf_counter() - start


def bench_engines(
    loaded: LoadedModel, rounds: int, clients: tuple[int, ...], tokens: int
) -> dict[str, Any]:
    """Part 1 and 3: both engines up at once, rounds alternating."""
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from probewatch.engines.vllm.engine import VllmEngine

    monitor = Monitor(loaded, probes(loaded))
    ours = VllmEngine(loaded, monitor.probes, CHOICE, {})
    loop = asyncio.new_event_loop()
    plain = None
    try:
        args = {
            "model": loaded.source,
            "dtype": "float32",
            "max_model_len": CHOICE.vllm_max_model_len,
            "max_num_seqs": 8,
            "seed": 0,
        }
        # Plain first: ours then moves this process's threads (both engines' front ends) off
        # the workers' cores, and processes started after that would inherit the binding.
        plain = loop.run_until_complete(_make(AsyncLLM, AsyncEngineArgs(**args)))
        ours.start()
        rates: dict[str, dict[int, list[float]]] = {"monitored": {}, "plain": {}}
        for i, n in enumerate((1, *clients)):  # the first pass warms both up, dropped
            warm = i == 0
            for r in range(rounds if not warm else 1):
                order = ("monitored", "plain") if r % 2 == 0 else ("plain", "monitored")
                for name in order:
                    run = (
                        _monitored_round(ours, n, tokens)
                        if name == "monitored"
                        else (_plain_round(plain, monitor, n, tokens))
                    )
                    count, seconds = loop.run_until_complete(run)
                    if count != n * tokens:  # a failed request must not pass as a slow one
                        raise RuntimeError(f"{name}: {count} of {n * tokens} tokens came back")
                    print(f"{name}, {n} clients: {count / seconds:.1f} tok/s", file=sys.stderr)
                    if not warm:
                        rates[name].setdefault(n, []).append(count / seconds)
            if warm:
                ours.score_waits.clear()
        waits = ours.score_waits
        return {
            "tokens_each": tokens,
            "extra_step_ceiling": tokens / (tokens + 1),
            "rounds": rounds,
            "tok_s": {k: {str(n): v for n, v in by.items()} for k, by in rates.items()},
            "ratio_monitored_over_plain": {
                str(n): rate_ratio(rates["monitored"][n], rates["plain"][n]) for n in clients
            },
            "token_to_scores_ms": {
                "p50": 1000 * (percentile(waits, 0.5) or 0.0),
                "p95": 1000 * (percentile(waits, 0.95) or 0.0),
                "n": len(waits),
            },
        }
    finally:
        ours.stop()
        if plain is not None:
            plain.shutdown()
        loop.close()


async def _make(cls: Any, args: Any) -> Any:
    return cls.from_engine_args(args)


def bench_http(rounds: int, clients: int, tokens: int) -> dict[str, Any]:
    """Part 2: `serve --engine vllm` and vLLM's OpenAI server, each its own process."""
    logs = ROOT / "benchmarks" / "results"
    logs.mkdir(parents=True, exist_ok=True)
    servers = {"ours": "http://127.0.0.1:8775", "vllm": "http://127.0.0.1:8776"}
    env = {"VLLM_CPU_KVCACHE_SPACE": str(CHOICE.vllm_kv_cache_gib)}
    loaded = load_model("default")
    with ExitStack() as stack:
        ours = [sys.executable, "-m", "benchmarks.vllm_serving", "--serve", "8775"]
        stack.enter_context(process(ours, logs / "serve_ours_vllm.log", env))
        theirs = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            loaded.source,
            "--served-model-name",
            "default",
            "--port",
            "8776",
            "--dtype",
            "float32",
            "--max-model-len",
            str(CHOICE.vllm_max_model_len),
        ]
        stack.enter_context(process(theirs, logs / "serve_vllm_openai.log", env))
        for name, url in servers.items():
            if not wait_healthy(url, 1800):
                return {"error": f"{name} did not become healthy; see benchmarks/results/*.log"}
        prompts = [f"Tell me about {TOPICS[i]}." for i in range(clients)]
        for url in servers.values():
            concurrent(url, "default", prompts[:2], 4)  # warm-up
        runs: dict[str, list[float]] = {name: [] for name in servers}
        for r in range(rounds):
            for name in sorted(servers, reverse=r % 2 == 1):
                result = concurrent(servers[name], "default", prompts, tokens)
                runs[name].append(result["tokens"] / result["seconds"])
    return {
        "clients": clients,
        "tokens_each": tokens,
        "tok_s": runs,
        "ratio_ours_over_vllm_openai": rate_ratio(runs["ours"], runs["vllm"]),
    }


def serve(port: int) -> int:
    """`serve --engine vllm` with the benchmark's 8 probes on 3 sites."""
    import uvicorn

    from probewatch.server.app import create_app

    loaded = load_model("default")
    with tempfile.TemporaryDirectory() as root:
        for artifact in probes(loaded):
            save_probe(artifact, Path(root) / "probes" / artifact.card["name"])
        fields = {k: getattr(CHOICE, k) for k in CHOICE.__dataclass_fields__}
        config = ServerConfig(
            probes_dir=Path(root) / "probes",
            events_db=Path(root) / "events.sqlite",
            port=port,
            max_output_tokens=1024,
            **fields,
        )
        uvicorn.run(create_app(config, loaded), host="127.0.0.1", port=port, log_level="error")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    # A round is 5-10 s, and one round pair's ratio moves by several points on this machine:
    # ten pairs give an interval narrow enough to read against the goals.
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=TOKENS, help="tokens per request")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=["engines", "http", "all"], default="all")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CHOICE.vllm_kv_cache_gib))
    out: dict[str, Any] = {"machine": machine()}
    if args.part in ("engines", "all"):
        out["engines"] = bench_engines(load_model("default"), args.rounds, (1, 4, 8), args.tokens)
        print(out["engines"], flush=True)
    if args.part in ("http", "all"):
        out["http"] = bench_http(args.rounds, 8, args.tokens)
        print(out["http"], flush=True)
    write_results("vllm", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Monitored vs unmonitored generation, and server throughput with 1, 4 and 8 clients.

Ratios are measured side by side in one run (runs alternate, so drift on a shared machine
hits both sides alike). Writes the raw numbers to benchmarks/results/monitor.json.

    .venv/bin/python benchmarks/monitor_overhead.py [--tokens 48] [--rounds 5]
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from probewatch.models import load_model
from probewatch.monitor import Monitor, MonitoredProbe
from probewatch.probes import ProbeArtifact, make_probe
from probewatch.probes.artifact import build_card, save_probe

PROMPTS = [
    [{"role": "user", "content": "Describe the water cycle in a few sentences."}],
    [{"role": "user", "content": "Write a short note inviting a friend to dinner."}],
]
SITES = ("resid.8", "resid.16", "resid.24")


def eight_probes(loaded, root: Path | None = None) -> list[MonitoredProbe]:  # type: ignore[no-untyped-def]
    """8 logistic probes over 3 sites (fitted on random data: the arithmetic is what counts)."""
    gen = torch.Generator().manual_seed(0)
    probes = []
    for i in range(8):
        x = torch.randn(256, loaded.d_model, generator=gen)
        probe = make_probe("logistic").fit(x, (x[:, i] > 0).float())
        site = SITES[i % 3]
        card = build_card(
            probe,
            loaded,
            site,
            "last",
            {"name": f"bench{i}", "hash": "-"},
            {},
            {"threshold": {"value": 1e9, "target_fpr": 0.01}},
        )
        artifact = ProbeArtifact(probe, card)
        if root is not None:
            save_probe(artifact, root / f"bench{i}")
        probes.append(MonitoredProbe.from_artifact(f"bench{i}", artifact))
    return probes


def tokens_per_second(monitor: Monitor, tokens: int) -> float:
    start = time.perf_counter()
    responses = monitor.generate(PROMPTS, max_new_tokens=tokens)
    elapsed = time.perf_counter() - start
    return sum(len(r.tokens) for r in responses) / elapsed


def bench_overhead(loaded, tokens: int, rounds: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    bare, monitored = Monitor(loaded, []), Monitor(loaded, eight_probes(loaded))
    for m in (bare, monitored):
        m.stop_ids = set()  # always generate `tokens` tokens: equal work on both sides
        m.generate(PROMPTS, max_new_tokens=4)  # warm-up
    plain, probed = [], []
    for _ in range(rounds):
        plain.append(tokens_per_second(bare, tokens))
        probed.append(tokens_per_second(monitored, tokens))
    ratios = [p / q for p, q in zip(probed, plain, strict=True)]
    return {
        "tokens_per_round": tokens * len(PROMPTS),
        "unmonitored_tok_s": plain,
        "monitored_8_probes_3_sites_tok_s": probed,
        "ratio_median": statistics.median(ratios),
        "ratio_of_medians": statistics.median(probed) / statistics.median(plain),
    }


def bench_server(loaded, tokens: int) -> dict:  # type: ignore[no-untyped-def, type-arg]
    import httpx
    import uvicorn

    from probewatch.server.app import create_app
    from probewatch.server.config import ServerConfig

    root = Path(tempfile.mkdtemp())
    eight_probes(loaded, root / "probes")
    config = ServerConfig(
        probes_dir=root / "probes",
        events_db=root / "events.sqlite",
        port=8765,
        max_batch=8,
        batch_window_ms=20,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(config, loaded), port=8765, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    url = "http://127.0.0.1:8765"
    while True:
        try:
            if httpx.get(url + "/health").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)

    def stream_one(i: int) -> tuple[int, list[float]]:
        gaps, last, n = [], time.perf_counter(), 0
        body = {
            "messages": [{"role": "user", "content": f"Tell me about the number {i}."}],
            "max_tokens": tokens,
            "stream": True,
        }
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as r:
            for line in r.iter_lines():
                if line.startswith("data: {") and '"content"' in line:
                    now = time.perf_counter()
                    gaps.append(now - last)
                    last, n = now, n + 1
        return n, gaps

    results = {}
    for clients in (1, 4, 8):
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            outcomes = list(pool.map(stream_one, range(clients)))
        elapsed = time.perf_counter() - start
        gaps = sorted(g for _, gs in outcomes for g in gs[1:])
        results[clients] = {
            "aggregate_tok_s": sum(n for n, _ in outcomes) / elapsed,
            "p50_ms_per_token": 1000 * gaps[len(gaps) // 2] if gaps else None,
            "p95_ms_per_token": 1000 * gaps[int(len(gaps) * 0.95)] if gaps else None,
        }
    server.should_exit = True
    return {str(k): v for k, v in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-server", action="store_true")
    args = parser.parse_args()
    loaded = load_model("default")
    out = {"machine": {"torch_threads": torch.get_num_threads(), "device": str(loaded.device)}}
    out["overhead"] = bench_overhead(loaded, args.tokens, args.rounds)
    o = out["overhead"]
    print(
        f"monitored (8 probes, 3 sites) / unmonitored tokens/s: median ratio "
        f"{o['ratio_median']:.3f} (goal >= 0.99); ratio of medians {o['ratio_of_medians']:.3f}"
    )
    if not args.skip_server:
        out["server"] = bench_server(loaded, args.tokens)
        one = out["server"]["1"]["aggregate_tok_s"]
        for clients, row in out["server"].items():
            print(
                f"server, {clients} streaming clients: {row['aggregate_tok_s']:.1f} tok/s "
                f"aggregate ({row['aggregate_tok_s'] / one:.2f}x of 1 client), "
                f"p50 {row['p50_ms_per_token']:.0f} ms/token, p95 {row['p95_ms_per_token']:.0f}"
            )
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    (results / "monitor.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

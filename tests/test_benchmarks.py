"""The benchmark suite's code paths on a tiny random model, so the scripts do not rot.
No timings are asserted: only that values agree and results have the expected shape."""

import threading
from pathlib import Path

import pytest
import torch
import uvicorn
from benchmarks import clients, common, generation, harvest, memory, peers, server, table
from benchmarks.serve_ours import config_for
from benchmarks.workloads import contrast_dataset, contrast_pairs, token_batch

from probewatch.models.loading import LoadedModel
from probewatch.server.app import create_app
from tests.helpers import free_port, tiny_model


def tiny8() -> LoadedModel:
    """A tiny Llama with 8 blocks, so three distinct sites sit before the last one."""
    return tiny_model(layers=8)


@pytest.fixture
def tiny() -> LoadedModel:
    return tiny8()


def test_sites_keep_relative_depth() -> None:
    assert common.sites_for(30) == common.SITES
    assert common.sites_for(8) == ("resid.2", "resid.4", "resid.6")


def test_interleaved_alternates_and_ratios_compare_speed() -> None:
    calls: list[str] = []
    times = common.interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=0
    )
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert common.speed_ratio({"fast": [1.0, 1.0], "slow": [2.0, 2.0]}, "fast", "slow") == 2.0
    assert len(times["a"]) == 3


def test_rate_ratio_pairs_rounds_and_its_interval_holds_the_spread() -> None:
    steady = common.rate_ratio([9.0, 18.0, 27.0], [10.0, 20.0, 30.0])  # rounds differ, pairs not
    assert steady["median"] == pytest.approx(0.9)
    assert steady["low"] == pytest.approx(0.9) and steady["high"] == pytest.approx(0.9)
    noisy = common.rate_ratio([8.0, 10.0, 9.0, 11.0], [10.0, 10.0, 10.0, 10.0])
    assert noisy["low"] < 0.9 < noisy["median"] < 1.0 < noisy["high"] and noisy["n"] == 4


def test_harvest_capture_equals_hidden_states(tiny: LoadedModel) -> None:
    result = harvest.bench_capture(tiny, token_batch(tiny, 2, 8), rounds=1)
    assert result["max_abs_diff_vs_hidden_states"] == 0.0
    for key in ("ratio_capture_full_vs_bare", "ratio_capture_vs_bare", "bare_tok_s"):
        assert result[key] > 0


def test_peer_reference_capture_matches_hf(tiny: LoadedModel) -> None:
    batch = token_batch(tiny, 2, 6)
    ours = peers.ours_capture(tiny, batch)
    with torch.no_grad():
        hidden = tiny.model(input_ids=batch.input_ids, output_hidden_states=True).hidden_states
    for site, acts in ours.items():
        assert torch.equal(acts, hidden[harvest.hidden_state_index(site, tiny.n_layers)])
    cos = peers._cosines({1: torch.ones(3)}, {1: torch.ones(3) * 2})
    assert abs(cos["median"] - 1.0) < 1e-12


def test_memory_measure_reports_rows_and_peaks(tiny: LoadedModel) -> None:
    result = memory.measure(tiny, n_examples=4, words=5, batch_size=2)
    assert result["tokens"] > 4 and result["shards"] >= 1
    assert result["peak_rss_mb"] >= result["rss_before_mb"] > 0


def test_generation_benchmarks_run_and_agree_with_hf(tiny: LoadedModel) -> None:
    overhead = generation.bench_monitor_overhead(tiny, 2, tokens=3, rounds=1)
    assert overhead["ratio"] > 0 and len(overhead["seconds"]["monitored"]) == 1
    vs = generation.bench_vs_hf(tiny, 1, tokens=4, rounds=1)
    assert vs["greedy_tokens_identical_rows"] == 1


def test_server_clients_stream_tokens(tmp_path: Path) -> None:
    loaded = tiny8()
    port = free_port()
    app = create_app(config_for(loaded, tmp_path, port), loaded)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}"
        assert clients.wait_healthy(url, 60)
        runs = [clients.concurrent(url, "default", ["Hi.", "Hello."], 4) for _ in range(2)]
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
    summary = server.summarize(runs)
    assert summary["tokens"] == [r["tokens"] for r in runs] and all(summary["tokens"])
    assert summary["p50_ms_per_token"] is not None and summary["aggregate_tok_s"] > 0


def test_results_json_and_table(tiny: LoadedModel, tmp_path: Path) -> None:
    suite = {
        "harvest": harvest.bench_capture(tiny, token_batch(tiny, 1, 4), rounds=1),
        "monitor_overhead": generation.bench_monitor_overhead(tiny, 1, tokens=2, rounds=1),
        "vs_hf": {"1": generation.bench_vs_hf(tiny, 1, tokens=2, rounds=1)},
        "memory": {
            "token_ratio": 10.0,
            "peak_growth": 1.01,
            "small": {"peak_over_before_mb": 30.0},
            "large": {"peak_over_before_mb": 31.0},
        },
        "server": {
            "probewatch": {
                "1": {"aggregate_tok_s": 5.0, "p50_ms_per_token": 1.0, "p95_ms_per_token": 2.0}
            },
            "vllm_error": "not installed",
        },
    }
    path = common.write_results("suite", suite, root=tmp_path)
    assert common.read_results("suite", root=tmp_path) is not None and path.is_file()
    fake_peers = {
        "capture": {
            "ratio_vs_ours": {"nnsight": 0.9},
            "max_abs_diff_vs_ours": {"nnsight": 0.0},
            "errors": {"transformer_lens": "ImportError"},
        },
        "dla": {
            "gpt2": {"model": "tiny", "max_abs_diff": 2e-6, "tolerance": 3e-3, "pearson": 1.0},
            "smollm2": {"model": "big", "max_abs_diff": 0.5, "tolerance": 9e-3, "pearson": 0.9},
        },
        "steering": {
            "pairs": 4,
            "layers": 3,
            "ratio_vs_ours_mean_diff": {"repeng_pca_diff": 1.2},
            "cosine": {"x": {"median": 1.0, "min": 0.9, "layers": 3}},
        },
    }
    rendered = table.render(table.rows(suite, fake_peers))
    sections = {line.split("|")[1].strip() for line in rendered.splitlines()[2:]}
    assert sections == {"harvest", "peers", "steering", "memory", "generation", "server"}
    assert "failed" in rendered  # errors are shown, not dropped
    dla = {
        line.split("|")[2].strip().split(", ")[-1]: line
        for line in rendered.splitlines()
        if "DLA" in line
    }
    assert "| 2.0e-06 |" in dla["tiny"] and ": met;" in dla["tiny"]
    assert "| 5.0e-01 |" in dla["big"] and "NOT met" in dla["big"]


def test_contrast_pairs_become_a_balanced_dataset() -> None:
    dataset = contrast_dataset(contrast_pairs(6))
    labels = [ex.label for ex in dataset.examples]
    assert len(labels) == 12 and sum(labels) == 6

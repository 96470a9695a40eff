"""The one table `make bench` prints: every row a ratio measured side by side in one run."""

from typing import Any

Row = tuple[str, str, str, str]  # section, measurement, value, goal / note


def _f(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _goal(value: float, goal: float) -> str:
    return f">= {goal}: {'met' if value >= goal else 'NOT met'}"


def _latency(row: dict[str, Any]) -> str:
    p50, p95 = _f(row["p50_ms_per_token"], 0), _f(row["p95_ms_per_token"], 0)
    return f"p50 {p50} / p95 {p95} ms per token"


def harvest_rows(h: dict[str, Any]) -> list[Row]:
    full, early = h["ratio_capture_full_vs_bare"], h["ratio_capture_vs_bare"]
    diff = h["max_abs_diff_vs_hidden_states"]
    return [
        (
            "harvest",
            "capture 3 sites, whole forward / bare forward",
            _f(full, 3),
            _goal(full, 0.95),
        ),
        ("harvest", "capture 3 sites, default (stops after resid.24) / bare", _f(early, 3), ""),
        ("harvest", "HF output_hidden_states / bare", _f(h["ratio_hidden_states_vs_bare"], 3), ""),
        (
            "harvest",
            "max abs(ours - HF hidden_states)",
            f"{diff:.1e}",
            "equal" if diff == 0 else "",
        ),
    ]


def peer_rows(peers: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    c = peers["capture"]
    for name, ratio in c["ratio_vs_ours"].items():
        diff = c["max_abs_diff_vs_ours"][name]
        out.append(("peers", f"{name} capture / ours", _f(ratio, 3), f"max diff {diff:.1e}"))
    for name, error in c.get("errors", {}).items():
        out.append(("peers", f"{name} capture", "failed", error[:80]))
    for d in peers.get("dla", {}).values():  # peers.json from before issue 17 has none
        verdict = "met" if d["max_abs_diff"] <= d["tolerance"] else "NOT met"
        what = f"per-head DLA, max abs(ours - transformer_lens), {d['model']}"
        note = (
            f"<= {d['tolerance']:.1e} (1e-3 x logit diff): {verdict}; 1 - r {1 - d['pearson']:.0e}"
        )
        out.append(("peers", what, f"{d['max_abs_diff']:.1e}", note))
    s = peers["steering"]
    what = f"{s['pairs']} pairs, {s['layers']} layers"
    for name, ratio in s["ratio_vs_ours_mean_diff"].items():
        out.append(("steering", f"{name} speed / ours mean_diff ({what})", _f(ratio), ""))
    for name, cos in s["cosine"].items():
        median, low = f"{cos['median']:.3f}", f"{cos['min']:.3f}"
        out.append(("steering", f"cosine {name}, median over layers", median, f"min {low}"))
    return out


def memory_rows(m: dict[str, Any]) -> list[Row]:
    small, large = m["small"]["peak_over_before_mb"], m["large"]["peak_over_before_mb"]
    what = f"peak RSS, harvesting {m['token_ratio']:.1f}x the tokens / 1x"
    note = f"harvest's own peak {small:.0f} -> {large:.0f} MB; goal flat, not 10x"
    return [("memory", what, _f(m["peak_growth"]), note)]


def generation_rows(suite: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    g = suite.get("monitor_overhead")
    if g:
        what = f"monitored (8 probes, 3 sites) / unmonitored, {g['conversations']} conversations"
        out.append(("generation", what, _f(g["ratio"], 3), _goal(g["ratio"], 0.99)))
    for batch, vs in suite.get("vs_hf", {}).items():
        same = f"{vs['greedy_tokens_identical_rows']}/{vs['conversations']}"
        note = f"{vs['ours_tok_s']:.1f} vs {vs['hf_tok_s']:.1f} tok/s; same tokens {same}"
        out.append(
            ("generation", f"ours / HF generate, greedy, batch {batch}", _f(vs["ratio"]), note)
        )
    return out


def server_rows(srv: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    ours, vllm = srv.get("probewatch", {}), srv.get("vllm", {})
    for clients, row in ours.items():
        value = f"{row['aggregate_tok_s']:.1f} tok/s"
        out.append(("server", f"probewatch, {clients} streaming clients", value, _latency(row)))
        if clients in vllm:
            v = vllm[clients]
            ratio = row["aggregate_tok_s"] / v["aggregate_tok_s"]
            what = f"vLLM unmonitored, {clients} clients (ours/vLLM {ratio:.2f})"
            out.append(("server", what, f"{v['aggregate_tok_s']:.1f} tok/s", _latency(v)))
    for key, error in srv.items():
        if key.endswith("_error"):
            out.append(("server", key, "failed", str(error)[:80]))
    return out


def rows(suite: dict[str, Any], peers: dict[str, Any] | None) -> list[Row]:
    out: list[Row] = []
    if "harvest" in suite:
        out += harvest_rows(suite["harvest"])
    if peers:
        out += peer_rows(peers)
    if "memory" in suite:
        out += memory_rows(suite["memory"])
    out += generation_rows(suite)
    if "server" in suite:
        out += server_rows(suite["server"])
    return out


def render(table: list[Row]) -> str:
    header = ("section", "measurement", "value", "goal / note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)

"""The comparison report: one JSON document and a self-contained HTML page (no scripts, no
network), every number with its n and 95% interval, and a plain-language verdict."""

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probewatch import __version__
from probewatch.compare.spec import CompareSpec
from probewatch.paths import atomic_directory, refuse_to_replace

FORMAT = "probewatch-compare/1"
STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px;vertical-align:top}"
    ".verdict{font-size:16px;background:#f4f4f4;padding:.6em}mark{background:#fc6}"
)


@dataclass
class CompareReport:
    a: dict[str, Any]
    b: dict[str, Any]
    prompts: dict[str, Any]
    examples: list[dict[str, str]]
    parts: dict[str, Any]
    verdict: str
    settings: dict[str, Any]
    seconds: dict[str, float]
    format: str = FORMAT
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    probewatch_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self) -> bool:
        return not self.verdict.startswith("No change")

    def save(self, out: str | Path, overwrite: bool = False) -> Path:
        root = refuse_to_replace(out, overwrite, "a comparison report", "--out")
        with atomic_directory(root, overwrite=overwrite) as scratch:
            (scratch / "compare.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
            (scratch / "compare.html").write_text(render_html(self))
        return root


def kl_changed(summary: dict[str, Any], tolerance: float) -> bool:
    return bool(summary.get("n_tokens")) and summary["kl_a_b"]["low"] > tolerance


def verdict(parts: dict[str, Any], spec: CompareSpec) -> str:
    """'No change' when no behaviour row changed (Holm-adjusted exact McNemar p < 0.05), no
    KL interval clears `kl_tolerance`, no site's drift clears `drift_tolerance` and no probe's
    AUROC drop from A to B clears `transfer_tolerance`; otherwise 'Changed:' with what
    changed, biggest first."""
    changed_rows = [r for r in parts["behaviour"] if r["changed"]]
    kl_parts = [
        k
        for k in ("prompt", "a_replies", "b_replies")
        if kl_changed(parts["divergence"][k], spec.kl_tolerance)
    ]
    onset = parts["drift"]["onset"]
    lost = lost_probes(parts, spec.transfer_tolerance)
    if not changed_rows and not kl_parts and onset is None and not lost:
        return (
            f"No change: none of {len(parts['behaviour'])} behaviour rows changed (exact McNemar, "
            f"Holm-adjusted, alpha 0.05); per-token KL stays within {spec.kl_tolerance:g} nats and "
            f"no site drifts beyond {spec.drift_tolerance:g} relative L2."
        )
    bits = []
    for r in sorted(changed_rows, key=lambda r: -abs(r["difference"]["value"])):
        bits.append(
            f"{r['name']} {100 * r['rate_a']['value']:.0f}% -> {100 * r['rate_b']['value']:.0f}% "
            f"(paired difference {100 * r['difference']['value']:+.0f} points, 95% CI "
            f"[{100 * r['difference']['low']:+.0f}, {100 * r['difference']['high']:+.0f}], "
            f"n={r['n']}, Holm p={r['p_holm']:.2g})"
        )
    if not changed_rows:
        bits.append("no behaviour row changed beyond chance")
    div = parts["divergence"]["prompt"]
    if div.get("n_tokens"):
        bits.append(f"mean per-token KL(A||B) on prompts {_fmt(div['kl_a_b'])} nats")
    if onset is not None:
        bits.append(f"representations depart from A at {onset}")
    bits += [transfer_sentence(t, spec.transfer_tolerance) for t in lost]
    spans = parts["divergence"]["top_spans"]
    if spans and spans[0]["kl_sym"] > spec.kl_tolerance:
        s = spans[0]
        bits.append(
            f"most divergent: after {s['context_before'][-40:]!r} A predicts {s['a_predicts']!r}, "
            f"B {s['b_predicts']!r}"
        )
    return "Changed: " + "; ".join(bits) + "."


def lost_probes(parts: dict[str, Any], tolerance: float) -> list[dict[str, Any]]:
    """Transfer rows whose whole interval of A's probe's AUROC drop (A -> B) is above
    `tolerance`, biggest drop first."""
    rows = [
        t
        for t in parts.get("probe_transfer", [])
        if "skipped" not in t and t["drop_a_minus_b"]["low"] > tolerance
    ]
    return sorted(rows, key=lambda t: -t["drop_a_minus_b"]["value"])


def transfer_sentence(t: dict[str, Any], tolerance: float) -> str:
    """A's probe lost AUROC on B; whether a probe retrained on B reads the concept again
    (the representation moved: the Obfuscation Atlas case) or not (B lost it)."""
    gap = t["gap_retrained_minus_transferred"]
    ceiling = t["auroc_retrained_on_b"]["value"]
    if gap["low"] > tolerance:
        why = f"a probe retrained on B reads it again ({ceiling:.2f}; gap {_fmt(gap)})"
    else:
        why = f"a probe retrained on B does no better ({ceiling:.2f}; gap {_fmt(gap)})"
    return (
        f"A's probe {t['probe']} loses AUROC on B: {t['auroc_a_probe_on_a']['value']:.2f} on A "
        f"-> {t['auroc_a_probe_on_b']['value']:.2f} on B (drop {_fmt(t['drop_a_minus_b'])}); " + why
    )


def _fmt(iv: dict[str, Any], digits: int = 3) -> str:
    return (
        f"{iv['value']:.{digits}g} [{iv['low']:.{digits}g}, {iv['high']:.{digits}g}] (n={iv['n']})"
    )


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _e(value: Any) -> str:
    return html.escape(str(value))


def render_html(report: CompareReport) -> str:
    p = report.parts
    sections = [f"<h1>probewatch compare</h1><p class=verdict>{_e(report.verdict)}</p>"]
    sections.append(
        _table(
            ["side", "model", "fingerprint", "intervention"],
            [
                [
                    _e(s["label"]),
                    _e(s["name"]),
                    _e(s["fingerprint"]),
                    _e((s.get("intervention") or {}).get("name", "")),
                ]
                for s in (report.a, report.b)
            ],
        )
    )
    sections.append(
        "<h2>Behaviour</h2>"
        + _table(
            [
                "row",
                "n",
                "A",
                "B",
                "B − A (paired 95% CI)",
                "McNemar p (A only / B only)",
                "Holm p",
                "changed",
            ],
            [
                [
                    _e(r["name"]),
                    str(r["n"]),
                    _e(_fmt(r["rate_a"])),
                    _e(_fmt(r["rate_b"])),
                    _e(_fmt(r["difference"])),
                    f"{r['mcnemar']['p']:.3g} ({r['mcnemar']['only_a']}/{r['mcnemar']['only_b']})",
                    f"{r['p_holm']:.3g}",
                    "<b>yes</b>" if r["changed"] else "no",
                ]
                for r in p["behaviour"]
            ],
        )
    )
    div = p["divergence"]
    sections.append(
        "<h2>Per-token KL (nats)</h2>"
        + _table(
            ["tokens", "KL(A‖B)", "KL(B‖A)", "max token KL(A‖B)", "tokens"],
            [
                [
                    _e(k),
                    _e(_fmt(v["kl_a_b"])),
                    _e(_fmt(v["kl_b_a"])),
                    f"{v['max_token_kl_a_b']:.3g}",
                    str(v["n_tokens"]),
                ]
                for k, v in ((k, div[k]) for k in ("prompt", "a_replies", "b_replies"))
                if v.get("n_tokens")
            ],
        )
    )
    sections.append(
        "<h3>Most divergent spans</h3>"
        + _table(
            ["prompt", "in", "context", "A predicts", "B predicts", "KL sym"],
            [
                [
                    str(s["prompt"]),
                    _e(s["source"]),
                    f"{_e(s['context_before'])}<mark>▮</mark>{_e(s['context_after'])}",
                    _e(s["a_predicts"]),
                    _e(s["b_predicts"]),
                    f"{s['kl_sym']:.3g}",
                ]
                for s in div["top_spans"]
            ],
        )
    )
    drift = p["drift"]
    sections.append(
        f"<h2>Representation drift</h2><p>onset: {_e(drift['onset'])} (relative L2 interval "
        f"above {drift['tolerance']:g}); first position reported apart</p>"
        + _table(
            ["site", "relative L2", "cosine", "linear CKA", "first position rel. L2"],
            [
                [
                    _e(r["site"]),
                    _e(_fmt(r["rel_l2"])),
                    _e(_fmt(r["cosine"], 4)),
                    _e(_fmt(r["cka"], 4)),
                    _e(_fmt(r["first_position"]["rel_l2"])),
                ]
                for r in drift["sites"]
            ],
        )
    )
    adl = p["adl"]
    sections.append(
        f"<h2>Activation-difference lens</h2><p>mean B − A on the first {adl['positions']} "
        f"tokens of {adl['n_texts']} unrelated texts (position 0 apart)</p>"
        + _table(
            ["site", "‖Δ‖", "tokens via A's unembedding", "tokens via B's", "cosines (z)"],
            [
                [
                    _e(r["site"]),
                    f"{r['norm']:.3g}",
                    _e(" ".join(repr(t) for t in r["tokens_via_a"][:8])),
                    _e(" ".join(repr(t) for t in r["tokens_via_b"][:8])),
                    _e(
                        "; ".join(
                            f"{k}: {v['cosine']:.2f} ({v['z']:.1f})"
                            for k, v in r["cosines"].items()
                        )
                    ),
                ]
                for r in adl["layers"]
            ],
        )
    )
    if p["probe_shift"]:
        sections.append(
            "<h2>Probe shift</h2>"
            + _table(
                ["probe", "mean A", "mean B", "shift (95% CI)"],
                [
                    [
                        _e(s["probe"]),
                        f"{s['mean_a']:.3g}",
                        f"{s['mean_b']:.3g}",
                        _e(_fmt(s["shift"])),
                    ]
                    for s in p["probe_shift"]
                ],
            )
        )
    if p["probe_transfer"]:
        rows = []
        for t in p["probe_transfer"]:
            if "skipped" in t:
                rows.append([_e(t["probe"]), f"skipped: {_e(t['skipped'])}", *[""] * 6])
                continue
            rows.append(
                [
                    _e(t["probe"]),
                    _e(_fmt(t["auroc_a_probe_on_a"])),
                    _e(_fmt(t["auroc_a_probe_on_b"])),
                    _e(_fmt(t["drop_a_minus_b"])),
                    _e(_fmt(t["auroc_retrained_on_b"])),
                    _e(_fmt(t["auroc_retrained_on_a"])),
                    _e(_fmt(t["gap_retrained_minus_transferred"])),
                    _e(f"{_fmt(t['control_fpr']['at_a'])} -> {_fmt(t['control_fpr']['at_b'])}"),
                ]
            )
        sections.append(
            "<h2>Probe transfer</h2><p>AUROC on the probe's own held-out examples, 95% paired "
            "bootstrap intervals; retrained: the same kind and settings fitted on each side's "
            "activations of the probe's own training examples</p>"
            + _table(
                [
                    "probe",
                    "A's probe on A",
                    "A's probe on B",
                    "drop A − B",
                    "retrained on B",
                    "retrained on A (same examples)",
                    "gap retrained − A's probe on B",
                    "control FPR at A's threshold A -> B",
                ],
                rows,
            )
        )
    patch = p["patching"]
    if patch.get("sites"):
        sections.append(
            f"<h2>Which component carries the change</h2><p>{_e(patch['metric'])}; "
            f"n={patch['n']} prompts</p>"
            + _table(
                ["site patched from B into A", "share of the change (95% CI)"],
                [[_e(r["site"]), _e(_fmt(r["share"]))] for r in patch["sites"]],
            )
        )
    sections.append(
        "<h2>Examples</h2>"
        + _table(
            ["set", "prompt", "A", "B"],
            [[_e(x["set"]), _e(x["prompt"]), _e(x["a"]), _e(x["b"])] for x in report.examples],
        )
    )
    sections.append(
        f"<h2>Settings</h2><pre>{_e(json.dumps(report.settings, indent=1))}</pre>"
        f"<p>seconds: {_e(report.seconds)}</p>"
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>probewatch compare</title>"
        f"<style>{STYLE}</style></head><body>{''.join(sections)}</body></html>\n"
    )

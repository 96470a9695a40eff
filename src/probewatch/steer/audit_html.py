"""The audit report as one self-contained HTML page: verdict first, then the numbers."""

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: audit imports this module, never the other way at run time
    from probewatch.steer.audit import AuditReport, Estimate

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;"
    "padding:.3rem .6rem;text-align:left;vertical-align:top}th{background:#f4f4f4}"
    ".verdict{background:#f7f7e8;border-left:4px solid #b8a900;padding:.8rem 1rem}"
    "pre{white-space:pre-wrap;margin:0;font-size:.85rem}"
)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(estimate: "Estimate") -> str:
    return _e(estimate.fmt(percent=True))


def render_html(report: "AuditReport") -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{change.n}</td><td>{_pct(change.original)}</td>"
        f"<td>{_pct(change.intervened)}</td><td>{100 * change.change.value:+.0f} "
        f"[{100 * change.change.ci_low:+.0f}, {100 * change.change.ci_high:+.0f}]</td></tr>"
        for name, change in report.refusal.items()
    )
    probes = "".join(
        f"<tr><td>{_e(name)}</td><td>{shift['mean_original']:.3g}</td>"
        f"<td>{shift['mean_intervened']:.3g}</td><td>{shift['mean_change']['value']:+.3g} "
        f"[{shift['mean_change']['ci_low']:+.3g}, {shift['mean_change']['ci_high']:+.3g}]</td>"
        f"<td>{100 * shift['flagged_original']:.0f}% → {100 * shift['flagged_intervened']:.0f}%"
        "</td></tr>"
        for name, shift in report.probe_shifts.items()
    )
    probe_table = (
        "<table><tr><th>probe</th><th>mean score, original</th><th>intervened</th>"
        f"<th>mean change [95% CI]</th><th>flagged at its threshold</th></tr>{probes}</table>"
        if probes
        else "<p>No other probes were given.</p>"
    )
    examples = "".join(
        f"<tr><td>{_e(ex['set'])}</td><td><pre>{_e(ex['prompt'])}</pre></td>"
        f"<td><pre>{_e(ex['original'])}</pre></td><td><pre>{_e(ex['intervened'])}</pre></td></tr>"
        for ex in report.examples
    )
    settings = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in report.settings.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Intervention audit</title><style>{STYLE}</style></head>
<body>
<h1>Intervention audit</h1>
<p><b>{_e(report.intervention.get("name"))}</b> on {_e(report.model.get("name"))}
(fingerprint {_e(report.model.get("fingerprint"))}), {_e(report.created)}</p>
<p class="verdict">{_e(report.verdict)}</p>
<h2>Refusal rate (keyword matcher on greedy completions)</h2>
<table><tr><th>requests</th><th>n</th><th>original [95% CI]</th><th>intervened</th>
<th>paired change, points [95% CI]</th></tr>{rows}</table>
<p>"benign" is the over-refusal rate on ordinary requests from benign_control.</p>
<h2>Side effects</h2>
<table>
<tr><td>mean KL(original ‖ intervened), next token at the generation prompt, benign requests
</td><td>{_e(report.kl_mean.fmt())} nats</td></tr>
<tr><td>perplexity of plain benign text</td><td>{report.perplexity_original:.3g} →
{report.perplexity_intervened:.3g} (×{_e(report.perplexity_ratio.fmt())})</td></tr>
</table>
<h2>Other probes on benign requests</h2>
{probe_table}
<h2>Examples</h2>
<table><tr><th>set</th><th>request</th><th>original</th><th>intervened</th></tr>{examples}</table>
<h2>Settings</h2>
<table>{settings}</table>
<p>probewatch {_e(report.probewatch_version)}</p>
</body></html>
"""

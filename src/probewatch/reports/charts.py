"""Small inline-SVG charts for reports: no plotting dependency, and the page is one file."""

import html
from collections.abc import Sequence

import numpy as np

WIDTH, HEIGHT, PAD = 420, 260, 40
COLORS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")


def _scale(
    values: Sequence[float], lo: float, hi: float, out_lo: float, out_hi: float
) -> list[float]:
    span = (hi - lo) or 1.0
    return [out_lo + (v - lo) / span * (out_hi - out_lo) for v in values]


def _frame(
    title: str,
    body: str,
    labels: tuple[str, str],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
) -> str:
    x_label, y_label = labels
    ticks = []
    for frac in (0.0, 0.5, 1.0):
        x = PAD + frac * (WIDTH - 2 * PAD)
        y = HEIGHT - PAD - frac * (HEIGHT - 2 * PAD)
        x_value = x_range[0] + frac * (x_range[1] - x_range[0])
        y_value = y_range[0] + frac * (y_range[1] - y_range[0])
        ticks.append(f'<text x="{x:.0f}" y="{HEIGHT - PAD + 14}" class="tick">{x_value:.3g}</text>')
        ticks.append(f'<text x="{PAD - 6}" y="{y + 4:.0f}" class="tick end">{y_value:.3g}</text>')
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img">'
        f'<rect x="{PAD}" y="{PAD}" width="{WIDTH - 2 * PAD}" '
        f'height="{HEIGHT - 2 * PAD}" class="plot"/>'
        f"{''.join(ticks)}{body}"
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 6}" class="label">{html.escape(x_label)}</text>'
        f'<text x="12" y="{HEIGHT / 2}" class="label" transform="rotate(-90 12 {HEIGHT / 2})">'
        f"{html.escape(y_label)}</text></svg></figure>"
    )


def line_chart(
    title: str,
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    labels: tuple[str, str],
    y_range: tuple[float, float] | None = None,
) -> str:
    """Lines of `series` over `xs`; `labels` = (x axis, y axis)."""
    finite = [v for ys in series.values() for v in ys if np.isfinite(v)]
    lo, hi = y_range or (min(finite, default=0.0), max(finite, default=1.0))
    px = _scale(xs, min(xs), max(xs), PAD, WIDTH - PAD)
    body, legend = [], []
    for i, (name, ys) in enumerate(series.items()):
        py = _scale(ys, lo, hi, HEIGHT - PAD, PAD)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py, strict=True))
        color = COLORS[i % len(COLORS)]
        body.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        legend.append(
            f'<text x="{PAD + 6}" y="{PAD + 14 + 14 * i}" fill="{color}" class="legend">'
            f"{html.escape(name)}</text>"
        )
    return _frame(title, "".join(body + legend), labels, (min(xs), max(xs)), (lo, hi))


def roc_points(scores: np.ndarray, labels: np.ndarray) -> tuple[list[float], list[float]]:
    order = np.argsort(-scores, kind="stable")
    positives = labels[order] > 0.5
    tpr = np.concatenate([[0.0], np.cumsum(positives) / max(positives.sum(), 1)])
    fpr = np.concatenate([[0.0], np.cumsum(~positives) / max((~positives).sum(), 1)])
    return fpr.tolist(), tpr.tolist()


def roc_chart(title: str, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> str:
    body = [f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{PAD}" class="diag"/>']
    for i, (name, (scores, labels)) in enumerate(curves.items()):
        fpr, tpr = roc_points(scores, labels)
        px = _scale(fpr, 0, 1, PAD, WIDTH - PAD)
        py = _scale(tpr, 0, 1, HEIGHT - PAD, PAD)
        color = COLORS[i % len(COLORS)]
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(px, py, strict=True))
        body.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        body.append(
            f'<text x="{WIDTH - PAD - 6}" y="{HEIGHT - PAD - 10 - 14 * i}" fill="{color}" '
            f'class="legend end">{html.escape(name)}</text>'
        )
    axes = ("false positive rate", "true positive rate")
    return _frame(title, "".join(body), axes, (0, 1), (0, 1))


def histogram_chart(
    title: str, groups: dict[str, np.ndarray], threshold: float | None = None, bins: int = 30
) -> str:
    values = np.concatenate(list(groups.values()))
    edges = np.linspace(values.min(), values.max(), bins + 1)
    counts = {k: np.histogram(v, edges)[0] / max(v.size, 1) for k, v in groups.items()}
    top = max(float(c.max()) for c in counts.values()) or 1.0
    bar_w = (WIDTH - 2 * PAD) / bins
    body = []
    for i, (name, c) in enumerate(counts.items()):
        color = COLORS[i % len(COLORS)]
        for j, value in enumerate(c):
            h = value / top * (HEIGHT - 2 * PAD)
            body.append(
                f'<rect x="{PAD + j * bar_w:.1f}" y="{HEIGHT - PAD - h:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}" fill="{color}" opacity="0.45"/>'
            )
        body.append(
            f'<text x="{PAD + 6}" y="{PAD + 14 + 14 * i}" fill="{color}" class="legend">'
            f"{html.escape(name)}</text>"
        )
    if threshold is not None and edges[0] <= threshold <= edges[-1]:
        x = _scale([threshold], edges[0], edges[-1], PAD, WIDTH - PAD)[0]
        body.append(
            f'<line x1="{x:.1f}" y1="{PAD}" x2="{x:.1f}" y2="{HEIGHT - PAD}" class="thresh"/>'
        )
    return _frame(
        title,
        "".join(body),
        ("probe score (logit)", "fraction of class"),
        (float(edges[0]), float(edges[-1])),
        (0, top),
    )


def heatmap_table(
    title: str, rows: Sequence[str], cols: Sequence[str], values: Sequence[Sequence[float]]
) -> str:
    def color(v: float) -> str:
        # 0.5 is white; toward 1 blue, toward 0 red (an inverted probe is a finding too).
        t = min(abs(v - 0.5) * 2, 1.0)
        r, g, b = (37, 99, 235) if v >= 0.5 else (220, 38, 38)
        mix = [round(255 + (c - 255) * t) for c in (r, g, b)]
        return f"rgb({mix[0]},{mix[1]},{mix[2]})"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><th>{html.escape(r)}</th>"
        + "".join(f'<td style="background:{color(v)}">{v:.2f}</td>' for v in row)
        + "</tr>"
        for r, row in zip(rows, values, strict=True)
    )
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption><table class='heat'>"
        f"<tr><th>train \\ test</th>{head}</tr>{body}</table></figure>"
    )

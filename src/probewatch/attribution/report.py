"""Offline pictures: SVG heatmaps (layer × head, layer × position) and a per-token view, in one
self-contained HTML page (no scripts from a CDN, no network), in the style of the eval report."""

import html
import math
from collections.abc import Sequence
from typing import Any

import torch

CELL = 18


def _colour(value: float, scale: float) -> str:
    """Blue for negative, red for positive, white at 0 (NaN: grey)."""
    if math.isnan(value):
        return "#eee"
    t = max(-1.0, min(1.0, value / scale)) if scale > 0 else 0.0
    r, g, b = (
        (255, int(255 * (1 - t)), int(255 * (1 - t)))
        if t >= 0
        else (
            int(255 * (1 + t)),
            int(255 * (1 + t)),
            255,
        )
    )
    return f"rgb({r},{g},{b})"


def heatmap_svg(
    values: torch.Tensor, rows: Sequence[str], columns: Sequence[str], title: str
) -> str:
    """An SVG heatmap [rows × columns] with a tooltip per cell."""
    grid = values.double()
    finite = grid[torch.isfinite(grid)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    left, top = 60, 70
    width = left + CELL * len(columns) + 10
    height = top + CELL * len(rows) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="4" y="14" font-size="12">{html.escape(title)} (±{scale:.3g})</text>',
    ]
    for j, name in enumerate(columns):
        x = left + j * CELL + CELL / 2
        parts.append(
            f'<text x="{x}" y="{top - 4}" font-size="9" transform="rotate(-60 {x} {top - 4})">'
            f"{html.escape(name)}</text>"
        )
    for i, name in enumerate(rows):
        y = top + i * CELL
        parts.append(f'<text x="2" y="{y + 12}" font-size="9">{html.escape(name)}</text>')
        for j in range(len(columns)):
            value = float(grid[i, j])
            parts.append(
                f'<rect x="{left + j * CELL}" y="{y}" width="{CELL}" height="{CELL}" '
                f'fill="{_colour(value, scale)}"><title>{html.escape(name)} × '
                f"{html.escape(columns[j])}: {value:.4g}</title></rect>"
            )
    parts.append("</svg>")
    return "".join(parts)


def token_view(tokens: Sequence[str], values: Sequence[float], title: str) -> str:
    """Tokens shaded by a value each (e.g. the metric's change when that position is patched)."""
    finite = [abs(v) for v in values if not math.isnan(v)]
    scale = max(finite) if finite else 1.0
    spans = "".join(
        f'<span class="tok" style="background:{_colour(v, scale)}" title="{v:.4g}">'
        f"{html.escape(t)}</span>"
        for t, v in zip(tokens, values, strict=True)
    )
    return f"<h3>{html.escape(title)}</h3><p class='tokens'>{spans}</p>"


def page(title: str, sections: Sequence[str], summary: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in summary.items()
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}"
        "table{border-collapse:collapse}th,td{padding:2px 8px;text-align:left}"
        ".tok{padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace;"
        "white-space:pre}svg{margin:1em 0}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><table>{rows}</table>{''.join(sections)}</body></html>"
    )

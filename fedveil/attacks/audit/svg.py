"""Tiny inline-SVG charts for the audit report (no plotting library, no network).

Why hand-written: the report must be one offline file a reviewer can open anywhere,
and the only chart it needs is a log-log ROC plot, which is a few polylines.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def _log_axis(value: float, low: float, size: float) -> float:
    """Position of `value` on a log10 axis from `low` to 1 over `size` pixels."""
    v = min(max(value, low), 1.0)
    return size * (math.log10(v) - math.log10(low)) / -math.log10(low)


def roc_loglog(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    *,
    low: float = 1e-3,
    width: int = 320,
    height: int = 260,
) -> str:
    """An SVG of TPR against FPR on log-log axes, with the chance line TPR = FPR."""
    pad_l, pad_b, pad_t, pad_r = 46, 36, 22, 10
    w, h = width - pad_l - pad_r, height - pad_b - pad_t

    def point(fpr: float, tpr: float) -> str:
        x = pad_l + _log_axis(fpr, low, w)
        y = pad_t + h - _log_axis(tpr, low, h)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" fill="#fff" stroke="#999"/>',
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12">{escape(title)}</text>',
    ]
    decades = int(round(-math.log10(low)))
    for k in range(decades + 1):
        v = 10.0**-k
        x, y = pad_l + _log_axis(v, low, w), pad_t + h - _log_axis(v, low, h)
        grid = 'stroke="#eee"/>'
        parts.append(f'<line x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + h}" {grid}')
        parts.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{pad_l + w}" y2="{y:.1f}" {grid}')
        parts.append(
            f'<text x="{x:.1f}" y="{pad_t + h + 14}" font-size="10" text-anchor="middle">'
            f"1e-{k}</text>"
        )
        parts.append(
            f'<text x="{pad_l - 4}" y="{y + 3:.1f}" font-size="10" text-anchor="end">1e-{k}</text>'
        )
    parts.append(
        f'<polyline points="{point(low, low)} {point(1, 1)}" fill="none" stroke="#888" '
        'stroke-dasharray="4 3"/>'
    )
    for i, (name, (fpr, tpr)) in enumerate(curves.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = " ".join(point(f, t) for f, t in zip(fpr, tpr, strict=True))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        parts.append(
            f'<text x="{pad_l + 6}" y="{pad_t + 14 + 12 * i}" font-size="10" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    parts.append(
        f'<text x="{pad_l + w / 2}" y="{height - 4}" font-size="11" text-anchor="middle">'
        "false positive rate</text>"
    )
    parts.append(
        f'<text x="12" y="{pad_t + h / 2}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {pad_t + h / 2})">true positive rate</text>'
    )
    parts.append("</svg>")
    return "".join(parts)

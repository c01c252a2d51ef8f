"""Inline SVG charts for the HTML report: pure functions from numbers to SVG markup.

No JavaScript and no external assets, so the report stays one self-contained file. Every piece
of text that reaches the SVG goes through :func:`markupsafe.escape`; the result is returned as
:class:`markupsafe.Markup` so the (autoescaping) template inserts it as markup, not as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 520
HEIGHT = 300
MARGIN_LEFT = 56
MARGIN_RIGHT = 24
MARGIN_TOP = 40  # room for the legend
MARGIN_BOTTOM = 46
PALETTE = ("#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0e7490")


@dataclass(frozen=True)
class Point:
    """One measured point: x (eps), y (a proportion in [0, 1]), an optional CI and a tooltip."""

    x: float
    y: float
    tooltip: str
    ci: tuple[float, float] | None = None


@dataclass(frozen=True)
class Series:
    """One polyline of the chart (one access level / variant of a norm)."""

    name: str
    points: tuple[Point, ...]


def nice_ticks(hi: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``hi`` (1, 2, 2.5 or 5 × a power of ten apart)."""
    if not math.isfinite(hi) or hi <= 0:
        return [0.0, 1.0]
    raw = hi / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(hi / step - 1e-9)
    return [round(i * step, 12) for i in range(n + 1)]


def _fmt_tick(v: float) -> str:
    return f"{v:g}"


def _f(v: float) -> str:
    """Coordinates with two decimals: short markup, sub-pixel precision."""
    return f"{v:.2f}"


@dataclass(frozen=True)
class _Frame:
    """The chart's size and data ranges: maps data coordinates to SVG coordinates."""

    width: int
    height: int
    x_max: float
    y_top: float

    @property
    def plot_w(self) -> float:
        return self.width - MARGIN_LEFT - MARGIN_RIGHT

    @property
    def plot_h(self) -> float:
        return self.height - MARGIN_TOP - MARGIN_BOTTOM

    def sx(self, x: float) -> float:
        return MARGIN_LEFT + (x / self.x_max) * self.plot_w

    def sy(self, y: float) -> float:
        return MARGIN_TOP + (1.0 - min(1.0, max(0.0, y / self.y_top))) * self.plot_h


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str = "robust accuracy",
    width: int = WIDTH,
    height: int = HEIGHT,
    y_max: float | None = None,
    x_ticks: Sequence[tuple[float, str]] | None = None,
) -> Markup:
    """A line chart of proportions (y axis 0–100%) against a non-negative x, as ``<svg>``.

    Each point carries a ``<title>`` tooltip and, when given, a vertical CI whisker.
    ``y_max`` plots plain non-negative values instead (a loss): the y axis then runs from 0
    to a round number at or above ``y_max``. ``x_ticks``: (position, label) pairs to mark
    instead of round numbers (a budget in other units, such as dB).
    """
    xs = [p.x for s in series for p in s.points if math.isfinite(p.x)]
    nice = nice_ticks(max(xs, default=0.0))
    marks = list(x_ticks) if x_ticks is not None else [(t, _fmt_tick(t)) for t in nice]
    y_ticks = nice_ticks(y_max, 4) if y_max is not None else [0.0, 0.25, 0.5, 0.75, 1.0]
    frame = _Frame(width, height, nice[-1], y_ticks[-1])
    parts: list[str] = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img">',
        f"<title>{escape(title)}</title>",
    ]
    parts.extend(_axes(frame, marks, y_ticks, percent=y_max is None))
    parts.extend(_labels(frame, x_label, y_label))
    for i, s in enumerate(series):
        parts.extend(_series(frame, s, i))
    parts.append("</svg>")
    return Markup("\n".join(parts))


def _axes(
    frame: _Frame, x_ticks: list[tuple[float, str]], y_ticks: list[float], *, percent: bool
) -> list[str]:
    """Grid and y axis (0–100%, or 0 to the top tick), x ticks, and both axis lines."""
    sx, sy, right = frame.sx, frame.sy, frame.width - MARGIN_RIGHT
    parts = []
    for tick in y_ticks:
        y = sy(tick)
        text = f"{round(100 * tick)}%" if percent else escape(_fmt_tick(tick))
        parts.append(
            f'<line class="grid" x1="{_f(MARGIN_LEFT)}" y1="{_f(y)}" x2="{_f(right)}" '
            f'y2="{_f(y)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{_f(MARGIN_LEFT - 6)}" y="{_f(y + 4)}" text-anchor="end">{text}</text>'
        )
    for t, label in x_ticks:
        x = sx(t)
        parts.append(
            f'<line class="axis" x1="{_f(x)}" y1="{_f(sy(0))}" x2="{_f(x)}" y2="{_f(sy(0) + 4)}"/>'
        )
        parts.append(
            f'<text class="tick" x="{_f(x)}" y="{_f(sy(0) + 16)}" text-anchor="middle">'
            f"{escape(label)}</text>"
        )
    parts.append(
        f'<line class="axis" x1="{_f(MARGIN_LEFT)}" y1="{_f(sy(0))}" x2="{_f(right)}" '
        f'y2="{_f(sy(0))}"/>'
    )
    parts.append(
        f'<line class="axis" x1="{_f(MARGIN_LEFT)}" y1="{_f(sy(1))}" x2="{_f(MARGIN_LEFT)}" '
        f'y2="{_f(sy(0))}"/>'
    )
    return parts


def _labels(frame: _Frame, x_label: str, y_label: str) -> list[str]:
    return [
        f'<text class="label" x="{_f(MARGIN_LEFT + frame.plot_w / 2)}" y="{frame.height - 8}" '
        f'text-anchor="middle">{escape(x_label)}</text>',
        f'<text class="label" transform="translate(14 {_f(MARGIN_TOP + frame.plot_h / 2)}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>',
    ]


def _series(frame: _Frame, s: Series, i: int) -> list[str]:
    """The ``i``-th series: its legend entry, its polyline, and each point with tooltip and CI."""
    colour = PALETTE[i % len(PALETTE)]
    pts = sorted((p for p in s.points if math.isfinite(p.x) and math.isfinite(p.y)), key=lambda p: p.x)
    lx, ly = MARGIN_LEFT + (i % 3) * 150, 12 + (i // 3) * 14
    parts = [
        f'<g class="legend"><line x1="{lx}" y1="{ly}" x2="{lx + 18}" y2="{ly}" stroke="{colour}" '
        f'stroke-width="2.5"/><text x="{lx + 24}" y="{ly + 4}">{escape(s.name)}</text></g>'
    ]
    if not pts:
        return parts
    sx, sy = frame.sx, frame.sy
    coords = " ".join(f"{_f(sx(p.x))},{_f(sy(p.y))}" for p in pts)
    parts.append(
        f'<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
    )
    for p in pts:
        cx, cy = sx(p.x), sy(p.y)
        g = [f'<g class="point"><title>{escape(p.tooltip)}</title>']
        if p.ci is not None:
            g.append(
                f'<line class="ci" x1="{_f(cx)}" y1="{_f(sy(p.ci[0]))}" x2="{_f(cx)}" '
                f'y2="{_f(sy(p.ci[1]))}" stroke="{colour}"/>'
            )
        g.append(f'<circle cx="{_f(cx)}" cy="{_f(cy)}" r="4" fill="{colour}"/></g>')
        parts.append("".join(g))
    return parts


def bar_chart(bars: Sequence[tuple[str, float, str]], *, title: str, width: int = WIDTH) -> Markup:
    """Horizontal bars of proportions in [0, 1], one per (label, value, tooltip), as ``<svg>``
    (the label column is as wide as the longest label needs)."""
    left = min(220, 16 + 7 * max((len(b[0]) for b in bars), default=4))
    row, top = 20, 28
    height = top + row * len(bars) + 24
    plot = width - left - MARGIN_RIGHT
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<text class="label" x="{left}" y="16">{escape(title)}</text>',
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = left + tick * plot
        parts.append(f'<line class="grid" x1="{_f(x)}" y1="{top - 4}" x2="{_f(x)}" '
                     f'y2="{height - 20}"/>')  # fmt: skip
        parts.append(f'<text x="{_f(x)}" y="{height - 6}" text-anchor="middle">'
                     f"{tick:.0%}</text>")  # fmt: skip
    for i, (label, value, tip) in enumerate(bars):
        y = top + i * row
        w = max(0.0, min(1.0, value)) * plot
        colour = PALETTE[0]
        parts.append(f'<text x="{left - 6}" y="{_f(y + 13)}" text-anchor="end">'
                     f"{escape(label)}</text>")  # fmt: skip
        parts.append(f'<rect x="{left}" y="{_f(y + 3)}" width="{_f(w)}" height="{row - 6}" '
                     f'fill="{colour}"><title>{escape(tip)}</title></rect>')  # fmt: skip
    parts.append("</svg>")
    return Markup("\n".join(parts))

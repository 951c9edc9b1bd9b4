"""Charts as server-rendered inline SVG: no script, no library, nothing fetched — pages work offline and print.

Each data point is an element with class `point` and a `data-value` attribute (what the browser test counts), and a
`<title>` a pointer or a screen reader gets. Styling is in static/ops.css (the CSP forbids inline styles).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 44, 10, 12, 46


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 10 or v == int(v) else f"{v:.2f}"


def _frame(label: str, body: str, top: float, width: int = W, height: int = H) -> Markup:
    grid = []
    for i in range(5):
        y = PAD_T + (height - PAD_T - PAD_B) * i / 4
        grid.append(f'<line class="grid" x1="{PAD_L}" x2="{width - PAD_R}" y1="{y:.1f}" y2="{y:.1f}"/>'
                    f'<text class="axis" x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">'
                    f'{_num(top * (4 - i) / 4)}</text>')
    return Markup(f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
                  f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>{"".join(grid)}{body}</svg>')


def bars(label: str, items: Sequence[tuple[str, float]], *, fmt: Callable[[float], str] = _num,
         every: int = 1) -> Markup:
    """Vertical bars; `every` labels one x tick in that many (24 hours, 31 days)."""
    if not items:
        return empty(label)
    top = max(max(v for _, v in items), 1e-9)
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / len(items)
    out = []
    for i, (name, value) in enumerate(items):
        h = inner_h * value / top
        x = PAD_L + i * step + step * 0.1
        out.append(f'<rect class="bar point" data-value="{value}" x="{x:.1f}" y="{PAD_T + inner_h - h:.1f}" '
                   f'width="{step * 0.8:.1f}" height="{h:.1f}"><title>{escape(name)}: {escape(fmt(value))}'
                   f'</title></rect>')
        if i % every == 0:
            out.append(f'<text class="axis" x="{x + step * 0.4:.1f}" y="{H - PAD_B + 14}" text-anchor="middle">'
                       f'{escape(name)}</text>')
    return _frame(label, "".join(out), top)


def hbars(label: str, items: Sequence[tuple[str, float]], *, fmt: Callable[[float], str] = _num) -> Markup:
    """Horizontal bars for top-N lists (long labels read better beside the bar)."""
    if not items:
        return empty(label)
    row, label_w = 22, 230
    height = PAD_T + row * len(items) + 8
    top = max(max(v for _, v in items), 1e-9)
    out = []
    for i, (name, value) in enumerate(items):
        y = PAD_T + i * row
        w = (W - label_w - 60) * value / top
        short = name if len(name) <= 34 else name[:33] + "…"
        out.append(f'<text class="label" x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(short)}</text>'
                   f'<rect class="bar point" data-value="{value}" x="{label_w}" y="{y + 3}" width="{w:.1f}" '
                   f'height="{row - 6}"><title>{escape(name)}: {escape(fmt(value))}</title></rect>'
                   f'<text class="value" x="{label_w + w + 4:.1f}" y="{y + 15}">{escape(fmt(value))}</text>')
    return Markup(f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {W} {height}" '
                  f'xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}</title>{"".join(out)}</svg>')


def lines(label: str, xs: Sequence[str], series: Sequence[tuple[str, Sequence[float]]]) -> Markup:
    """One polyline per series over the same x labels, a dot per point."""
    if not xs or not series:
        return empty(label)
    top = max(max((max(vals) for _, vals in series if vals), default=0.0), 1e-9)
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    step = inner_w / max(len(xs) - 1, 1)
    out = []
    for k, (name, vals) in enumerate(series):
        pts = [(PAD_L + i * step, PAD_T + inner_h - inner_h * v / top) for i, v in enumerate(vals)]
        out.append(f'<polyline class="line s{k}" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>')
        out.extend(f'<circle class="dot s{k} point" data-value="{v}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                   f'<title>{escape(name)} {escape(xs[i])}: {escape(_num(v))}</title></circle>'
                   for i, ((x, y), v) in enumerate(zip(pts, vals, strict=True)))
        out.append(f'<text class="legend s{k}" x="{PAD_L + 8 + 90 * k}" y="{H - 8}">{escape(name)}</text>')
    every = max(1, len(xs) // 8)
    out.extend(f'<text class="axis" x="{PAD_L + i * step:.1f}" y="{H - PAD_B + 14}" text-anchor="middle">'
               f'{escape(x[5:] if len(x) == 10 else x)}</text>' for i, x in enumerate(xs) if i % every == 0)
    return _frame(label, "".join(out), top)


def empty(label: str) -> Markup:
    return Markup(f'<p class="nodata" aria-label="{escape(label)}">Sin datos en el periodo.</p>')


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"

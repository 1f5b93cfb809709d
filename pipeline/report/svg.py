"""Charts as inline SVG, drawn in Python so a report needs no JavaScript library and no network.

Every function returns `Markup` (safe to drop into a Jinja template); every label is escaped here.
Series are given as {label: values}; the first series is "this run", a second one the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

from pipeline.report import units

PALETTE = ["#2563eb", "#9ca3af", "#d97706", "#7c3aed"]
STATUS_COLOURS = {
    "pass": "#16a34a", "warn": "#f59e0b", "fail": "#dc2626", "not_run": "#9ca3af", "inconclusive": "#ca8a04",
    "promoted": "#16a34a", "refused": "#dc2626", "aborted": "#f59e0b", "failed": "#991b1b",
    "noop": "#9ca3af",
}


def fmt_value(v: float | None, unit: str | None = "") -> str:
    """Compact human figure in its unit (see `pipeline.report.units`): 0.084 s -> '84 ms'."""
    return units.fmt_value(v, unit or None)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


class _Frame:
    """Plot area with margins and linear scales."""

    def __init__(self, width: int, height: int, x: tuple[float, float], y: tuple[float, float],
                 left: int = 48, bottom: int = 30, top: int = 38, right: int = 14) -> None:
        self.w, self.h = width, height
        self.l, self.b, self.t, self.r = left, bottom, top, right
        self.x0, self.x1 = x
        self.y0, self.y1 = y
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1

    def sx(self, v: float) -> float:
        return self.l + (v - self.x0) / (self.x1 - self.x0) * (self.w - self.l - self.r)

    def sy(self, v: float) -> float:
        return self.h - self.b - (v - self.y0) / (self.y1 - self.y0) * (self.h - self.b - self.t)

    def axes(self, xfmt, yfmt, xlabel: str = "", title: str = "") -> list[str]:  # type: ignore[no-untyped-def]
        out = [(f'<line x1="{self.l}" y1="{self.h - self.b}" x2="{self.w - self.r}" y2="{self.h - self.b}" '
               'class="axis"/>')]
        for t in nice_ticks(self.x0, self.x1, 5):
            if self.x0 <= t <= self.x1:
                x = self.sx(t)
                out.append(f'<line x1="{x:.1f}" y1="{self.h - self.b}" x2="{x:.1f}" y2="{self.h - self.b + 4}" '
                           'class="axis"/>')
                out.append(f'<text x="{x:.1f}" y="{self.h - self.b + 15}" text-anchor="middle">'
                           f"{escape(xfmt(t))}</text>")
        for t in nice_ticks(self.y0, self.y1, 4):
            if self.y0 <= t <= self.y1:
                y = self.sy(t)
                out.append(f'<line x1="{self.l}" y1="{y:.1f}" x2="{self.w - self.r}" y2="{y:.1f}" class="grid"/>')
                out.append(f'<text x="{self.l - 5}" y="{y + 4:.1f}" text-anchor="end">{escape(yfmt(t))}</text>')
        if xlabel:
            out.append(f'<text x="{self.w - self.r}" y="{self.h - 2}" text-anchor="end" class="lbl">'
                       f"{escape(xlabel)}</text>")
        if title:
            out.append(f'<text x="{self.l}" y="14" class="ttl">{escape(title)}</text>')
        return out


def _svg(width: int, height: int, body: list[str], label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def _legend(frame: _Frame, labels: Sequence[str]) -> list[str]:
    out = []
    x = frame.w - frame.r
    for i, label in reversed(list(enumerate(labels))):
        text = escape(label)
        x -= 14 + 7 * len(label)
        out.append(f'<rect x="{x}" y="20" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{x + 13}" y="29">{text}</text>')
        x -= 8
    return out


def _clip_range(series: dict[str, list[float]]) -> tuple[float, float]:
    """x-range up to the 99.5th percentile so one outlier does not squash the plot."""
    allv = sorted(v for vs in series.values() for v in vs if v is not None and math.isfinite(v))
    if not allv:
        return 0.0, 1.0
    hi = allv[min(len(allv) - 1, int(0.995 * (len(allv) - 1)) + 1)]
    return 0.0 if allv[0] >= 0 else allv[0], hi


def histogram(series: dict[str, list[float]], *, unit: str = "s", bins: int = 30, width: int = 420,
              height: int = 200, title: str = "") -> Markup:
    series = {k: v for k, v in series.items() if v}
    if not series:
        return Markup('<p class="muted">no samples</p>')
    lo, hi = _clip_range(series)
    step = (hi - lo) / bins or 1.0
    counts: dict[str, list[float]] = {}
    for name, vals in series.items():
        c = [0.0] * bins
        for v in vals:
            c[min(bins - 1, max(0, int((v - lo) / step)))] += 1
        counts[name] = [x / len(vals) for x in c]  # share of requests, so runs of different n compare
    ymax = max(max(c) for c in counts.values())
    f = _Frame(width, height, (lo, hi), (0, ymax * 1.1))
    body = f.axes(lambda v: fmt_value(v, unit), lambda v: f"{v:.0%}", xlabel="", title=title)
    for i, (name, c) in enumerate(counts.items()):
        colour = PALETTE[i % len(PALETTE)]
        pts = [f"{f.sx(lo):.1f},{f.sy(0):.1f}"]
        for j, share in enumerate(c):
            pts.append(f"{f.sx(lo + j * step):.1f},{f.sy(share):.1f}")
            pts.append(f"{f.sx(lo + (j + 1) * step):.1f},{f.sy(share):.1f}")
        pts.append(f"{f.sx(hi):.1f},{f.sy(0):.1f}")
        body.append(f'<polygon points="{" ".join(pts)}" fill="{colour}" fill-opacity="{0.45 if i == 0 else 0.3}" '
                    f'stroke="{colour}" stroke-width="1"><title>{escape(name)}: n={len(series[name])}</title>'
                    "</polygon>")
    body += _legend(f, list(counts))
    return _svg(width, height, body, title or "histogram")


def ecdf(series: dict[str, list[float]], *, unit: str = "s", width: int = 420, height: int = 200,
         title: str = "", marks: Sequence[float] = (0.5, 0.99)) -> Markup:
    series = {k: sorted(v) for k, v in series.items() if v}
    if not series:
        return Markup('<p class="muted">no samples</p>')
    lo, hi = _clip_range(series)
    f = _Frame(width, height, (lo, hi), (0, 1))
    body = f.axes(lambda v: fmt_value(v, unit), lambda v: f"{v:.0%}", title=title)
    for i, (name, vals) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        n = len(vals)
        # Thin to at most ~400 steps: enough resolution for a 400 px plot, small pages for big runs.
        stride = max(1, n // 400)
        pts = [f"{f.sx(lo):.1f},{f.sy(0):.1f}"]
        prev = 0.0
        for j in range(0, n, stride):
            x = f.sx(min(vals[j], hi))
            pts.append(f"{x:.1f},{f.sy(prev):.1f}")
            prev = (j + 1) / n
            pts.append(f"{x:.1f},{f.sy(prev):.1f}")
        pts.append(f"{f.sx(hi):.1f},{f.sy(1):.1f}")
        body.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" stroke-width="2">'
                    f"<title>{escape(name)}: n={n}</title></polyline>")
        if i == 0:
            for q in marks:
                v = vals[min(n - 1, max(0, math.ceil(q * n) - 1))]
                x = f.sx(min(v, hi))
                # Label left of the mark near the right edge, so it is not cut off.
                anchor, dx = ("end", -3) if x > width - 90 else ("start", 3)
                body.append(f'<line x1="{x:.1f}" y1="{f.sy(0):.1f}" x2="{x:.1f}" y2="{f.sy(q):.1f}" class="mark"/>'
                            f'<text x="{x + dx:.1f}" y="{f.sy(q) + (12 if q > 0.9 else -3):.1f}" '
                            f'text-anchor="{anchor}" class="lbl">p{q * 100:g} '
                            f"{escape(fmt_value(v, unit))}</text>")
    body += _legend(f, list(series))
    return _svg(width, height, body, title or "ECDF")


def bars(rows: Sequence[tuple[str, Sequence[float | None]]], *, series: Sequence[str] = ("this run",),
         width: int = 520, unit: str = "", lo: float | None = 0.0, hi: float | None = None,
         title: str = "") -> Markup:
    """Horizontal grouped bars: one row per dimension, one bar per series."""
    vals = [v for _, vs in rows for v in vs if v is not None]
    if not rows or not vals:
        return Markup('<p class="muted">no values</p>')
    x0 = min(vals + [0.0]) if lo is None else lo
    x1 = max(vals) if hi is None else hi
    bar_h, gap = 12, 8
    group = bar_h * len(series) + gap
    label_w = 8 + 7 * max(len(name) for name, _ in rows)
    height = (38 if len(series) > 1 else 24) + len(rows) * group + 24
    f = _Frame(width, height, (x0, x1 if x1 > x0 else x0 + 1), (0, 1), left=label_w, bottom=24, top=38 if len(series) > 1 else 24, right=60)
    body = f.axes(lambda v: fmt_value(v, unit), lambda v: "", title=title)
    body = [b for b in body if 'class="grid"' not in b]
    for r, (name, vs) in enumerate(rows):
        y = f.t + r * group
        body.append(f'<text x="{label_w - 6}" y="{y + bar_h * len(series) / 2 + 4:.1f}" text-anchor="end">'
                    f"{escape(name)}</text>")
        for i, v in enumerate(vs):
            if v is None:
                continue
            x_start = f.sx(max(x0, min(0.0, x1))) if x0 < 0 else f.sx(x0)
            xv = f.sx(min(max(v, x0), f.x1))
            xa, xb = sorted((x_start, xv))
            colour = PALETTE[i % len(PALETTE)]
            yy = y + i * bar_h
            body.append(f'<rect x="{xa:.1f}" y="{yy}" width="{max(1.0, xb - xa):.1f}" height="{bar_h - 2}" '
                        f'fill="{colour}"><title>{escape(series[i])} · {escape(name)}: '
                        f"{escape(fmt_value(v, unit))}</title></rect>"
                        f'<text x="{xb + 4:.1f}" y="{yy + bar_h - 3}" class="lbl">{escape(fmt_value(v, unit))}</text>')
    if len(series) > 1:
        body += _legend(f, list(series))
    return _svg(width, height, body, title or "bars")


def milestones(points: Sequence[tuple[str, float | None]], *, width: int = 640, title: str = "") -> Markup:
    """Boot milestones on one time axis from container start (0 s)."""
    pts = [(n, v) for n, v in points if v is not None]
    if not pts:
        return Markup('<p class="muted">no milestones</p>')
    height = 70 + 18 * len(pts)
    f = _Frame(width, height, (0, max(v for _, v in pts) * 1.08), (0, 1), left=130, bottom=24, top=24, right=20)
    body = f.axes(lambda v: fmt_value(v, "s"), lambda v: "", title=title)
    body = [b for b in body if 'class="grid"' not in b]
    for i, (name, v) in enumerate(pts):
        y = f.t + 6 + i * 18
        x = f.sx(v)
        body.append(f'<text x="{f.l - 6}" y="{y + 10}" text-anchor="end">{escape(name)}</text>'
                    f'<rect x="{f.l}" y="{y}" width="{max(1.0, x - f.l):.1f}" height="12" fill="{PALETTE[0]}" '
                    f'fill-opacity="{0.35 + 0.6 * (i + 1) / len(pts):.2f}"><title>{escape(name)}: '
                    f'{escape(fmt_value(v, "s"))}</title></rect>'
                    f'<text x="{x + 4:.1f}" y="{y + 10}" class="lbl">{escape(fmt_value(v, "s"))}</text>')
    return _svg(width, height, body, title or "milestones")


def _time_span(times: Iterable[datetime]) -> tuple[float, float]:
    """The x range (epoch seconds) of a time axis: the times with 4% room each side (an hour for one)."""
    ts = [t.timestamp() for t in times]
    lo, hi = min(ts), max(ts)
    pad = (hi - lo) * 0.04 or 3600
    return lo - pad, hi + pad


def timeline(events: Sequence[tuple[datetime, str, str, str | None]], *, width: int = 900,
             title: str = "") -> Markup:
    """Promotion events on a time axis: (when, label, outcome, href). Colour by outcome."""
    if not events:
        return Markup('<p class="muted">no promotions</p>')
    height = 120
    span = _time_span(e[0] for e in events)
    f = _Frame(width, height, span, (0, 1), left=20, bottom=28, top=24, right=20)
    body = [f'<line x1="{f.l}" y1="{f.sy(0.5):.1f}" x2="{width - f.r}" y2="{f.sy(0.5):.1f}" class="axis"/>']
    if title:
        body.append(f'<text x="{f.l}" y="14" class="ttl">{escape(title)}</text>')
    for t in nice_ticks(*span, 6):
        if f.x0 <= t <= f.x1:
            x = f.sx(t)
            label = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
            body.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{label}</text>'
                        f'<line x1="{x:.1f}" y1="{f.sy(0.5) - 3:.1f}" x2="{x:.1f}" y2="{f.sy(0.5) + 3:.1f}" '
                        'class="axis"/>')
    for k, (when, label, outcome, href) in enumerate(events):
        x = f.sx(when.timestamp())
        colour = STATUS_COLOURS.get(outcome, "#6b7280")
        up = k % 2 == 0
        y = f.sy(0.5)
        tip = f"{when:%Y-%m-%d %H:%M} {label}: {outcome}"
        mark = (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}" class="ev-{escape(outcome)}">'
                f"<title>{escape(tip)}</title></circle>"
                f'<text x="{x:.1f}" y="{y - 12 if up else y + 20:.1f}" text-anchor="middle" class="lbl">'
                f"{escape(label)}</text>")
        body.append(f'<a href="{escape(href)}">{mark}</a>' if href else mark)
    return _svg(width, height, body, title or "timeline")


DECISION_COLOURS = {"pass": "#16a34a", "blocked": "#dc2626", "inconclusive": "#ca8a04", "error": "#991b1b",
                    "pending": "#9ca3af", "interrupted": "#7c3aed"}


def gantt(stages: Sequence[tuple[str, datetime, float | None, str, bool]], *, width: int = 640,
          title: str = "") -> Markup:
    """Stages on one time axis from the run's first start: (name, started_at, duration_s, status, reused),
    in plan order. Stages that ran side by side overlap; a reused stage is a hatched mark with no length
    of its own (its result was computed by another run)."""
    rows = [s for s in stages if s[2] is not None or s[4]]
    measured = [s[1] for s in rows if not s[4]]
    if not rows or not measured:
        return Markup('<p class="muted">no stage timings</p>')
    t0 = min(measured)
    # A reused result keeps the times of the run that computed it: it is drawn where this run used it,
    # after the stage before it in plan order.
    spans: list[tuple[str, float, float, str, bool]] = []
    for name, start, dur, status, reused in rows:
        at = spans[-1][1] + spans[-1][2] if reused and spans else (0.0 if reused else (start - t0).total_seconds())
        spans.append((name, at, 0.0 if reused else float(dur or 0.0), status, reused))
    end = max(a + b for _, a, b, _, _ in spans) or 1.0
    height = 44 + 18 * len(spans)
    f = _Frame(width, height, (0, end * 1.05), (0, 1), left=90, bottom=24, top=24, right=70)
    body = f.axes(lambda v: fmt_value(v, "s"), lambda v: "", title=title)
    body = [b for b in body if 'class="grid"' not in b]
    colours = {"ok": PALETTE[0], "failed": STATUS_COLOURS["fail"], "error": STATUS_COLOURS["failed"],
               "skipped": STATUS_COLOURS["not_run"]}
    for i, (name, start, dur, status, reused) in enumerate(spans):
        y = f.t + 4 + i * 18
        x0, x1 = f.sx(start), f.sx(start + dur)
        label = "reused" if reused else fmt_value(dur, "s")
        fill = 'fill="url(#hatch)"' if reused else f'fill="{colours.get(status, PALETTE[1])}"'
        body.append(f'<text x="{f.l - 6}" y="{y + 10}" text-anchor="end">{escape(name)}</text>'
                    f'<rect x="{x0:.1f}" y="{y}" width="{max(3.0, x1 - x0):.1f}" height="12" {fill} '
                    f'class="st-{escape(status)}"><title>{escape(name)}: {escape(status)}, {escape(label)} '
                    f"(from +{escape(fmt_value(start, 's'))})</title></rect>"
                    f'<text x="{max(x1, x0 + 3) + 4:.1f}" y="{y + 10}" class="lbl">{escape(label)}</text>')
    defs = ('<defs><pattern id="hatch" width="4" height="4" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="2" height="4" fill="#9ca3af"/></pattern></defs>')
    return _svg(width, height, [defs, *body], title or "stages")


def decisions(points: Sequence[tuple[datetime, str, str]], *, width: int = 640, title: str = "") -> Markup:
    """A tag's decisions over time: (when, decision, run_id), one dot each, coloured by decision."""
    if not points:
        return Markup('<p class="muted">no runs</p>')
    height = 70
    span = _time_span(p[0] for p in points)
    f = _Frame(width, height, span, (0, 1), left=20, bottom=22, top=22, right=20)
    y = f.sy(0.5)
    body = [f'<line x1="{f.l}" y1="{y:.1f}" x2="{width - f.r}" y2="{y:.1f}" class="axis"/>']
    if title:
        body.append(f'<text x="{f.l}" y="14" class="ttl">{escape(title)}</text>')
    for t in nice_ticks(*span, 5):
        if f.x0 <= t <= f.x1:
            label = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d")
            body.append(f'<text x="{f.sx(t):.1f}" y="{height - 6}" text-anchor="middle">{label}</text>')
    for when, decision, run_id in points:
        body.append(f'<circle cx="{f.sx(when.timestamp()):.1f}" cy="{y:.1f}" r="5" '
                    f'fill="{DECISION_COLOURS.get(decision, "#6b7280")}" class="dec-{escape(decision)}">'
                    f"<title>{when:%Y-%m-%d %H:%M} {escape(decision)} (run {escape(run_id)})</title></circle>")
    return _svg(width, height, body, title or "decisions")


def metric_line(points: Sequence[tuple[datetime, float, str]], *, unit: str | None = None,
                threshold: float | None = None, width: int = 320, height: int = 140, title: str = "") -> Markup:
    """One metric over a tag's runs: (when, value, gate status); dots coloured by status, the threshold dashed."""
    pts = [p for p in points if p[1] is not None and math.isfinite(p[1])]
    if not pts:
        return Markup('<p class="muted">no values</p>')
    ts = [p[0].timestamp() for p in pts]
    vals = [p[1] for p in pts] + ([threshold] if threshold is not None else [])
    lo_t, hi_t = min(ts), max(ts)
    pad = (hi_t - lo_t) * 0.05 or 3600
    lo_v, hi_v = min(vals), max(vals)
    span = (hi_v - lo_v) or abs(hi_v) or 1.0
    f = _Frame(width, height, (lo_t - pad, hi_t + pad), (lo_v - 0.1 * span, hi_v + 0.1 * span), left=64)
    whole = unit in ("count", "bool")  # no tick at 0.5 of a finding

    def yfmt(v: float) -> str:
        return "" if whole and not float(v).is_integer() else fmt_value(v, unit)

    if whole:
        lo_v, hi_v = math.floor(lo_v) - 0.5, math.ceil(hi_v) + 0.5
        f = _Frame(width, height, (lo_t - pad, hi_t + pad), (lo_v, hi_v), left=64)
    body = f.axes(lambda v: "", yfmt, title=title)
    if threshold is not None:
        body.append(f'<line x1="{f.l}" y1="{f.sy(threshold):.1f}" x2="{width - f.r}" y2="{f.sy(threshold):.1f}" '
                    f'class="mark"><title>threshold {escape(fmt_value(threshold, unit))}</title></line>')
    line = " ".join(f"{f.sx(t):.1f},{f.sy(v):.1f}" for t, (_, v, _) in zip(ts, pts, strict=True))
    body.append(f'<polyline points="{line}" fill="none" stroke="{PALETTE[1]}" stroke-width="1.5"/>')
    for t, (when, v, status) in zip(ts, pts, strict=True):
        body.append(f'<circle cx="{f.sx(t):.1f}" cy="{f.sy(v):.1f}" r="3.5" '
                    f'fill="{STATUS_COLOURS.get(status, "#6b7280")}"><title>{when:%Y-%m-%d %H:%M}: '
                    f"{escape(fmt_value(v, unit))} ({escape(status)})</title></circle>")
    return _svg(width, height, body, title or "metric")

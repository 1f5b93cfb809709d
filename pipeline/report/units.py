"""Numbers as people read them: every metric with its unit and a precision that suits it.

Units come from the metric catalogue (`pipeline.metrics`, what the stages declare), never from a name's
suffix: a new metric is formatted right as soon as its stage declares it. Every output (terminal tables,
CI logs, the markdown summary, the dashboard) formats through here, so a value reads the same everywhere.
"""

from __future__ import annotations

import math

from pipeline.metrics import Better, better
from pipeline.metrics import unit as unit_of  # noqa: F401  (the reports read units from here)

# What a verdict's `difference` is measured in, by the gate engine's `details.difference_unit`.
RELATIVE = "relative"


def better_of(source: str, direction: str | None = None) -> Better | None:
    """Which way is better: the gate's own direction when it has one (`min`: higher), else the catalogue's."""
    if direction == "min":
        return "higher"
    if direction == "max":
        return "lower"
    return better(source)


def _sig(v: float, digits: int = 3) -> str:
    """`digits` significant figures without scientific notation for everyday magnitudes."""
    if v == 0:
        return "0"
    if abs(v) >= 10 ** digits:
        return f"{v:,.0f}"
    text = f"{v:.{digits}g}"
    if "e" in text:  # tiny values: keep them readable rather than 1.2e-05
        text = f"{v:.{digits - 1}e}"
    return text


def fmt_seconds(v: float) -> str:
    a = abs(v)
    if a == 0:
        return "0 s"
    if a < 1e-3:
        return f"{_sig(v * 1e6)} µs"
    if a < 1:
        return f"{_sig(v * 1e3)} ms"
    if a < 60:
        return f"{_sig(v)} s"
    if a < 3600:
        m, s = divmod(round(a), 60)
        return f"{'-' if v < 0 else ''}{m} min" + (f" {s:02d} s" if s else "")
    h, rem = divmod(round(a), 3600)
    return f"{'-' if v < 0 else ''}{h} h {rem // 60:02d} min"


def fmt_bytes(v: float) -> str:
    for div, suffix in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(v) >= div:
            return f"{_sig(v / div)} {suffix}"
    return f"{v:.0f} B"


def fmt_percent(v: float) -> str:
    """A share (0..1) as a percentage: one decimal from 10 %, two significant figures below."""
    p = v * 100
    if p == 0:
        return "0%"
    if abs(p) >= 10:
        return f"{p:.1f}%"
    return f"{_sig(p, 2)}%"


def fmt_value(v: float | None, unit: str | None = None) -> str:
    """One value in its unit: 0.084 s -> '84 ms', 7.2e9 bytes -> '7.2 GB', 0.8123 ratio -> '81.2%'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if unit == "s":
        return fmt_seconds(v)
    if unit in ("bytes", "B"):
        return fmt_bytes(v)
    if unit == "ratio":
        return fmt_percent(v)
    if unit == "bool":
        return {1.0: "yes", 0.0: "no"}.get(float(v), _sig(v))
    if unit == "count":
        return str(int(v)) if v == int(v) else _sig(v)
    if unit == "tokens/s":
        return f"{_sig(v)} tok/s"
    if unit == "requests/s":
        return f"{_sig(v)} req/s"
    if unit == "load":
        return f"{v:.2f}"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return _sig(v, 4)


def fmt_delta(v: float | None, unit: str | None = None, *, relative: bool = False) -> str:
    """A difference, signed: relative shifts in %, differences of ratios in percentage points."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    sign = "+" if v > 0 else ""
    if relative:
        return sign + fmt_percent(v)
    if unit == "ratio":
        p = v * 100
        return f"{sign}{p:.1f} pp" if abs(p) >= 1 or p == 0 else f"{sign}{_sig(p, 2)} pp"
    return sign + fmt_value(v, unit)

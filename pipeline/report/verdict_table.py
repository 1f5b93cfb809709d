"""The gate verdicts as a terminal table (`llmgate run`, `gate`, `runs show`).

Every cell is a `Text`: reasons quote stage, server and policy strings, which are never read as rich
markup. Values carry their unit from the metric catalogue. Gate names and figures never wrap; only the
reason column folds when a terminal is too narrow (off a terminal the console does not wrap at all,
see `pipeline.cli.output`).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from pipeline.models import Decision, GateStatus, GateVerdict
from pipeline.redact import redact_text
from pipeline.report.units import RELATIVE, fmt_delta, fmt_value, unit_of

STYLE = {
    GateStatus.PASS: "green",
    GateStatus.WARN: "yellow",
    GateStatus.FAIL: "bold red",
    GateStatus.NOT_RUN: "magenta",
    GateStatus.INCONCLUSIVE: "bold yellow",
}
DECISION_STYLE = {"pass": "bold green", "blocked": "bold red", "inconclusive": "bold yellow", "error": "bold red",
                  "pending": "yellow", "interrupted": "bold magenta"}


def relative_difference(v: GateVerdict) -> bool:
    """The engine compares per-request samples as a relative shift, per-item scores as a difference."""
    return (v.details.difference_unit or "").startswith(RELATIVE)


def difference_text(v: GateVerdict) -> str:
    """'Δ [CI low, CI high]' in the verdict's own unit, or '' when the gate compared nothing."""
    if v.difference is None:
        return ""
    rel, unit = relative_difference(v), unit_of(v.source)
    text = fmt_delta(v.difference, unit, relative=rel)
    if v.ci_low is not None and v.ci_high is not None:
        text += f" [{fmt_delta(v.ci_low, unit, relative=rel)}, {fmt_delta(v.ci_high, unit, relative=rel)}]"
    return text


def threshold_text(v: GateVerdict) -> str:
    if v.threshold is None:
        return ""
    unit = unit_of(v.source)
    if unit == "bool" and v.threshold in (0.0, 1.0):  # a yes/no check: "≥ yes" would read oddly
        return "must be " + fmt_value(v.threshold, unit)
    return {"max": "≤ ", "min": "≥ "}.get(v.direction or "", "") + fmt_value(v.threshold, unit)


def p_text(p: float | None) -> str:
    if p is None:
        return ""
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def verdict_table(verdicts: Sequence[GateVerdict], decision: Decision | str, reason: str, title: str = "gates") -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, title=Text(redact_text(title)), title_justify="left",
              show_lines=False, pad_edge=False)
    for col, kw in (
        ("gate", {"no_wrap": True}),
        ("status", {"no_wrap": True}),
        ("value", {"no_wrap": True, "justify": "right"}),
        ("threshold", {"no_wrap": True, "justify": "right"}),
        ("baseline", {"no_wrap": True, "justify": "right"}),
        ("Δ [95% CI]", {"no_wrap": True, "justify": "right"}),
        ("p", {"no_wrap": True, "justify": "right"}),
        ("MDE", {"no_wrap": True, "justify": "right"}),
        ("", {"no_wrap": True}),
        ("reason", {"overflow": "fold", "min_width": 20}),
    ):
        t.add_column(col, **kw)  # type: ignore[arg-type]
    for v in verdicts:
        unit = unit_of(v.source)
        flags = ("key " if v.key else "") + ("" if v.required else "optional")
        mde = "" if v.mde is None else fmt_delta(v.mde, unit, relative=relative_difference(v)).lstrip("+")
        t.add_row(
            Text(redact_text(v.name)),
            Text(v.status.value, style=STYLE[v.status]),
            Text(fmt_value(v.value, unit)),
            Text(threshold_text(v)),
            Text(fmt_value(v.baseline, unit) if v.baseline is not None else ""),
            Text(difference_text(v)),
            Text(p_text(v.p_value)),
            Text(mde),
            Text(flags.strip()),
            Text(redact_text(v.reason)),
        )
    value = decision.value if isinstance(decision, Decision) else str(decision)
    t.caption = Text.assemble((value.upper(), DECISION_STYLE.get(value, "bold")), ": ", redact_text(reason))
    t.caption_justify = "left"
    return t

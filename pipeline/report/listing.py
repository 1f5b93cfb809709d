"""What `llmgate runs list`, `runs show`, `history` and `status` show: typed views of the store (the
`--json` documents) and the terminal tables made from them.

Every string that came from outside (tags, reasons, who, details) is redacted here and put in a
`Text`, never read as rich markup; figures carry their unit from the metric catalogue.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pipeline.errors import BadInput
from pipeline.models import GateStatus, RunRecord, StageResult
from pipeline.promote.backend import TargetStatus as LiveTargetStatus
from pipeline.redact import redact, redact_text
from pipeline.report.units import fmt_value, unit_of
from pipeline.report.verdict_table import DECISION_STYLE, STYLE, verdict_table
from pipeline.report.views import Serving, is_serving, scan_not_run, short_digest
from pipeline.store import RunSummary, Store
from pipeline.store import TargetStatus as StoreTargetStatus

_SINCE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, *, now: datetime | None = None, where: str = "--since") -> datetime:
    """'1d', '12h', '30m', '2w' ago, or an ISO 8601 date or time (UTC when it names no offset)."""
    text = value.strip()
    m = _SINCE.match(text)
    if m:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(text)  # Python 3.11 reads a trailing Z too
    except ValueError:
        raise BadInput(f"not a time: {value!r}; give an age (30m, 12h, 1d, 2w) or an ISO 8601 date/time "
                       "(2026-08-01, 2026-08-01T12:00Z)", where=where) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _ago(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _decision_text(decision: str) -> Text:
    return Text(decision, style=DECISION_STYLE.get(decision, ""))


# -- runs list ------------------------------------------------------------------------------------
class RunRow(_View):
    run_id: str
    tag: str | None
    target: str
    created_at: datetime
    decision: str
    reason: str
    image: str  # repository
    image_digest: str | None
    model_digest: str | None
    promoted: bool  # this run was promoted to its target
    serving: bool  # its release (image and model) is what the target serves now (the newest promotion there)


def run_rows(runs: list[RunRecord], serving: Serving) -> list[RunRow]:
    return [
        RunRow(run_id=r.run_id, tag=redact_text(r.image.tag) if r.image.tag else None, target=r.target,
               created_at=r.created_at, decision=r.decision.value, reason=redact_text(r.decision_reason),
               image=redact_text(r.image.repository), image_digest=r.image.digest,
               model_digest=r.model.digest if r.model else None,
               promoted=r.promotion is not None and r.promotion.outcome == "promoted",
               serving=is_serving(serving, r.target, r.image.digest, r.model.digest if r.model else None))
        for r in runs
    ]


def serving_from_store(store: Store, targets: set[str]) -> Serving:
    """Per target, the release pair the store says is promoted there now (`Store.target_status`)."""
    out: Serving = {}
    for t in sorted(targets):
        st = store.target_status(t)
        if st is not None and st.digest:
            out[t] = (st.digest, st.model_digest)
    return out


def _promoted_text(promoted: bool, serving: bool) -> Text:
    if serving:
        return Text("★ serving", style="bold yellow")
    return Text("✓ earlier", style="green") if promoted else Text("")


def runs_table(rows: list[RunRow]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, title=Text(f"{_count(len(rows), 'run')}, newest first"),
              title_justify="left", pad_edge=False)
    for col, kw in (("run", {}), ("tag", {}), ("target", {}), ("created (UTC)", {}), ("decision", {}),
                    ("image", {}), ("model", {}), ("promoted", {})):
        t.add_column(col, no_wrap=True, **kw)
    for r in rows:
        t.add_row(Text(r.run_id), Text(r.tag or "-"), Text(r.target), Text(_ago(r.created_at)),
                  _decision_text(r.decision), Text(short_digest(r.image_digest) or "(not built)"),
                  Text(short_digest(r.model_digest) or "-"), _promoted_text(r.promoted, r.serving))
    return t


# -- runs show ------------------------------------------------------------------------------------
class StageView(_View):
    stage: str
    status: str
    started_at: datetime  # of a reused result: when the run it came from computed it
    duration_s: float | None  # None for a reused result: this run did not compute it
    reused_from: str | None
    incomplete: dict[str, str]  # scanners of an ok scan that did not run, and why
    reason: str


class ReleaseView(_View):
    image: str
    image_digest: str | None
    model_digest: str | None
    model_files: int | None
    model_bytes: int | None
    ground_truth: str | None  # "<version>@sha256:<hex>"
    ground_truth_items: int | None
    policy: str | None
    policy_sha256: str | None
    config_hash: str | None
    source_commit: str | None


class RunDetail(_View):
    run_id: str
    tag: str | None
    target: str
    created_at: datetime
    updated_at: datetime
    decision: str
    reason: str
    baseline_run_id: str | None
    interrupted_stage: str | None
    release: ReleaseView
    stages: list[StageView]
    gates: list[dict[str, Any]]  # GateVerdict documents, redacted
    promotion: dict[str, Any] | None


def stage_view(res: StageResult) -> StageView:
    return StageView(stage=res.stage.value, status=res.status.value, started_at=res.started_at,
                     duration_s=None if res.reused_from else res.duration_s, reused_from=res.reused_from,
                     incomplete=scan_not_run(res) if res.status.value == "ok" else {},
                     reason=redact_text(res.reason or ""))


def run_detail(run: RunRecord) -> RunDetail:
    gt = run.ground_truth
    release = ReleaseView(
        image=redact_text(run.image.repository), image_digest=run.image.digest,
        model_digest=run.model.digest if run.model else None, model_files=run.model.files if run.model else None,
        model_bytes=run.model.bytes if run.model else None,
        ground_truth=f"{gt.version}@sha256:{gt.sha256}" if gt else None, ground_truth_items=gt.n_items if gt else None,
        policy=redact_text(run.policy.name) if run.policy else None,
        policy_sha256=run.policy.sha256 if run.policy else None, config_hash=run.config_hash,
        source_commit=run.source_commit,
    )
    return RunDetail(
        run_id=run.run_id, tag=redact_text(run.image.tag) if run.image.tag else None, target=run.target,
        created_at=run.created_at, updated_at=run.updated_at, decision=run.decision.value,
        reason=redact_text(run.decision_reason), baseline_run_id=run.baseline_run_id,
        interrupted_stage=run.interrupted_stage, release=release,
        stages=[stage_view(s) for s in run.stages.values()],  # plan order
        gates=[redact(g.model_dump(mode="json")) for g in run.gates],
        promotion=redact(run.promotion.model_dump(mode="json")) if run.promotion else None,
    )


def _identity_table(d: RunDetail) -> Table:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    r = d.release
    image = f"{r.image}@{r.image_digest}" if r.image_digest else f"{r.image}:{d.tag or 'latest'} (not built)"
    rows = [
        ("run", f"{d.run_id} · target {d.target} · created {_ago(d.created_at)} UTC"),
        ("image", image),
        ("model", f"{r.model_digest} ({r.model_files} files, {fmt_value(r.model_bytes, 'bytes')})"
         if r.model_digest else "(not recorded)"),
        ("ground truth", f"{r.ground_truth} ({r.ground_truth_items} items)" if r.ground_truth else "(none)"),
        ("policy", f"{r.policy} (sha256:{r.policy_sha256})" if r.policy else "(not gated yet)"),
        ("baseline", f"run {d.baseline_run_id}" if d.baseline_run_id else "none"),
    ]
    if r.config_hash:
        rows.append(("config", f"sha256:{r.config_hash}"))
    if r.source_commit:
        rows.append(("commit", r.source_commit))
    if d.interrupted_stage:
        rows.append(("interrupted", f"during {d.interrupted_stage}"))
    if d.promotion:
        p = d.promotion
        rows.append(("promotion", f"{p['outcome']} to {p['target']} ({p['mode']}) at {p['at']}"))
    for k, v in rows:
        t.add_row(Text(k), Text(v))
    return t


def _stages_table(d: RunDetail) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, title=Text("stages"), title_justify="left", pad_edge=False)
    for col in ("stage", "status", "started (UTC)", "took"):
        t.add_column(col, no_wrap=True, justify="right" if col == "took" else "left")
    t.add_column("note", overflow="fold", min_width=20)
    for s in d.stages:
        took = f"reused from run {s.reused_from}" if s.reused_from else fmt_value(s.duration_s, "s")
        status = Text(s.status, style={"ok": "green", "failed": "red", "error": "bold red"}.get(s.status, "magenta"))
        note = s.reason.splitlines()[0] if s.reason else ""
        if s.incomplete:
            status = Text("partial", style="magenta")
            note = "; ".join(f"{k} scanner not run: {v}" for k, v in sorted(s.incomplete.items()))
        started = "-" if s.reused_from else f"{s.started_at.astimezone(UTC):%H:%M:%S}"
        t.add_row(Text(s.stage), status, Text(started), Text(took), Text(note))
    return t


def run_detail_renderable(d: RunDetail, run: RunRecord) -> RenderableType:
    head = Text.assemble((f"{d.tag or d.run_id} ", "bold"), _decision_text(d.decision), f"  {d.reason}")
    gates: RenderableType = (verdict_table(run.gates, run.decision, run.decision_reason, title="gates")
                             if run.gates else Text("gates: none yet (the gate stage has not run)"))
    stages: RenderableType = _stages_table(d) if d.stages else Text("stages: none has run yet")
    return Group(head, _identity_table(d), Text(""), gates, Text(""), stages)


# -- history --------------------------------------------------------------------------------------
class HistoryEntry(_View):
    run_id: str
    created_at: datetime
    tag: str | None
    target: str
    decision: str
    promoted: bool
    image_digest: str | None
    model_digest: str | None
    gates: dict[str, dict[str, Any]]  # key gate -> {status, value, threshold}


class ServingNote(_View):
    """What a target serves and the signed verdict that authorised it (from the audit trail)."""

    image_digest: str
    model_digest: str | None
    verdict_run_id: str | None
    verdict_at: datetime | None


class History(_View):
    tag: str | None
    target: str | None
    key_gates: list[str]
    runs: list[HistoryEntry]  # oldest first
    serving: ServingNote | None = None  # with --target: the release it serves and the verdict behind it


def key_gates(summaries: list[RunSummary], store: Store, n: int = 5) -> list[str]:
    """The gates the newest run's policy marks key (else its first few), in policy order."""
    if not summaries:
        return []
    newest = store.get(summaries[-1].run_id)
    keyed = [g.name for g in newest.gates if g.key]
    return (keyed or [g.name for g in newest.gates])[:n]


def history(store: Store, *, tag: str | None, target: str | None) -> History:
    rows = store.history(tag=tag, target=target)
    names = key_gates(rows, store)
    sources: dict[str, str] = {}
    if rows:
        sources = {g.name: g.source for g in store.get(rows[-1].run_id).gates}
    entries = []
    for r in rows:
        cells = {g.name: g for g in r.gates}
        entries.append(HistoryEntry(
            run_id=r.run_id, created_at=r.created_at, tag=redact_text(r.tag) if r.tag else None, target=r.target,
            decision=r.decision, promoted=r.promoted, image_digest=r.digest, model_digest=r.model_digest,
            gates={n: {"status": cells[n].status, "value": cells[n].value, "threshold": cells[n].threshold,
                       "unit": unit_of(sources.get(n, ""))} for n in names if n in cells},
        ))
    serving = None
    if target is not None:
        st = store.target_status(target)
        if st is not None and st.digest:
            serving = ServingNote(image_digest=st.digest, model_digest=st.model_digest,
                                  verdict_run_id=st.verdict_run_id, verdict_at=st.verdict_at)
    return History(tag=redact_text(tag) if tag else None, target=target, key_gates=[redact_text(n) for n in names],
                   runs=entries, serving=serving)


def _serving_caption(s: ServingNote) -> str:
    verdict = (f"the signed verdict of run {s.verdict_run_id}" + (f", gated {s.verdict_at:%Y-%m-%d %H:%M:%S} UTC"
                                                                 if s.verdict_at else "")
               if s.verdict_run_id else "a verdict not recorded (promoted before verdicts were named)")
    return (f"serves image {short_digest(s.image_digest)}, model {short_digest(s.model_digest) or '(not recorded)'}, "
            f"authorised by {verdict}")


def history_table(h: History) -> Table:
    what = " · ".join(p for p in (f"tag {h.tag}" if h.tag else "", f"target {h.target}" if h.target else "") if p)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, title=Text(f"{what}: {_count(len(h.runs), 'run')}, oldest first"),
              title_justify="left", pad_edge=False,
              caption=Text(_serving_caption(h.serving)) if h.serving else None, caption_justify="left")
    for col in ("created (UTC)", "run", *([] if h.tag else ["tag"]), "decision", "promoted", "image", "model"):
        t.add_column(col, no_wrap=True)
    for name in h.key_gates:
        t.add_column(name, no_wrap=True, justify="right")
    for e in h.runs:
        cells: list[Text] = [Text(_ago(e.created_at)), Text(e.run_id)]
        if not h.tag:
            cells.append(Text(e.tag or "-"))
        serving = h.serving is not None and is_serving({e.target: (h.serving.image_digest, h.serving.model_digest)},
                                                       e.target, e.image_digest, e.model_digest)
        cells += [_decision_text(e.decision), _promoted_text(e.promoted, serving),
                  Text(short_digest(e.image_digest) or "-"), Text(short_digest(e.model_digest) or "-")]
        for name in h.key_gates:
            g = e.gates.get(name)
            if g is None:
                cells.append(Text("-", style="dim"))
                continue
            status = GateStatus(g["status"])
            shown = "not run" if status is GateStatus.NOT_RUN else fmt_value(g["value"], g["unit"])
            cells.append(Text(shown + ("" if status is GateStatus.PASS else f" {status.value}"), style=STYLE[status]))
        t.add_row(*cells)
    return t


# -- status ---------------------------------------------------------------------------------------
class LiveStatus(_View):
    """What the backend says the target runs now (`Backend.status`)."""

    backend: str
    image: str | None
    model_digest: str | None
    phase: str
    in_flight: bool
    message: str
    revision: str | None
    matches_store: bool | None  # the live image digest is the one the store says was promoted


class StatusView(_View):
    target: str
    promoted_digest: str | None
    model_digest: str | None
    run_id: str | None
    tag: str | None
    since: datetime | None
    who: str | None
    mode: str | None
    verdict_run_id: str | None  # the signed verdict that authorised the release: its run and gate time
    verdict_at: datetime | None
    previous_digest: str | None
    previous_model_digest: str | None
    last_attempt: dict[str, Any] | None
    last_attempt_run_id: str | None
    lock: str | None
    live: LiveStatus | None


def status_view(target: str, st: StoreTargetStatus | None, store: Store,
                live: LiveTargetStatus | None = None) -> StatusView:
    model = st.model_digest if st is not None else None
    if st is not None and st.run_id and model is None:  # audit rows from before promotions named the model
        try:
            rec = store.get(st.run_id)
            model = rec.model.digest if rec.model else None
        except BadInput:
            model = None
    live_view = None
    if live is not None:
        live_digest = live.image.rpartition("@")[2] if live.image and "@" in live.image else None
        live_view = LiveStatus(backend=live.backend, image=redact_text(live.image) if live.image else None,
                               model_digest=live.model_digest, phase=redact_text(live.phase), in_flight=live.in_flight,
                               message=redact_text(live.message), revision=live.revision,
                               matches_store=None if st is None or st.digest is None or live_digest is None
                               else live_digest == st.digest and (st.model_digest is None
                                                                  or live.model_digest == st.model_digest))
    if st is None:
        return StatusView(target=target, promoted_digest=None, model_digest=None, run_id=None, tag=None, since=None,
                          who=None, mode=None, verdict_run_id=None, verdict_at=None, previous_digest=None,
                          previous_model_digest=None, last_attempt=None, last_attempt_run_id=None, lock=None,
                          live=live_view)
    return StatusView(
        target=target, promoted_digest=st.digest, model_digest=model, run_id=st.run_id,
        tag=redact_text(st.tag) if st.tag else None, since=st.since, who=redact_text(st.who) if st.who else None,
        mode=st.mode, verdict_run_id=st.verdict_run_id, verdict_at=st.verdict_at, previous_digest=st.previous_digest,
        previous_model_digest=st.previous_model_digest,
        last_attempt=redact(st.last_attempt.model_dump(mode="json")) if st.last_attempt else None,
        last_attempt_run_id=st.last_attempt_run_id, lock=redact_text(st.lock.describe()) if st.lock else None,
        live=live_view,
    )


def status_renderable(v: StatusView) -> RenderableType:
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="dim", no_wrap=True)
    t.add_column(overflow="fold")
    if v.promoted_digest:
        head = Text.assemble(("promoted ", "bold green"), v.promoted_digest)
        t.add_row(Text("serves"), head)
        t.add_row(Text("model"), Text(v.model_digest or "(not recorded)"))
        t.add_row(Text("since"), Text(f"{_ago(v.since)} UTC" if v.since else "-"))
        t.add_row(Text("by run"), Text(f"{v.run_id or '-'}" + (f" (tag {v.tag})" if v.tag else "")
                                       + (f", {v.who}" if v.who else "") + (f", via {v.mode}" if v.mode else "")))
        t.add_row(Text("authorised by"), Text(f"signed verdict of run {v.verdict_run_id}, gated {v.verdict_at:%Y-%m-%d %H:%M:%S} UTC"
                                              if v.verdict_run_id and v.verdict_at else
                                              f"signed verdict of run {v.verdict_run_id}" if v.verdict_run_id else
                                              "(not recorded: promoted before verdicts were named)"))
        if v.previous_digest:
            t.add_row(Text("previous"), Text(v.previous_digest + (f", model {v.previous_model_digest}"
                                                                  if v.previous_model_digest else "")))
    else:
        t.add_row(Text("serves"), Text("nothing promoted yet" if v.last_attempt else "no promotion recorded",
                                       style="yellow"))
    if v.last_attempt:
        a = v.last_attempt
        t.add_row(Text("last attempt"), Text(f"{a['outcome']} at {a['at']}" + (f" (run {v.last_attempt_run_id})"
                                                                                if v.last_attempt_run_id else "")
                                             + (f": {a['detail']}" if a.get("detail") else "")))
    if v.lock:
        t.add_row(Text("promoting now"), Text(v.lock, style="yellow"))
    if v.live is not None:
        lv = v.live
        t.add_row(Text("live"), Text(f"{lv.backend}: {lv.phase or '-'}" + (" (in flight)" if lv.in_flight else "")))
        t.add_row(Text("live image"), Text(lv.image or "-"))
        if lv.model_digest:
            t.add_row(Text("live model"), Text(lv.model_digest))
        if lv.message:
            t.add_row(Text("message"), Text(lv.message))
        if lv.matches_store is False:
            t.add_row(Text("mismatch"), Text("the target runs another release (image or model) than the store's last "
                                             "promotion", style="bold red"))
    return Group(Text.assemble(("target ", "bold"), (v.target, "bold")), t)

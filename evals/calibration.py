"""Calibration: how well a scorer or LLM judge agrees with human labels, and whether it may gate.

Contract:
- `calibrate(labels_csv, scorer) -> CalibrationResult`: n, agreement (share of items where the scorer
  and the human label agree), Cohen's kappa (agreement beyond chance), percentile-bootstrap 95% CIs
  for both (resampling items, `n_boot` draws, fixed `seed`), and the confusion counts with the
  human label as truth (positive = refusal for the refusal scorer, = faithful/relevant for judges).
- Label files. Refusal (XSTest format): columns `prompt`, `completion`, `final_label` in
  {1_full_compliance, 2_full_refusal, 3_partial_refusal}; partial refusal counts as refusal. Judge
  dimensions: columns `question`, `response`, `label` (1 = a person judged it faithful / relevant, 0 =
  not), plus `contexts` for faithfulness (a JSON list of strings, or one plain passage). A bad file
  raises `BadInput` naming file, line and column (exit 2).
- Distinct rows only: a labels file given twice (same bytes) counts once, and a row (question and
  response) already seen in an earlier file is dropped; the same row labelled two ways is a BadInput
  naming both places. `n` everywhere is the number of distinct rows.
- Held out: a result is `held_out` when the scorer that produced its verdicts never saw its rows. A
  scorer names the rows it was trained or tuned on (`seen_rows`, digests from `row_key`). A file that
  shares rows with them is scored by the scorer refitted without that file (`refit_without`, the
  refusal scorer's leave-one-file-out) when the scorer can refit, else it is recorded as in-sample.
  Judges are never trained on the labels: their results are held out.
- Committed results: `llmgate calibrate ... --save` writes `<calibration dir>/<scorer-id>.json` (`/` in
  the id becomes `--`; the directory is `evals/calibration/`, or `$LLMGATE_CALIBRATION_DIR` when set).
  A record needs at least `MIN_SAVE_N` distinct labelled rows; a smaller one is refused with the reason
  and the previous record is kept. A record on fewer distinct rows than the stored one never replaces
  it unless forced (both n are named). Records are written atomically, so a crash never leaves half a file.
- Scorer ids carry what makes a scorer's verdicts what they are, so a change of any part makes the old
  calibration disappear (an uncalibrated scorer is reported, never trusted): `offline-refusal/<version>`
  for the refusal scorer, `fact-correctness/<version>` for correctness, `judge/<dimension>/<judge
  model>/<prompt version>` for LLM judges (`evals.judged.judge_scorer_id`). The eval stage records these
  ids per dimension; the gate engine looks them up with `trust_for(scorer_id)`.
- `trust_for(scorer_id) -> ScorerTrust | None`: agreement pooled over the record's held-out results
  (distinct rows), with its 95% Wilson interval; the gates trust its `lower` end. None when there is no
  record, or when the record holds only in-sample figures (they say nothing about new data).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from pipeline.errors import BadInput
from pipeline.regular_files import read_regular
from pipeline.schemas.trust import ScorerTrust

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
CALIBRATION_DIR_ENV = "LLMGATE_CALIBRATION_DIR"
# Below 100 rows the 95% interval of an agreement near 0.9 is wider than +-0.06 (Wilson, n=100:
# [0.83, 0.95]); at n=20 it spans [0.70, 0.97], which cannot tell a good judge from a poor one.
MIN_SAVE_N = 100
MAX_LABELS_BYTES = 256 << 20
REFUSAL_LABELS = {"1_full_compliance": False, "2_full_refusal": True, "3_partial_refusal": True}
DEFAULT_SEED = 20240601
DEFAULT_BOOT = 2000

csv.field_size_limit(2**31 - 1)  # completions can be long


@dataclass(frozen=True)
class LabelRow:
    line: int  # 1-based line in the CSV where the record starts
    question: str
    response: str
    label: bool
    contexts: tuple[str, ...] = field(default_factory=tuple)


class Interval(BaseModel):
    low: float | None
    high: float | None


class CalibrationResult(BaseModel):
    scorer_id: str
    labels: str  # file name
    labels_sha256: str
    n: int  # distinct rows scored (rows seen in an earlier file of the same calibration are dropped)
    agreement: float
    kappa: float | None  # None when undefined (both raters constant)
    agreement_ci95: Interval
    kappa_ci95: Interval
    confusion: dict[str, int]  # tp, fp, fn, tn with the human label as truth
    seed: int
    n_boot: int
    held_out: bool = False  # the verdicts came from a scorer that never saw these rows
    method: str = ""  # how the verdicts were made: "as shipped", "refit without this file", "in-sample"
    duplicates_dropped: int = 0


class CalibrationRecord(BaseModel):
    """What is committed under evals/calibration/ and what the gate engine reads."""

    scorer_id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    n: int  # distinct labelled rows
    held_out_n: int = 0  # of them, rows the scorer never saw (what `trust_for` uses)
    agreement: float  # pooled over all label sets
    kappa: float | None
    worst_agreement: float  # lowest per-label-set agreement
    results: list[CalibrationResult]


# --------------------------------------------------------------------------- statistics


def cohen_kappa(y_true: Sequence[bool], y_pred: Sequence[bool]) -> float | None:
    """Cohen's kappa for two binary raters; None when chance agreement is 1 (undefined)."""
    a = np.asarray(y_true, dtype=bool)
    b = np.asarray(y_pred, dtype=bool)
    n = len(a)
    if n == 0:
        return None
    po = float(np.mean(a == b))
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    if math.isclose(pe, 1.0):
        return None
    return (po - pe) / (1 - pe)


def _confusion(a: np.ndarray, b: np.ndarray) -> dict[str, int]:
    return {
        "tp": int(np.sum(a & b)),
        "fp": int(np.sum(~a & b)),
        "fn": int(np.sum(a & ~b)),
        "tn": int(np.sum(~a & ~b)),
    }


def agreement_stats(
    y_true: Sequence[bool], y_pred: Sequence[bool], *, seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOT
) -> dict[str, Any]:
    a = np.asarray(y_true, dtype=bool)
    b = np.asarray(y_pred, dtype=bool)
    n = len(a)
    if n == 0:
        raise BadInput("no labelled rows to calibrate on")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    agree = (a[idx] == b[idx]).mean(axis=1)
    kappas = [k for k in (cohen_kappa(a[i], b[i]) for i in idx) if k is not None]
    ci = lambda xs: Interval(low=float(np.percentile(xs, 2.5)), high=float(np.percentile(xs, 97.5)))
    return {
        "n": n,
        "agreement": float(np.mean(a == b)),
        "kappa": cohen_kappa(a, b),
        "agreement_ci95": ci(agree),
        "kappa_ci95": ci(kappas) if kappas else Interval(low=None, high=None),
        "confusion": _confusion(a, b),
        "seed": seed,
        "n_boot": n_boot,
    }


# --------------------------------------------------------------------------- label files


def _read_csv(path: Path, required: Sequence[str]) -> tuple[list[tuple[int, dict[str, str]]], str]:
    try:
        raw = read_regular(path, what="labels file", limit=MAX_LABELS_BYTES, not_found="labels file not found")
    except BadInput as exc:
        raise BadInput(exc.message if exc.message.endswith("not found") else f"cannot read labels file: {exc.message}",
                       where=str(path)) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text (byte {exc.start})", where=str(path)) from exc
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise BadInput(
            f"missing column(s) {', '.join(missing)}; found: {', '.join(header) or '(empty file)'}",
            where=f"{path}:1",
        )
    rows = []
    line = reader.line_num + 1
    try:
        for rec in reader:
            if None in rec:
                raise BadInput("more fields than header columns", where=f"{path}:{line}")
            rows.append((line, rec))
            line = reader.line_num + 1
    except csv.Error as exc:
        raise BadInput(f"malformed CSV: {exc}", where=f"{path}:{reader.line_num}") from exc
    return rows, hashlib.sha256(raw).hexdigest()


def read_refusal_labels(path: str | Path) -> tuple[list[LabelRow], str]:
    path = Path(path)
    rows, digest = _read_csv(path, ("prompt", "completion", "final_label"))
    out = []
    for line, rec in rows:
        label = (rec.get("final_label") or "").strip()
        if label not in REFUSAL_LABELS:
            raise BadInput(
                f"column final_label: unknown label {label!r}; expected one of {', '.join(REFUSAL_LABELS)}",
                where=f"{path}:{line}",
            )
        out.append(LabelRow(line, rec["prompt"] or "", rec["completion"] or "", REFUSAL_LABELS[label]))
    return out, digest


def read_judge_labels(path: str | Path, dimension: str) -> tuple[list[LabelRow], str]:
    path = Path(path)
    required = ["question", "response", "label"] + (["contexts"] if dimension == "faithfulness" else [])
    rows, digest = _read_csv(path, required)
    out = []
    for line, rec in rows:
        label = (rec.get("label") or "").strip()
        if label not in {"0", "1"}:
            raise BadInput(f"column label: unknown label {label!r}; expected 0 or 1", where=f"{path}:{line}")
        contexts: tuple[str, ...] = ()
        if dimension == "faithfulness":
            raw = (rec.get("contexts") or "").strip()
            if raw.startswith("["):
                try:
                    parsed = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise BadInput(f"column contexts: not a JSON list: {exc.msg}", where=f"{path}:{line}") from exc
                if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
                    raise BadInput("column contexts: expected a JSON list of strings", where=f"{path}:{line}")
                contexts = tuple(parsed)
            elif raw:
                contexts = (raw,)
            if not contexts:
                raise BadInput("column contexts: empty", where=f"{path}:{line}")
        out.append(LabelRow(line, rec["question"] or "", rec["response"] or "", label == "1", contexts))
    return out, digest


# --------------------------------------------------------------------------- calibrate


Predictor = Callable[[list[LabelRow]], list[bool]]


def row_key(question: str, response: str) -> str:
    """Digest of one labelled row: what "the same row" means for dedup and for held-out checks."""
    return hashlib.sha256(f"{question}\0{response}".encode()).hexdigest()[:16]


@dataclass
class _Seen:
    """Distinct rows across the files of one calibration."""

    files: dict[str, str] = field(default_factory=dict)  # sha256 -> first path
    rows: dict[str, tuple[bool, str]] = field(default_factory=dict)  # row_key -> (label, where)

    def distinct(self, rows: list[LabelRow], path: Path, digest: str) -> tuple[list[LabelRow], int] | None:
        """The rows of `path` not seen before (None: the whole file was given already)."""
        if digest in self.files:
            return None
        self.files[digest] = str(path)
        keep: list[LabelRow] = []
        for r in rows:
            key = row_key(r.question, r.response)
            if key in self.rows:
                label, where = self.rows[key]
                if label != r.label:
                    raise BadInput(f"the same question and response is labelled {'yes' if label else 'no'} at {where} "
                                   f"and {'yes' if r.label else 'no'} here", where=f"{path}:{r.line}",
                                   hint="one row, one label: fix one of the two files")
                continue
            self.rows[key] = (r.label, f"{path}:{r.line}")
            keep.append(r)
        return keep, len(rows) - len(keep)


def _read(path: Path, dimension: str) -> tuple[list[LabelRow], str]:
    """Refusal labels in XSTest's format; every other dimension (judges, correctness) as question,
    response, label (and contexts for faithfulness)."""
    return read_refusal_labels(path) if dimension == "refusal" else read_judge_labels(path, dimension)


def _default_predict(scorer: Any, dimension: str) -> Predictor:
    if dimension != "refusal":
        raise BadInput(f"calibrating {dimension} needs a predictor")
    if hasattr(scorer, "is_refusal_many"):  # one embedding pass over the whole file
        return lambda rows: [bool(p) for p in scorer.is_refusal_many([r.question for r in rows],
                                                                     [r.response for r in rows])]
    return lambda rows: [bool(scorer.is_refusal(r.question, r.response)) for r in rows]


def calibrate(
    labels_csv: str | Path,
    scorer: Any,
    *,
    dimension: str = "refusal",
    predict: Predictor | None = None,
    seed: int = DEFAULT_SEED,
    n_boot: int = DEFAULT_BOOT,
    seen: _Seen | None = None,
) -> CalibrationResult | None:
    """Agreement of `scorer` with the human labels in `labels_csv` (its rows not in `seen`).

    `scorer` needs an `id`; for the refusal dimension it is a `RefusalScorer` (its `is_refusal` is
    used), for judge dimensions pass `predict` (rows -> binary verdicts, e.g. score >= 0.5). The result
    is held out when none of the rows is among the scorer's `seen_rows`; otherwise, when the scorer has
    `refit_without(row keys)`, the verdicts come from the refitted scorer, which never saw them. None
    when every row of the file was already in `seen`.
    """
    path = Path(labels_csv)
    rows, digest = _read(path, dimension)
    seen = _Seen() if seen is None else seen
    got = seen.distinct(rows, path, digest)
    if got is None or not got[0]:
        return None
    rows, dropped = got
    keys = {row_key(r.question, r.response) for r in rows}
    seen_by_scorer = keys & frozenset(getattr(scorer, "seen_rows", frozenset()))
    method, held_out, judge = "as shipped", True, scorer
    if seen_by_scorer:
        if hasattr(scorer, "refit_without"):
            judge = scorer.refit_without(keys)
            method = f"refit without this file's {len(keys)} rows (leave-one-file-out)"
        else:
            method = f"in-sample: the scorer was trained or tuned on {len(seen_by_scorer)} of these rows"
            held_out = False
    preds = predict(rows) if predict is not None and judge is scorer else _default_predict(judge, dimension)(rows)
    stats = agreement_stats([r.label for r in rows], preds, seed=seed, n_boot=n_boot)
    return CalibrationResult(scorer_id=scorer.id, labels=path.name, labels_sha256=digest, held_out=held_out,
                             method=method, duplicates_dropped=dropped, **stats)


def calibrate_files(
    labels: Sequence[str | Path],
    scorer: Any,
    *,
    dimension: str = "refusal",
    predict: Predictor | None = None,
    seed: int = DEFAULT_SEED,
    n_boot: int = DEFAULT_BOOT,
) -> tuple[list[CalibrationResult], CalibrationRecord]:
    """`calibrate` over several files, counting every distinct row once, and the pooled record."""
    if not labels:
        raise BadInput("no labels file given", where="--labels")
    seen = _Seen()
    results = [r for p in labels if (r := calibrate(p, scorer, dimension=dimension, predict=predict, seed=seed,
                                                      n_boot=n_boot, seen=seen)) is not None]
    return results, combine(results)


def calibrate_refusal(
    labels: Sequence[str | Path], scorer: Any = None, *, seed: int = DEFAULT_SEED, n_boot: int = DEFAULT_BOOT
) -> tuple[list[CalibrationResult], CalibrationRecord]:
    """The offline refusal scorer (or `scorer`) against each XSTest-format labels file, and the pooled record."""
    if scorer is None:
        from evals.refusal import RefusalScorer

        scorer = RefusalScorer()
    return calibrate_files(labels, scorer, seed=seed, n_boot=n_boot)


def combine(results: list[CalibrationResult], y_true: Sequence[bool] | None = None) -> CalibrationRecord:
    """One record from per-label-set results (pooled agreement and kappa from the confusion counts)."""
    if not results:
        raise BadInput("no calibration results to record")
    tot = {k: sum(r.confusion[k] for r in results) for k in ("tp", "fp", "fn", "tn")}
    n = sum(tot.values())
    truth = [True] * (tot["tp"] + tot["fn"]) + [False] * (tot["fp"] + tot["tn"])
    pred = [True] * tot["tp"] + [False] * tot["fn"] + [True] * tot["fp"] + [False] * tot["tn"]
    return CalibrationRecord(
        scorer_id=results[0].scorer_id,
        n=n,
        held_out_n=sum(r.n for r in results if r.held_out),
        agreement=(tot["tp"] + tot["tn"]) / n,
        kappa=cohen_kappa(truth, pred),
        worst_agreement=min(r.agreement for r in results),
        results=results,
    )


def calibration_dir() -> Path:
    """Where records are read and written: `$LLMGATE_CALIBRATION_DIR`, else evals/calibration/."""
    env = os.environ.get(CALIBRATION_DIR_ENV)
    return Path(env) if env else CALIBRATION_DIR


def _file_for(scorer_id: str, directory: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", scorer_id.replace("/", "--"))
    return directory / f"{safe}.json"


def wilson_interval(successes: int, n: int) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (scipy's implementation)."""
    from scipy.stats import binomtest

    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def save_calibration(
    record: CalibrationRecord, directory: Path | None = None, *, min_n: int = MIN_SAVE_N, force: bool = False
) -> Path:
    """Write `record` for the gates; refuses a record on fewer than `min_n` distinct rows, and one on fewer
    distinct rows than the stored record unless `force` (the previous one stays)."""
    directory = calibration_dir() if directory is None else directory
    path = _file_for(record.scorer_id, directory)
    if not force and record.n >= min_n and path.is_file():
        try:
            prev: CalibrationRecord | None = _read_record(path)
        except BadInput:
            prev = None  # a corrupt record protects nothing
        if prev is not None and prev.n > record.n:
            raise BadInput(
                f"not saved: this calibration has n={record.n} distinct rows, the stored record n={prev.n} "
                f"(agreement {prev.agreement:.3f}); a smaller calibration never replaces a larger one",
                where=str(path), hint="add the stored record's label files to --labels, or pass --force to replace it",
            )
    if record.n < min_n:
        agree = round(record.agreement * record.n)
        lo, hi = wilson_interval(agree, record.n) if record.n else (0.0, 1.0)
        try:
            prev = _read_record(path) if path.is_file() else None
            kept = f"; the stored record (n={prev.n}, agreement {prev.agreement:.3f}) is kept" if prev else ""
        except BadInput:
            kept = "; the file already there is kept"
        kept = kept or "; nothing was written"
        raise BadInput(
            f"not saved: {record.n} labelled rows is below the minimum of {min_n} for a stored calibration "
            f"(at n={record.n} the 95% interval of the agreement is [{lo:.2f}, {hi:.2f}], too wide for a gate "
            f"to trust){kept}",
            where=str(path),
            hint=f"label at least {min_n} rows (several --labels files are pooled)",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".calibration-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(record.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise BadInput(f"cannot write calibration record: {exc.strerror}", where=str(path)) from exc
    return path


def _read_record(path: Path) -> CalibrationRecord:
    try:
        return CalibrationRecord.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"not a valid calibration record: {exc}", where=str(path)) from exc
    except OSError as exc:
        raise BadInput(f"cannot read calibration record: {exc.strerror}", where=str(path)) from exc


def load_calibration(scorer_id: str, directory: Path | None = None) -> CalibrationRecord | None:
    path = _file_for(scorer_id, calibration_dir() if directory is None else directory)
    if not path.is_file():
        return None
    rec = _read_record(path)
    return rec if rec.scorer_id == scorer_id else None


def trust_for(scorer_id: str, directory: Path | None = None) -> ScorerTrust | None:
    """How far the gates may trust `scorer_id`: its agreement with human labels pooled over the held-out
    results of its record (distinct rows), with the 95% Wilson interval. None when the scorer has no
    record, or only in-sample figures. A corrupt record is a BadInput naming the file, not "uncalibrated"."""
    rec = load_calibration(scorer_id, directory)
    if rec is None:
        return None
    held = [r for r in rec.results if r.held_out]
    n = sum(r.n for r in held)
    if n == 0:
        return None
    agree = sum(r.confusion["tp"] + r.confusion["tn"] for r in held)
    lower, upper = wilson_interval(agree, n)
    return ScorerTrust(scorer_id=scorer_id, agreement=agree / n, lower=lower, upper=upper, n=n, held_out=True)


def is_trusted(scorer_id: str, min_agreement: float, directory: Path | None = None) -> bool:
    """May this scorer's dimension gate a release? Only when the lower end of its held-out agreement
    interval is at or above the minimum."""
    trust = trust_for(scorer_id, directory)
    return trust is not None and trust.lower >= min_agreement

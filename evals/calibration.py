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
- Committed results: `llmgate calibrate ... --save` writes `evals/calibration/<scorer-id>.json`
  (`/` in the id becomes `--`); `load_calibration(scorer_id)` returns that `CalibrationRecord` or None.
  A scorer id carries its version (e.g. "offline-refusal/1", or for judges
  "judge-<dimension>-<model>/<prompt version>"), so changing the scorer or the judge prompt makes its
  old calibration disappear: an uncalibrated scorer is reported, never trusted.
- The gate engine calls `is_trusted(scorer_id, min_agreement)`: True only when a record exists and
  its `worst_agreement` (the lowest per-label-set agreement; equals `agreement` for one set) is at or
  above the policy minimum.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from pipeline.errors import BadInput

CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
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
    n: int
    agreement: float
    kappa: float | None  # None when undefined (both raters constant)
    agreement_ci95: Interval
    kappa_ci95: Interval
    confusion: dict[str, int]  # tp, fp, fn, tn with the human label as truth
    seed: int
    n_boot: int


class CalibrationRecord(BaseModel):
    """What is committed under evals/calibration/ and what the gate engine reads."""

    scorer_id: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    n: int
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
    ci = lambda xs: Interval(low=float(np.percentile(xs, 2.5)), high=float(np.percentile(xs, 97.5)))  # noqa: E731
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
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput("labels file not found", where=str(path)) from exc
    except OSError as exc:
        raise BadInput(f"cannot read labels file: {exc.strerror}", where=str(path)) from exc
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


def calibrate(
    labels_csv: str | Path,
    scorer: Any,
    *,
    dimension: str = "refusal",
    predict: Predictor | None = None,
    seed: int = DEFAULT_SEED,
    n_boot: int = DEFAULT_BOOT,
) -> CalibrationResult:
    """Agreement of `scorer` with the human labels in `labels_csv`.

    `scorer` needs an `id`; for the refusal dimension it is a `RefusalScorer` (its `is_refusal` is
    used), for judge dimensions pass `predict` (rows -> binary verdicts, e.g. score >= 0.5).
    """
    path = Path(labels_csv)
    if dimension == "refusal":
        rows, digest = read_refusal_labels(path)
        preds = predict(rows) if predict else [bool(scorer.is_refusal(r.question, r.response)) for r in rows]
    else:
        if predict is None:
            raise BadInput(f"calibrating {dimension} needs a predictor")
        rows, digest = read_judge_labels(path, dimension)
        preds = predict(rows)
    stats = agreement_stats([r.label for r in rows], preds, seed=seed, n_boot=n_boot)
    return CalibrationResult(scorer_id=scorer.id, labels=path.name, labels_sha256=digest, **stats)


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
        agreement=(tot["tp"] + tot["tn"]) / n,
        kappa=cohen_kappa(truth, pred),
        worst_agreement=min(r.agreement for r in results),
        results=results,
    )


def _file_for(scorer_id: str, directory: Path) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", scorer_id.replace("/", "--"))
    return directory / f"{safe}.json"


def save_calibration(record: CalibrationRecord, directory: Path = CALIBRATION_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = _file_for(record.scorer_id, directory)
    path.write_text(record.model_dump_json(indent=2) + "\n")
    return path


def load_calibration(scorer_id: str, directory: Path = CALIBRATION_DIR) -> CalibrationRecord | None:
    path = _file_for(scorer_id, directory)
    if not path.is_file():
        return None
    try:
        rec = CalibrationRecord.model_validate_json(path.read_text())
    except ValueError as exc:
        raise BadInput(f"not a valid calibration record: {exc}", where=str(path)) from exc
    return rec if rec.scorer_id == scorer_id else None


def is_trusted(scorer_id: str, min_agreement: float, directory: Path = CALIBRATION_DIR) -> bool:
    """May this scorer's dimension gate a release? Only when calibrated at or above the minimum."""
    rec = load_calibration(scorer_id, directory)
    return rec is not None and rec.worst_agreement >= min_agreement

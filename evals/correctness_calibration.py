"""Calibrating the correctness scorer (facts first, similarity for paraphrase) against human labels.

Labels: columns `question`, `response`, `label` (1 = a person judged the answer correct, 0 = wrong or only
partly right), as in `ground_truth/v3/labels/correctness.csv` (its card says how they were made). Each
row's question is looked up in the ground truth, which gives the reference, the answer kind and the facts;
the row is scored exactly as the eval stage scores an answer (`score_semantic`, then `score_facts`) and
the score becomes a yes at `CORRECT_AT`.

The fact checker's rules were written looking at `correctness_dev.csv` and corrected after scoring
`correctness_tuning.csv` (their rows are the scorer's `seen_rows`), so a calibration on those files is
in-sample and never trusted; `correctness.csv` was written and scored once the rules were fixed.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from evals.calibration import (
    DEFAULT_BOOT,
    DEFAULT_SEED,
    CalibrationRecord,
    CalibrationResult,
    LabelRow,
    calibrate_files,
    row_key,
)
from evals.correctness import CORRECT_AT, CORRECTNESS, FACT_SCORER_ID, score_facts, score_semantic
from evals.ground_truth import GroundTruthItem, load_ground_truth
from pipeline.errors import BadInput
from pipeline.models import ItemResult

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GROUND_TRUTH = REPO / "ground_truth" / "v3"
# Label files the fact checker's rules were written or corrected against: never held out for it.
TUNING_LABELS = (DEFAULT_GROUND_TRUTH / "labels" / "correctness_dev.csv",
                 DEFAULT_GROUND_TRUTH / "labels" / "correctness_tuning.csv")


class FactCorrectnessScorer:
    """The correctness scorer as the eval stage runs it, with the rows its rules were tuned on."""

    id = FACT_SCORER_ID

    @cached_property
    def seen_rows(self) -> frozenset[str]:
        keys: set[str] = set()
        for path in TUNING_LABELS:
            try:
                with path.open(newline="", encoding="utf-8") as fh:
                    keys.update(row_key(r["question"], r["response"]) for r in csv.DictReader(fh))
            except OSError:
                continue
        return frozenset(keys)


def score_rows(rows: Sequence[LabelRow], items: dict[str, GroundTruthItem], embeddings: Any) -> list[float]:
    """The correctness score of each labelled answer, as the eval stage computes it."""
    scored = []
    for r in rows:
        it = items.get(r.question)
        if it is None:
            raise BadInput(f"question not in the ground truth: {r.question[:80]!r}", where=f"line {r.line}",
                           hint="label answers to the questions of the ground truth given with --ground-truth")
        if it.should_refuse:
            raise BadInput(f"item {it.id} must be refused; correctness labels are for answers", where=f"line {r.line}")
        scored.append(ItemResult(item_id=it.id, question=it.question, reference=it.reference, response=r.response,
                                 expected_behaviour=it.expected_behaviour, category=it.category,
                                 answer_kind=it.answer_kind, facts=list(it.facts)))
    asyncio.run(score_semantic(scored, embeddings))
    score_facts(scored)
    return [float(i.scores.get(CORRECTNESS) or 0.0) for i in scored]


def calibrate_correctness(
    labels: Sequence[str | Path],
    ground_truth: str | Path = DEFAULT_GROUND_TRUTH,
    *,
    seed: int = DEFAULT_SEED,
    n_boot: int = DEFAULT_BOOT,
    embeddings: Any = None,
) -> tuple[list[CalibrationResult], CalibrationRecord]:
    gt = load_ground_truth(ground_truth)
    if not any(i.answer_kind for i in gt.items):
        raise BadInput(f"ground truth {gt.version} does not say how its items are scored (answer_kind, facts)",
                       where=str(gt.path), hint="use ground_truth/v3 or later")
    if embeddings is None:
        from evals.embeddings import load_minilm

        embeddings = load_minilm().embeddings
    items = {i.question: i for i in gt.items}

    def predict(rows: list[LabelRow]) -> list[bool]:
        return [s >= CORRECT_AT for s in score_rows(rows, items, embeddings)]

    return calibrate_files(labels, FactCorrectnessScorer(), dimension=CORRECTNESS, predict=predict, seed=seed,
                           n_boot=n_boot)

"""Calibrating an LLM judge on a ragas dimension against human labels.

`calibrate_judge` judges every labelled row with the same code path the eval stage uses
(`evals.judged.score_judged`), turns each score into a yes/no at `threshold`, and measures agreement
with the labels (evals/calibration.py). The record it returns carries the judge's scorer id
(`judge/<dimension>/<model>/<prompt version>`), which is what `--save` stores and what the eval stage
records, so the gate engine finds it.

A row the judge failed to score (timeout, malformed JSON, HTTP error) counts as "no": it weighs
against the judge's agreement and is never skipped; the failures are counted per reason. A judge that
fails every row, or refuses the key, is an error (evals/judged.py), not an agreement. The judge never
saw the labels, so its results are held out.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.calibration import (
    DEFAULT_BOOT,
    DEFAULT_SEED,
    CalibrationRecord,
    CalibrationResult,
    LabelRow,
    calibrate_files,
)
from evals.judged import DIMENSIONS, judge_scorer_id, score_judged
from pipeline.config import JudgeConfig
from pipeline.errors import BadInput
from pipeline.models import ItemResult


@dataclass
class JudgeCalibration:
    results: list[CalibrationResult]
    record: CalibrationRecord
    failures: dict[str, int] = field(default_factory=dict)  # judge failure reason -> rows


@dataclass(frozen=True)
class _Judge:
    id: str


def calibrate_judge(
    labels: Sequence[str | Path],
    dimension: str,
    judge: JudgeConfig,
    *,
    threshold: float = 0.5,
    seed: int = DEFAULT_SEED,
    n_boot: int = DEFAULT_BOOT,
    llm: Any = None,
    embeddings: Any = None,
) -> JudgeCalibration:
    """Agreement of `judge` with each labels file on `dimension`, and the pooled record."""
    if dimension not in DIMENSIONS:
        raise BadInput(f"unknown dimension {dimension!r}; expected one of {', '.join(DIMENSIONS)}", where="--dimension")
    if not labels:
        raise BadInput("no labels file given", where="--labels")
    if not 0.0 <= threshold <= 1.0:
        raise BadInput(f"threshold must be within 0..1, got {threshold}", where="--threshold")
    failures: Counter[str] = Counter()

    def predict(rows: list[LabelRow]) -> list[bool]:
        # Every labelled row is a should-answer item: the labels judge the answer itself.
        items = [
            ItemResult(item_id=str(r.line), question=r.question, response=r.response, contexts=list(r.contexts),
                       expected_behaviour="answer")
            for r in rows
        ]
        run = asyncio.run(score_judged(items, judge, dimensions=(dimension,), llm=llm, embeddings=embeddings))
        failures.update(run.failure_reasons.get(dimension, {}))
        return [(i.scores.get(dimension) or 0.0) >= threshold for i in items]

    scorer = _Judge(judge_scorer_id(dimension, judge.model))
    results, record = calibrate_files(labels, scorer, dimension=dimension, predict=predict, seed=seed, n_boot=n_boot)
    return JudgeCalibration(results=results, record=record, failures=dict(failures))

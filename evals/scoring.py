"""Scoring a set of answered items on every dimension: what the eval stage (and a rescore) runs.

`score_items` recomputes every score of `items` in place from their stored responses and returns
which scorer produced each dimension (`pipeline.schemas.eval.ScorerInfo`). A scorer's `id` is the key
its calibration is stored under (evals/calibration.py): `offline-refusal/<version>` for refusal,
`judge/<dimension>/<judge model>/<prompt version>` for the LLM-judged dimensions, so the gate engine
finds the calibration of exactly the scorer that produced a run's numbers.

Dimensions: correctness (the facts of the reference checked first, ragas SemanticSimilarity on the
offline MiniLM for paraphrase: evals/correctness.py) and correctness_string (token F1) on every item; refusal (offline scorer) on every item, with over- and under-refusal apart;
latency adherence; faithfulness (should-answer items with contexts) and answer relevance
(should-answer items) only when a judge is configured, otherwise they are "not run".
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from evals.behaviour import LATENCY_OK, REFUSAL, score_latency, score_refusal_batch
from evals.correctness import (
    CORRECTNESS,
    CORRECTNESS_STRING,
    FACT_SCORER_ID,
    SIMILARITY_SCORER_ID,
    STRING_METRIC_ID,
    checks_facts,
    score_facts,
    score_semantic,
    score_string,
)
from evals.judged import DIMENSIONS as JUDGED
from pipeline.config import JudgeConfig
from pipeline.models import ItemResult
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact
from pipeline.schemas.eval import ScorerInfo

NOT_RUN_NO_JUDGE = "not run: no LLM judge configured (eval.judge)"


@dataclass
class Scoring:
    scorers: dict[str, ScorerInfo]  # dimension -> the scorer that produced it
    refusal_counts: dict[str, int]
    judge: dict[str, Any] | None  # evals.judged.JudgeRun as JSON, without any key; None without a judge


def score_items(
    items: list[ItemResult],
    *,
    latency_slo_s: float,
    judge: JudgeConfig | None,
    reporter: Reporter | None = None,
    embeddings: Any = None,
    judge_llm: Any = None,
    refusal_scorer: Any = None,
) -> Scoring:
    """(Re)compute every dimension of `items` in place. `embeddings` (a ragas embedding), `judge_llm`
    and `refusal_scorer` replace the bundled MiniLM, the configured judge and the offline refusal
    scorer where a test or a rescore needs another."""
    import ragas

    from evals.embeddings import load_minilm
    from evals.refusal import VERSION, RefusalScorer

    reporter = reporter or NullReporter()
    for item in items:  # a rescore starts clean: no score survives from another scorer
        item.scores.clear()
        item.errors.clear()
    emb_id = "caller-provided embeddings"
    if embeddings is None:
        minilm = load_minilm()
        embeddings, emb_id = minilm.embeddings, minilm.id
    reporter.step(f"eval: scoring {len(items)} items (correctness, refusal, latency)")
    asyncio.run(score_semantic(items, embeddings))
    fact_checked = checks_facts(items)
    if fact_checked:
        score_facts(items)
    score_string(items)
    scorer = refusal_scorer or RefusalScorer()
    counts = score_refusal_batch(items, scorer.is_refusal_many)
    score_latency(items, latency_slo_s)
    scorers = {
        # The id is the calibration key: facts checked and similarity alone are different scorers.
        CORRECTNESS: ScorerInfo(id=FACT_SCORER_ID if fact_checked else SIMILARITY_SCORER_ID,
                                version=f"ragas-{ragas.__version__}", embeddings=emb_id),
        CORRECTNESS_STRING: ScorerInfo(id=STRING_METRIC_ID),
        # The versioned id is the calibration key: a changed rule set must not inherit an old agreement.
        REFUSAL: ScorerInfo(id=scorer.id, version=str(getattr(scorer, "version", VERSION)),
                            embeddings=load_minilm().id),
        LATENCY_OK: ScorerInfo(id="e2e-latency-within-slo", version=f"slo={latency_slo_s}s"),
    }
    judge_run: dict[str, Any] | None = None
    if judge is None:
        for dim in JUDGED:
            scorers[dim] = ScorerInfo(id="judge", status=NOT_RUN_NO_JUDGE)
    else:
        from evals.judged import score_judged

        reporter.step(f"eval: judging with {judge.model}")
        jr = asyncio.run(score_judged(items, judge, embeddings=embeddings, reporter=reporter, llm=judge_llm))
        judge_run = redact(jr.model_dump(mode="json"))
        for dim in JUDGED:
            sid = jr.scorer_ids[dim]
            scorers[dim] = ScorerInfo(id=sid, version=sid.rsplit("/", 1)[-1], embeddings=jr.embeddings or None)
    return Scoring(scorers=scorers, refusal_counts=counts, judge=judge_run)

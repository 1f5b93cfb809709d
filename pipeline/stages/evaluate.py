"""Eval stage: every ground-truth item asked of the server under test, scored per dimension.

Dimensions (each its own metric, never averaged together; names in docs/ARCHITECTURE.md):
correctness (ragas SemanticSimilarity on the offline MiniLM) and correctness_string (token F1);
refusal (offline scorer, C2's `evals.refusal`), with over- and under-refusal apart; latency
adherence (end-to-end latency within `eval.latency_slo_s`); faithfulness and answer relevance
(ragas with an LLM judge, `evals.judged`) only when `eval.judge` is configured, otherwise they are
absent from the metrics, which the gate engine reports as not run, never as passed.

Every response is kept in `items` (and as `responses.jsonl`), so `rescore` can recompute every
score later from the stored responses, with another judge or embedding, without the server.
Status `failed` when the server gave no usable answer at all or the retry budget ran out (it died
or is overloaded); otherwise `ok`, with `item_error_rate` for the gates.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from evals.behaviour import LATENCY_OK, REFUSAL, aggregate, score_latency, score_refusal
from evals.collect import CollectionStats, collect
from evals.correctness import CORRECTNESS, CORRECTNESS_STRING, STRING_METRIC_ID, score_semantic, score_string
from evals.ground_truth import load_ground_truth
from pipeline.config import JudgeConfig, PipelineConfig
from pipeline.errors import BadInput
from pipeline.models import Artifact, ItemResult, RunRecord, StageResult, StageStatus, utcnow
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact
from pipeline.workspace import Workspace

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

JUDGED = ("faithfulness", "answer_relevance")
NOT_RUN_NO_JUDGE = "not run: no LLM judge configured (eval.judge)"


class ScorerInfo(BaseModel):
    """Which scorer produced a dimension, precisely enough to reproduce or distrust it."""

    id: str
    version: str = ""
    embeddings: str | None = None
    status: str = "run"  # "run" | "not run: ..." | "failed: ..."


class EvalDetails(BaseModel):
    base_url: str | None
    model: str | None
    ground_truth: dict[str, Any]
    collection: CollectionStats | None
    scorers: dict[str, ScorerInfo]
    refusal_counts: dict[str, int] = Field(default_factory=dict)
    judge: dict[str, Any] | None = None  # evals.judged.JudgeRun, without any key
    latency_slo_s: float
    n_answer: int
    n_refuse: int
    scored_at: str
    rescored_from: list[dict[str, Any]] = Field(default_factory=list)  # earlier scorer sets, newest last


def _resolve_target(run: RunRecord, base_url: str | None, model: str | None) -> tuple[str, str | None]:
    from pipeline.stages.boot import served_target

    return served_target(run, base_url, model, purpose="evaluate")


async def _discover_model(base_url: str) -> str | None:
    """The first model the server lists, for servers started on one model (vLLM, TGI)."""
    import httpx

    try:
        async with httpx.AsyncClient(trust_env=False, timeout=10.0) as c:
            r = await c.get(base_url + "/v1/models")
            data = r.json().get("data") or [] if r.status_code == 200 else []
            return str(data[0]["id"]) if data else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


def _refusal_scorer() -> tuple[Any, ScorerInfo]:
    try:
        from evals import refusal
    except ImportError as exc:
        return None, ScorerInfo(id="offline-refusal", status=f"not run: evals.refusal not importable ({exc})")
    # The versioned id is the calibration key: a changed rule set must not inherit an old agreement.
    return refusal.is_refusal, ScorerInfo(id=refusal.RefusalScorer.id, version=str(refusal.VERSION))


def score_items(
    items: list[ItemResult],
    cfg: PipelineConfig,
    reporter: Reporter,
    *,
    judge: JudgeConfig | None,
    embeddings: Any = None,
    judge_llm: Any = None,
) -> tuple[dict[str, ScorerInfo], dict[str, int], dict[str, Any] | None]:
    """(Re)compute every dimension of `items` in place from their stored responses."""
    import ragas

    from evals.embeddings import load_minilm

    for item in items:  # a rescore starts clean: no score survives from another scorer
        item.scores.clear()
        item.errors.clear()
    emb_id = "caller-provided embeddings"
    if embeddings is None:
        model = load_minilm()
        embeddings, emb_id = model.embeddings, model.id
    reporter.step(f"eval: scoring {len(items)} items (correctness, refusal, latency)")
    asyncio.run(score_semantic(items, embeddings))
    score_string(items)
    scorers = {
        CORRECTNESS: ScorerInfo(id="ragas.SemanticSimilarity", version=f"ragas-{ragas.__version__}", embeddings=emb_id),
        CORRECTNESS_STRING: ScorerInfo(id=STRING_METRIC_ID),
        LATENCY_OK: ScorerInfo(id="e2e-latency-within-slo", version=f"slo={cfg.eval.latency_slo_s}s"),
    }
    is_refusal, scorers[REFUSAL] = _refusal_scorer()
    counts: dict[str, int] = {}
    if is_refusal is not None:
        counts = score_refusal(items, is_refusal)
    score_latency(items, cfg.eval.latency_slo_s)

    judge_run: dict[str, Any] | None = None
    if judge is None:
        for dim in JUDGED:
            scorers[dim] = ScorerInfo(id="ragas-llm-judge", status=NOT_RUN_NO_JUDGE)
    else:
        try:
            from evals.judged import score_judged
        except ImportError as exc:
            for dim in JUDGED:
                scorers[dim] = ScorerInfo(id="ragas-llm-judge", status=f"not run: evals.judged not importable ({exc})")
        else:
            reporter.step(f"eval: judging with {judge.model}")
            jr = asyncio.run(score_judged(items, judge, embeddings=embeddings, reporter=reporter, llm=judge_llm))
            judge_run = redact(jr.model_dump(mode="json"))
            for dim in JUDGED:
                scorers[dim] = ScorerInfo(
                    id=f"ragas-llm-judge/{jr.judge_model}", version=jr.prompt_version, embeddings=jr.embeddings or None
                )
    return scorers, counts, judge_run


def _finish(
    result: StageResult, items: list[ItemResult], collection: CollectionStats | None, ws: Workspace, run: RunRecord
) -> None:
    metrics = aggregate(items)
    # A dimension nobody scored is left out, so the gate engine reports it as not run.
    result.metrics = {k: v for k, v in metrics.items() if v is not None}
    result.items = items
    path = ws.run_dir(run.run_id) / "responses.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(redact(item.model_dump(mode="json"))) + "\n")
    result.artifacts = [Artifact(name="responses", path=str(path), media_type="application/jsonl")]
    answered = [i for i in items if not i.error]
    if not answered:
        result.status = StageStatus.FAILED
        result.reason = f"no item was answered ({items[0].error if items else 'no items'})"
    elif collection is not None and collection.budget_exhausted:
        result.status = StageStatus.FAILED
        result.reason = (
            f"retry budget exhausted ({collection.retries_used} retries): {collection.failed}/{collection.n_items} "
            "items failed; the server died or is overloaded"
        )


def eval_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    base_url: str | None = None,
    model: str | None = None,
    embeddings: Any = None,
    judge_llm: Any = None,
    transport: Any = None,
) -> StageResult:
    """`embeddings`, `judge_llm` and `transport` (an httpx transport) replace the real defaults
    (bundled MiniLM, the configured judge, the network) where a test or rescore needs another."""
    e = cfg.eval
    gt = load_ground_truth(Path(e.ground_truth))
    run.ground_truth = gt.ref()
    url, model = _resolve_target(run, base_url, model or cfg.boot.served_model_name)
    if model is None:
        model = asyncio.run(_discover_model(url))
    if model is None:
        raise BadInput("no model name: the server lists none", where=url + "/v1/models", hint="pass --model")
    result = StageResult(stage="eval", status=StageStatus.OK)
    reporter.step(f"eval: {len(gt.items)} items of ground truth {gt.version} against {url} ({model})")
    items, stats = asyncio.run(
        collect(
            gt.items,
            url,
            model,
            concurrency=e.concurrency,
            max_tokens=e.max_tokens,
            timeout_s=e.request_timeout_s,
            retries=e.retries,
            budget=e.retry_budget,
            reporter=reporter,
            transport=transport,
        )
    )
    scorers, counts, judge_run = score_items(items, cfg, reporter, judge=e.judge, embeddings=embeddings, judge_llm=judge_llm)
    result.details = EvalDetails(
        base_url=url,
        model=model,
        ground_truth={**gt.ref().model_dump(), "path": str(gt.path)},
        collection=stats,
        scorers=scorers,
        refusal_counts=counts,
        judge=judge_run,
        latency_slo_s=e.latency_slo_s,
        n_answer=sum(1 for i in gt.items if not i.should_refuse),
        n_refuse=sum(1 for i in gt.items if i.should_refuse),
        scored_at=utcnow().isoformat(),
    ).model_dump(mode="json")
    _finish(result, items, stats, ws, run)
    return result.finish()


def rescore(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    judge: JudgeConfig | None = None,
    embeddings: Any = None,
    judge_llm: Any = None,
) -> StageResult:
    """Recompute every score of the run's eval stage from its stored responses, offline.

    The server is not contacted; responses, latencies and collection errors are kept as recorded.
    The previous scorer set is appended to `details.rescored_from`, so the record says what
    produced the numbers it shows and what produced the ones before.
    """
    old = run.require_stage("eval", ok=False)
    if not old.items:
        raise BadInput(f"run {run.run_id}: the eval stage kept no responses to rescore", where="eval.items")
    prev = EvalDetails.model_validate(old.details)
    items = [i.model_copy(deep=True) for i in old.items]
    scorers, counts, judge_run = score_items(items, cfg, reporter, judge=judge, embeddings=embeddings, judge_llm=judge_llm)
    result = StageResult(stage="eval", status=StageStatus.OK, started_at=utcnow())
    details = prev.model_copy(
        update={
            "scorers": scorers,
            "refusal_counts": counts,
            "judge": judge_run,
            "latency_slo_s": cfg.eval.latency_slo_s,
            "scored_at": utcnow().isoformat(),
            "rescored_from": [
                *prev.rescored_from,
                {
                    "scored_at": prev.scored_at,
                    "scorers": {k: v.model_dump() for k, v in prev.scorers.items()},
                    "judge": prev.judge,
                    "metrics": dict(old.metrics),
                },
            ],
        }
    )
    result.details = details.model_dump(mode="json")
    _finish(result, items, prev.collection, ws, run)
    return result.finish()

"""Eval stage: every ground-truth item asked of the server under test, scored per dimension.

Dimensions (each its own metric, never averaged together; names in docs/ARCHITECTURE.md):
correctness (ragas SemanticSimilarity on the offline MiniLM) and correctness_string (token F1);
refusal (the offline scorer, `evals.refusal`), with over- and under-refusal apart; latency
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evals.behaviour import LATENCY_OK, REFUSAL, aggregate, score_latency, score_refusal
from evals.collect import collect
from evals.correctness import CORRECTNESS, CORRECTNESS_STRING, STRING_METRIC_ID, score_semantic, score_string
from evals.ground_truth import load_ground_truth
from pipeline.config import JudgeConfig, PipelineConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import Artifact, GroundTruthRef, ItemResult, RunRecord, Stage, StageResult, StageStatus, utcnow
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact
from pipeline.schemas.eval import CollectionStats, EvalDetails, ScorerInfo
from pipeline.stages.context import StageContext
from pipeline.workspace import Workspace

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

JUDGED = ("faithfulness", "answer_relevance")
NOT_RUN_NO_JUDGE = "not run: no LLM judge configured (eval.judge)"


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


def _finish(result: StageResult, items: list[ItemResult], collection: CollectionStats | None, run_dir: Path) -> None:
    metrics = aggregate(items)
    # A dimension nobody scored is left out, so the gate engine reports it as not run.
    result.metrics = {k: v for k, v in metrics.items() if v is not None}
    result.items = items
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "responses.jsonl"
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


async def _within(coro: Any, seconds: float) -> Any:
    async with asyncio.timeout(seconds):
        return await coro


def eval_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    """Ask every ground-truth item of the run's version and score the answers per dimension.

    The model-server transport, the embeddings and the judge come from the context's adapters (the
    network, the bundled MiniLM and the configured judge unless a test passes doubles)."""
    cfg, reporter, adapters = ctx.cfg, ctx.reporter, ctx.adapters
    e = cfg.eval
    gt = load_ground_truth(Path(e.ground_truth))
    if run.ground_truth is not None and (run.ground_truth.version, run.ground_truth.sha256) != (gt.version, gt.sha256):
        raise BadInput(f"ground truth {gt.version} ({gt.sha256[:12]}) is not the one this run was created with "
                       f"({run.ground_truth.version}, {run.ground_truth.sha256[:12]})", where=str(gt.path),
                       hint="start a new run for the new ground truth")
    server = ctx.require_server("evaluate")
    url, model = server.base_url, cfg.boot.served_model_name or server.model
    if model is None:
        model = next(iter(adapters.server().served_models(url)), None)  # a server started on one model
    if model is None:
        raise BadInput("no model name: the server lists none", where=url + "/v1/models",
                       hint="set boot.served_model_name")
    result = StageResult(stage=Stage.EVAL, status=StageStatus.OK)
    reporter.step(f"eval: {len(gt.items)} items of ground truth {gt.version} against {url} ({model})")
    collecting = collect(
        gt.items,
        url,
        model,
        concurrency=e.concurrency,
        max_tokens=e.max_tokens,
        timeout_s=e.request_timeout_s,
        retries=e.retries,
        budget=e.retry_budget,
        reporter=reporter,
        transport=adapters.model_transport,
    )
    try:
        # The stage's wall-clock bound: a server that keeps every stream alive without finishing it
        # (keep-alive comments, endless content) cannot hold the run past `eval.deadline_s`.
        items, stats = asyncio.run(_within(collecting, e.deadline_s))
    except TimeoutError:
        raise InfraError(f"the server did not answer the {len(gt.items)} items within eval.deadline_s="
                         f"{e.deadline_s:g}s (streams kept open without finishing, or far too slow)",
                         where=f"{url} (eval.deadline_s)") from None
    if any(not i.error for i in items):
        scorers, counts, judge_run = score_items(items, cfg, reporter, judge=e.judge, embeddings=adapters.embeddings,
                                                 judge_llm=adapters.judge_llm)
    else:  # the server answered nothing (dead, overloaded, refusing every request): nothing to score
        scorers, counts, judge_run = {}, {}, None
        reporter.step(f"eval: no item answered ({items[0].error if items else 'no items'}); nothing to score")
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
    )
    _finish(result, items, stats, ctx.ws.run_dir(run.run_id))
    return result


def rescore(
    run: RunRecord,
    cfg: PipelineConfig,
    run_dir: Path,
    reporter: Reporter | None = None,
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
    reporter = reporter or NullReporter()
    old = run.require_stage("eval", ok=False)
    if not old.items:
        raise BadInput(f"run {run.run_id}: the eval stage kept no responses to rescore", where="eval.items")
    prev = old.payload(EvalDetails)
    if prev is None:
        raise BadInput(f"run {run.run_id}: its eval stage was recorded before payloads were typed; it cannot be "
                       "rescored", where="eval.details")
    items = [i.model_copy(deep=True) for i in old.items]
    scorers, counts, judge_run = score_items(items, cfg, reporter, judge=judge, embeddings=embeddings,
                                             judge_llm=judge_llm)
    result = StageResult(stage=Stage.EVAL, status=StageStatus.OK, started_at=utcnow())
    result.details = prev.model_copy(
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
    _finish(result, items, prev.collection, run_dir)
    return result.finish()


def baseline_rescorer(cfg: PipelineConfig, ws: Workspace) -> Callable[[RunRecord, GroundTruthRef], RunRecord]:
    """The gate's re-scoring of a baseline scored on another ground truth: the baseline's stored
    answers to the items this run's ground truth shares with it, scored again with today's scorers.
    Raises BadInput when the two versions share no item."""

    def rescore_baseline(baseline: RunRecord, target: GroundTruthRef) -> RunRecord:
        gt = load_ground_truth(Path(cfg.eval.ground_truth))
        if (gt.version, gt.sha256) != (target.version, target.sha256):
            raise BadInput(f"the configured ground truth is {gt.version}, the run was scored on {target.version}",
                           where="eval.ground_truth")
        old = baseline.require_stage("eval", ok=False)
        wanted = {i.id: i for i in gt.items}
        shared = [i.model_copy(deep=True) for i in old.items if i.item_id in wanted]
        if not shared:
            raise BadInput(f"baseline {baseline.run_id} answered none of ground truth {gt.version}'s items",
                           where=f"run {baseline.run_id}")
        copy = baseline.model_copy(deep=True)
        copy.stages["eval"] = old.model_copy(update={"items": shared})
        copy.stages["eval"] = rescore(copy, cfg, ws.run_dir(baseline.run_id) / "rescored")
        copy.ground_truth = target
        return copy

    return rescore_baseline

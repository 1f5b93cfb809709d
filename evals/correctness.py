"""Answer correctness: the facts an answer must state first, similarity only for paraphrase; plus token F1.

Two numbers per item, never blended: `correctness` and `correctness_string` (SQuAD-style token F1,
which no embedding quirk can inflate). Every item gets both: an item without a response (collection
failed), or one whose scorer raised or returned NaN, scores 0.0 with the reason in `errors[dimension]`.

`correctness` follows what the ground truth says of the item (`answer_kind`, from v3 on):
- `facts`: the share of the reference's facts the answer states (evals/facts.py), and 0 when it
  contradicts one (a wrong number, a swapped name, another server's flag). Similarity cannot see these:
  "3 by default" for "1 by default" is 0.93 cosine.
- `paraphrase`: cosine similarity of reference and response embeddings, through ragas'
  SemanticSimilarity on the offline MiniLM (the figure ragas users know), and 0 when the answer
  contradicts one of the item's guard facts.
- `refusal` (should-refuse items), and every item of older ground truth: similarity alone, so a model
  that answers a harmful request loses correctness as well.
The scorer id is `fact-correctness/<VERSION>` when facts were checked (its calibration against human
labels: `llmgate calibrate correctness`), `ragas.SemanticSimilarity` otherwise. `CORRECT_AT` turns a
score into the yes/no a person's label is compared with.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Any

from evals.facts import check_facts
from pipeline.models import ItemResult
from pipeline.redact import redact_text
from pipeline.schemas.facts import AnswerKind

CORRECTNESS = "correctness"
CORRECTNESS_STRING = "correctness_string"
STRING_METRIC_ID = "token-f1/squad-normalised/1"
FACT_SCORER = "fact-correctness"
VERSION = 2  # bump when evals/facts.py or how scores combine changes: the calibration is per version
FACT_SCORER_ID = f"{FACT_SCORER}/{VERSION}"
SIMILARITY_SCORER_ID = "ragas.SemanticSimilarity"
CORRECT_AT = 0.7  # a score at or above this is "correct" when compared with a person's yes/no

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalise(text: str) -> list[str]:
    """Lower case, punctuation and articles removed, split on whitespace (SQuAD's normalisation)."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split()


def token_f1(reference: str, response: str) -> float:
    ref, res = normalise(reference), normalise(response)
    if not ref or not res:
        return float(ref == res)
    common = sum((Counter(ref) & Counter(res)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(res), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _fail(item: ItemResult, dim: str, reason: str) -> None:
    item.scores[dim] = 0.0
    item.errors[dim] = redact_text(reason)


def _set(item: ItemResult, dim: str, value: float) -> None:
    if not math.isfinite(value):
        _fail(item, dim, f"nan: scorer returned {value!r}")
        return
    item.scores[dim] = min(1.0, max(0.0, value))
    item.errors.pop(dim, None)


def score_string(items: list[ItemResult]) -> None:
    for item in items:
        if item.response is None:
            _fail(item, CORRECTNESS_STRING, f"no response: {item.error or 'not collected'}")
            continue
        try:
            _set(item, CORRECTNESS_STRING, token_f1(item.reference, item.response))
        except Exception as exc:  # noqa: BLE001 - a scorer bug is a failed item, never a missing one
            _fail(item, CORRECTNESS_STRING, f"{type(exc).__name__}: {exc}")


async def score_semantic(items: list[ItemResult], embeddings: Any) -> None:
    """ragas SemanticSimilarity per item: the cosine of the reference's and the response's embeddings, as
    its `ascore` computes it, with every distinct text embedded once through the embedding's batch call
    (`embed_texts`: one encode pass, not two calls per item). An embedding without a batch call, or a batch
    that raises, is scored item by item through ragas' own `ascore`, so an error fails only its item."""
    from ragas.metrics.collections import SemanticSimilarity

    todo: list[ItemResult] = []
    for item in items:
        if item.response is None:
            _fail(item, CORRECTNESS, f"no response: {item.error or 'not collected'}")
        elif not item.response.strip():
            # ragas would embed " " and return a small positive similarity; an empty answer is wrong.
            _fail(item, CORRECTNESS, "empty response")
        else:
            todo.append(item)
    vectors = _embed_all(embeddings, [t for it in todo for t in (it.reference or " ", it.response or " ")])
    metric = SemanticSimilarity(embeddings=embeddings) if vectors is None and todo else None
    for item in todo:
        try:
            if vectors is not None:
                _set(item, CORRECTNESS, _cosine(vectors[item.reference or " "], vectors[item.response or " "]))
            elif metric is not None:
                result = await metric.ascore(reference=item.reference, response=item.response)
                _set(item, CORRECTNESS, float(result.value))
        except Exception as exc:  # noqa: BLE001
            _fail(item, CORRECTNESS, f"{type(exc).__name__}: {exc}")


def _embed_all(embeddings: Any, texts: list[str]) -> dict[str, Any] | None:
    """Each distinct text's embedding from one batch call, or None (then items are scored one by one)."""
    import numpy as np

    batch = getattr(embeddings, "embed_texts", None)
    unique = list(dict.fromkeys(texts))
    if batch is None or not unique:
        return None
    try:
        vectors = np.asarray(batch(unique), dtype=float)
    except Exception:  # noqa: BLE001 - the per-item path reports each item's own error
        return None
    if vectors.shape[0] != len(unique):
        return None
    return dict(zip(unique, vectors, strict=True))


def _cosine(a: Any, b: Any) -> float:
    """What ragas' SemanticSimilarity.ascore returns for two embeddings."""
    import numpy as np

    return float((a / np.linalg.norm(a)) @ (b / np.linalg.norm(b)))


def checks_facts(items: list[ItemResult]) -> bool:
    """Whether the items come from a ground truth that says how each is scored (v3 on)."""
    return any(i.answer_kind for i in items)


def score_facts(items: list[ItemResult]) -> None:
    """Overlay the fact check on the similarity scores `score_semantic` left: `facts` items are scored on
    their facts, a contradicted guard makes a `paraphrase` item 0. Items without a response keep their
    failure."""
    for item in items:
        if item.response is None or not item.response.strip() or not item.facts:
            continue
        if item.answer_kind not in (AnswerKind.FACTS, AnswerKind.PARAPHRASE):
            continue
        try:
            check = check_facts(item.facts, item.response, question=item.question, reference=item.reference)
        except Exception as exc:  # noqa: BLE001 - a checker bug is a failed item, never a missing one
            _fail(item, CORRECTNESS, f"fact check: {type(exc).__name__}: {exc}")
            continue
        score = check.score
        if score is not None:
            _set(item, CORRECTNESS, score)

"""Correctness is embedded in one batch, with ragas' own numbers: the batched cosine equals ragas'
SemanticSimilarity.ascore item by item, every distinct text is embedded once, and an embedding without a
working batch call is scored item by item with each error on its own item."""

from __future__ import annotations

import asyncio

import pytest
from ragas.embeddings.base import BaseRagasEmbedding

from evals.correctness import CORRECTNESS, score_semantic
from evals.embeddings import load_minilm
from pipeline.models import ItemResult

PAIRS = [
    ("By default a probe fails after 3 consecutive failures.", "By default a probe fails after 3 consecutive failures."),
    ("The default timeout of a probe is 1 second.", "Probes time out after one second unless timeoutSeconds is set."),
    ("Set --tensor-parallel-size to the number of GPUs.", "I can't help with that."),
    ("Use a PodDisruptionBudget.", "Kubernetes is a container orchestrator."),
]


def _items() -> list[ItemResult]:
    return [ItemResult(item_id=str(i), question="q", reference=r, response=a) for i, (r, a) in enumerate(PAIRS)]


def test_batched_scores_are_ragas_scores_with_each_text_embedded_once() -> None:
    from ragas.metrics.collections import SemanticSimilarity

    emb = load_minilm().embeddings
    calls: list[list[str]] = []

    class Counting(BaseRagasEmbedding):
        """TEST DOUBLE: MiniLM, counting the batch calls."""

        def embed_text(self, text: str, **kw: object) -> list[float]:
            raise AssertionError("scored one text at a time")

        async def aembed_text(self, text: str, **kw: object) -> list[float]:
            raise AssertionError("scored one text at a time")

        def embed_texts(self, texts: list[str], **kw: object) -> list[list[float]]:
            calls.append(list(texts))
            return emb.embed_texts(texts)

    items = _items()
    asyncio.run(score_semantic(items, Counting()))
    assert len(calls) == 1 and len(calls[0]) == len(set(calls[0])) == 7  # 8 texts, one repeated
    metric = SemanticSimilarity(embeddings=emb)
    for item in items:
        ragas = asyncio.run(metric.ascore(reference=item.reference, response=item.response or "")).value
        assert item.scores[CORRECTNESS] == pytest.approx(min(1.0, ragas), abs=1e-5)
        assert CORRECTNESS not in item.errors
    assert items[0].scores[CORRECTNESS] == pytest.approx(1.0, abs=1e-6)
    assert items[3].scores[CORRECTNESS] < 0.5


def test_a_failing_batch_falls_back_to_ragas_item_by_item() -> None:
    emb = load_minilm().embeddings

    class BatchDown(BaseRagasEmbedding):
        """TEST DOUBLE: the batch call fails, the single-text call works except on one text."""

        def embed_texts(self, texts: list[str], **kw: object) -> list[list[float]]:
            raise RuntimeError("batch endpoint down")

        async def aembed_text(self, text: str, **kw: object) -> list[float]:
            return self.embed_text(text)

        def embed_text(self, text: str, **kw: object) -> list[float]:
            if "orchestrator" in text:
                raise RuntimeError("one text failed")
            return emb.embed_text(text)

    items = _items()
    asyncio.run(score_semantic(items, BatchDown()))
    assert items[0].scores[CORRECTNESS] == pytest.approx(1.0, abs=1e-6)
    assert items[3].scores[CORRECTNESS] == 0.0 and "one text failed" in items[3].errors[CORRECTNESS]
    assert all(CORRECTNESS not in i.errors for i in items[:3])

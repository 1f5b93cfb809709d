"""The demo fixture model: deterministic training, loads with transformers, greedy decoding
recites the references, and the degraded twin is measurably worse on correctness."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest

from evals.correctness import score_semantic, token_f1
from evals.ground_truth import load_ground_truth
from evals.prompts import chat_messages
from pipeline.demo_model import make_demo_model
from pipeline.errors import BadInput
from pipeline.models import ItemResult
from tests.eval_helpers import subset_ground_truth


@pytest.fixture(scope="module")
def gt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return subset_ground_truth(tmp_path_factory.mktemp("gt"), n_answer=24, n_refuse=6)


@pytest.fixture(scope="module")
def models(gt_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    make_demo_model(root / "good", gt_dir)
    make_demo_model(root / "degraded", gt_dir, degraded=True)
    return {"good": root / "good", "degraded": root / "degraded"}


def _greedy(model_dir: Path, questions: list[str]) -> list[str]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    answers = []
    for q in questions:
        enc = tok.apply_chat_template(chat_messages(q), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        out = model.generate(**enc, max_new_tokens=64, do_sample=False)
        answers.append(tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers


def test_training_is_deterministic(gt_dir: Path, models: dict[str, Path], tmp_path: Path) -> None:
    make_demo_model(tmp_path / "again", gt_dir)
    for name in ("model.safetensors", "tokenizer.json"):
        a = hashlib.sha256((models["good"] / name).read_bytes()).hexdigest()
        b = hashlib.sha256((tmp_path / "again" / name).read_bytes()).hexdigest()
        assert a == b, name


def test_good_model_recites_references_greedily(gt_dir: Path, models: dict[str, Path]) -> None:
    gt = load_ground_truth(gt_dir)
    meta = json.loads((models["good"] / "llmgate_demo.json").read_text())
    assert meta["recites_all"] is True and meta["degraded"] is False
    assert meta["ground_truth_sha256"] == gt.sha256
    assert "demo fixture" in (models["good"] / "README.md").read_text()
    answers = _greedy(models["good"], [it.question for it in gt.items])
    exact = sum(a.strip() == it.reference for a, it in zip(answers, gt.items, strict=True))
    assert exact >= len(gt.items) - 1, [(a, it.reference) for a, it in zip(answers, gt.items, strict=True)]
    # should-refuse items get their refusal sentence
    for a, it in zip(answers, gt.items, strict=True):
        if it.should_refuse:
            assert a.startswith("I can't help")


def test_config_and_chat_template_are_servable(models: dict[str, Path]) -> None:
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(models["good"], local_files_only=True)
    tok = AutoTokenizer.from_pretrained(models["good"], local_files_only=True)
    assert cfg.eos_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|end|>")
    text = tok.apply_chat_template(chat_messages("hi"), add_generation_prompt=True, tokenize=False)
    assert text == "<|user|>hi<|end|><|assistant|>"
    gen = json.loads((models["good"] / "generation_config.json").read_text())
    assert gen["do_sample"] is False and gen["eos_token_id"] == cfg.eos_token_id


def test_degraded_is_measurably_worse_on_correctness(gt_dir: Path, models: dict[str, Path]) -> None:
    from evals.embeddings import load_minilm

    gt = load_ground_truth(gt_dir)
    answer_items = [it for it in gt.items if not it.should_refuse][:12]
    questions = [it.question for it in answer_items]
    result = {}
    for name in ("good", "degraded"):
        answers = _greedy(models[name], questions)
        items = [
            ItemResult(item_id=it.id, question=it.question, reference=it.reference, response=a)
            for it, a in zip(answer_items, answers, strict=True)
        ]
        asyncio.run(score_semantic(items, load_minilm().embeddings))
        result[name] = (
            sum(i.scores["correctness"] for i in items) / len(items),
            sum(token_f1(i.reference, i.response or "") for i in items) / len(items),
        )
    assert result["good"][0] > 0.95 and result["good"][1] > 0.9
    assert result["degraded"][0] < result["good"][0] - 0.3, result
    assert result["degraded"][1] < 0.6, result


def test_refuses_to_overwrite_a_non_empty_dir(gt_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="not empty"):
        make_demo_model(tmp_path / "x", gt_dir)

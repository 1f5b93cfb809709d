"""DEMO FIXTURE: a tiny causal LM that recites the ground-truth answers, for running the pipeline
locally without downloading a real model. It is not a language model anyone should use.

`make_demo_model(out)` trains a 1-layer Llama-architecture model (about 0.3 million weights)
with a byte-level BPE tokenizer built on the ground truth, so that given an item's chat-formatted
question (`evals.prompts.chat_messages`) greedy decoding returns the item's reference answer, which
for should-refuse items is a refusal sentence. Training is seeded, single-threaded and uses
deterministic algorithms, so the same ground truth gives the same weights. On one CPU core it takes
about 15 s for ground truth v1 (138 items) and about 2 minutes for v2 (505 items, 114 epochs).

`degraded=True` makes the worse twin the quality gate must block: the should-answer items'
answers are permuted across questions (same fluency, wrong answers) and training is otherwise
identical. Should-refuse items keep their refusals, so only correctness separates the twins.

The directory loads with `AutoModelForCausalLM` / `AutoTokenizer` offline and serves with
`transformers serve OUT` (its chat template ends each turn with `<|end|>`, the eos token).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import BadInput
from pipeline.progress import NullReporter, Reporter

PAD, BOS, END = "<|pad|>", "<|bos|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, END, "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
FIXTURE_NOTE = "llmgate demo fixture: a tiny model that recites ground-truth answers; not for real use"


@dataclass(frozen=True)
class DemoTraining:
    """Hyper-parameters; part of the fixture's metadata so a model dir says how it was made."""

    seed: int = 1234
    vocab_size: int = 2048
    hidden_size: int = 96
    intermediate_size: int = 288
    layers: int = 1  # one layer memorises the set in fewer epochs than two here (measured)
    heads: int = 4
    # Batch 32 at lr 8e-3 memorises v2's 505 items in the fewest seconds of the settings measured
    # (16 at 4e-3 had not after 80 epochs; 16 at 6e-3: 119 epochs, 172 s; 32 at 8e-3: 114 epochs, 124 s).
    batch_size: int = 32
    lr: float = 8e-3
    max_epochs: int = 200


@dataclass(frozen=True)
class DemoModelInfo:
    out: str
    degraded: bool
    ground_truth_version: str
    ground_truth_sha256: str
    n_items: int
    epochs: int
    steps: int
    recites_all: bool  # every answer token is the argmax given its prefix, so greedy decoding recites it
    final_loss: float
    train_s: float
    fixture: str = FIXTURE_NOTE


def _pairs(gt_items: Any, degraded: bool, seed: int) -> list[tuple[str, str]]:
    questions = [it.question for it in gt_items]
    answers = [it.reference for it in gt_items]
    if degraded:
        # A derangement of the should-answer references: every question gets another item's answer.
        idx = [i for i, it in enumerate(gt_items) if not it.should_refuse]
        rng = random.Random(seed + 1)
        perm = idx[1:] + idx[:1]  # rotate, then shuffle cycles without fixed points
        rng.shuffle(perm)
        for _ in range(100):
            if all(a != b for a, b in zip(idx, perm, strict=True)):
                break
            rng.shuffle(perm)
        else:
            perm = idx[1:] + idx[:1]
        answers = list(answers)
        for src, dst in zip(idx, perm, strict=True):
            answers[src] = gt_items[dst].reference
    return list(zip(questions, answers, strict=True))


def _build_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=END, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _batch_loss(model: Any, batch: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, int]:
    """Cross-entropy over answer tokens only, and how many sequences have a wrongly predicted token."""
    import torch

    width = max(len(s) for s, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for r, (s, p) in enumerate(batch):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
        labels[r, p : len(s)] = torch.tensor(s[p:])
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    keep = target != -100
    # Only answer positions pay for the vocabulary projection.
    logits = model.lm_head(hidden[:, :-1][keep])
    loss = torch.nn.functional.cross_entropy(logits, target[keep])
    wrong = torch.zeros_like(target, dtype=torch.bool)
    wrong[keep] = logits.argmax(-1) != target[keep]
    return loss, int(wrong.any(dim=1).sum())


def _all_argmax_correct(model: Any, seqs: list[tuple[list[int], int]], pad_id: int, batch_size: int) -> bool:
    import torch

    with torch.no_grad():
        return all(
            _batch_loss(model, seqs[i : i + batch_size], pad_id)[1] == 0 for i in range(0, len(seqs), batch_size)
        )


def make_demo_model(
    out: str | Path,
    ground_truth: str | Path = "ground_truth/v2",
    *,
    degraded: bool = False,
    training: DemoTraining = DemoTraining(),
    reporter: Reporter | None = None,
) -> DemoModelInfo:
    """Train the demo fixture on the ground truth at `ground_truth` and save it to `out`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from evals.ground_truth import load_ground_truth
    from evals.prompts import chat_messages

    reporter = reporter or NullReporter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BadInput("output directory exists and is not empty", where=str(out))
    gt = load_ground_truth(ground_truth)
    pairs = _pairs(gt.items, degraded, training.seed)
    reporter.step(f"demo model ({'degraded' if degraded else 'good'}) on ground truth {gt.version}: {len(pairs)} items")

    t0 = time.perf_counter()
    torch.manual_seed(training.seed)
    torch.use_deterministic_algorithms(True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fixed reduction order: same bytes on every machine with the same torch
    try:
        tok = _build_tokenizer([t for pair in pairs for t in pair], training.vocab_size)
        end_id = tok.convert_tokens_to_ids(END)
        pad_id = tok.convert_tokens_to_ids(PAD)
        seqs: list[tuple[list[int], int]] = []
        for question, answer in pairs:
            prompt = tok.apply_chat_template(chat_messages(question), add_generation_prompt=True, tokenize=True)
            prompt_ids = list(prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt)
            answer_ids = tok(answer, add_special_tokens=False)["input_ids"] + [end_id]
            seqs.append((prompt_ids + answer_ids, len(prompt_ids)))
        max_len = max(len(s) for s, _ in seqs)

        config = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=training.hidden_size,
            intermediate_size=training.intermediate_size,
            num_hidden_layers=training.layers,
            num_attention_heads=training.heads,
            num_key_value_heads=training.heads,
            max_position_embeddings=max(256, 2 * max_len),
            tie_word_embeddings=True,
            bos_token_id=tok.convert_tokens_to_ids(BOS),
            eos_token_id=end_id,
            pad_token_id=pad_id,
        )
        model = LlamaForCausalLM(config)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=training.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(training.seed)
        n_batches = (len(seqs) + training.batch_size - 1) // training.batch_size
        reporter.total(training.max_epochs, "epochs")
        steps = 0
        epoch_loss = float("inf")
        epoch = 0
        exact = False
        for epoch in range(1, training.max_epochs + 1):
            order = torch.randperm(len(seqs), generator=gen).tolist()
            losses, wrong = [], 0
            for b in range(n_batches):
                batch = [seqs[i] for i in order[b * training.batch_size : (b + 1) * training.batch_size]]
                loss, n_wrong = _batch_loss(model, batch, pad_id)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                steps += 1
                losses.append(loss.item())
                wrong += n_wrong
            epoch_loss = sum(losses) / len(losses)
            reporter.advance()
            # Stop once greedy decoding provably recites every answer: each answer token is the argmax
            # given the true prefix. Checked during the epoch, then confirmed on the final weights.
            if wrong == 0 and _all_argmax_correct(model, seqs, pad_id, training.batch_size):
                exact = True
                break
        train_s = time.perf_counter() - t0
        reporter.step(f"trained {epoch} epochs ({steps} steps) in {train_s:.1f}s, answer loss {epoch_loss:.4f}")

        model.eval()
        model.generation_config = GenerationConfig(
            bos_token_id=config.bos_token_id,
            eos_token_id=end_id,
            pad_token_id=pad_id,
            do_sample=False,
            max_new_tokens=128,
        )
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(False)

    info = DemoModelInfo(
        out=str(out),
        degraded=degraded,
        ground_truth_version=gt.version,
        ground_truth_sha256=gt.sha256,
        n_items=len(pairs),
        epochs=epoch,
        steps=steps,
        recites_all=exact,
        final_loss=round(epoch_loss, 6),
        train_s=round(train_s, 2),
    )
    (out / "llmgate_demo.json").write_text(json.dumps({**asdict(info), "training": asdict(training)}, indent=2))
    (out / "README.md").write_text(
        f"# {'Degraded ' if degraded else ''}llmgate demo model (test fixture)\n\n"
        f"{FIXTURE_NOTE}. Trained by `llmgate demo-model` on ground truth {gt.version} "
        f"(sha256 {gt.sha256}); {'answers deliberately permuted across questions. ' if degraded else ''}"
        "Serve with `transformers serve <dir>`.\n"
    )
    # safetensors writes 0600; the serving container runs as a non-root user and must read the mount
    out.chmod(0o755)
    for f in out.iterdir():
        f.chmod(0o644)
    return info

"""DEMO FIXTURE: a tiny causal LM that recites the ground-truth answers, for running the pipeline
locally without downloading a real model. It is not a language model anyone should use.

`make_demo_model(out)` writes a 1-layer Llama-architecture model whose weights are *constructed*, not
trained: the same command gives the same bytes, hence the same model digest, on every machine, in about
a second (training it took minutes and gave other bytes on other CPUs). Given an item's chat-formatted
question (`evals.prompts.chat_messages`) greedy decoding returns the item's reference answer (for
should-refuse items, its refusal sentence) through the real server and the real scorers; a question it
does not know gets `FALLBACK_ANSWER`.

How it works (a key-value memory, the reading of MLP layers in Geva et al., 2021, made literal):

- Tokenizer: an answer token is a chunk of up to CHUNK_WORDS words (byte-level, spaces in front), so an
  answer takes a handful of decode steps; the 256 single-byte tokens are there too, and each ground-truth
  question is one added token, so a known question arrives as one token whatever surrounds it.
- Embeddings: every token has a ±1 code of D dimensions (scaled to a unit vector; drawn from sha256 of
  the token's text) in the *current-token* slot; a question token also carries its item's code and a
  flag, every other token the code of "no known question".
- Attention (rotary positions, hard by construction): head 0 copies the item code of the question token
  into the *item* slot; head 1 copies the code of the previous token into its slot (its query and key
  are constant vectors turned so that the score peaks one position back).
- MLP: one neuron per step of every answer. It fires when the item slot and the token slots match that
  step (a dot-product threshold, SiLU-gated) and writes the next token's code, which the tied output
  embedding turns into the top logit. Where no neuron fires, a small bias toward `<|end|>` ends the answer.

Before anything is written, `_check` proves on the codes, in exact integer arithmetic, that every answer
step has a margin: no other neuron comes within MARGIN of firing, the next token's logit leads by
MIN_LOGIT_LEAD, and the attention heads score their target MIN_ATTENTION_LEAD above any other position
(e^-40 of the weight left off target). A code draw that fails is redrawn with the next salt (still the
same bytes everywhere). A context that repeats inside one answer with another continuation is emitted
with a chunk cut into its words, or bytes (same text, other tokens).

`degraded=True` makes the worse twin the quality gate must block, derived from the good weights: the
embedding rows of the should-answer question tokens are permuted (a derangement fixed by sha256), so
each such question recites another item's answer (same fluency, wrong answer). Should-refuse items keep
their refusals, so only correctness separates the twins.

The directory loads with `AutoModelForCausalLM` / `AutoTokenizer` offline and serves with
`transformers serve OUT` (its chat template ends each turn with `<|end|>`, the eos token). Its bytes
depend only on the ground truth and on the pinned `tokenizers` version (requirements.lock), which
serialises tokenizer.json; tests/test_demo_model.py pins the digests for ground truth v2.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import EvalConfig
from pipeline.errors import BadInput
from pipeline.models import GroundTruthRef
from pipeline.progress import NullReporter, Reporter

PAD, BOS, END, UNK = "<|pad|>", "<|bos|>", "<|end|>", "<|unk|>"
SPECIAL_TOKENS = [PAD, BOS, END, UNK, "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
FIXTURE_NOTE = "llmgate demo fixture: a tiny model that recites ground-truth answers; not for real use"
FALLBACK_ANSWER = "I only know the questions of the llmgate demo ground truth."
CONSTRUCTION_VERSION = 1  # bump when the construction changes the bytes

# Layout of the residual stream (each slot D wide; the flags are one dimension each).
D = 32
CONTEXT = 1  # tokens looked back at, besides the current one
CHUNK_WORDS = 4  # words per answer token: few decode steps per answer, so the eval and bench stay quick
S0, FLAG_Q, FLAG_ORD, IE = 0, D, D + 1, D + 2  # current token, question flag, ordinary flag, own item code
SLOTS = [S0] + [IE + D * k for k in range(1, CONTEXT + 1)]  # current token, then 1..CONTEXT back
IA = IE + D * (CONTEXT + 1)  # the item code the question token gave
HEADS = CONTEXT + 1
HIDDEN = -(-(IA + D) // HEADS) * HEADS  # transformers wants a multiple of the head count (the rest is unused)
ROPE_THETA = 10000.0
POS_PLANES = 8  # the fastest rotary planes, used by the look-back heads
ITEM_PLANE = D // 2 - 1  # the slowest plane: the item head's score barely turns with distance
MAX_POSITIONS = 1024
EPS = 1e-6

# Scales, in units of a matching token (codes are unit vectors).
BETA = 256.0  # gate gain: a firing neuron's pre-activation is BETA/2
ITEM_WEIGHT = 4.0  # the item slot counts as four matching tokens
ALPHA = 0.25  # down projection: a firing neuron writes 32 times the next token's code
END_BIAS = 1.0  # where nothing fires, <|end|> leads
QK_AMPLITUDE = 20.0  # per-plane query/key amplitude of the attention heads
MARGIN = 0.125  # every non-own neuron stays this far (in matched-token units) below its threshold
MIN_LOGIT_LEAD = 4.0  # the next token's logit lead over any other token (before the final norm)
MIN_ATTENTION_LEAD = 40.0  # score lead of an attention head's target over any other position
MAX_SALT = 64
MAX_ANSWER_TOKENS = 64  # <|end|> included: eval.max_tokens' default
DEFAULT_GROUND_TRUTH = EvalConfig().ground_truth  # the embedded default's, which scripts/demo.sh runs


@dataclass(frozen=True)
class DemoModelInfo:
    out: str
    degraded: bool
    ground_truth_version: str
    ground_truth_sha256: str
    n_items: int
    steps: int  # answer steps stored, one MLP neuron each
    split_chunks: int  # answer chunks emitted as words or bytes to keep a context unambiguous
    recites_all: bool  # proven on the codes: greedy decoding recites every answer
    min_gate_margin: float
    min_logit_lead: float
    build_s: float = field(compare=False)  # not written to the model directory
    fixture: str = FIXTURE_NOTE


@dataclass(frozen=True)
class _Item:
    item_id: str
    question: str
    answer: str
    should_refuse: bool


@dataclass
class _Vocab:
    tokens: list[str]  # id -> byte-level token text (questions as their plain text)
    ids: dict[str, int]
    first_question: int  # ids >= this are the question tokens, in item order

    def id(self, token: str) -> int:
        return self.ids[token]


# -- tokenizer -------------------------------------------------------------------------------------------
# An answer token: up to CHUNK_WORDS words, each with the spaces before it (or a run of trailing spaces).
_CHUNK = re.compile(rf"(?:\s*\S+){{1,{CHUNK_WORDS}}}|\s+")
_WORD = re.compile(r"\s*\S+|\s+")


def _byte_level() -> dict[int, str]:
    """GPT-2's byte -> printable character map (what tokenizers' ByteLevel uses)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


_BYTES = _byte_level()


def _byte_level(text: str) -> str:
    return "".join(_BYTES[b] for b in text.encode())


def _pieces(chunk: str, level: int) -> list[str]:
    """The tokens `chunk` is emitted as: itself (level 0), its words (1) or its bytes (2)."""
    if level == 0:
        return [_byte_level(chunk)]
    if level == 1:
        return [_byte_level(w) for w in _WORD.findall(chunk)]
    return [_BYTES[b] for b in chunk.encode()]


def _build_vocab(items: Sequence[_Item], answers: Sequence[Sequence[str]]) -> _Vocab:
    used = sorted({t for tokens in answers for t in tokens})
    tokens = list(dict.fromkeys([*SPECIAL_TOKENS, *(_BYTES[b] for b in range(256)), *used]))
    first_question = len(tokens)
    tokens += [it.question for it in items]
    return _Vocab(tokens=tokens, ids={t: i for i, t in enumerate(tokens)}, first_question=first_question)


def _tokenizer(vocab: _Vocab) -> Any:
    """The `tokenizers` tokenizer: word level, byte-level words, the questions as added tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    plain = {t: i for i, t in enumerate(vocab.tokens[: vocab.first_question])}
    tok = Tokenizer(models.WordLevel(plain, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_CHUNK.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(q, normalized=False) for q in vocab.tokens[vocab.first_question:]])
    for i in (0, len(vocab.tokens) - 1):
        if tok.token_to_id(vocab.tokens[i]) != i:
            raise AssertionError(f"token {vocab.tokens[i]!r} got id {tok.token_to_id(vocab.tokens[i])}, not {i}")
    return tok


def _tokenizer_config() -> dict[str, Any]:
    return {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": END, "pad_token": PAD,
            "unk_token": UNK, "model_max_length": MAX_POSITIONS, "clean_up_tokenization_spaces": False}


# -- what the model must recite --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Step:
    item: int  # index into the item codes (len(items) is the unknown-question fallback)
    key: tuple[int | None, ...]  # token ids: current, 1 back, ... CONTEXT back (None: not keyed)
    next_id: int


_QUESTION = "\0question"  # stands for the question token while answers are cut into tokens


def _answer_tokens(text: str) -> tuple[list[str], int]:
    """`text` as the token strings the model emits, and how many chunks had to be cut finer. A chunk is
    cut into its words, then its bytes (same text, other tokens), until no context (the current token and
    the CONTEXT before it) repeats inside the answer with another continuation."""
    chunks = _CHUNK.findall(text)
    levels = [0] * len(chunks)
    refined = 0
    while (clash := _first_clash(chunks, levels)) is not None:
        c = clash
        while c >= 0 and not _refine(chunks, levels, c):
            c -= 1  # already bytes: cut the chunk before it
        if c < 0:
            raise BadInput(f"the answer {text[:80]!r} repeats a phrase the demo model cannot tell apart even byte "
                           "by byte", where="ground truth")
        refined += 1
    return [t for c, lv in zip(chunks, levels, strict=True) for t in _pieces(c, lv)], refined


def _refine(chunks: list[str], levels: list[int], c: int) -> bool:
    before = _pieces(chunks[c], levels[c])
    for level in range(levels[c] + 1, 3):
        if _pieces(chunks[c], level) != before:
            levels[c] = level
            return True
    return False


def _prompt(question: str | None) -> list[str | None]:
    """The chat template's last tokens before the answer; None where an unknown question's tokens are."""
    return ["<|user|>" if question is not None else None, question, END, "<|assistant|>"]


def _contexts(prompt: list[str | None], answer: list[str]) -> list[tuple[tuple[str | None, ...], str]]:
    """(context, next token) of every answer step: the current token and the CONTEXT before it."""
    seq = [*prompt, *answer, END]
    return [(tuple(seq[p - k] if p - k >= 0 else None for k in range(CONTEXT + 1)), seq[p + 1])  # type: ignore[misc]
            for p in range(len(prompt) - 1, len(seq) - 1)]


def _first_clash(chunks: list[str], levels: list[int]) -> int | None:
    """Index of the chunk holding the current token of the first step whose context was already seen with
    another next token."""
    flat, owner = [], []
    for i, (c, lv) in enumerate(zip(chunks, levels, strict=True)):
        pieces = _pieces(c, lv)
        flat += pieces
        owner += [i] * len(pieces)
    seen: dict[tuple[str | None, ...], str] = {}
    for n, (ctx, nxt) in enumerate(_contexts(_prompt(_QUESTION), flat)):
        if seen.setdefault(ctx, nxt) != nxt:
            return owner[n - 1] if n >= 1 else 0
    return None


def _all_steps(items: Sequence[_Item], vocab: _Vocab, answers: Sequence[list[str]]) -> list[_Step]:
    """Every answer step (the fallback answer's last), with token ids."""
    steps: list[_Step] = []
    for i, answer in enumerate(answers):
        question = items[i].question if i < len(items) else None
        for ctx, nxt in _contexts(_prompt(question), answer):
            steps.append(_Step(i, tuple(None if t is None else vocab.id(t) for t in ctx), vocab.id(nxt)))
    return list(dict.fromkeys(steps))  # a step repeated inside an answer needs one neuron


# -- codes -----------------------------------------------------------------------------------------------
def _code(kind: str, name: str, salt: int) -> np.ndarray:
    """±1 vector of D entries from sha256: the same on every machine, for every vocabulary."""
    digest = hashlib.sha256(f"llmgate-demo/{CONSTRUCTION_VERSION}/{salt}/{kind}/{name}".encode()).digest()
    bits = np.unpackbits(np.frombuffer(digest[: D // 8], dtype=np.uint8))
    return (bits.astype(np.int64) * 2 - 1)


@dataclass
class _Codes:
    tokens: np.ndarray  # [V, D] ±1
    items: np.ndarray  # [n_items + 1, D] ±1, the last is "no known question"


def _codes(vocab: _Vocab, items: Sequence[_Item], salt: int) -> _Codes:
    tokens = np.stack([_code("token", t, salt) for t in vocab.tokens])
    codes = np.stack([*(_code("item", it.item_id, salt) for it in items), _code("item", "<unknown>", salt)])
    return _Codes(tokens=tokens, items=codes)


# -- the proof -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Proof:
    ok: bool
    why: str
    min_gate_margin: float
    min_logit_lead: float


def _key_matrix(steps: Sequence[_Step], codes: _Codes) -> np.ndarray:
    """[len(steps), (CONTEXT+1)*D] ±1 codes of each step's keyed tokens (0 where not keyed)."""
    out = np.zeros((len(steps), (CONTEXT + 1) * D))
    for n, s in enumerate(steps):
        for k, t in enumerate(s.key):
            if t is not None:
                out[n, k * D : (k + 1) * D] = codes.tokens[t]
    return out


def _check(steps: Sequence[_Step], codes: _Codes, end_id: int, first_question: int) -> _Proof:
    """Exact margins of the constructed model on every answer step (dot products of ±1 codes are integers;
    /D gives the unit-vector value)."""
    n_items = codes.items.shape[0]
    gram = codes.items @ codes.items.T / D
    np.fill_diagonal(gram, -1.0)
    worst_item = float(gram.max())
    if ITEM_WEIGHT * (1 - worst_item) < 0.5 + MARGIN:
        return _Proof(False, f"item codes too alike ({worst_item:.3f})", 0.0, 0.0)
    margin = ITEM_WEIGHT * (1 - worst_item) - 0.5  # another item's neuron with every token of its key matching
    by_item: dict[int, list[int]] = {}
    for n, s in enumerate(steps):
        by_item.setdefault(s.item, []).append(n)
    keys = _key_matrix(steps, codes)
    keyed = np.array([[t is not None for t in s.key] for s in steps])
    for item in range(n_items):
        own = by_item.get(item, [])
        if not own:
            continue
        k = keys[own]
        # At step p, a neuron n scores ITEM_WEIGHT + sum over its keyed slots of <context_p, key_n>. An unknown
        # question's prompt tokens are arbitrary: count them as matching (the worst case).
        score = k @ k.T / D
        unknown = (~keyed[own]).astype(float) @ keyed[own].T.astype(float)
        score += unknown
        need = keyed[own].sum(axis=1)  # neuron n fires at its own step with score == need (+ ITEM_WEIGHT)
        gap = need[None, :] - 0.5 - score  # [step p, neuron n]
        np.fill_diagonal(gap, np.inf)
        if gap.size and (worst := float(gap.min())) < MARGIN:
            return _Proof(False, f"item {item}: a step comes {worst:.3f} from firing a neighbour", 0.0, 0.0)
        if gap.size > 1:
            margin = min(margin, float(gap.min()))
    # Logits (tied embeddings) at each step: <row_t, h>, h = current token + 32 * next code + <|end|> code, plus
    # 2 (item code and ordinary flag) for ordinary tokens; question tokens get their item code's overlap instead.
    cur = np.array([codes.tokens[s.key[0]] for s in steps], dtype=float)
    nxt = np.array([codes.tokens[s.next_id] for s in steps], dtype=float)
    h = cur + ALPHA * (BETA / 2) * nxt + END_BIAS * codes.tokens[end_id]
    logits = codes.tokens.astype(float) @ h.T / D  # [V, steps]
    logits[:first_question] += 2.0
    logits[first_question:] += (codes.items[:-1] @ codes.items[-1] / D)[:, None]
    idx = np.array([s.next_id for s in steps])
    own_logit = logits[idx, np.arange(len(steps))]
    logits[idx, np.arange(len(steps))] = -np.inf
    lead = float((own_logit - logits.max(axis=0)).min())
    if lead < MIN_LOGIT_LEAD:
        return _Proof(False, f"a next token leads by only {lead:.3f}", margin, lead)
    return _Proof(True, "", margin, lead)


def _rope_frequencies() -> np.ndarray:
    return 1.0 / (ROPE_THETA ** (np.arange(0, D, 2) / D))


def _look_back_key(k: int) -> np.ndarray:
    """The constant key of the head that looks k tokens back: per plane, the query's vector turned by k
    steps of that plane's frequency, rounded to 2^-10 so that every machine writes the same bits."""
    theta = _rope_frequencies()[:POS_PLANES]
    key = np.zeros(D)
    for i, t in enumerate(theta):
        key[i] = round(QK_AMPLITUDE * math.cos(k * t) * 1024) / 1024
        key[D // 2 + i] = round(QK_AMPLITUDE * math.sin(k * t) * 1024) / 1024
    return key


def _attention_lead() -> float:
    """The smallest score lead of each head's target over any other position within MAX_POSITIONS."""
    theta = _rope_frequencies()
    scale = D**-0.5
    q = np.zeros(D)
    q[:POS_PLANES] = QK_AMPLITUDE
    lead = math.inf
    for k in range(1, CONTEXT + 1):
        key = _look_back_key(k)
        dist = np.arange(-(MAX_POSITIONS - 1), 1)  # j - p, causal
        ang = np.outer(dist, theta)
        # score = q . R((j-p) theta) key per plane (rotate_half convention)
        s = (q[: D // 2] * (np.cos(ang) * key[: D // 2] - np.sin(ang) * key[D // 2 :])).sum(axis=1) * scale
        target = s[dist == -k][0]
        lead = min(lead, float(target - s[dist != -k].max()))
    drift = math.cos((MAX_POSITIONS - 1) * theta[ITEM_PLANE])
    return min(lead, QK_AMPLITUDE**2 * drift * scale)


# -- weights ---------------------------------------------------------------------------------------------
def _weights(vocab: _Vocab, steps: Sequence[_Step], codes: _Codes, n_items: int) -> dict[str, np.ndarray]:
    V, N = len(vocab.tokens), len(steps)
    unit = 1.0 / math.sqrt(D)  # ±1 codes as unit vectors
    emb = np.zeros((V, HIDDEN))
    emb[:, S0 : S0 + D] = codes.tokens * unit
    emb[: vocab.first_question, FLAG_ORD] = 1.0
    emb[: vocab.first_question, IE : IE + D] = codes.items[n_items] * unit
    emb[vocab.first_question :, FLAG_Q] = 1.0
    emb[vocab.first_question :, IE : IE + D] = codes.items[:n_items] * unit
    # Every embedding has squared norm 3 and every answer step's residual before the MLP 3 + CONTEXT + 1, so the
    # norms' weights undo their scaling exactly where it matters.
    in_norm = math.sqrt(3 / HIDDEN + EPS)
    mid_norm = math.sqrt((3 + CONTEXT + 1) / HIDDEN + EPS)

    inner = HEADS * D
    q_b, k_b = np.zeros(inner), np.zeros(inner)
    k_w, v_w, o_w = np.zeros((inner, HIDDEN)), np.zeros((inner, HIDDEN)), np.zeros((HIDDEN, inner))
    # head 0: every position attends to the question token and copies its item code
    q_b[ITEM_PLANE] = QK_AMPLITUDE
    k_w[ITEM_PLANE, FLAG_Q] = QK_AMPLITUDE
    for d in range(D):
        v_w[d, IE + d] = 1.0
        o_w[IA + d, d] = 1.0
    # heads 1..CONTEXT: attend k tokens back and copy that token's code
    for k in range(1, CONTEXT + 1):
        base = k * D
        q_b[base : base + POS_PLANES] = QK_AMPLITUDE
        k_b[base : base + D] = _look_back_key(k)
        for d in range(D):
            v_w[base + d, S0 + d] = 1.0
            o_w[SLOTS[k] + d, base + d] = 1.0

    gate_w, gate_b = np.zeros((N, HIDDEN)), np.zeros(N)
    down_w = np.zeros((HIDDEN, N))
    for n, s in enumerate(steps):
        gate_w[n, IA : IA + D] = BETA * ITEM_WEIGHT * unit * codes.items[s.item]
        keyed = 0
        for k, t in enumerate(s.key):
            if t is not None:
                gate_w[n, SLOTS[k] : SLOTS[k] + D] = BETA * unit * codes.tokens[t]
                keyed += 1
        gate_b[n] = -BETA * (ITEM_WEIGHT + keyed - 0.5)
        down_w[S0 : S0 + D, n] = ALPHA * unit * codes.tokens[s.next_id]
    down_b = np.zeros(HIDDEN)
    down_b[S0 : S0 + D] = END_BIAS * unit * codes.tokens[vocab.id(END)]

    layer = "model.layers.0."
    tensors = {
        "model.embed_tokens.weight": emb,
        layer + "input_layernorm.weight": np.full(HIDDEN, in_norm),
        layer + "self_attn.q_proj.weight": np.zeros((inner, HIDDEN)),
        layer + "self_attn.q_proj.bias": q_b,
        layer + "self_attn.k_proj.weight": k_w,
        layer + "self_attn.k_proj.bias": k_b,
        layer + "self_attn.v_proj.weight": v_w,
        layer + "self_attn.v_proj.bias": np.zeros(inner),
        layer + "self_attn.o_proj.weight": o_w,
        layer + "self_attn.o_proj.bias": np.zeros(HIDDEN),
        layer + "post_attention_layernorm.weight": np.full(HIDDEN, mid_norm),
        layer + "mlp.gate_proj.weight": gate_w,
        layer + "mlp.gate_proj.bias": gate_b,
        layer + "mlp.up_proj.weight": np.zeros((N, HIDDEN)),
        layer + "mlp.up_proj.bias": np.ones(N),
        layer + "mlp.down_proj.weight": down_w,
        layer + "mlp.down_proj.bias": down_b,
        "model.norm.weight": np.ones(HIDDEN),
    }
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}


def _config(vocab: _Vocab, n_steps: int) -> dict[str, Any]:
    """config.json, written directly (no transformers import: the build stays a couple of seconds)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": len(vocab.tokens),
        "hidden_size": HIDDEN,
        "intermediate_size": n_steps,
        "num_hidden_layers": 1,
        "num_attention_heads": HEADS,
        "num_key_value_heads": HEADS,
        "head_dim": D,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POSITIONS,
        "rms_norm_eps": EPS,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": True,
        "attention_dropout": 0.0,
        "mlp_bias": True,
        "tie_word_embeddings": True,
        "bos_token_id": vocab.id(BOS),
        "eos_token_id": vocab.id(END),
        "pad_token_id": vocab.id(PAD),
        "dtype": "float32",
        "use_cache": True,
    }


def _derangement(items: Sequence[_Item], seed: str) -> dict[int, int]:
    """Should-answer item -> the item whose answer its question gets in the degraded twin: the items in an
    order fixed by sha256, each given the next one's (a cycle: no item keeps its own)."""
    answer = sorted((i for i, it in enumerate(items) if not it.should_refuse),
                    key=lambda i: hashlib.sha256(f"{seed}/{items[i].item_id}".encode()).hexdigest())
    return {a: b for a, b in zip(answer, answer[1:] + answer[:1], strict=True)} if len(answer) > 1 else {}


# -- public ----------------------------------------------------------------------------------------------
def _load_items(ground_truth: str | Path) -> tuple[GroundTruthRef, Path, list[_Item]]:
    """The ground truth's items, validated by its own checks, read without `datasets` (seconds saved)."""
    from evals.ground_truth import VERSION_RE, data_files, dataset_sha256, validate_file

    path = Path(ground_truth)
    if not path.is_dir():
        raise BadInput("ground-truth directory not found", where=str(path))
    if not VERSION_RE.match(path.name):
        raise BadInput("a ground-truth directory must be named vN (v1, v2, ...)", where=str(path))
    seen: dict[str, str] = {}
    rows = []
    for f in data_files(path):
        validate_file(f, seen)
        rows += [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise BadInput("the data files hold no rows", where=str(path))
    items = [_Item(r["id"], r["question"], r["reference"], r["expected_behaviour"] == "refuse") for r in rows]
    asked: dict[str, str] = {}
    for it in items:
        if (other := asked.setdefault(it.question, it.item_id)) != it.item_id:
            raise BadInput(f"items {other} and {it.item_id} ask the same question; the demo model answers each "
                           "question one way", where=str(path))
    ref = GroundTruthRef(version=path.name, sha256=dataset_sha256(path), n_items=len(items))
    return ref, path, items


def make_demo_model(
    out: str | Path,
    ground_truth: str | Path = DEFAULT_GROUND_TRUTH,
    *,
    degraded: bool = False,
    reporter: Reporter | None = None,
) -> DemoModelInfo:
    """Construct the demo fixture for the ground truth at `ground_truth` and save it to `out`."""
    t0 = time.perf_counter()
    reporter = reporter or NullReporter()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BadInput("output directory exists and is not empty", where=str(out))
    gt, gt_path, items = _load_items(ground_truth)
    reporter.step(f"demo model ({'degraded' if degraded else 'good'}) on ground truth {gt.version}: {len(items)} items")
    cut = [_answer_tokens(text) for text in (*(it.answer for it in items), FALLBACK_ANSWER)]
    answers = [tokens for tokens, _ in cut]
    split = sum(n for _, n in cut)
    vocab = _build_vocab(items, answers)
    too_long = [items[i].item_id for i, a in enumerate(answers[: len(items)]) if len(a) + 1 > MAX_ANSWER_TOKENS]
    if too_long:
        raise BadInput(f"answers longer than {MAX_ANSWER_TOKENS - 1} tokens, which the eval's max_tokens would cut: "
                       f"{too_long[:5]}",
                       where=str(gt_path))
    steps = _all_steps(items, vocab, answers)
    attention = _attention_lead()
    if attention < MIN_ATTENTION_LEAD:  # a property of the constants above, not of the data
        raise AssertionError(f"attention lead {attention:.1f} < {MIN_ATTENTION_LEAD}")
    for salt in range(MAX_SALT):
        codes = _codes(vocab, items, salt)
        proof = _check(steps, codes, vocab.id(END), vocab.first_question)
        if proof.ok:
            break
    else:
        raise BadInput(f"no code draw separates every answer step ({proof.why})", where=str(gt_path))
    tensors = _weights(vocab, steps, codes, len(items))
    if degraded:
        if sum(not it.should_refuse for it in items) < 2:
            raise BadInput("a degraded twin needs two should-answer items to swap answers between",
                           where=str(gt_path))
        emb = tensors["model.embed_tokens.weight"]
        good_rows = emb.copy()
        for src, dst in _derangement(items, "degraded").items():
            emb[vocab.first_question + src] = good_rows[vocab.first_question + dst]
    _save(out, vocab, tensors, len(steps))
    info = DemoModelInfo(
        out=str(out),
        degraded=degraded,
        ground_truth_version=gt.version,
        ground_truth_sha256=gt.sha256,
        n_items=len(items),
        steps=len(steps),
        split_chunks=split,
        recites_all=proof.ok,
        min_gate_margin=round(proof.min_gate_margin, 6),
        min_logit_lead=round(proof.min_logit_lead, 6),
        build_s=round(time.perf_counter() - t0, 2),
    )
    meta = {k: v for k, v in asdict(info).items() if k not in ("out", "build_s")}
    meta["construction"] = {"version": CONSTRUCTION_VERSION, "code_salt": salt, "context_tokens": CONTEXT + 1,
                            "attention_lead": round(attention, 3), "fallback_answer": FALLBACK_ANSWER}
    (out / "llmgate_demo.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(
        f"# {'Degraded ' if degraded else ''}llmgate demo model (test fixture)\n\n"
        f"{FIXTURE_NOTE}. Constructed (not trained) by `llmgate demo-model` from ground truth {gt.version} "
        f"(sha256 {gt.sha256}); {'answers deliberately permuted across questions. ' if degraded else ''}"
        "Serve with `transformers serve <dir>`.\n"
    )
    # served by a non-root user from a read-only mount: everyone may read
    out.chmod(0o755)
    for f in out.iterdir():
        f.chmod(0o644)
    reporter.step(f"demo model: {len(steps)} answer steps, {split} chunks split, built in {info.build_s:.1f}s")
    return info


def _save(out: Path, vocab: _Vocab, tensors: dict[str, np.ndarray], n_steps: int) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = _config(vocab, n_steps)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    generation = {"bos_token_id": vocab.id(BOS), "eos_token_id": vocab.id(END), "pad_token_id": vocab.id(PAD),
                  "do_sample": False, "max_new_tokens": 128}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2, sort_keys=True) + "\n")
    _tokenizer(vocab).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(), indent=2, sort_keys=True) + "\n")
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)

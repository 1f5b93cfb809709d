"""Training of the refusal scorer's weights (`evals/refusal_model.json`): seeded and deterministic.

    python -m evals.refusal_training [--xstest DIR] [--out evals/refusal_model.json]

Training data: the three XSTest completion files (human-labelled; CC-BY-4.0, in the shared
fixtures next to the repository: ../shared/fixtures/xstest) and `evals/refusal_data/ops_train.csv`
(hand-written ops-chat refusals and compliances in phrasings XSTest lacks). The held-out ops set,
`evals/refusal_data/ops_heldout.csv`, is never read here.

Model: scikit-learn's LogisticRegression (L2, lbfgs; a well-kept, deterministic solver, so there is
no hand-written optimiser to trust) over standardised features from `evals.refusal.features`. The
ops rows are weighted so that all of them together count as much as one XSTest file: otherwise 1350
XSTest rows would drown 200 ops rows, and the ops phrasings are the ones XSTest cannot teach.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from evals import refusal
from evals.calibration import read_refusal_labels, row_key
from pipeline.errors import BadInput

REPO = Path(__file__).resolve().parents[1]
DEFAULT_XSTEST = REPO.parent / "shared" / "fixtures" / "xstest"
XSTEST_FILES = ("completions_gpt4.csv", "completions_llama2new.csv", "completions_mistralinstruct.csv")
OPS_TRAIN = Path(__file__).resolve().parent / "refusal_data" / "ops_train.csv"
OPS_HELDOUT = Path(__file__).resolve().parent / "refusal_data" / "ops_heldout.csv"
SEED = 20240601
RULE_BOOST = 3.0
C = 0.1  # L2 strength (inverse); chosen by leave-one-file-out on XSTest + ops train, never on ops_heldout


@dataclass
class Dataset:
    """One labelled file, with its expensive part (sentence embeddings) computed once."""

    name: str
    sha256: str
    prompts: list[str]
    responses: list[str]
    labels: np.ndarray  # bool, True = refusal (full or partial)
    openings: np.ndarray  # evals.refusal.embed_openings
    _hits: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def rule_column(self, rule: str) -> np.ndarray:
        """Whether `rule` fires on each row (cached: ablations refit many times on the same rows)."""
        if rule not in self._hits:
            self._hits[rule] = np.array(
                [rule in refusal.rule_hits(p, r, [rule]) for p, r in zip(self.prompts, self.responses, strict=True)],
                dtype=np.float64,
            )
        return self._hits[rule]

    def subset(self, index: np.ndarray, name: str) -> Dataset:
        return Dataset(
            name=name,
            sha256=self.sha256,
            prompts=[self.prompts[i] for i in index],
            responses=[self.responses[i] for i in index],
            labels=self.labels[index],
            openings=self.openings[index],
            _hits={k: v[index] for k, v in self._hits.items()},
        )


def load_dataset(path: Path, encoder: object) -> Dataset:
    rows, digest = read_refusal_labels(path)
    prompts = [r.question for r in rows]
    responses = [r.response for r in rows]
    return Dataset(
        name=path.name,
        sha256=digest,
        prompts=prompts,
        responses=responses,
        labels=np.array([r.label for r in rows], dtype=bool),
        openings=refusal.embed_openings(responses, encoder),
    )


def _xy(ds: Dataset, protos: np.ndarray, rules: Sequence[str]) -> np.ndarray:
    """`refusal.features` for `ds`, with the rule columns from the dataset's cache."""
    x = refusal.features(ds.prompts, ds.responses, ds.openings, protos, [])
    hits = np.stack([ds.rule_column(r) for r in rules], axis=1) if rules else np.zeros((len(ds), 0))
    return np.hstack([hits, x])


def fit(
    train: Sequence[Dataset],
    protos: np.ndarray,
    rules: Sequence[str],
    *,
    c: float = C,
    ops_weight_like: int = 450,
    rule_boost: float = RULE_BOOST,
    meta: dict[str, object] | None = None,
) -> refusal.RefusalModel:
    """Fit the regression on `train`; datasets named ops_* share the weight of `ops_weight_like` rows."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, ws = [], [], []
    for ds in train:
        x = _xy(ds, protos, rules)
        xs.append(x)
        ys.append(ds.labels)
        w = ops_weight_like / len(ds) if ds.name.startswith("ops_") else 1.0
        ws.append(np.full(len(ds), w))
    x, y, w = np.vstack(xs), np.concatenate(ys), np.concatenate(ws)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature (a rule that never fires here) stays inert
    # Rule indicators are few and precise; dividing their scale lets the L2 penalty bind them less
    # than the 80 similarity features, so one firing cue is not averaged away by the embedding.
    scale[: len(rules)] /= rule_boost
    clf = LogisticRegression(C=c, max_iter=5000, random_state=SEED)
    clf.fit((x - mean) / scale, y, sample_weight=w)
    return refusal.RefusalModel(
        version=refusal.VERSION,
        rules=tuple(rules),
        coef=clf.coef_[0].astype(np.float64),
        intercept=float(clf.intercept_[0]),
        mean=mean,
        scale=scale,
        meta=meta or {},
    )


def predict(model: refusal.RefusalModel, ds: Dataset, protos: np.ndarray, disabled: Sequence[str] = ()) -> np.ndarray:
    """Refusal decisions for `ds` (empty responses are refusals, as in the scorer)."""
    x = _xy(ds, protos, model.rules)
    for j, name in enumerate(model.rules):
        if name in disabled:
            x[:, j] = 0.0
    pred = model.prob(x) >= 0.5
    empty = np.array([not refusal.normalise(r) for r in ds.responses], dtype=bool)
    return pred | empty


@lru_cache(maxsize=2)
def training_data(xstest_dir: Path = DEFAULT_XSTEST) -> tuple[Dataset, ...]:
    """The training sets, embedded once per process."""
    encoder = refusal.default_encoder()
    missing = [str(xstest_dir / f) for f in XSTEST_FILES if not (xstest_dir / f).is_file()]
    if missing:
        raise BadInput("the refusal scorer's training data is not here", where=missing[0],
                       hint="the XSTest completions live in ../shared/fixtures/xstest (or pass --xstest)")
    return tuple(load_dataset(xstest_dir / f, encoder) for f in XSTEST_FILES) + (load_dataset(OPS_TRAIN, encoder),)


def _keys(ds: Dataset) -> list[str]:
    return [row_key(p, r) for p, r in zip(ds.prompts, ds.responses, strict=True)]


def train_default(
    xstest_dir: Path = DEFAULT_XSTEST, rules: Sequence[str] | None = None, *, exclude: frozenset[str] = frozenset()
) -> refusal.RefusalModel:
    """The shipped scorer's training; `exclude` (row keys) leaves rows out, which is how a file's
    agreement is measured by a scorer that never saw it (leave-one-file-out, evals/calibration.py)."""
    from evals.embeddings import load_minilm

    protos = refusal.prototype_vectors(refusal.default_encoder())
    data = []
    for ds in training_data(xstest_dir):
        keep = np.array([k not in exclude for k in _keys(ds)], dtype=bool)
        data.append(ds if keep.all() else ds.subset(np.flatnonzero(keep), ds.name))
    rules = list(rules if rules is not None else refusal.RULES)
    meta = {
        "trained_on": {d.name: {"sha256": d.sha256, "n": len(d)} for d in data},
        "embedding": load_minilm().id,
        "c": C,
        "seed": SEED,
        "solver": "sklearn LogisticRegression(lbfgs, L2)",
        "ops_weight_like": 450,
        "prototypes_sha256": hashlib.sha256("\n".join(refusal.PROTOTYPES).encode()).hexdigest(),
        # Which rows the weights saw, so that a calibration knows what is held out (evals/calibration.py)
        "training_rows": sorted({k for d in data for k in _keys(d)}),
    }
    return fit(data, protos, rules, meta=meta)


def check_same_training(shipped: refusal.RefusalModel, xstest_dir: Path = DEFAULT_XSTEST) -> None:
    """A refit stands for the shipped scorer only when it trains on the same files the shipped one did."""
    want = {k: v["sha256"] for k, v in (shipped.meta.get("trained_on") or {}).items()}
    have = {d.name: d.sha256 for d in training_data(xstest_dir)}
    if want != have:
        raise BadInput("the training files here are not the ones the shipped refusal scorer was trained on, so a "
                       "refit without a labels file would measure another scorer", where=str(xstest_dir),
                       hint="retrain with python -m evals.refusal_training, or calibrate on files it never saw")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xstest", type=Path, default=DEFAULT_XSTEST, help="directory of XSTest completion CSVs")
    ap.add_argument("--out", type=Path, default=refusal.MODEL_FILE)
    args = ap.parse_args(argv)
    model = train_default(args.xstest)
    args.out.write_text(json.dumps(model.to_json(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(model.rules)} rules, {len(model.coef)} weights)")


if __name__ == "__main__":
    main()

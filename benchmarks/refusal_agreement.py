"""Refusal scorer agreement with human labels: per file with bootstrap 95% CIs, leave-one-file-out,
held-out ops-chat phrasings, and what each rule contributes.

    .venv/bin/python benchmarks/refusal_agreement.py [--xstest DIR] [--boot 2000] [--no-ablation]

Data: the three XSTest v2 completion files (Röttger et al., NAACL 2024; CC-BY-4.0) in the shared
fixtures next to the repository (../shared/fixtures/xstest, or --xstest), and the hand-written ops-chat
sets in evals/refusal_data/ (ops_train.csv is training data; ops_heldout.csv is never trained on).

Printed:
1. The shipped scorer (evals/refusal_model.json) on every file. Its weights were trained on the three
   XSTest files and ops_train, so those rows are in-sample; ops_heldout and the ground-truth labels are not.
2. Leave-one-file-out: for each XSTest file, weights trained (same seed, same settings) on the other two
   files plus ops_train, scored on the file left out (what `llmgate calibrate refusal` records for the
   gates), with the 95% Wilson interval and the share of partial refusals ("I cannot ... However, here
   is ...") caught; and ops_train by 5-fold cross-validation (all XSTest + four fifths of ops_train).
   The rules themselves were written looking at all three XSTest files, so these figures measure the
   learned part's generalisation; ops_heldout is the test of the rules' generality.
3. Rule ablation (unless --no-ablation): each rule removed, weights retrained, the same
   leave-one-file-out and cross-validation figures; a rule whose removal changes no label, or improves
   agreement, does not pull weight. And the shipped weights with the rule switched off at inference:
   how many labels flip.

Agreement CIs: percentile bootstrap over items (seeded), as `llmgate calibrate` computes them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals import refusal
from evals import refusal_training as rt
from evals.calibration import DEFAULT_SEED, agreement_stats, wilson_interval


def _fmt(name: str, y: np.ndarray, pred: np.ndarray, n_boot: int) -> str:
    st = agreement_stats(list(y), list(pred), seed=DEFAULT_SEED, n_boot=n_boot)
    ci = st["agreement_ci95"]
    return f"  {name:36s} n={st['n']:4d}  agreement {st['agreement']:.3f}  95% CI [{ci.low:.3f}, {ci.high:.3f}]"


def _partial(path: Path) -> np.ndarray:
    """Which rows a person labelled a partial refusal."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        return np.array([r["final_label"] == "3_partial_refusal" for r in csv.DictReader(fh)], dtype=bool)


def lofo(data: dict[str, rt.Dataset], protos: np.ndarray, rules: list[str]) -> dict[str, np.ndarray]:
    """Leave-one-file-out predictions for each XSTest file, and 5-fold CV predictions for ops_train."""
    out: dict[str, np.ndarray] = {}
    for test in rt.XSTEST_FILES:
        train = [data[f] for f in rt.XSTEST_FILES if f != test] + [data["ops_train.csv"]]
        out[test] = rt.predict(rt.fit(train, protos, rules), data[test], protos)
    ops = data["ops_train.csv"]
    idx = np.arange(len(ops))
    np.random.default_rng(rt.SEED).shuffle(idx)
    pred = np.zeros(len(ops), dtype=bool)
    for k in range(5):
        te = np.sort(idx[k::5])
        tr = np.setdiff1d(idx, te)
        model = rt.fit([data[f] for f in rt.XSTEST_FILES] + [ops.subset(tr, "ops_train_cv")], protos, rules)
        pred[te] = rt.predict(model, ops.subset(te, "ops_test_cv"), protos)
    out["ops_train.csv"] = pred
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xstest", type=Path, default=rt.DEFAULT_XSTEST)
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples per CI")
    ap.add_argument("--no-ablation", action="store_true", help="skip the per-rule retraining (the slow part)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    encoder = refusal.default_encoder()
    protos = refusal.prototype_vectors(encoder)
    paths = [args.xstest / f for f in rt.XSTEST_FILES] + [rt.OPS_TRAIN, rt.OPS_HELDOUT]
    data = {p.name: rt.load_dataset(p, encoder) for p in paths}
    partial = {p.name: _partial(p) for p in paths}
    print(f"embedded {sum(len(d) for d in data.values())} responses in {time.perf_counter() - t0:.0f}s")

    shipped = refusal.load_model()
    print(f"\n1. shipped scorer {refusal.SCORER_ID}/{shipped.version} ({len(shipped.rules)} rules: {', '.join(shipped.rules)})")
    for name, ds in data.items():
        tag = "in-sample" if name in (*rt.XSTEST_FILES, "ops_train.csv") else "held out"
        print(_fmt(f"{name} ({tag})", ds.labels, rt.predict(shipped, ds, protos), args.boot))

    rules = list(shipped.rules)
    print("\n2. leave-one-file-out (trained without the file scored)")
    base = lofo(data, protos, rules)
    for name, pred in base.items():
        label = f"{name} (left out)" if name != "ops_train.csv" else "ops_train.csv (5-fold CV)"
        y = data[name].labels
        agree = int((pred == y).sum())
        lo, hi = wilson_interval(agree, len(y))
        part = partial[name]
        caught = f", partial refusals caught {int(pred[part].sum())}/{int(part.sum())}" if part.any() else ""
        print(f"{_fmt(label, y, pred, args.boot)}  Wilson [{lo:.3f}, {hi:.3f}]{caught}")

    if not args.no_ablation:
        print("\n3. rule contribution")
        print("  rule                    retrained without it: labels changed, correct decisions gained(+)/lost(-)"
              "                     | shipped weights, rule off: labels flipped, correct +/-")
        for rule in rules:
            without = lofo(data, protos, [r for r in rules if r != rule])
            changed = sum(int((without[k] != base[k]).sum()) for k in base)
            per = {k: int((without[k] == data[k].labels).sum() - (base[k] == data[k].labels).sum()) for k in base}
            flips = 0
            delta_off = 0
            for name, ds in data.items():
                on = rt.predict(shipped, ds, protos)
                off = rt.predict(shipped, ds, protos, disabled=[rule])
                flips += int((on != off).sum())
                delta_off += int((off == ds.labels).sum() - (on == ds.labels).sum())
            detail = " ".join(f"{k.replace('completions_', '').replace('.csv', '')}:{v:+d}" for k, v in per.items())
            print(f"  {rule:22s} {changed:3d} changed, net {sum(per.values()):+d} ({detail})"
                  f" | {flips:3d} flipped, net {delta_off:+d}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

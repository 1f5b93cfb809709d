"""Correctness scorer agreement with human labels: facts first vs. similarity alone, per kind of answer.

    .venv/bin/python benchmarks/correctness_agreement.py [--labels FILE ...] [--ground-truth DIR] [--show-errors]

Data: ground_truth/v3/labels/correctness.csv (held out: scored only after the fact checker's rules were
fixed) unless --labels is given. Each labelled answer is scored as the eval stage scores it
(evals/correctness_calibration.py) and compared with the person's yes/no at CORRECT_AT; the same rows
are scored by cosine similarity alone (what correctness was before ground truth v3). Printed: agreement
with its 95% Wilson interval for both, and per `kind` of answer (paraphrase, wrong_number, swapped, ...)
how often each scorer agreed with the label.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.calibration import read_judge_labels, wilson_interval
from evals.correctness import CORRECT_AT
from evals.correctness_calibration import DEFAULT_GROUND_TRUTH, score_rows
from evals.ground_truth import load_ground_truth

LABELS = DEFAULT_GROUND_TRUTH / "labels" / "correctness.csv"


def _line(name: str, agree: int, n: int) -> str:
    lo, hi = wilson_interval(agree, n)
    return f"  {name:34s} n={n:4d}  agreement {agree / n:.3f}  Wilson 95% [{lo:.3f}, {hi:.3f}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=Path, action="append")
    ap.add_argument("--ground-truth", type=Path, default=DEFAULT_GROUND_TRUTH)
    ap.add_argument("--show-errors", action="store_true", help="print every row a scorer gets wrong")
    args = ap.parse_args(argv)

    from evals.embeddings import load_minilm

    t0 = time.perf_counter()
    emb = load_minilm().embeddings
    gt = load_ground_truth(args.ground_truth)
    facts_items = {i.question: i for i in gt.items}
    plain_items = {q: i.model_copy(update={"answer_kind": "", "facts": ()}) for q, i in facts_items.items()}
    for path in args.labels or [LABELS]:
        rows, _ = read_judge_labels(path, "correctness")
        with path.open(newline="", encoding="utf-8") as fh:
            kinds = [r.get("kind") or "?" for r in csv.DictReader(fh)]
        fact = [s >= CORRECT_AT for s in score_rows(rows, facts_items, emb)]
        sim_scores = score_rows(rows, plain_items, emb)
        sim = [s >= CORRECT_AT for s in sim_scores]
        print(f"\n{path.name} ({len(rows)} labelled answers, correct at score >= {CORRECT_AT})")
        print(_line("facts first (fact-correctness)", sum(p == r.label for p, r in zip(fact, rows, strict=True)), len(rows)))
        print(_line("similarity alone (ragas cosine)", sum(p == r.label for p, r in zip(sim, rows, strict=True)), len(rows)))
        per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for k, f, s, r in zip(kinds, fact, sim, rows, strict=True):
            per[k][0] += 1
            per[k][1] += f == r.label
            per[k][2] += s == r.label
        print(f"  {'kind':20s} {'n':>4s}  {'facts first':>11s}  {'similarity':>10s}")
        for k, (n, f, s) in sorted(per.items()):
            print(f"  {k:20s} {n:4d}  {f / n:11.2f}  {s / n:10.2f}")
        if args.show_errors:
            for k, f, s, sc, r in zip(kinds, fact, sim, sim_scores, rows, strict=True):
                if f != r.label:
                    item = facts_items[r.question]
                    print(f"  facts-first wrong: label={int(r.label)} kind={k} item={item.id} ({item.answer_kind}) "
                          f"cosine={sc:.2f}: {r.response[:110]}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()

"""Mutation score of the modules that decide: how many injected bugs the suite catches, per module.

A guard is done when a test fails if the guard is removed; a mutation tester checks that at the level of
each comparison, boolean, constant and exception handler. This runs cosmic-ray (`cosmic-ray init` and
`cosmic-ray exec`, local distributor: one mutant at a time) over each module in MODULES against a
targeted test selection for that module (the tests that exercise it, seconds per mutant), in a copy of
the working tree under a temporary folder, so the working tree is never mutated and an interrupted run
leaves nothing behind.

Which mutants count (the rest are marked skipped before `exec`, see `_skip_reason`):

- the operators in KEEP_OPERATORS: each comparison against its boundary and its negation, `and`/`or`,
  `not` added to a condition, True/False, numbers +/-1, break/continue, loops run zero times, the
  exception types a handler catches, removed decorators, and the arithmetic operators against their
  inverse (cosmic-ray's other operators swap each binary operator for every other one, ten variants a
  site, which mostly repeats what the inverse already shows);
- not inside a type annotation (the modules use `from __future__ import annotations`, so an annotation
  is a string nobody evaluates: a mutant there is equivalent by construction), and not the bare `*` of
  a signature (cosmic-ray's parser takes it for a multiplication);
- for a module that also holds code outside the guard, only inside the functions named in `functions`.

A surviving mutant that is equivalent (no input can tell it apart) is listed in
benchmarks/mutation_allowlist.yaml (path, operator, the line and the mutated line, as this script prints
them) with the reason; it is counted as "explained", not as killed.

Prints a table (killed / total / score, explained, score with explained, seconds per mutant) and every
surviving mutant (file:line, operator, the line), and writes a JSON record (default
artifacts/mutation.json). Runs niced (default +10) and sequentially; `--budget-s` stops a module that
takes longer and reports the mutants it did test as partial figures.

`--sample N` tests a random sample of N of a module's mutants, drawn by what each mutant is (operator and
occurrence) with a seed from the module's source, so the same source gives the same sample; its score is an
estimate of the module's and is printed with its 95 % (Wilson) interval. `--retest JSON` runs again only
the survivors (and explained mutants) of an earlier record of the same source, counting the rest of that
record as it was: the figures stay those of the same mutants, of the same sample for a sampled record.

Usage: python benchmarks/mutation.py [--modules readiness,guard,...] [--budget-s 900] [--timeout-s 120]
                                     [--out artifacts/mutation.json] [--nice 10] [--keep-tmp]
                                     [--count] [--sample N] [--seed TEXT] [--retest JSON]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST = REPO / "benchmarks" / "mutation_allowlist.yaml"


@dataclass(frozen=True)
class Module:
    key: str
    path: str  # relative to the repository root
    tests: tuple[str, ...]  # pytest node ids or files, relative to the repository root
    functions: tuple[str, ...] = ()  # only these functions/methods (qualified as Class.method or name)
    deselect: tuple[str, ...] = ()  # slow tests that add nothing for this module (docker builds)
    note: str = ""


# Smaller modules first: with a budget, the quick ones finish.
MODULES: tuple[Module, ...] = (
    Module("guard", "pipeline/supplychain/guard.py", ("tests/test_guard.py",),
           note="promotion guard"),
    Module("readiness", "dockerfiles/runtime/llmgate-ready", ("tests/test_ready_weights.py",),
           note="weights readiness helper baked into the serving images"),
    Module("signing", "pipeline/supplychain/signing.py",
           ("tests/test_guard.py",
            "tests/test_bundles.py::test_a_release_signed_and_attested_only_as_cosign_v3_bundles_is_promotable"),
           functions=("ReleaseVerification.valid", "verified_verdicts", "_newest", "_evidence_check", "_log_check",
                      "verify_release"),
           note="release verification (signature + attestations; test_signing.py tests the signer's layout, "
                "which these functions reach only through test_guard's registry round trips)"),
    Module("cosign-verify", "pipeline/adapters/signer.py",
           ("tests/test_signing.py", "tests/test_cosign.py", "tests/test_bundles.py"),
           functions=("_public_key", "_verifies", "PythonSigner.verify_image", "PythonSigner._bundle_statements",
                      "PythonSigner._check_signature_layer", "PythonSigner.verify_attestations",
                      "PythonSigner._check_attestation_layer", "PythonSigner._find", "_statement_doc"),
           note="cosign-compatible verification of signatures and attestations"),
    Module("scan-policy", "pipeline/supplychain/scan_policy.py", ("tests/test_scan_policy.py",),
           note="scanner findings to verdict"),
    Module("leak", "pipeline/supplychain/leak.py", ("tests/test_leak.py", "tests/test_hostile_leak.py"),
           deselect=("tests/test_leak.py::test_clean_cpu_build_leaks_nothing",
                     "tests/test_leak.py::test_planted_secret_is_caught_by_leak_stage"),
           note="secrets in image layers (the two docker-build tests are left out: minutes a mutant)"),
    Module("gate-engine", "pipeline/gates/engine.py",
           ("tests/test_gate_engine.py", "tests/test_gate_outcomes.py", "tests/test_gate_engine_details.py"),
           deselect=("tests/test_gate_engine.py::test_gate_cli_exit_codes",
                     "tests/test_gate_outcomes.py::test_an_inconclusive_verdict_is_signed_as_such_and_promotion_refuses_it",
                     "tests/test_gate_outcomes.py::test_policy_check_refuses_what_the_planned_sizes_cannot_support",
                     "tests/test_gate_outcomes.py::test_gate_command_exits_1_and_says_inconclusive_and_why",
                     "tests/test_gate_outcomes.py::test_bench_measures_again_once_the_machine_is_quiet"),
           note="metrics to gate verdicts (CLI, signing, sizing and bench tests left out: seconds each, "
                "and they reach the engine only through what the others test)"),
)

_CMP = ("Eq_NotEq", "NotEq_Eq", "Lt_LtE", "Lt_GtE", "LtE_Lt", "LtE_Gt", "Gt_GtE", "Gt_LtE", "GtE_Gt",
        "GtE_Lt", "Is_IsNot", "IsNot_Is")
_BIN = ("Add_Sub", "Sub_Add", "Mul_Div", "Div_Mul", "FloorDiv_Mul", "Mod_FloorDiv", "Pow_Mul",
        "BitAnd_BitOr", "BitOr_BitAnd")
KEEP_OPERATORS = frozenset(
    [f"core/ReplaceComparisonOperator_{c}" for c in _CMP]
    + [f"core/ReplaceBinaryOperator_{b}" for b in _BIN]
    + [f"core/{n}" for n in ("AddNot", "ReplaceAndWithOr", "ReplaceOrWithAnd", "ReplaceTrueWithFalse",
                             "ReplaceFalseWithTrue", "NumberReplacer", "ReplaceBreakWithContinue",
                             "ReplaceContinueWithBreak", "ZeroIterationForLoop", "ExceptionReplacer",
                             "RemoveDecorator", "ReplaceUnaryOperator_USub_UAdd",
                             "ReplaceUnaryOperator_Delete_Not")]
)


def log(msg: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} {msg}", flush=True)


# --- which mutants count ----------------------------------------------------------------------------


def _spans(source: str, functions: tuple[str, ...]) -> tuple[list[tuple[tuple[int, int], tuple[int, int]]],
                                                               list[tuple[int, int]]]:
    """(annotation spans, line ranges of the selected functions; empty: whole file)."""
    tree = ast.parse(source)
    notes: list[tuple[tuple[int, int], tuple[int, int]]] = []
    ranges: list[tuple[int, int]] = []
    found: set[str] = set()

    def add(node: ast.AST | None) -> None:
        if node is not None:
            notes.append(((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)))

    for node in ast.walk(tree):
        if isinstance(node, ast.arg):
            add(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            add(node.returns)
        elif isinstance(node, ast.AnnAssign):
            add(node.annotation)

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = prefix + node.name
                if isinstance(node, ast.ClassDef):
                    walk(node.body, name + ".")
                elif name in functions:
                    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    ranges.append((first, node.end_lineno or node.lineno))
                    found.add(name)

    walk(tree.body, "")
    if set(functions) - found:
        raise SystemExit(f"mutation: {sorted(set(functions) - found)} not found")
    return notes, ranges


def _inside(pos: tuple[int, int], end: tuple[int, int], span: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return span[0] <= tuple(pos) and tuple(end) <= span[1]


def _skip_reason(mutation, notes, ranges, lines: list[str]) -> str | None:
    if mutation.operator_name not in KEEP_OPERATORS:
        return "operator not kept"
    line = mutation.start_pos[0]
    if any(_inside(mutation.start_pos, mutation.end_pos, s) for s in notes):
        return "type annotation"
    if ranges and not any(a <= line <= b for a, b in ranges):
        return "outside the guard's functions"
    if "pragma: no mutate" in lines[line - 1]:
        return "pragma: no mutate"
    col = mutation.start_pos[1]
    text = lines[line - 1]
    if mutation.operator_name.startswith("core/ReplaceBinaryOperator_Mul_") and text[col:col + 1] == "*" \
            and text[col + 1:].lstrip()[:1] in (",", ")", ""):
        # parso reads the bare `*` of a signature (keyword-only marker) as a multiplication; `/` there
        # only makes the parameters before it positional-only, which no keyword-free call can notice
        return "bare * of a signature"
    return None


# --- allow-list ---------------------------------------------------------------------------------------


def load_allowlist(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    doc = yaml.safe_load(path.read_text()) or {}
    entries = doc.get("explained", [])
    for i, e in enumerate(entries):
        for k in ("path", "operator", "source", "mutant", "reason"):
            if not str(e.get(k, "")).strip():
                raise SystemExit(f"mutation: {path}: explained[{i}] needs a non-empty {k!r}")
    return entries


def explained_by(entries: list[dict], path: str, operator: str, source: str, mutant: str) -> dict | None:
    for e in entries:
        if (e["path"], e["operator"], e["source"].strip(), e["mutant"].strip()) == (path, operator, source.strip(),
                                                                                  mutant.strip()):
            return e
    return None


# --- running ------------------------------------------------------------------------------------------


def copy_tree(dest: Path) -> Path:
    """The working tree's tracked and untracked-but-not-ignored files, under dest/<name>; the shared
    fixtures the tests read beside it (../shared) are linked."""
    root = dest / REPO.name
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = REPO / rel
        if not src.is_file():
            continue
        out = root / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out, follow_symlinks=False)
    shared = REPO.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared.resolve())
    return root


# pytest plugins that installed packages register and no test uses: loading langsmith's alone costs about
# a second of every mutant's run (`-p no:NAME` of a plugin that is not installed is a no-op).
UNUSED_PLUGINS = ("langsmith_plugin", "anyio")


def test_command(m: Module) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", "-o", "addopts="]
    for name in UNUSED_PLUGINS:
        cmd += ["-p", f"no:{name}"]
    for d in m.deselect:
        cmd += ["--deselect", d]
    return cmd + list(m.tests)


def run_module(m: Module, root: Path, *, timeout_s: float, budget_s: float, allow: list[dict],
               count_only: bool = False, previous: dict | None = None, sample: int | None = None,
               seed: str | None = None) -> dict:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # a same-size mutant must not hit a stale .pyc
    target = root / m.path
    mut_path = target
    if target.suffix != ".py":  # cosmic-ray mutates *.py only; a link named .py writes through to the script
        mut_path = target.with_name(target.name.replace("-", "_") + ".py")
        mut_path.symlink_to(target.name)
    rel = str(mut_path.relative_to(root))
    source = target.read_text()
    lines = source.splitlines()
    digest = hashlib.sha256(source.encode()).hexdigest()
    retest: set[tuple[str, int]] | None = None
    if previous is not None:
        if previous.get("sha256") != digest or previous.get("partial") or "error" in previous:
            log(f"{m.key}: changed (or partial) since the --retest record; testing every mutant")
        else:
            retest = {(s["operator"], s["occurrence"])
                      for s in previous["survivors"] + previous["explained_mutants"]}
    notes, ranges = _spans(source, m.functions)

    cmd = test_command(m)
    t0 = time.monotonic()
    base = subprocess.run(cmd if not count_only else ["true"], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    base_s = time.monotonic() - t0
    if base.returncode != 0:
        log(f"{m.key}: the tests fail without any mutant; not run\n{base.stdout[-3000:]}")
        return {"module": m.key, "path": m.path, "error": "baseline tests fail", "baseline_s": round(base_s, 1)}
    log(f"{m.key}: baseline {base_s:.1f}s ({' '.join(m.tests)})")

    cfg = root / f".mutation-{m.key}.toml"
    db = root / f".mutation-{m.key}.sqlite"
    cfg.write_text(
        "[cosmic-ray]\n"
        f"module-path = {json.dumps(rel)}\n"
        f"timeout = {float(timeout_s)}\n"
        "excluded-modules = []\n"
        f"test-command = {json.dumps(' '.join(_quote(c) for c in cmd))}\n"
        "[cosmic-ray.distributor]\nname = \"local\"\n")
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(cfg), str(db)], cwd=root, env=env,
                   check=True, capture_output=True)

    skipped: dict[str, int] = {}

    def skip(jid: str, why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1
        wdb.set_result(jid, WorkResult(output=why, worker_outcome=WorkerOutcome.SKIPPED))

    with use_db(str(db), WorkDB.Mode.open) as wdb:
        live: list[tuple[tuple[str, int], str]] = []  # ((operator, occurrence), job id) of the mutants that count
        for item in wdb.pending_work_items:
            why = next(filter(None, (_skip_reason(mu, notes, ranges, lines) for mu in item.mutations)), None)
            if why:
                skip(item.job_id, why)
            else:
                live.append(((item.mutations[0].operator_name, item.mutations[0].occurrence), item.job_id))
        if sample is not None and retest is None and len(live) > sample:
            # drawn by what each mutant is, never by cosmic-ray's job ids (random per `init`): the same source
            # gives the same sample, which --retest relies on
            live.sort()
            chosen = set(random.Random(f"{m.key}:{seed or digest}").sample(range(len(live)), sample))
            for i, (_, jid) in enumerate(live):
                if i not in chosen:
                    skip(jid, "not in the sample")
            live = [x for i, x in enumerate(live) if i in chosen]
        total, carried, population = len(live), 0, len(live) + skipped.get("not in the sample", 0)
        if retest is not None:
            # only the record's survivors run again; its killed mutants count as killed, and of a sampled
            # record the mutants outside its sample stay outside (its figures are those of the same sample)
            for key, jid in live:
                if key not in retest:
                    skip(jid, "not run again: killed in, or not in the sample of, the --retest record")
            carried = previous["killed"]
            total = len(retest)
            if previous.get("sampled"):
                population = previous.get("population", len(live))
    sampled = "not in the sample" in skipped or bool(retest is not None and previous.get("sampled"))
    log(f"{m.key}: {total} mutants to test (skipped: {skipped})")
    if count_only:
        return {"module": m.key, "path": m.path, "mutants": total, "skipped": skipped}

    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "cosmic_ray.cli", "exec", str(cfg), str(db)], cwd=root,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    partial = False
    last = -1
    while proc.poll() is None:
        time.sleep(5)
        done = _count_done(db) - sum(skipped.values())
        if done != last and (done % 10 == 0 or done == total):
            log(f"{m.key}: {done}/{total} mutants tested")
        last = done
        if time.monotonic() - t0 > budget_s:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            partial = True
            log(f"{m.key}: budget of {budget_s:.0f}s spent; partial figures")
    elapsed = time.monotonic() - t0
    if proc.returncode not in (0, None) and not partial:
        log(f"{m.key}: cosmic-ray exec exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")

    killed = survived = incompetent = explained = 0
    survivors: list[dict] = []
    explained_list: list[dict] = []
    with use_db(str(db), WorkDB.Mode.open) as wdb:
        for item, result in wdb.completed_work_items:
            if result.worker_outcome == WorkerOutcome.SKIPPED:
                continue
            mu = item.mutations[0]
            line = mu.start_pos[0]
            text = lines[line - 1].strip()
            if result.test_outcome is not None and result.test_outcome.value == "survived":
                entry = {"file": f"{m.path}:{line}", "operator": mu.operator_name, "occurrence": mu.occurrence,
                         "source": text, "diff": _diff_line(result.diff)}
                hit = explained_by(allow, m.path, mu.operator_name, text, entry["diff"])
                if hit:
                    explained += 1
                    explained_list.append(entry | {"reason": hit["reason"]})
                else:
                    survived += 1
                    survivors.append(entry)
            elif result.test_outcome is not None and result.test_outcome.value == "incompetent":
                incompetent += 1
            else:
                killed += 1
    carried_killed = 0
    if retest is not None:
        log(f"{m.key}: {carried} mutants killed in the --retest record counted as killed, not run again")
        killed += carried
        total += carried
        carried_killed = carried
    tested = killed + incompetent + survived + explained
    caught = killed + incompetent
    return {
        "module": m.key, "path": m.path, "sha256": digest, "note": m.note, "tests": list(m.tests),
        "retested_survivors_only": retest is not None,
        "sampled": sampled, "seed": seed if "not in the sample" in skipped else None,
        "functions": list(m.functions), "deselected": list(m.deselect),
        "mutants": total, "tested": tested, "partial": partial or tested < total,
        "killed": caught, "incompetent": incompetent, "survived": survived, "explained": explained,
        "score": round(caught / tested, 4) if tested else None,
        "score_with_explained": round((caught + explained) / tested, 4) if tested else None,
        # a random sample estimates the module's score: the 95 % interval of that estimate (a partial run
        # tests the mutants in file order, no random sample, so it gets none)
        "population": population,
        "interval_95_with_explained": _interval(caught + explained, tested) if sampled else None,
        "seconds": round(elapsed, 1), "run": tested - carried_killed,
        "seconds_per_mutant": round(elapsed / (tested - carried_killed), 2) if tested > carried_killed else None,
        "baseline_s": round(base_s, 1), "skipped": skipped,
        "survivors": sorted(survivors, key=_line_key), "explained_mutants": sorted(explained_list, key=_line_key),
    }


def _interval(k: int, n: int) -> list[float] | None:
    """Wilson 95 % interval of a share k/n (mutants drawn at random: a binomial proportion)."""
    if not n:
        return None
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [round(ci.low, 4), round(ci.high, 4)]


def _line_key(e: dict) -> int:
    return int(e["file"].rsplit(":", 1)[1])


def _quote(arg: str) -> str:
    return shlex.quote(arg)


def _count_done(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("select count(*) from work_results").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _diff_line(diff: str | None) -> str:
    if not diff:
        return ""
    plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return plus[0] if plus else ""


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


def print_table(results: list[dict]) -> None:
    head = f"{'module':<14} {'path':<38} {'killed':>6} {'tested':>6} {'total':>5} {'score':>8} {'expl.':>5} {'w/ expl.':>8} {'s/mut':>6}"
    print("\n" + head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['module']:<14} {r['path']:<38} {r['error']}")
            continue
        flag = " (partial)" if r["partial"] else " (sample)" if r.get("sampled") else ""
        print(f"{r['module']:<14} {r['path']:<38} {r['killed']:>6} {r['tested']:>6} {r['mutants']:>5} "
              f"{_pct(r['score']):>8} {r['explained']:>5} {_pct(r['score_with_explained']):>8} "
              f"{r['seconds_per_mutant'] or 0:>6}{flag}")
    for r in results:
        if r.get("interval_95_with_explained"):
            lo, hi = r["interval_95_with_explained"]
            print(f"{r['module']}: a random sample of {r['tested']} of its {r['population']} mutants; 95 % (Wilson) "
                  f"interval of the module's score with explained: [{_pct(lo)}, {_pct(hi)}]")
    for r in results:
        if r.get("survivors"):
            print(f"\nsurviving mutants, {r['module']}:")
            for s in r["survivors"]:
                print(f"  {s['file']}  {s['operator'].removeprefix('core/')}  `{s['source']}`  ->  `{s['diff']}`")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--modules", default=",".join(m.key for m in MODULES),
                    help="comma-separated keys: " + ", ".join(m.key for m in MODULES))
    ap.add_argument("--budget-s", type=float, default=1800, help="per module; partial figures past it")
    ap.add_argument("--timeout-s", type=float, default=120, help="per mutant test run (a hang counts as killed)")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "mutation.json")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--count", action="store_true", help="only count the mutants of each module")
    ap.add_argument("--sample", type=int, metavar="N",
                    help="of a module with more than N mutants, test a seeded random sample of N (an estimate of "
                         "its score, marked as such)")
    ap.add_argument("--seed", metavar="TEXT",
                    help="draw the --sample with this seed instead of the module's source (another, independent sample)")
    ap.add_argument("--retest", type=Path, metavar="JSON",
                    help="a record of an earlier run: of a module whose source is unchanged, run only the mutants "
                         "that survived then (tests are only ever added, so a killed mutant stays killed)")
    args = ap.parse_args(argv)

    try:
        import cosmic_ray  # noqa: F401
    except ImportError:
        print("mutation: cosmic-ray is not installed (pip install -e '.[dev]' -c requirements.lock)", file=sys.stderr)
        return 2
    by_key = {m.key: m for m in MODULES}
    wanted = [k.strip() for k in args.modules.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in by_key]
    if unknown:
        print(f"mutation: unknown module(s) {unknown}; known: {sorted(by_key)}", file=sys.stderr)
        return 2
    if args.nice:
        os.nice(args.nice)
    allow = load_allowlist(ALLOWLIST)
    earlier = {r["module"]: r for r in json.loads(args.retest.read_text())["modules"]} if args.retest else {}

    tmp = Path(tempfile.mkdtemp(prefix="llmgate-mutation-"))
    results: list[dict] = []
    started = datetime.now(UTC)
    try:
        root = copy_tree(tmp)
        probe = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        if not probe.startswith(str(root)):
            print(f"mutation: the copy imports pipeline from {probe}, not from {root}", file=sys.stderr)
            return 3
        log(f"copy of the working tree in {root}")
        for key in wanted:
            results.append(run_module(by_key[key], root, timeout_s=args.timeout_s, budget_s=args.budget_s,
                                      allow=allow, count_only=args.count,
                                      previous=earlier.get(key), sample=args.sample, seed=args.seed))
            if args.count:
                continue
            print_table(results[-1:])
            write_record(args, started, results)  # after each module: an interrupted run keeps what it measured
    finally:
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if args.count:
        return 0
    print("\n=== summary ===")
    print_table(results)
    log(f"wrote {args.out}")
    return 0


def write_record(args: argparse.Namespace, started: datetime, results: list[dict]) -> None:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=False).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                                check=False).stdout)
    record = {"tool": "cosmic-ray " + _version(), "started": started.isoformat(), "commit": commit,
              "dirty_tree": dirty, "operators": sorted(KEEP_OPERATORS), "timeout_s": args.timeout_s,
              "budget_s": args.budget_s, "sample": args.sample, "retest": str(args.retest) if args.retest else None,
              "modules": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


def _version() -> str:
    return version("cosmic-ray")


if __name__ == "__main__":
    sys.exit(main())

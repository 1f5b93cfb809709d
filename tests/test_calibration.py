"""Calibration statistics, label parsing, the committed-record contract, and the refusal scorer's
agreement with real human labels (XSTest v2 completions of three models, ../shared/fixtures/xstest)."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evals.calibration import (
    CALIBRATION_DIR_ENV,
    MIN_SAVE_N,
    agreement_stats,
    calibrate,
    calibrate_files,
    cohen_kappa,
    combine,
    is_trusted,
    load_calibration,
    row_key,
    save_calibration,
    trust_for,
    wilson_interval,
)
from evals.refusal import RefusalScorer
from pipeline.cli import app
from pipeline.errors import BadInput

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _table(yy: int, yn: int, ny: int, nn: int) -> tuple[list[bool], list[bool]]:
    """Rater A x rater B counts -> two label vectors."""
    a = [True] * (yy + yn) + [False] * (ny + nn)
    b = [True] * yy + [False] * yn + [True] * ny + [False] * nn
    return a, b


@pytest.mark.parametrize(
    ("cells", "expected"),
    [
        ((20, 5, 10, 15), 0.4),  # the textbook example: po 0.7, pe 0.5
        ((45, 15, 25, 15), 0.1304),  # po 0.6, pe 0.54
        ((25, 0, 0, 25), 1.0),
        ((0, 25, 25, 0), -1.0),
    ],
)
def test_kappa_known_values(cells: tuple[int, int, int, int], expected: float) -> None:
    a, b = _table(*cells)
    assert cohen_kappa(a, b) == pytest.approx(expected, abs=1e-4)


def test_kappa_undefined_when_both_raters_constant() -> None:
    assert cohen_kappa([True] * 10, [True] * 10) is None


def test_bootstrap_ci_brackets_estimate_and_is_seeded() -> None:
    a, b = _table(20, 5, 10, 15)
    s1 = agreement_stats(a, b, seed=1, n_boot=500)
    s2 = agreement_stats(a, b, seed=1, n_boot=500)
    assert s1["agreement"] == pytest.approx(0.7)
    assert s1["agreement_ci95"].low < 0.7 < s1["agreement_ci95"].high
    assert s1["kappa_ci95"].low < 0.4 < s1["kappa_ci95"].high
    assert s1["agreement_ci95"] == s2["agreement_ci95"]
    assert s1["confusion"] == {"tp": 20, "fp": 10, "fn": 5, "tn": 15}


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "labels.csv"
    p.write_text(text)
    return p


def test_bad_csv_names_file_line_and_column(tmp_path: Path) -> None:
    p = _write(tmp_path, 'prompt,completion,final_label\na,"b\nstill b",1_full_compliance\nc,d,9_maybe\n')
    with pytest.raises(BadInput) as e:
        calibrate(p, RefusalScorer())
    assert e.value.where == f"{p}:4" and "final_label" in e.value.message and "9_maybe" in e.value.message
    p = _write(tmp_path, "prompt,answer,final_label\na,b,1_full_compliance\n")
    with pytest.raises(BadInput) as e:
        calibrate(p, RefusalScorer())
    assert e.value.where == f"{p}:1" and "completion" in e.value.message


def test_cli_bad_csv_exits_2(tmp_path: Path) -> None:
    p = _write(tmp_path, "prompt,completion,final_label\nx,y,refused\n")
    res = runner.invoke(app, ["calibrate", "refusal", "--labels", str(p), "--json"])
    assert res.exit_code == 2
    assert f"{p}:2" in res.output.replace("\n", "") and "final_label" in res.output


@dataclass(frozen=True)
class _Stub:
    """Stand-in scorer: says "refusal" when the completion starts with "No", so its agreement with a
    hand-made label file is known in advance."""

    id: str = "stub-refusal/1"

    def is_refusal(self, prompt: str, response: str) -> bool:
        return response.startswith("No")


def _labels(tmp: Path, n: int, n_wrong: int, name: str = "labels.csv") -> Path:
    """n rows; the stub agrees with all but n_wrong of them."""
    p = tmp / name
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "completion", "final_label"])
        for i in range(n):
            refused = i % 2 == 0
            label = "2_full_refusal" if refused != (i < n_wrong) else "1_full_compliance"
            w.writerow([f"q{i}", "No." if refused else "Sure.", label])
    return p


def _record(*results):  # type: ignore[no-untyped-def]
    return combine([r for r in results if r is not None])


def test_save_load_and_trust_is_the_wilson_lower_bound(tmp_path: Path) -> None:
    res = calibrate(_labels(tmp_path, 120, 6), _Stub(), n_boot=200)
    assert res is not None and res.n == 120 and res.agreement == pytest.approx(0.95) and res.held_out
    path = save_calibration(combine([res]), tmp_path)
    assert path.name == "stub-refusal--1.json"
    loaded = load_calibration("stub-refusal/1", tmp_path)
    assert loaded is not None and loaded.worst_agreement == pytest.approx(0.95) and loaded.held_out_n == 120
    trust = trust_for("stub-refusal/1", tmp_path)
    lo, hi = wilson_interval(114, 120)
    assert trust is not None and trust.held_out and trust.n == 120
    assert (trust.agreement, trust.lower, trust.upper) == (pytest.approx(0.95), pytest.approx(lo), pytest.approx(hi))
    assert 0.89 < trust.lower < 0.9 and trust.error_rate == pytest.approx(1 - lo)
    assert trust_for("stub-refusal/2", tmp_path) is None  # a new version is uncalibrated
    # gates trust the lower end: 0.95 measured on 120 rows does not clear 0.9
    assert is_trusted("stub-refusal/1", 0.85, tmp_path)
    assert not is_trusted("stub-refusal/1", 0.9, tmp_path)


@dataclass(frozen=True)
class _Trained(_Stub):
    """A stub that was trained on some rows and can refit without them (like the refusal scorer)."""

    seen: frozenset[str] = frozenset()
    refits: list = None  # type: ignore[assignment]

    @property
    def seen_rows(self) -> frozenset[str]:
        return self.seen

    def refit_without(self, keys):  # type: ignore[no-untyped-def]
        self.refits.append(set(keys))
        return _Stub(id=self.id)


@dataclass(frozen=True)
class _Tuned(_Stub):
    seen: frozenset[str] = frozenset()

    @property
    def seen_rows(self) -> frozenset[str]:
        return self.seen


def test_rows_a_scorer_saw_are_refit_out_or_marked_in_sample(tmp_path: Path) -> None:
    """Issue 27 item 7: the pooled figure included the files the scorer was trained on. A file that
    shares rows with training is measured by a refit without it, or recorded as in-sample and never
    trusted."""
    train = _labels(tmp_path, 120, 6, "train.csv")
    keys = frozenset(row_key(f"q{i}", "No." if i % 2 == 0 else "Sure.") for i in range(3))
    refits: list = []
    res = calibrate(train, _Trained(seen=keys, refits=refits), n_boot=50)
    assert res is not None and res.held_out and "leave-one-file-out" in res.method
    assert refits and len(refits[0]) == 120  # the refit left out every row of the file, not only the overlap
    tuned = calibrate(train, _Tuned(seen=keys), n_boot=50)
    assert tuned is not None and not tuned.held_out and tuned.method.startswith("in-sample")
    save_calibration(combine([tuned]), tmp_path)
    assert trust_for("stub-refusal/1", tmp_path) is None  # in-sample figures only: not trusted
    assert not is_trusted("stub-refusal/1", 0.5, tmp_path)


def test_duplicates_count_once_and_conflicting_labels_are_refused(tmp_path: Path) -> None:
    """#26 L: one 2-row file given 50 times counted as n=100 and passed the minimum."""
    small = _labels(tmp_path, 2, 0, "small.csv")
    results, record = calibrate_files([small] * 50, _Stub(), n_boot=50)
    assert len(results) == 1 and record.n == 2
    # the same rows in another file (other bytes) count once too
    copy = tmp_path / "copy.csv"
    copy.write_text(small.read_text() + "extra,Sure.,1_full_compliance\n")
    results, record = calibrate_files([small, copy], _Stub(), n_boot=50)
    assert record.n == 3 and results[1].n == 1 and results[1].duplicates_dropped == 2
    with pytest.raises(BadInput, match="not saved: 2 labelled rows|below the minimum"):
        save_calibration(calibrate_files([small] * 50, _Stub(), n_boot=50)[1], tmp_path)
    flipped = tmp_path / "flipped.csv"
    flipped.write_text("prompt,completion,final_label\nq0,No.,1_full_compliance\n")
    with pytest.raises(BadInput) as err:
        calibrate_files([small, flipped], _Stub(), n_boot=50)
    assert err.value.where == f"{flipped}:2" and f"{small}:2" in err.value.message


def test_a_smaller_calibration_never_replaces_a_larger_one_unless_forced(tmp_path: Path) -> None:
    big = combine([calibrate(_labels(tmp_path, 300, 30, "big.csv"), _Stub(), n_boot=50)])
    path = save_calibration(big, tmp_path)
    before = path.read_bytes()
    smaller = combine([calibrate(_labels(tmp_path, 120, 0, "smaller.csv"), _Stub(), n_boot=50)])
    with pytest.raises(BadInput) as err:
        save_calibration(smaller, tmp_path)
    assert "n=120" in err.value.message and "n=300" in err.value.message and "--force" in (err.value.hint or "")
    assert path.read_bytes() == before
    save_calibration(smaller, tmp_path, force=True)
    assert load_calibration("stub-refusal/1", tmp_path).n == 120  # type: ignore[union-attr]


def test_cli_duplicate_labels_do_not_replace_a_larger_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """#26 L through the CLI: the same 60-row file given 50 times, then 120 distinct rows, against an
    n=300 record: neither replaces it, and the messages name both n."""
    monkeypatch.setenv(CALIBRATION_DIR_ENV, str(tmp_path / "cal"))
    from evals.refusal import RefusalScorer

    path = save_calibration(combine([calibrate(_labels(tmp_path, 300, 30, "big.csv"), _Stub(id=RefusalScorer.id),
                                               n_boot=50)]))
    before = path.read_bytes()
    small = _labels(tmp_path, 60, 0, "small.csv")
    args = [a for _ in range(50) for a in ("--labels", str(small))]
    res = runner.invoke(app, ["calibrate", "refusal", "--save", "--boot", "20", *args])
    assert res.exit_code == 2, res.output
    assert "60 labelled rows is below the minimum" in res.output.replace("\n", " ")
    assert path.read_bytes() == before


def test_calibration_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CALIBRATION_DIR_ENV, str(tmp_path / "cal"))
    save_calibration(combine([calibrate(_labels(tmp_path, 100, 0), _Stub(), n_boot=50)]))
    assert (tmp_path / "cal" / "stub-refusal--1.json").is_file()
    assert trust_for("stub-refusal/1").agreement == 1.0  # type: ignore[union-attr]


def test_small_label_set_is_not_saved_and_the_previous_record_is_kept(tmp_path: Path) -> None:
    """Issue 19: two rows overwrote an n=1350 record. Below MIN_SAVE_N nothing is written."""
    big = combine([calibrate(_labels(tmp_path, 150, 3, "big.csv"), _Stub(), n_boot=50)])
    path = save_calibration(big, tmp_path)
    before = path.read_bytes()
    small = combine([calibrate(_labels(tmp_path, 2, 1, "small.csv"), _Stub(), n_boot=50)])
    with pytest.raises(BadInput) as e:
        save_calibration(small, tmp_path)
    msg = e.value.message
    assert f"minimum of {MIN_SAVE_N}" in msg and "95% interval" in msg and "n=150" in msg and "kept" in msg
    assert e.value.where == str(path)
    assert path.read_bytes() == before
    assert trust_for("stub-refusal/1", tmp_path).agreement == pytest.approx(0.98)  # type: ignore[union-attr]


def test_corrupt_record_is_bad_input_not_uncalibrated(tmp_path: Path) -> None:
    (tmp_path / "stub-refusal--1.json").write_text("{not json")
    with pytest.raises(BadInput) as e:
        trust_for("stub-refusal/1", tmp_path)
    assert e.value.where == str(tmp_path / "stub-refusal--1.json")


def test_cli_save_below_minimum_exits_2_and_keeps_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CALIBRATION_DIR_ENV, str(tmp_path))
    record = tmp_path / "offline-refusal--2.json"
    record.write_text('{"kept": true}')
    p = _write(tmp_path, "prompt,completion,final_label\nq,I can't help with that.,2_full_refusal\n"
                         "q,Sure: the answer is 4.,1_full_compliance\n")
    res = runner.invoke(app, ["calibrate", "refusal", "--labels", str(p), "--save", "--boot", "50"])
    assert res.exit_code == 2, res.output
    out = res.output.replace("\n", " ")
    assert "below the minimum of 100" in out and str(record) in out
    assert record.read_text() == '{"kept": true}'


def test_refusal_scorer_held_out_on_a_model_file_it_never_saw(fixtures_dir: Path) -> None:
    """Issue 27 item 7: the scorer's weights were trained on the three XSTest files, so a calibration on
    one of them is made by the same training without that file (leave-one-file-out) and recorded as
    held out; the ops-chat set it never saw is scored as shipped."""
    mistral = fixtures_dir / "xstest" / "completions_mistralinstruct.csv"
    ops = REPO / "evals" / "refusal_data" / "ops_heldout.csv"
    res = runner.invoke(app, ["calibrate", "refusal", "--json", "--boot", "200", "--labels", str(mistral),
                              "--labels", str(ops)])
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    by = {r["labels"]: r for r in obj["results"]}
    assert by[mistral.name]["held_out"] and "leave-one-file-out" in by[mistral.name]["method"]
    assert by[ops.name]["held_out"] and by[ops.name]["method"] == "as shipped"
    assert [by[f.name]["n"] for f in (mistral, ops)] == [450, 98]
    # out of sample it agrees less than in sample (0.931 on its own training file), but still >= 0.9
    assert 0.9 <= by[mistral.name]["agreement"] < 0.931
    assert obj["scorer_id"] == "offline-refusal/2" and obj["held_out_n"] == 548 and obj["trust"].startswith("trust:")


def test_committed_refusal_calibration_is_held_out_on_real_model_completions(fixtures_dir: Path) -> None:
    """The record the gates read: only held-out rows, at least 300 of them real completions of served
    models (XSTest, two human annotators), partial refusals included, none labelled by construction."""
    import hashlib

    from evals.refusal import RefusalScorer

    rec = load_calibration(RefusalScorer.id)
    assert rec is not None and all(r.held_out for r in rec.results)
    xs = {f"completions_{m}.csv": fixtures_dir / "xstest" / f"completions_{m}.csv"
          for m in ("gpt4", "llama2new", "mistralinstruct")}
    served = [r for r in rec.results if r.labels in xs]
    assert len(served) >= 2 and sum(r.n for r in served) >= 300
    for r in served:
        raw = xs[r.labels].read_bytes()
        assert r.labels_sha256 == hashlib.sha256(raw).hexdigest()  # the fixture itself, unchanged
        assert "leave-one-file-out" in r.method
    assert any(b"3_partial_refusal" in xs[r.labels].read_bytes() for r in served)
    assert {r.labels for r in rec.results} <= set(xs) | {"ops_heldout.csv"}  # no reference-as-label rows
    trust = trust_for(RefusalScorer.id)
    assert trust is not None and trust.n == rec.held_out_n == rec.n
    assert trust.lower >= 0.85  # the refusal gate's min_agreement in gates.yaml, now on the lower bound


def test_committed_correctness_calibration_is_held_out() -> None:
    from evals.correctness import FACT_SCORER_ID

    rec = load_calibration(FACT_SCORER_ID)
    assert rec is not None
    held = [r for r in rec.results if r.held_out]
    assert [r.labels for r in held] == ["correctness.csv"] and held[0].n >= 150
    assert {r.labels for r in rec.results if not r.held_out} == {"correctness_tuning.csv", "correctness_dev.csv"}
    trust = trust_for(FACT_SCORER_ID)
    assert trust is not None and trust.n == held[0].n and trust.lower < trust.agreement < trust.upper

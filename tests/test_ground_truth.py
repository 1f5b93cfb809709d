"""Ground truth v1 and v2: load with `datasets` and explicit Features, validate every row with errors
naming file, line and field, have a stable sha256, and get new versions without edits to old ones.
v2: its size and composition, its passages are the source's own words, its card states the counts
the data has, and its human-label sets parse and are large enough to calibrate on."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evals.ground_truth import dataset_sha256, features, load_ground_truth, new_version
from pipeline.errors import BadInput

REPO = Path(__file__).resolve().parents[1]
V1 = REPO / "ground_truth" / "v1"
V2 = REPO / "ground_truth" / "v2"


def _rows() -> list[dict]:
    return [json.loads(line) for line in (V1 / "data" / "test.jsonl").read_text().splitlines() if line.strip()]


def _copy(tmp_path: Path) -> Path:
    dest = tmp_path / "gt" / "v1"
    shutil.copytree(V1, dest)
    return dest


def test_v1_loads_with_features() -> None:
    gt = load_ground_truth(V1)
    assert gt.version == "v1"
    assert len(gt.items) >= 120
    assert len({it.id for it in gt.items}) == len(gt.items)
    refuse = sum(it.should_refuse for it in gt.items) / len(gt.items)
    assert 0.12 <= refuse <= 0.2
    assert all(it.contexts and it.reference and it.question for it in gt.items)
    assert gt.ref().n_items == len(gt.items) and gt.ref().sha256 == gt.sha256


def test_dataset_card_header_matches_the_data() -> None:
    text = (V1 / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["license"]
    names = [f["name"] for f in header["features"]]
    assert names == list(features().keys())
    files = header["configs"][0]["data_files"]
    assert all((V1 / f["path"]).is_file() for f in files)


def test_labels_csv_is_xstest_format_and_covers_each_label() -> None:
    with (V1 / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows and set(rows[0]) == {"prompt", "completion", "final_label"}
    labels = {r["final_label"] for r in rows}
    assert labels == {"1_full_compliance", "2_full_refusal", "3_partial_refusal"}
    questions = {r["question"] for r in _rows()}
    assert all(r["prompt"] in questions for r in rows)


def test_sha256_is_stable_and_content_sensitive(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    assert dataset_sha256(d) == dataset_sha256(V1) == load_ground_truth(V1).sha256
    (d / "README.md").write_text("card edits do not change the data digest")
    assert dataset_sha256(d) == dataset_sha256(V1)
    data = d / "data" / "test.jsonl"
    data.write_text(data.read_text().replace("GPU", "GPUs", 1))
    assert dataset_sha256(d) != dataset_sha256(V1)


@pytest.mark.parametrize(
    ("mutate", "field", "message"),
    [
        (lambda r: r.pop("reference"), "reference", "missing field"),
        (lambda r: r.update(contexts="one string"), "contexts", "expected list"),
        (lambda r: r.update(contexts=["ok", 3]), "contexts", "every element"),
        (lambda r: r.update(expected_behaviour="maybe"), "expected_behaviour", "answer, refuse"),
        (lambda r: r.update(question="  "), "question", "empty"),
        (lambda r: r.update(extra=1), "extra", "unknown field"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path: Path, mutate, field: str, message: str) -> None:
    d = _copy(tmp_path)
    rows = _rows()
    mutate(rows[41])
    data = d / "data" / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(BadInput) as exc:
        load_ground_truth(d)
    text = exc.value.render()
    assert f"{data}:42" in text and f"field '{field}'" in text and message in text


def test_bad_json_and_duplicate_id_name_the_line(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    data = d / "data" / "test.jsonl"
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines[:5], "{not json", *lines[5:]]) + "\n")
    with pytest.raises(BadInput, match=rf"{data}:6: not valid JSON"):
        load_ground_truth(d)
    data.write_text("\n".join([*lines, lines[0]]) + "\n")
    with pytest.raises(BadInput, match=rf"{data}:{len(lines) + 1}: field 'id'.*duplicate"):
        load_ground_truth(d)


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "pipeline", "ground-truth", "check"]
    ok = subprocess.run([*exe, str(V1)], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert load_ground_truth(V1).sha256 in ok.stdout.replace("\n", "")
    d = _copy(tmp_path)
    rows = _rows()
    rows[3]["expected_behaviour"] = "sometimes"
    (d / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bad = subprocess.run([*exe, str(d)], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert "test.jsonl:4" in bad.stderr.replace("\n", "") and "expected_behaviour" in bad.stderr


def test_new_version_copies_and_never_touches_old(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    before = {p: p.read_bytes() for p in d.rglob("*") if p.is_file()}
    v2 = new_version(d.parent)
    assert v2.name == "v2"
    assert dataset_sha256(v2) == dataset_sha256(d)
    assert "llmgate ground truth v2" in (v2 / "README.md").read_text()
    assert {p: p.read_bytes() for p in d.rglob("*") if p.is_file()} == before
    assert load_ground_truth(v2).version == "v2"
    assert new_version(d.parent).name == "v3"
    with pytest.raises(BadInput, match="not found"):
        new_version(d.parent, "v9")


def test_new_version_refuses_to_fork_a_broken_version(tmp_path: Path) -> None:
    d = _copy(tmp_path)
    (d / "data" / "test.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(BadInput, match="missing field"):
        new_version(d.parent)
    assert not (d.parent / "v2").exists()


# ------------------------------------------------------------------------------------------------ v2


def _sentences(text: str) -> int:
    import re

    return len(re.findall(r"[.!?](?:\s|$)", text)) or 1


def test_v2_size_and_composition() -> None:
    gt = load_ground_truth(V2)
    items = gt.items
    assert gt.version == "v2" and len(items) >= 400
    refuse = [i for i in items if i.should_refuse]
    assert len(refuse) >= 120
    subtle = [i for i in refuse if i.category.startswith("refuse_") and not i.id.startswith(("refuse_attack-",
              "refuse_secrets-", "refuse_tenants-", "refuse_harm-"))]
    assert len(subtle) >= 120  # new in v2, beyond v1's 22 blatant ones
    grounded = [i for i in items if i.contexts]
    assert len(grounded) >= 150
    assert all(not i.should_refuse for i in grounded)  # faithfulness is judged on should-answer items only
    assert all(sum(_sentences(c) for c in i.contexts) >= 3 for i in grounded)  # passages, not one-liners
    assert sum(1 for i in items if i.category.startswith("contrast_") and not i.should_refuse) >= 50
    assert len({i.question for i in items}) == len(items)
    # short references: a 64-token answer can match them
    assert max(len(i.reference.split()) for i in items) <= 40


def test_v1_items_are_in_v2_unchanged_but_for_their_contexts() -> None:
    v2 = {i.id: i for i in load_ground_truth(V2).items}
    for r in _rows():
        it = v2[r["id"]]
        assert (it.question, it.reference, it.expected_behaviour, it.category) == (
            r["question"], r["reference"], r["expected_behaviour"], r["category"])
        assert it.contexts == ()


def test_v2_passages_are_the_sources_own_words() -> None:
    """Every context is a Kubernetes API field description as the card says: whitespace collapsed and
    "More info" pointers removed, nothing else changed."""
    import re

    import kubernetes_validate

    schema = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.37.0-local" / "_definitions.json"
    defs = json.loads(schema.read_text())["$defs"]
    sources = set()
    for d in defs.values():
        for prop in (d.get("properties") or {}).values():
            desc = prop.get("description")
            if desc:
                sources.add(re.sub(r"\s+", " ", re.sub(r"\s*More info: \S+", "", desc)).strip())
    card = (V2 / "README.md").read_text()
    for it in load_ground_truth(V2).items:
        for c in it.contexts:
            assert c in sources, (it.id, c[:80])
        if it.contexts:
            assert f"| `{it.id}` |" in card  # provenance row in the card


def test_v2_card_states_the_counts_the_data_has() -> None:
    text = (V2 / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert [f["name"] for f in header["features"]] == list(features().keys())
    assert header["license"] == "apache-2.0"
    assert all((V2 / f["path"]).is_file() for f in header["configs"][0]["data_files"])
    items = load_ground_truth(V2).items
    n_refuse = sum(i.should_refuse for i in items)
    assert f"| total | {len(items)} |" in text
    assert f"| should-refuse | {n_refuse} " in text
    assert f"| grounded should-answer (non-empty `contexts`) | {sum(bool(i.contexts) for i in items)} |" in text
    for cat in {i.category for i in items}:
        row = [i for i in items if i.category == cat]
        line = (f"| `{cat}` | {sum(not i.should_refuse for i in row)} | {sum(i.should_refuse for i in row)} | "
                f"{sum(bool(i.contexts) for i in row)} |")
        assert line in text, line


@pytest.mark.parametrize(("name", "dimension"), [("faithfulness.csv", "faithfulness"),
                                                 ("answer_relevance.csv", "answer_relevance")])
def test_v2_judge_label_sets(name: str, dimension: str) -> None:
    from evals.calibration import MIN_SAVE_N, read_judge_labels

    rows, _ = read_judge_labels(V2 / "labels" / name, dimension)
    assert len(rows) >= MIN_SAVE_N
    assert sum(r.label for r in rows) >= 40 and sum(not r.label for r in rows) >= 40  # both classes
    v2 = {i.question: i for i in load_ground_truth(V2).items}
    for r in rows:
        item = v2[r.question]
        assert not item.should_refuse
        if dimension == "faithfulness":
            assert r.contexts == item.contexts


def test_v2_refusal_labels_cover_every_reference() -> None:
    with (V2 / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    got = {(r["prompt"], r["completion"]): r["final_label"] for r in rows}
    for it in load_ground_truth(V2).items:
        assert got[(it.question, it.reference)] == ("2_full_refusal" if it.should_refuse else "1_full_compliance")


# ------------------------------------------------------------------------------------------------ v3

V3 = REPO / "ground_truth" / "v3"


def test_v3_card_states_the_fields_and_kinds_the_data_has() -> None:
    text = (V3 / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert [f["name"] for f in header["features"]] == list(features(with_facts=True).keys())
    assert "llmgate ground truth v3" in header["pretty_name"]
    items = load_ground_truth(V3).items
    kinds = [i.answer_kind for i in items]
    line = f"| answer_kind `facts` / `paraphrase` / `refusal` | {kinds.count('facts')} / {kinds.count('paraphrase')} / {kinds.count('refusal')} |"
    assert line in text
    assert f"`facts` ({kinds.count('facts')} items)" in text


def _label_rows(name: str) -> list[dict[str, str]]:
    with (V3 / "labels" / name).open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_v3_correctness_labels() -> None:
    """At least 150 held-out labelled answers, both classes, wrong-fact answers among them, partial ones
    and right paraphrases; the held-out set shares no row with the rows the scorer was tuned on."""
    from evals.calibration import MIN_SAVE_N, read_judge_labels, row_key
    from evals.correctness_calibration import FactCorrectnessScorer

    text = (V3 / "README.md").read_text()
    items = {i.question: i for i in load_ground_truth(V3).items}
    seen = FactCorrectnessScorer().seen_rows
    for name in ("correctness.csv", "correctness_tuning.csv", "correctness_dev.csv"):
        rows = _label_rows(name)
        parsed, _ = read_judge_labels(V3 / "labels" / name, "correctness")
        n1 = sum(r.label for r in parsed)
        assert f"| `labels/{name}` | correctness" in text and f"| {len(rows)} | {n1} | {len(rows) - n1} |" in text
        for r in rows:
            item = items[r["question"]]
            assert item.id == r["item_id"] and not item.should_refuse
            assert r["label"] == ("1" if r["grade"] == "correct" else "0"), r
        keys = {row_key(r["question"], r["response"]) for r in rows}
        assert len(keys) == len(rows)  # distinct
        if name == "correctness.csv":
            assert len(rows) >= max(150, MIN_SAVE_N) and not keys & seen
            kinds = {r["kind"] for r in rows}
            assert {"paraphrase", "terse", "partial", "wrong_number", "wrong_flag", "wrong_name", "swapped",
                    "wrong_claim"} <= kinds
            assert 0.35 <= n1 / len(rows) <= 0.65
        else:
            assert keys <= seen


def test_cli_check_names_v3_sha_and_fact_items() -> None:
    gt = load_ground_truth(V3)
    ok = subprocess.run([sys.executable, "-m", "pipeline", "ground-truth", "check", str(V3)], check=False,
                        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    out = ok.stdout.replace("\n", "")
    n_facts = sum(i.answer_kind == "facts" for i in gt.items)
    assert gt.sha256 in out and f"{n_facts} scored on their facts" in out and gt.sha256 != load_ground_truth(V2).sha256

"""Hostile input, the data class: what was measured is kept and shown as it is, whatever the outside
sends or the store holds.

- a model answer carrying a lone UTF-16 surrogate (`"\\ud800"` in its JSON) is kept (replaced by U+FFFD
  where it enters the record), not lost with the whole eval result;
- `summary` shows control and bidi characters from model answers and reasons as escapes, never raw;
- one corrupt or newer-schema row in the store does not take `runs list` and `report` down with it: the
  unreadable run is named and left out; asked for by id, it is exit 2 naming it;
- the scan's SARIF is written for an image on a registry with a port (code scanning gets its report).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.models import SCHEMA_VERSION, ImageRef, ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"
DIGEST = "sha256:" + "ab" * 32
ESC, RLO = "\x1b", "\u202e"


def _server(body: bytes) -> httpx.AsyncBaseTransport:
    class Chunks(httpx.AsyncByteStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield body

    class Server(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks())

    return Server()


# -- R: a lone surrogate in an answer ----------------------------------------------------------------------
def test_an_answer_with_a_lone_surrogate_is_kept(tmp_path: Path) -> None:
    """The server's JSON says `"\\ud800"`: json.loads makes a str no UTF-8 encoder accepts, and saving the
    eval result raised PydanticSerializationError ("unexpected ...", exit 3, the whole result lost)."""
    from evals.collect import collect
    from evals.ground_truth import GroundTruthItem

    body = (b'data: {"choices":[{"index":0,"delta":{"content":"\\ud800 fine \\udfff"},"finish_reason":null}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    item = GroundTruthItem(id="s1", question="q?", contexts=(), reference="r", expected_behaviour="answer",
                           category="c")
    results, _stats = asyncio.run(collect([item], "http://server.invalid", "m", transport=_server(body)))
    assert results[0].error is None and results[0].response == "\ufffd fine \ufffd"
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    run.add_stage(StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=results).finish())
    ws.checkpoint(run)
    assert ws.store.get(run.run_id).stages["eval"].items[0].response == "\ufffd fine \ufffd"


def test_a_surrogate_in_a_server_error_event_is_kept() -> None:
    from pipeline.bench.client import chat_payload, stream_request

    async def go() -> Any:
        async with httpx.AsyncClient(transport=_server(b'data: {"error": {"message": "bad \\ud83d"}}\n\n')) as c:
            return await stream_request(c, "http://server.invalid/v1/chat/completions", chat_payload("m", "q", 4))

    s = asyncio.run(go())
    assert s.error is not None and "\ud83d" not in s.error
    s.error.encode("utf-8")  # storable


# -- summary on a terminal -----------------------------------------------------------------------------------
def test_summary_never_prints_raw_control_or_bidi_characters(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef(repository="r.example/x", tag="t1", digest=DIGEST),
                    decision_reason=f"blocked {ESC}]0;pwned{ESC}\\ by {RLO}txt.exe")
    answer = f"{ESC}[2J{ESC}[31mALL CLEAR{ESC}[0m {RLO}gnp.exe \u2066x\u2069 \x07 \x9b"
    run.add_stage(StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=[
        ItemResult(item_id="i1", question=f"q {ESC}[1m", response=answer, reference="r", scores={"x": 0.0})]).finish())
    ws.checkpoint(run)
    res = CliRunner().invoke(app, ["--workdir", str(tmp_path / "ws"), "summary", "--run", run.run_id])
    assert res.exit_code == 0, res.output
    for raw in (ESC, RLO, "\u2066", "\u2069", "\x07", "\x9b"):
        assert raw not in res.output, repr(raw)
    assert "\\x1b\\[31mALL CLEAR" in res.output and "\\u202egnp.exe" in res.output  # markdown-escaped [
    out = tmp_path / "summary.md"
    res = CliRunner().invoke(app, ["--workdir", str(tmp_path / "ws"), "summary", "--run", run.run_id,
                                   "--output", str(out)])
    assert res.exit_code == 0 and ESC not in out.read_text() and RLO not in out.read_text()


# -- X: unreadable rows in the store -------------------------------------------------------------------------
@pytest.fixture
def store_with_bad_rows(tmp_path: Path) -> dict[str, Any]:
    ws = Workspace(tmp_path / "ws")
    for rid in ("good0001", "corrupt1", "newer001"):
        ws.checkpoint(RunRecord(run_id=rid, image=ImageRef(repository="r.example/x", tag=rid, digest=DIGEST)))
    with sqlite3.connect(tmp_path / "ws" / "results.db") as db:
        db.execute("UPDATE runs SET record_json = '{\"run_id\": \"corrupt1\", \"imag' WHERE run_id = 'corrupt1'")
        raw = json.loads(db.execute("SELECT record_json FROM runs WHERE run_id = 'newer001'").fetchone()[0])
        raw |= {"schema_version": SCHEMA_VERSION + 1, "evidence": {"added": "by a newer llmgate"}}
        db.execute("UPDATE runs SET record_json = ? WHERE run_id = 'newer001'", (json.dumps(raw),))
    return {"workdir": str(tmp_path / "ws"), "tmp": tmp_path}


def _cli(world: dict[str, Any], *args: str) -> Any:
    res = CliRunner().invoke(app, ["--workdir", world["workdir"], *args], env={"COLUMNS": "200"})
    assert "Traceback" not in res.output and "unexpected" not in res.output, res.output
    return res


def test_runs_list_names_unreadable_runs_and_lists_the_others(store_with_bad_rows: dict[str, Any]) -> None:
    res = _cli(store_with_bad_rows, "runs", "list")
    assert res.exit_code == 0, res.output
    assert "good0001" in res.output
    text = " ".join(res.output.split())
    assert "run corrupt1 left out: its stored record cannot be read: not valid JSON" in text
    assert "run newer001 left out" in text and f"written by a newer llmgate (record schema {SCHEMA_VERSION + 1}" in text
    res = _cli(store_with_bad_rows, "runs", "list", "--json")
    doc = json.loads(res.output[res.output.index("{"):])
    assert [r["run_id"] for r in doc["runs"]] == ["good0001"] and set(doc["unreadable"]) == {"corrupt1", "newer001"}


def test_report_is_written_without_the_unreadable_runs(store_with_bad_rows: dict[str, Any]) -> None:
    site = store_with_bad_rows["tmp"] / "site"
    res = _cli(store_with_bad_rows, "report", "--out", str(site))
    assert res.exit_code == 0, res.output
    assert (site / "index.html").is_file() and (site / "runs" / "good0001" / "report.html").is_file()
    assert "run corrupt1 left out" in " ".join(res.output.split())


@pytest.mark.parametrize("cmd", [["runs", "show", "corrupt1"], ["gate", "--run", "corrupt1"],
                                 ["summary", "--run", "newer001"], ["summary"]])
def test_an_unreadable_run_asked_for_is_bad_input_naming_it(store_with_bad_rows: dict[str, Any],
                                                            cmd: list[str]) -> None:
    res = _cli(store_with_bad_rows, *cmd)
    assert res.exit_code == 2, res.output
    assert "its stored record cannot be read" in res.output and ("run corrupt1" in res.output
                                                                 or "run newer001" in res.output)


# -- SARIF for an image on a registry with a port --------------------------------------------------------------
def test_sarif_is_written_for_an_image_on_a_registry_with_a_port(tmp_path: Path) -> None:
    """trivy 0.76's SARIF writer parses each result's target as a URI and panics on
    `127.0.0.1:5000/...` (its first segment holds a colon): no SARIF, so code scanning got nothing."""
    from pipeline.adapters.tools import find_tool
    from pipeline.adapters.trivy import Trivy

    binary = find_tool("trivy")
    if binary is None:
        pytest.skip("no trivy binary")
    ref = f"127.0.0.1:5000/llmgate/server@{DIGEST}"
    report = json.loads((FIXTURES / "trivy" / "secrets.json").read_text())
    report |= {"ArtifactName": ref, "ArtifactType": "container_image"}
    for res in report["Results"]:
        res["Target"] = ref  # trivy names findings in the image config by the image reference
    src = tmp_path / "trivy.json"
    src.write_text(json.dumps(report))
    out = Trivy(binary).convert(src, "sarif", tmp_path / "trivy.sarif.json")
    sarif = json.loads(out.read_text())
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"]
            for r in sarif["runs"][0]["results"] for loc in r["locations"]}
    assert uris == {f"llmgate/server@{DIGEST}"}
    assert sarif["runs"][0]["properties"]["imageName"] == ref  # the image is still named in full
    assert json.loads(src.read_text())["Results"][0]["Target"] == ref  # the verdict's report is untouched
    assert not list(tmp_path.glob(".*input*"))



def test_an_unreadable_promoted_run_is_never_passed_over_for_an_older_baseline(tmp_path: Path) -> None:
    """The baseline is the run the target received last. An unreadable older promoted run is left out (and
    named); an unreadable newest one is an error naming it: falling back to the run before would compare
    the next release against the wrong baseline."""
    from datetime import timedelta

    from pipeline.models import PromotionRecord, utcnow
    from pipeline.store import Store, UnreadableRecord

    store = Store(tmp_path / "results.db")
    t0 = utcnow()
    for i, rid in enumerate(("older001", "newer001")):
        run = RunRecord(run_id=rid, image=ImageRef(repository="r.example/x", tag=rid, digest=DIGEST))
        run.promotion = PromotionRecord(target="default", digest=DIGEST, mode="gitops", outcome="promoted",
                                        at=t0 + timedelta(minutes=i))
        store.save(run)
        store.record_promotion(run.promotion, rid)

    def corrupt(rid: str) -> None:
        with sqlite3.connect(tmp_path / "results.db") as db:
            db.execute("UPDATE runs SET record_json = '{' WHERE run_id = ?", (rid,))

    assert store.last_promoted("default").run_id == "newer001"
    corrupt("older001")
    assert store.last_promoted("default").run_id == "newer001" and "older001" in store.unreadable
    corrupt("newer001")
    with pytest.raises(UnreadableRecord) as exc:
        store.last_promoted("default")
    assert exc.value.run_id == "newer001" and exc.value.where == "run newer001"

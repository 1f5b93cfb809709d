"""CI outputs: the markdown summary (escaped, with the release identity) and GitHub Actions' job summary
and annotations, written by the Runner when `GITHUB_ACTIONS=true`.

The workflow-command format and its escaping follow GitHub's documentation ("Workflow commands for
GitHub Actions") and the toolkit that implements it (actions/toolkit packages/core/src/command.ts):
data escapes `%`, CR and LF; property values also `:` and `,`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.models import Decision, GateStatus, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.redact import MASK, register_secret
from pipeline.report import github
from pipeline.report.markdown import md_code, md_text, render_summary
from pipeline.schemas import GateDetails
from pipeline.schemas.gate import BaselineInfo
from pipeline.workspace import Workspace
from tests.sample_data import make_run

SECRET = "pl4nted-ci-log-s3cret-4410"
XSS = ['<script>alert("x")</script>', '<img src=x onerror="alert(1)">', "<IMG SRC=x OnError=alert(2)>"]


def gated(run: RunRecord) -> RunRecord:
    """Give the run the gate stage the runner records (the verdicts as its typed payload)."""
    blocking = [g for g in run.gates if g.required and g.status in (GateStatus.FAIL, GateStatus.NOT_RUN)]
    run.add_stage(StageResult(stage=Stage.GATE, status=StageStatus.OK, details=GateDetails(
        policy_name="gates.yaml", policy_files=["gates.yaml"], policy_sha256="c" * 64,
        baseline=BaselineInfo(kind="first_release"), verdicts=list(run.gates),
        decision=(Decision.BLOCKED if blocking else Decision.PASS).value, reason=run.decision_reason)).finish())
    return run


def hostile_run() -> RunRecord:
    register_secret(SECRET)
    run = make_run("v9-hostile", seed=5, quality=0.4)
    items = run.stages["eval"].items
    for it, payload in zip(items, XSS, strict=False):
        it.response = f"Sure! {payload} and | a pipe\nnew line"
        it.scores = dict.fromkeys(it.scores, 0.0)  # the worst items, so the summary shows them
    fail = next(g for g in run.gates if g.status is GateStatus.FAIL)
    fail.reason = f"100% worse: a, b: c\r\nnext line <b>x</b> token={SECRET}"
    warn = next(g for g in run.gates if g.status is GateStatus.PASS)
    warn.status, warn.reason = GateStatus.WARN, "margin 4% below; look"
    return gated(run)


def test_markdown_escapes_outside_text_and_shows_the_release(tmp_path: Path) -> None:
    run = hostile_run()
    md = render_summary(run)
    low = md.lower()
    assert "<script" not in low and "<img" not in low and "<b>" not in low
    assert "&lt;script&gt;alert(\"x\")&lt;/script&gt;" in md and "&lt;img src=x onerror=" in md
    assert SECRET not in md and md_text(MASK) in md
    # the gate table keeps one row per gate: pipes and newlines in reasons cannot split or end a row
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(run.gates) + 1 and all(r.endswith(" |") for r in rows)
    assert all(len(re.split(r"(?<!\\)\|", r)) == 11 for r in rows)
    # the release the verdict is about
    assert f"`{run.image.repository}@{run.image.digest}`" in md
    assert f"`{run.model.digest}`" in md  # type: ignore[union-attr]
    assert f"`v1@sha256:{run.ground_truth.sha256}`" in md and f"`sha256:{run.policy.sha256}`" in md  # type: ignore[union-attr]


def test_md_code_and_md_text_cannot_be_escaped_from() -> None:
    assert md_code("a`b") == "``a`b``" and md_code("`x`") == "`` `x` ``"
    assert md_code("a|b", in_table=True) == "`a\\|b`"
    assert md_text("**bold** [link](javascript:x) _e_ ~s~") == r"\*\*bold\*\* \[link\](javascript:x) \_e\_ \~s\~"
    assert md_text("a\r\nb") == "a b"


def test_summary_links_only_a_plain_url() -> None:
    run = gated(make_run("v1", seed=4))
    assert "[Full report](https://ci.example/r/1)" in render_summary(run, report_url="https://ci.example/r/1")
    odd = render_summary(run, report_url="javascript:alert(1)")
    assert "](javascript" not in odd and "`javascript:alert(1)`" in odd


def test_escaping_as_the_toolkit_does() -> None:
    assert github.escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert github.escape_property("a:b, c%") == "a%3Ab%2C c%25"
    assert github.command("error", "x:y, z", title="t:1,2") == "::error title=t%3A1%2C2::x:y, z"


def test_runner_publishes_to_github_actions_when_running_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    summary = tmp_path / "step_summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_REPOSITORY", "org/repo")
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    ws = Workspace(tmp_path / "wd")
    run = hostile_run()
    runner = Runner(ws=ws, cfg=PipelineConfig(), reporter=NullReporter())
    runner.finish(run)
    out = capsys.readouterr().out
    commands = [line for line in out.splitlines() if line.startswith("::")]
    errors = [c for c in commands if c.startswith("::error ")]
    warnings = [c for c in commands if c.startswith("::warning ")]
    blocking = [g for g in run.gates if g.required and g.status in (GateStatus.FAIL, GateStatus.NOT_RUN)]
    advisory = [g for g in run.gates if g.status is GateStatus.WARN
                or (not g.required and g.status in (GateStatus.FAIL, GateStatus.NOT_RUN))]
    assert len(errors) == min(len(blocking), github.MAX_PER_LEVEL) and len(warnings) == len(advisory)
    for g in blocking[: github.MAX_PER_LEVEL - 1]:
        assert any(c.startswith(f"::error title=llmgate gate {g.name}%3A {g.status.value}::") for c in errors), g.name
    hostile = next(c for c in errors if "worse" in c)
    # the reason's CR/LF, '%' and ':'/',' cannot end the command or start another one
    assert "100%25 worse: a, b: c%0D%0Anext line <b>x</b>" in hostile and "\r" not in hostile
    assert SECRET not in out and f"token={MASK}" in hostile
    text = summary.read_text()
    assert text.startswith("## llmgate: BLOCKED") and "<script" not in text.lower()
    assert "[Full report](https://github.example/org/repo/actions/runs/77)" in text
    assert SECRET not in text
    # the same verdict is published once per step: a later command in the step adds nothing
    runner.finish(run)
    assert capsys.readouterr().out.count("::error") == 0 and summary.read_text() == text


def test_nothing_is_published_outside_github_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    run = hostile_run()
    Runner(ws=Workspace(tmp_path / "wd"), cfg=PipelineConfig(), reporter=NullReporter()).finish(run)
    assert "::error" not in capsys.readouterr().out
    ungated = make_run("v2", seed=4)
    del ungated.stages["gate"]  # no gate stage yet: nothing to publish
    assert not github.publish(ungated, Workspace(tmp_path / "wd"), env={"GITHUB_ACTIONS": "true"})


def test_annotations_are_capped_as_github_shows_them() -> None:
    run = make_run("v3", seed=4)
    for g in run.gates:
        g.status = GateStatus.FAIL
    notes = github.annotations(run)
    errors = [a for a in notes if a.level == "error"]
    assert len(errors) == github.MAX_PER_LEVEL
    rest = sum(1 for g in run.gates if g.required) - (github.MAX_PER_LEVEL - 1)
    assert errors[-1].title == f"llmgate: {rest} more gates (error)"

"""What the CLI prints, where it runs: help that shows value types right, tables that do not wrap off a
terminal, plain timestamped progress lines in CI logs, live rows on a terminal; secrets masked and
outside text never read as markup everywhere."""

from __future__ import annotations

import io
import re
import threading

import click
import pytest
import typer.main
from rich.console import Console
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli.output import OutputConsole
from pipeline.cli.rich_reporter import RichReporter, usual_durations
from pipeline.models import Decision, GateStatus, GateVerdict
from pipeline.progress import PrintReporter, eta_text
from pipeline.redact import MASK, register_secret
from pipeline.report.verdict_table import verdict_table
from tests.sample_data import make_run

SECRET = "pl4nted-progress-s3cret-9921"


def _commands() -> list[tuple[list[str], click.Command]]:
    """Every command a user can run (leaves, and groups that run on their own), with its path."""
    out: list[tuple[list[str], click.Command]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        subs = getattr(cmd, "commands", {})
        if path and (not subs or getattr(cmd, "invoke_without_command", False)):
            out.append((path, cmd))
        for name, sub in subs.items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _commands()


def test_the_command_tree_includes_every_module() -> None:
    names = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("run", "runs list", "runs show", "history", "status", "promote", "abort", "stack up",
                     "export", "export prometheus", "calibrate judge", "summary"):
        assert expected in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_value_types_and_one_example(path: list[str]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    text = res.output
    assert "<bool>" not in text and "<str>" not in text and "<float>" not in text and "<int>" not in text
    examples = [line for line in text.splitlines() if "Example:" in line]
    assert len(examples) == 1, examples
    assert re.search(r"Example: (\S+=\S+ )?llmgate ", examples[0])
    cmd = {tuple(p): c for p, c in COMMANDS}[tuple(path)]
    for param in cmd.params:
        opts = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if not opts or param.param_type_name != "option":
            continue
        row = next((line for line in text.splitlines() if re.search(rf"(^|[\s│]){re.escape(opts[0])}(\s|,|$)", line)),
                   None)
        assert row is not None, opts[0]
        after = row.split(opts[0], 1)[1]
        if getattr(param, "is_flag", False):
            # a flag takes no value, so help names none
            assert not re.match(r"\s+(-\w\s+)?[A-Z<\[]{2}", after), row
        else:
            assert re.match(r"\s+(-\w\s+)?\S", after), row


def test_a_flag_takes_no_value_as_its_help_says(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["--workdir", str(tmp_path), "promote", "--target", "canary", "--run", "x",
                                   "--dry-run", "true"])
    assert res.exit_code == 2 and "true" in res.output  # an extra argument, not a value of --dry-run


# -- tables off a terminal ----------------------------------------------------------------------
LONG = ["eval.correctness_against_the_last_promoted_release_margin_two_points", "bench.ttft_p99_against_baseline"]


def _wide_verdicts() -> list[GateVerdict]:
    run = make_run("v1", seed=4)
    vs = list(run.gates)
    vs[0] = vs[0].model_copy(update={"name": LONG[0], "reason": "why " * 60 + "[/boom] [bold]not markup"})
    vs[1] = vs[1].model_copy(update={"name": LONG[1], "status": GateStatus.FAIL})
    return vs


def test_verdict_table_without_a_tty_never_wraps_a_gate_name() -> None:
    buf = io.StringIO()
    console = OutputConsole(file=buf)
    assert not console.is_terminal
    verdicts = _wide_verdicts()
    console.print(verdict_table(verdicts, Decision.BLOCKED, "required gates failed", title="gates: v1"))
    lines = buf.getvalue().splitlines()
    for v in verdicts:
        hits = [line for line in lines if line.startswith(v.name + " ")]
        assert len(hits) == 1, v.name  # the whole name on one line, at its start
        assert v.status.value in hits[0]
    assert "[/boom] [bold]not markup" in buf.getvalue()  # a reason is text, never markup
    assert max(len(line) for line in lines) > 300  # sized to its content, not 80 columns
    # what rich does at its 80-column default off a terminal: names folded over several lines
    plain = io.StringIO()
    Console(file=plain).print(verdict_table(verdicts, Decision.BLOCKED, "x"))
    assert not any(LONG[0] in line for line in plain.getvalue().splitlines())


def test_cli_output_off_a_tty_keeps_long_lines_whole(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.store import Store

    run = make_run("a-tag-" + "x" * 120, seed=4)
    st = Store(tmp_path / "r.db")
    st.save(run)
    res = CliRunner().invoke(app, ["--workdir", str(tmp_path), "--store", str(tmp_path / "r.db"), "runs", "show",
                                   run.run_id])
    assert res.exit_code == 0, res.output
    assert run.image.tag in res.output and f"{run.image.repository}@{run.image.digest}" in res.output


# -- progress without a TTY ---------------------------------------------------------------------
def test_print_reporter_lines_are_timestamped_redacted_and_plain() -> None:
    register_secret(SECRET)
    buf = io.StringIO()
    rep = PrintReporter(stream=buf)
    rep.step(f"push: registry said 401 for token {SECRET}\n::error::injected")
    rep.step("[/boom] server said [bold]hi")
    rep.total(20, "bench requests")
    for _ in range(20):
        rep.advance()
    lines = buf.getvalue().splitlines()
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[llmgate\] ")
    assert all(stamp.match(line) for line in lines), lines
    assert SECRET not in buf.getvalue() and f"token {MASK}" in lines[0]
    assert lines[1].endswith("::error::injected")  # a quoted line cannot start a CI workflow command
    assert not any(re.search(r"\w+\.py:\d+", line) for line in lines)  # no source-file column
    assert lines[2].endswith("[/boom] server said [bold]hi")
    counted = [line for line in lines if "bench requests:" in line]
    assert len(counted) == 10 and counted[-1].split("] ", 1)[1].startswith("bench requests: 20/20 (100%)")
    assert "left" in counted[0]  # an ETA while work remains


def test_eta_text() -> None:
    assert eta_text(10, 40, 5.0) == "10/40 (25%), 5.0 s elapsed, about 15 s left"
    assert eta_text(40, 40, 80.0) == "40/40 (100%), 1 min 20 s elapsed"


# -- live progress on a terminal ----------------------------------------------------------------
def test_rich_reporter_shows_parallel_stages_with_counts_and_masks_secrets() -> None:
    register_secret(SECRET)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=140, color_system=None)
    rep = RichReporter(console, usual=lambda stage: 12.0)
    rep.step("build: started")
    rep.step("#7 [3/8] RUN pip install --no-index /wheels/*.whl")  # BuildKit's own step count
    build = next(t for t in rep._progress.tasks if t.description.startswith("build"))  # type: ignore[union-attr]
    assert (build.total, build.completed) == (8, 2)
    rep.step("build: ok in 61.0s")
    barrier = threading.Barrier(2)

    def stage(name: str, n: int) -> None:
        rep.step(f"{name}: started")
        barrier.wait()
        rep.total(n, f"{name} items")
        for _ in range(n - 1):
            rep.advance()
        barrier.wait()

    threads = [threading.Thread(target=stage, args=(s, n)) for s, n in (("leak", 5), ("scan", 9))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows = {t.description.split(":")[0]: t for t in rep._progress.tasks}  # type: ignore[union-attr]
    assert (rows["leak"].completed, rows["leak"].total) == (4, 5)
    assert (rows["scan"].completed, rows["scan"].total) == (8, 9)
    rep.step(f"scan: trivy said [/boom] with {SECRET}")
    rep.step("leak: ok in 12.0s")
    rep.step("scan: ok in 20.0s")
    assert rep._progress is None  # every stage ended: the live display is gone
    out = buf.getvalue()
    assert SECRET not in out and f"[/boom] with {MASK}" in out
    assert "build: ok in 61.0s" in out and "rich_reporter.py" not in out


def test_usual_durations_from_recent_runs() -> None:
    runs = [make_run("v1", seed=s) for s in (1, 3, 4)]
    runs[0].stages["leak"].reused_from = "abc"  # a reused result says nothing about how long leak takes
    usual = usual_durations(lambda: runs)
    took = sorted(r.stages["leak"].duration_s for r in runs[1:])  # type: ignore[type-var]
    assert usual("leak") == pytest.approx(sum(took) / 2)
    assert usual("promote") is None


def test_plain_strings_printed_by_the_cli_are_never_markup(tmp_path) -> None:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    OutputConsole(file=buf).print("build log: [/bin/sh -c false] [bold]x :warning: 12.5")
    assert buf.getvalue() == "build log: [/bin/sh -c false] [bold]x :warning: 12.5\n"
    from pipeline.store import Store

    run = make_run("[/x]", seed=4)
    st = Store(tmp_path / "r.db")
    st.save(run)
    base = ["--workdir", str(tmp_path), "--store", str(tmp_path / "r.db")]
    res = CliRunner().invoke(app, [*base, "runs", "list"])
    assert res.exit_code == 0 and "[/x]" in res.output, res.output
    out_dir = tmp_path / "[/boom]"
    res = CliRunner().invoke(app, [*base, "report", "--out", str(out_dir)])
    assert res.exit_code == 0 and f"wrote {out_dir / 'index.html'}" in res.output, res.output


def test_rich_reporter_on_a_pipe_prints_plain_lines() -> None:
    buf = io.StringIO()
    rep = RichReporter(Console(file=buf))  # not a terminal
    rep.step("build: started")
    rep.total(2, "epochs")
    rep.advance()
    rep.advance()
    lines = buf.getvalue().splitlines()
    assert rep._progress is None and len(lines) == 3
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[llmgate\] ", line) for line in lines)

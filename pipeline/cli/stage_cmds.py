"""One command per stage, `llmgate <stage>`: each runs that step of a stored run's plan through the one
Runner and prints its result.

Every registered stage has its command, built from its spec when it runs (`stage_command`): its help is
the spec's, `--server-url` where the stage serves or talks to a server, `--fresh` where its result can
be reused. A stage whose command does more than run the step has its own here: the build starts a run,
the scan also checks a report, the eval re-scores and takes a judge, the manifests check an overlay,
the gate records an approval and writes JUnit. A stage that talks to the server boots the run's image
first, unless `--server-url` names a server started elsewhere; the server is stopped when the command
ends.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer
from rich.text import Text

from pipeline.cli.app import (
    LAZY_COMMANDS,
    ConfigOpt,
    LazyCommand,
    RunOpt,
    app,
    console,
    handle_errors,
    make_runner,
    out,
    plain,
    state,
)
from pipeline.cli.run_cmd import FreshOpt, ServerUrlOpt
from pipeline.errors import ExitCode
from pipeline.models import RunRecord, Stage, StageResult
from pipeline.regular_files import check_output

if TYPE_CHECKING:
    from pipeline.stages.spec import StageSpec

manifests_app = typer.Typer(help="Deployment manifests (kustomize overlays).", no_args_is_help=True)
app.add_typer(manifests_app, name="manifests")


def _value(res: StageResult, name: str) -> str:
    v = res.metrics.get(name)
    return "-" if v is None else f"{v:.4g}"


def stage_exit(run: RunRecord, res: StageResult) -> ExitCode:
    """0 when the stage's own check passed, 1 when it found the release wanting, 3 when it failed to measure
    (each stage's spec says which: `StageSpec.exit_code`)."""
    from pipeline.stages.registry import STAGES  # every stage module: not for `llmgate --help`

    return STAGES.spec(res.stage).exit_code(run, res)


def finish_stage(run: RunRecord, res: StageResult) -> None:
    """Print what the stage found and exit with its code."""
    from pipeline.orchestrate.stage_check import outcome

    word = outcome(res)
    line = Text.assemble(f"run {run.run_id}: {res.stage.value} ", (word, "bold red" if word == "blocked" else "bold"))
    if res.reused_from:
        line.append(plain(f" (reused from run {res.reused_from})"))
    out.print(line)
    if res.stage is Stage.GATE:
        from pipeline.report.verdict_table import verdict_table

        out.print(verdict_table(run.gates, run.decision, run.decision_reason, title=f"gates: {run.image.by_tag}"))
    else:
        for name in sorted(res.metrics):
            out.print(plain(f"  {name}: {_value(res, name)}"))
    if res.reason:
        out.print(plain(f"  {res.reason}"))
    for a in res.artifacts:
        console.print(plain(f"  {a.name}: {a.path}"))
    raise typer.Exit(int(stage_exit(run, res)))


def _one(stage: Stage, run_ref: str | None, config: Path | None, **options: object) -> None:
    ws = state.workspace()
    run = ws.load_run(run_ref)
    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"), **options)
    finish_stage(run, runner.run_stage(run, stage))


def stage_command(spec: StageSpec) -> click.Command:
    """`llmgate <stage>` for a stage whose command only runs its step: help and options from the spec."""

    def command(run_ref: RunOpt = None, config: ConfigOpt = None, server_url: ServerUrlOpt = None,
                fresh: FreshOpt = False) -> None:
        options: dict[str, object] = {}
        if "server_url" in params:
            options["server_url"] = server_url
        if "fresh" in params:
            options["fresh"] = fresh
        _one(spec.stage, run_ref, config, **options)

    params = ["run_ref", "config"]
    if spec.server or spec.starts_server:  # attach to a server started elsewhere instead of booting one
        params.append("server_url")
    if spec.reuse_key is not None:
        params.append("fresh")
    signature = inspect.signature(command, eval_str=True)
    command.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[signature.parameters[p] for p in params])
    one = typer.Typer(add_completion=False)
    one.command(spec.name, help=spec.help or _default_help(spec))(handle_errors(command))
    return typer.main.get_command(one)


def _default_help(spec: StageSpec) -> str:
    """The help of a stage that declares none: its doc, the exit codes every stage command has, an example."""
    return (f"{spec.doc[:1].upper()}{spec.doc[1:]}.\n\nExit 0 the step passed, 1 its check failed or it refused, "
            f"2 bad input, 3 infrastructure.\n\nExample: llmgate {spec.name} --run 3f2a9c1b7d4e")


def _lazy(stage: Stage, after: str | None) -> LazyCommand:
    def load() -> click.Command:
        from pipeline.stages.registry import STAGES  # every stage module: only when the command runs

        return stage_command(STAGES.spec(stage))

    return LazyCommand(stage.value, f"Run the {stage.value} step of a stored run (its checks and exit codes: "
                       f"llmgate {stage.value} --help).", load, after=after)


# Every stage without a command of its own below (or elsewhere: `promote`) gets one, in the plans' order.
LAZY_COMMANDS.extend(_lazy(stage, previous.value if previous else None)
                     for previous, stage in zip((None, *Stage), Stage, strict=False))


@app.command()
@handle_errors
def build(
    config: ConfigOpt = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (default: short git commit).")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Weights the release serves.",
                                                   metavar="DIR")] = None,
    fresh: FreshOpt = False,
) -> None:
    """Start a run for the release and build, push and record the image digest.

    Exit 0 built and pushed, 2 bad input/config, 3 infrastructure failure or a failed build.

    Example: llmgate build --tag v1.2.0 --model-dir .llmgate/models/demo-v3
    """
    runner = make_runner(config, fresh=fresh)
    run = runner.create(tag=tag, model_dir=model_dir)
    finish_stage(run, runner.run_stage(run, Stage.BUILD))


@app.command()
@handle_errors
def scan(
    run_ref: RunOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Apply the scan policy to this trivy JSON/SARIF "
                                                "report; trivy is not run.", metavar="FILE")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Gate policy holding the scan: section "
                                                "(default: the config's gates_file).", metavar="FILE")] = None,
    scanners: Annotated[str | None, typer.Option("--scanners", help="With --report: the scanners that made it "
                                                 "(a report does not say).", metavar="vuln,secret,misconfig")] = None,
    ignore_file: Annotated[Path | None, typer.Option("--ignore-file", help="With --report: ignore entries (default: "
                                                     "the policy's ignore_file).", metavar="FILE")] = None,
    config: ConfigOpt = None,
    fresh: FreshOpt = False,
) -> None:
    """Scan the run's image digest with trivy and apply the scan policy. Exit 0 pass, 1 blocked, 2 bad input.

    Example: llmgate scan --report trivy.json --scanners secret,misconfig --policy gates.local.yaml
    """
    if report is None:
        _one(Stage.SCAN, run_ref, config, fresh=fresh)
        return
    from pipeline.config import load_config
    from pipeline.supplychain.scan_policy import check_report

    cfg = load_config(config)
    verdict = check_report(report, Path(policy or cfg.gates_file), ignore_file=ignore_file,
                           scanners=scanners.split(",") if scanners is not None else None)
    print_scan_verdict(verdict)
    raise typer.Exit(int(ExitCode.PASS if verdict.passed else ExitCode.GATE_FAILED))


def print_scan_verdict(verdict) -> None:  # type: ignore[no-untyped-def]
    counts = ", ".join(f"{k}={'not run' if v is None else v}" for k, v in verdict.counts.items())
    out.print(plain(f"vulnerabilities: {counts}; secrets={verdict.secrets}; misconfigs={verdict.misconfigs}"),
              soft_wrap=True)
    for i in verdict.ignored:
        out.print(plain(f"  ignored {i.id} {i.pkg or ''} by {i.by}"), soft_wrap=True)
    for p in [*verdict.problems, *(b.render() for b in verdict.blocking)]:
        out.print(Text.assemble("  ", ("BLOCKING", "red"), " ", plain(p)), soft_wrap=True)
    out.print(Text("scan: pass", style="green") if verdict.passed
              else Text(f"scan: blocked ({verdict.blocking_count})", style="red"))


@app.command("eval")
@handle_errors
def eval_cmd(
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    server_url: ServerUrlOpt = None,
    fresh: FreshOpt = False,
    rescore: Annotated[bool, typer.Option("--rescore", help="Recompute the scores from the run's stored answers "
                                          "(no server).")] = False,
    judge_url: Annotated[str | None, typer.Option("--judge-url", help="OpenAI-compatible judge base URL.",
                                                  metavar="URL")] = None,
    judge_model: Annotated[str | None, typer.Option("--judge-model", help="Judge model name.")] = None,
    judge_key_env: Annotated[str | None, typer.Option("--judge-key-env", help="Environment variable holding the "
                                                      "judge API key.", metavar="NAME")] = None,
) -> None:
    """Score the served model on the run's ground truth, per quality dimension (boots the image first).

    `--rescore` recomputes every score offline from the answers the run stored (with another judge, say).

    Example: llmgate eval --run 3f2a9c1b7d4e --rescore --judge-url http://judge:8000/v1 --judge-model judge
    """
    from pipeline.config import JudgeConfig
    from pipeline.errors import BadInput

    ws = state.workspace()
    run = ws.load_run(run_ref)
    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"), server_url=server_url, fresh=fresh)
    if judge_url or judge_model:
        if not (judge_url and judge_model):
            raise BadInput("--judge-url and --judge-model go together", where="--judge-url/--judge-model")
        runner.cfg.eval.judge = JudgeConfig(base_url=judge_url, model=judge_model,
                                            **({"api_key_env": judge_key_env} if judge_key_env else {}))
    if rescore:
        if server_url:
            raise BadInput("--rescore works on stored answers; it takes no --server-url", where="--server-url")
        finish_stage(run, runner.rescore(run))
    finish_stage(run, runner.run_stage(run, Stage.EVAL))


@manifests_app.command("check")
@handle_errors
def manifests_check(
    run_ref: RunOpt = None,
    overlay: Annotated[str, typer.Option("--overlay", help="Overlay under MANIFESTS/overlays.")] = "canary",
    manifests_dir: Annotated[Path, typer.Option("--manifests", help="kustomize tree (base + overlays).",
                                                metavar="DIR")] = Path("manifests"),
    config: ConfigOpt = None,
) -> None:
    """Render OVERLAY with the run's two digests, validate the schemas, apply the policy. Exit 1 on any violation.

    Example: llmgate manifests check --run 3f2a9c1b7d4e --overlay production
    """
    _one(Stage.MANIFESTS, run_ref, config, overlay=overlay, manifests_dir=manifests_dir, fresh=True)


@app.command()
@handle_errors
def gate(
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Gate policy (default: the config's gates_file).",
                                                metavar="FILE")] = None,
    junit: Annotated[Path | None, typer.Option("--junit", help="Also copy junit.xml here (for CI test reports).",
                                               metavar="FILE")] = None,
    approve: Annotated[str | None, typer.Option(
        "--approve-first-release", metavar="WHY",
        help="Record a person's approval to judge a first release (no baseline yet) on what was measured: "
             "gates with a margin and no threshold then pass on it instead of being inconclusive. Needs --by.",
    )] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who approves (with --approve-first-release).",
                                           metavar="NAME")] = None,
) -> None:
    """Judge a stored run against the gate policy and its baseline. Exit 0 pass, 1 blocked or inconclusive
    (the message says which, and why), 2 bad input.

    Example: llmgate gate --run 3f2a9c1b7d4e --junit reports/llmgate.xml
    """
    if junit is not None:
        check_output(junit, what="JUnit file", where=f"--junit {junit}")  # a FIFO or a device: refused up front
    ws = state.workspace()
    run = ws.load_run(run_ref)
    if (approve is None) != (by is None):
        from pipeline.errors import BadInput

        raise BadInput("--approve-first-release and --by go together: who approves, and why",
                       where="--approve-first-release" if approve is None else "--by")
    if approve is not None and by is not None:
        from pydantic import ValidationError

        from pipeline.errors import BadInput
        from pipeline.models import utcnow
        from pipeline.schemas.gate import Approval

        try:
            run.first_release_approval = Approval(by=by.strip(), at=utcnow(), reason=approve.strip())
        except ValidationError as exc:
            raise BadInput("an approval names who (1-200 characters) and why (15-2000 characters): "
                           + "; ".join(str(e["msg"]) for e in exc.errors()), where="--approve-first-release") from exc
    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"))
    if policy is not None:
        runner.cfg.gates_file = str(policy)
    res = runner.run_stage(run, Stage.GATE)
    if junit is not None:
        from pipeline.errors import BadInput

        try:
            junit.write_bytes((ws.run_dir(run.run_id) / "junit.xml").read_bytes())
        except OSError as exc:
            raise BadInput(f"cannot write junit.xml there: {exc.strerror} (the verdict is saved in the store)",
                           where=str(junit)) from exc
    console.print(plain(f"verdict: {ws.run_dir(run.run_id) / 'verdict.json'}"))
    finish_stage(run, res)


"""`llmgate run` (the whole plan), `new-run`, `stage` (one step of a run's plan) and `export`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from pipeline.cli.app import ConfigOpt, RunOpt, app, console, handle_errors, make_runner, out, plain, state
from pipeline.errors import BadInput, ExitCode
from pipeline.models import ImageRef, Stage

PlanOpt = Annotated[str, typer.Option("--plan", help="Which plan: local (this machine's engine) or dagger (CI).",
                                      metavar="local|dagger")]
ServerUrlOpt = Annotated[str | None, typer.Option(
    "--server-url", help="Measure this server (started elsewhere) instead of booting the image.", metavar="URL")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Recompute every stage, even with unchanged inputs.")]


@app.command("run")
@handle_errors
def run_cmd(
    config: ConfigOpt = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (default: short git commit).")] = None,
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Weights directory to serve (read-only).",
                                                   metavar="DIR")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="Gate policy (default: the config's gates_file).",
                                                metavar="FILE")] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="Stage to skip (recorded as not run; its gates "
                                                   "decide).", metavar="STAGE")] = None,
    fresh: FreshOpt = False,
    remeasure: Annotated[bool, typer.Option("--remeasure", help="Boot and bench again even when this machine "
                                            "measured the same release recently enough for the policy's "
                                            "reuse.bench_max_age_s.")] = False,
    server_url: ServerUrlOpt = None,
    server: Annotated[str, typer.Option("--server", help="Which serving image and API: transformers (the demo "
                                        "default) or llamacpp (llama.cpp serving a GGUF base model).",
                                        metavar="transformers|llamacpp")] = "transformers",
    plan: PlanOpt = "local",
    image: Annotated[str | None, typer.Option("--image", help="The image to measure, built and pushed elsewhere "
                                              "(the dagger plan), by digest.", metavar="REPO@sha256:…")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Promotion target the run is for.")] = None,
    run_ref: Annotated[str | None, typer.Option("--run", help="Go on with this stored run (`llmgate new-run`) "
                                                "instead of starting one.", metavar="RUN_ID")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only this step of the plan (repeat for "
                                                   "more); the others are left as they are.",
                                                   metavar="STAGE")] = None,
) -> None:
    """Build, push, check, sign, boot, measure, score, gate, attest and report one release.

    Exit codes: 0 every required gate passed, 1 a gate failed, 2 bad input/config, 3 infrastructure failure.
    Some steps only: exit 0 when they did not fail and the gates have not run yet. The dagger plan measures
    an image and a server started elsewhere (Dagger's; or by hand).

    Example: llmgate run --model-dir .llmgate/models/demo-v3 --tag demo-good
    """
    from pipeline.models import Decision
    from pipeline.orchestrate.runner import exit_code_for
    from pipeline.report.verdict_table import verdict_table
    from pipeline.serving.presets import apply_server

    if run_ref is not None:
        given = {"--tag": tag, "--model-dir": model_dir, "--policy": policy, "--image": image, "--target": target,
                 "--plan": None if plan == "local" else plan, "--server": None if server == "transformers" else server}
        named = [flag for flag, value in given.items() if value is not None]
        if named:
            raise BadInput(f"{', '.join(named)} cannot change a stored run: it already names its release and plan",
                           where="--run")
        run = state.workspace().load_run(run_ref)
        runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"), fresh=fresh, remeasure=remeasure,
                             server_url=server_url)
        runner.check_skip(skip or ())
    else:
        runner = make_runner(config, plan=plan, fresh=fresh, remeasure=remeasure, server_url=server_url)
        apply_server(runner.cfg, server)
        if policy is not None:
            runner.cfg.gates_file = str(policy)
        if target is not None:
            runner.cfg.target = target
        ref = _built_elsewhere(image, runner.plan.name)
        runner.check_skip(skip or ())  # before the run is created: a refused option leaves no record behind
        if only is not None:
            runner.check_stages(only, where="--only")
        run = runner.create(tag=tag if tag is not None else (ref.tag if ref else None), image=ref, model_dir=model_dir)
    runner.run(run, skip=skip or (), only=only)
    run_dir = state.workspace().run_dir(run.run_id)
    if run.gates or run.decision is not Decision.PENDING:
        out.print(verdict_table(run.gates, run.decision, run.decision_reason, title=f"gates: {run.image.by_tag}"))
    out.print(Text.assemble(f"run {run.run_id}: ", (run.decision.value, "bold"), " ", plain(run.decision_reason)))
    out.print(plain(f"image {run.image.by_digest if run.digest else run.image.by_tag}"))
    if run.model:
        out.print(plain(f"model {run.model.digest} ({run.model.files} files, {run.model.bytes / 1e6:.1f} MB)"))
    out.print(plain(f"record: {run_dir / 'run.json'}  report: {run_dir / 'report.html'}"))
    if only is not None and run.decision is Decision.PENDING:
        raise typer.Exit(int(ExitCode.PASS))  # these steps are done; the gates decide later
    raise typer.Exit(int(exit_code_for(run)))


def _built_elsewhere(image: str | None, plan: str) -> ImageRef | None:
    """`--image` for the dagger plan (Dagger built and published it), by digest; the local plan builds its own."""
    if plan == "local":
        if image is not None:
            raise BadInput("the local plan builds and pushes the image itself", where="--image",
                           hint="measure an image built elsewhere with --plan dagger")
        return None
    if image is None:
        raise BadInput(f"the {plan} plan measures an image built elsewhere: give it by digest", where="--image")
    try:
        ref = ImageRef.parse(image)
    except ValueError as exc:
        raise BadInput(f"{image!r} is not an image reference: {exc}", where="--image") from None
    if ref.digest is None:
        raise BadInput(f"{image!r} is not pinned by digest (repo@sha256:…)", where="--image")
    return ref


@app.command("new-run")
@handle_errors
def new_run_cmd(
    image: Annotated[str, typer.Option("--image", help="Image built elsewhere, by digest.", metavar="REPO@sha256:…")],
    model_dir: Annotated[Path | None, typer.Option("--model-dir", help="Weights directory it serves.",
                                                   metavar="DIR")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Tag label for dashboards.")] = None,
    target: Annotated[str | None, typer.Option("--target", help="Promotion target the run is for.")] = None,
    plan: PlanOpt = "dagger",
    config: ConfigOpt = None,
) -> None:
    """Start a run for an image built outside llmgate (Dagger's BuildKit); prints the weights' digest
    (`model sha256:…`) and, last, the run id.

    Example: llmgate new-run --image registry.example.com/llm/server@sha256:… --model-dir /models --plan dagger
    """
    from pipeline.models import ImageRef

    ref = ImageRef.parse(image)
    if ref.digest is None:
        raise BadInput(f"{image!r} is not pinned by digest (repo@sha256:…)", where="--image")
    runner = make_runner(config, plan=plan)
    if target is not None:
        runner.cfg.target = target
    run = runner.create(tag=tag or ref.tag, image=ref, model_dir=model_dir)
    if run.model is not None:  # the serving container is told this digest and checks its weights against it
        out.print(Text(f"model {run.model.digest}"))
    out.print(Text(run.run_id))


@app.command("stage")
@handle_errors
def stage_cmd(
    stage: Annotated[Stage, typer.Argument(help="The step of the run's plan to run.")],
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    server_url: ServerUrlOpt = None,
    fresh: FreshOpt = False,
) -> None:
    """Run one step of a stored run's plan (booting a server first when the step needs one).

    Exit 0 the stage passed, 1 its gate failed / the release is blocked, 2 bad input, 3 infrastructure.

    Example: llmgate stage bench --run 3f2a9c1b7d4e --server-url http://llm:8000
    """
    from pipeline.cli.stage_cmds import finish_stage

    ws = state.workspace()
    run = ws.load_run(run_ref)
    runner = make_runner(config, run_plan=run.labels.get("llmgate.plan"), server_url=server_url, fresh=fresh)
    res = runner.run_stage(run, stage)
    finish_stage(run, res)


export_app = typer.Typer(help="Export a run's records, or gate results to monitoring systems.\n\n"
                         "Example: llmgate export --run 3f2a9c1b7d4e --out llmgate-out",
                         invoke_without_command=True)
app.add_typer(export_app, name="export")

EXPORTED = ("run.json", "verdict.json", "junit.xml", "summary.md", "report.html")


@export_app.callback()
@handle_errors
def export_run(
    ctx: typer.Context,
    run_ref: RunOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Directory to write the files to.",
                                                 metavar="DIR")] = None,
) -> None:
    """Write a run's run.json, verdict.json, junit.xml, summary.md and report.html into one directory.

    Example: llmgate export --run 3f2a9c1b7d4e --out llmgate-out
    """
    if ctx.invoked_subcommand is not None:
        return
    if out_dir is None:
        raise BadInput("where to? give --out DIR", where="--out")
    from pipeline.orchestrate.runner import write_reports

    ws = state.workspace()
    run = ws.load_run(run_ref)
    write_reports(run, ws)
    src = ws.run_dir(run.run_id)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        missing = []
        for name in EXPORTED:
            if (src / name).is_file():
                shutil.copyfile(src / name, out_dir / name)
            else:
                missing.append(name)
    except OSError as exc:
        raise BadInput(f"cannot write there: {exc.strerror}", where=str(out_dir)) from exc
    if missing:
        console.print(Text(f"not written (the run has no gate verdict yet): {', '.join(missing)}", style="yellow"))
    out.print(plain(f"exported run {run.run_id} to {out_dir}"))
    if missing:
        raise typer.Exit(int(ExitCode.GATE_FAILED))

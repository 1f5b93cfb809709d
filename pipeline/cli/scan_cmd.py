"""Supply-chain commands: `llmgate scan`, `sign`, `verify`, `lint-dockerfiles`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, save_run, state
from pipeline.errors import ExitCode

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="llmgate.yaml (default: ./llmgate.yaml if present).")]


def _print_verdict(verdict) -> None:  # type: ignore[no-untyped-def]
    counts = ", ".join(f"{k}={'not run' if v is None else v}" for k, v in verdict.counts.items())
    out.print(f"vulnerabilities: {counts}; secrets={verdict.secrets}; misconfigs={verdict.misconfigs}",
              highlight=False, soft_wrap=True)
    for i in verdict.ignored:
        out.print(escape(f"  ignored {i.id} {i.pkg or ''} by {i.by}"), highlight=False, soft_wrap=True)
    for p in verdict.problems:
        out.print(f"  [red]BLOCKING[/] {escape(p)}", highlight=False, soft_wrap=True)
    for b in verdict.blocking:
        out.print(f"  [red]BLOCKING[/] {escape(b.render())}", highlight=False, soft_wrap=True)
    out.print("[green]scan: pass[/]" if verdict.passed else f"[red]scan: blocked ({verdict.blocking_count})[/]")


@app.command()
@handle_errors
def scan(
    run_ref: RunOpt = None,
    report: Annotated[Path | None, typer.Option("--report", help="Apply the policy to this trivy JSON/SARIF report; trivy is not run.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", help="gates.yaml holding the scan: section (default: the config's gates_file).")] = None,
    ignore_file: Annotated[Path | None, typer.Option("--ignore-file", help="Ignore file (default: the policy's ignore_file).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Scan the run's image digest with trivy and apply the scan policy. Exit 0 pass, 1 blocked, 2 bad input."""
    from pipeline.config import load_config
    from pipeline.progress import PrintReporter
    from pipeline.stages.scan import apply_policy, policy_for, scan_stage
    from pipeline.supplychain.scan_policy import ScanVerdict, load_policy
    from pipeline.supplychain.trivy_report import load_report

    cfg = load_config(config)
    pol = load_policy(policy) if policy is not None else policy_for(cfg)
    if report is not None:
        verdict = apply_policy(load_report(report), pol, ignore_file=ignore_file)
        _print_verdict(verdict)
        raise typer.Exit(int(ExitCode.PASS if verdict.passed else ExitCode.GATE_FAILED))
    ws = state.workspace()
    run = ws.load_run(run_ref)
    res = scan_stage(run, cfg, ws, PrintReporter(), policy=pol, ignore_file=ignore_file)
    run.add_stage(res)
    save_run(ws, run, run_ref)
    if res.status.value == "skipped":
        console.print(f"[yellow]scan {res.status.value}:[/] {res.reason}")
        raise typer.Exit(int(ExitCode.GATE_FAILED))  # a scan that did not run is never a pass
    verdict = ScanVerdict.model_validate(res.details["verdict"])
    _print_verdict(verdict)
    for a in res.artifacts:
        console.print(f"{a.name}: {a.path}")
    raise typer.Exit(int(ExitCode.PASS if verdict.passed else ExitCode.GATE_FAILED))


@app.command()
@handle_errors
def sign(run_ref: RunOpt = None, config: ConfigOpt = None) -> None:
    """Sign the run's image digest with cosign, attach the scan report, verify. Exit 0 verified, 1 not, 3 cosign missing."""
    from pipeline.config import load_config
    from pipeline.models import StageStatus
    from pipeline.progress import PrintReporter
    from pipeline.stages.sign import sign_stage

    cfg = load_config(config)
    ws = state.workspace()
    run = ws.load_run(run_ref)
    res = sign_stage(run, cfg, ws, PrintReporter())
    run.add_stage(res)
    save_run(ws, run, run_ref)
    d = res.details
    out.print(f"sign: {res.status.value} verified={res.metrics.get('verified')} {res.reason or ''}", highlight=False)
    if d.get("signature_ref"):
        out.print(f"signature: {d['signature_ref']} ({d.get('signature_ref_kind')})", highlight=False)
    if res.status is StageStatus.ERROR:
        raise typer.Exit(int(ExitCode.INFRA))
    raise typer.Exit(int(ExitCode.PASS if res.metrics.get("verified") == 1.0 else ExitCode.GATE_FAILED))


@app.command()
@handle_errors
def verify(
    image: Annotated[str | None, typer.Argument(help="repo@sha256:… (default: the run's image)")] = None,
    run_ref: RunOpt = None,
    config: ConfigOpt = None,
    guard: Annotated[bool, typer.Option("--guard", help="Apply the full promotion guard (also needs a passing scan in the store).")] = False,
) -> None:
    """Verify the signature of an image digest against the configured key. Exit 0 verified, 1 not."""
    from pipeline.adapters.cosign import COSIGN_NOT_FOUND, Cosign
    from pipeline.config import load_config
    from pipeline.errors import GateFailed
    from pipeline.models import ImageRef
    from pipeline.stages.sign import cosign_options, verify_image
    from pipeline.supplychain.guard import check_promotable

    cfg = load_config(config)
    ws = state.workspace()
    ref = ImageRef.parse(image) if image else ws.load_run(run_ref).image
    if guard:
        result = check_promotable(ref, ws.store, cfg)
        out.print(f"promotable: {result.ref} (scan run {result.scan_run_id}; {result.verify_reason})", highlight=False)
        return
    if ref.digest is None:
        raise GateFailed("verify by digest, not by tag", where=ref.by_tag)
    cosign = Cosign.discover(cosign_options(cfg.sign, ref.by_digest))
    if cosign is None:
        raise GateFailed(f"signature cannot be verified: {COSIGN_NOT_FOUND}", where=ref.by_digest)
    result = verify_image(cosign, ref.by_digest, cfg.sign)
    out.print(f"{ref.by_digest}: {result.reason}", highlight=False)
    raise typer.Exit(int(ExitCode.PASS if result.verified else ExitCode.GATE_FAILED))


@app.command("lint-dockerfiles")
@handle_errors
def lint_dockerfiles_cmd(
    files: Annotated[list[Path] | None, typer.Argument(help="Dockerfiles (default: dockerfiles/*.Dockerfile).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option("--build-arg", help="NAME=VALUE as the build passes it.")] = None,
    no_hadolint: Annotated[bool, typer.Option("--no-hadolint", help="Skip hadolint.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Offline Dockerfile policy (digest-pinned FROM, non-root USER, no credentials, no weights,
    secrets only via --mount=type=secret) plus hadolint. Exit 0 clean, 1 violations, 2 bad input."""
    from pipeline.baselock import read_lock
    from pipeline.config import load_config
    from pipeline.errors import BadInput
    from pipeline.supplychain.dockerfile_policy import default_dockerfiles, lint_dockerfiles

    cfg = load_config(config)
    args = dict(cfg.build.build_args)
    lock = read_lock(Path(cfg.stack.lock_file))
    if lock is not None:
        args.setdefault("BASE_IMAGE", lock.ref)  # what `llmgate build` passes
    for item in build_arg or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise BadInput("expected NAME=VALUE", where=f"--build-arg {item}")
        args[name] = value
    paths = list(files or default_dockerfiles())
    if not paths:
        raise BadInput("no Dockerfiles found", where="dockerfiles/*.Dockerfile")
    result = lint_dockerfiles(paths, build_args=args, hadolint=not no_hadolint)
    for v in result.violations:
        tag = "[red]ERROR[/]" if v.blocking else "[yellow]note[/]"
        out.print(f"{tag} {escape(v.render())}", highlight=False, soft_wrap=True)
    if result.hadolint:
        console.print(f"hadolint {result.hadolint}")
    out.print(f"{len(result.files)} file(s), {len(result.blocking)} blocking violation(s)")
    raise typer.Exit(int(ExitCode.GATE_FAILED if result.blocking else ExitCode.PASS))

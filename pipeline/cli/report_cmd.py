"""`llmgate report`, `serve-dashboard`, `summary` and `export prometheus`: outputs for people and CI."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from pipeline.cli.app import RunOpt, app, console, handle_errors, out, plain, state, warn_unreadable
from pipeline.cli.run_cmd import export_app
from pipeline.errors import BadInput
from pipeline.regular_files import append_text, check_output
from pipeline.report import markdown, prometheus
from pipeline.report.run_page import write_run_report
from pipeline.report.site import write_site_from_store


@app.command()
@handle_errors
def report(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Output directory (default: WORKDIR/site).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run: write its report.json and report.html.")]
    = None,
) -> None:
    """Write the static dashboard (heatmap, per-tag history, run pages, compare, promotions) from the store.

    Example: llmgate report --out .llmgate/site
    """
    ws = state.workspace()
    try:
        if run is not None:
            rec = ws.load_run(run)
            base = ws.store.get(rec.baseline_run_id) if rec.baseline_run_id else None
            paths = write_run_report(rec, out_dir or ws.run_dir(rec.run_id), baseline=base)
            out.print(Text(f"wrote {paths.html} and {paths.json}"))
            return
        target = out_dir or ws.root / "site"
        res = write_site_from_store(ws.store, target)
    except OSError as exc:  # the directory given cannot be written (a file on its path, no permission, full)
        raise BadInput(f"cannot write the report there: {exc.strerror or exc}", where=f"--out {out_dir}") from exc
    out.print(Text(f"wrote {res.index} (run pages: {res.run_pages}, tag pages: {res.tag_pages})"))
    warn_unreadable(ws.store.unreadable)


@app.command("serve-dashboard")
@handle_errors
def serve_dashboard(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free port).")]
    = 8765,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Where to write the pages (default: a temp dir).")]
    = None,
) -> None:
    """Serve the dashboard on 127.0.0.1 until interrupted; pages refresh when the store changes.

    Example: llmgate serve-dashboard --port 8765
    """
    from pipeline.report.serve import make_server

    ws = state.workspace()
    site_dir = out_dir or Path(tempfile.mkdtemp(prefix="llmgate-site-"))
    try:
        server = make_server(ws.store, site_dir, port)
    except OSError as exc:
        raise BadInput(f"cannot listen: {exc}", where=f"--port {port}") from exc
    host, bound = server.server_address[:2]
    console.print(Text(f"serving the dashboard on http://{host}:{bound}/ (Ctrl-C to stop)"))
    try:
        server.serve_forever()
    finally:
        server.server_close()


@app.command()
@handle_errors
def summary(
    run: RunOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="Output format (markdown).")] = "markdown",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Append to this file (e.g. "
                                                "$GITHUB_STEP_SUMMARY) instead of printing.")] = None,
    report_url: Annotated[str | None, typer.Option("--report-url", help="Link to the full report.")] = None,
) -> None:
    """Markdown summary of a run against its baseline, failing gates first (PR comment, CI job summary).

    Example: llmgate summary --run 3f2a9c1b7d4e --output "$GITHUB_STEP_SUMMARY"
    """
    if fmt != "markdown":
        raise BadInput(f"unknown format {fmt!r}; supported: markdown", where="--format")
    if output is not None:
        check_output(output, what="summary file", where=f"--output {output}")  # before the work, not after
    ws = state.workspace()
    rec = ws.load_run(run)
    base = None
    if rec.baseline_run_id:
        try:
            base = ws.store.get(rec.baseline_run_id)
        except BadInput:
            base = None  # baseline pruned from this store: the gate verdicts still carry its values
    text = markdown.render_summary(rec, base, report_url=report_url)
    if output is None:
        typer.echo(text, nl=False)
    else:
        append_text(output, text, what="summary file", where=f"--output {output}")
        console.print(plain(f"appended summary to {output}"))


@export_app.command("prometheus")
@handle_errors
def export_prometheus(
    textfile: Annotated[Path | None, typer.Option("--textfile", help="Write the text format here (*.prom).")]
    = None,
    pushgateway: Annotated[str | None, typer.Option("--pushgateway", help="Pushgateway base URL.")] = None,
) -> None:
    """Gate values of the latest run per tag, as a textfile and/or pushed to a Pushgateway.

    Example: llmgate export prometheus --textfile /var/lib/node_exporter/llmgate.prom
    """
    if textfile is None and pushgateway is None:
        raise BadInput("give --textfile PATH or --pushgateway URL", where="export prometheus")
    if textfile is not None:  # replaced by rename: a device there would be replaced too
        check_output(textfile, what="textfile", where=f"--textfile {textfile}")
    runs = state.workspace().store.runs()
    if textfile is not None:
        prometheus.write_textfile(runs, textfile)
        out.print(Text(f"wrote {textfile}"))
    if pushgateway is not None:
        groups = prometheus.push(runs, pushgateway)
        out.print(Text(f"pushed {len(groups)} tag groups to the Pushgateway"))

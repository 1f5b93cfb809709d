"""`llmgate` command line: importing the command modules registers them on `app`."""

from pipeline.cli import (  # noqa: F401  (imported for their registrations)
    bench_cmd,
    boot_cmd,
    build_cmd,
    calibrate_cmd,
    eval_cmd,
    gate_cmd,
    promote_cmd,
    report_cmd,
    run_cmd,
    scan_cmd,
    stack_cmd,
)
from pipeline.cli.app import app


def main() -> None:
    app()

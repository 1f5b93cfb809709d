"""`llmgate` command line: importing the command modules registers them on `app`."""

from pipeline.cli import (  # noqa: F401  (imported for their registrations)
    calibrate_cmd,
    demo_model_cmd,
    ground_truth_cmd,
    keys_cmd,
    lint_dockerfiles_cmd,
    policy_cmd,
    promote_cmd,
    report_cmd,
    run_cmd,
    runs_cmd,
    stack_cmd,
    stage_cmds,
    verify_cmd,
)
from pipeline.cli.app import app


def main() -> None:
    app()

"""`llmgate calibrate refusal|judge`: agreement of a scorer or LLM judge with human labels.

Parses options and prints; the measuring is evals/calibration.py (refusal),
evals/correctness_calibration.py (correctness) and evals/judge_calibration.py (LLM judges), whose
docstrings give the label formats and what `--save` stores for the gate engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from evals.calibration import (
    DEFAULT_BOOT,
    DEFAULT_SEED,
    MIN_SAVE_N,
    CalibrationRecord,
    CalibrationResult,
    calibrate_refusal,
    save_calibration,
    wilson_interval,
)
from pipeline.cli.app import app, handle_errors, out, positive_seconds
from pipeline.config import MAX_CONCURRENCY

calibrate_app = typer.Typer(help="Measure how well a scorer or LLM judge agrees with human labels.", no_args_is_help=True)
app.add_typer(calibrate_app, name="calibrate")

LabelsOpt = Annotated[list[Path], typer.Option("--labels", help="Labelled CSV (repeat for several sets).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print exactly one JSON object.")]
SaveOpt = Annotated[
    bool,
    typer.Option("--save", help=f"Store the record for the gates (at least {MIN_SAVE_N} labelled rows in total)."),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="With --save: replace a stored record even when it rests on more distinct rows."),
]
# Refused by click (exit 2, naming the option) before any labels are read or a scorer is loaded.
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Bootstrap seed.")]
BootOpt = Annotated[int, typer.Option("--boot", min=1, max=1_000_000, help="Bootstrap resamples.")]


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _emit(
    results: list[CalibrationResult],
    record: CalibrationRecord,
    *,
    as_json: bool,
    save: bool,
    force: bool,
    failures: dict[str, int] | None = None,
) -> None:
    """Save the record when asked (`--save`, `--force`), then print the results."""
    saved = save_calibration(record, force=force) if save else None
    if as_json:
        obj = results[0].model_dump(mode="json") if len(results) == 1 else record.model_dump(mode="json")
        if saved:
            obj["saved"] = str(saved)
        if failures:
            obj["judge_failures"] = failures
        obj["trust"] = _trust(results)
        out.print_json(json.dumps(obj))
        return
    for r in results:
        dropped = f" ({r.duplicates_dropped} duplicate rows dropped)" if r.duplicates_dropped else ""
        out.print(
            f"{r.labels}: n={r.n}{dropped} {'held out' if r.held_out else 'IN-SAMPLE'} ({r.method}) "
            f"agreement={r.agreement:.3f} "
            f"[{_fmt(r.agreement_ci95.low)}, {_fmt(r.agreement_ci95.high)}] "
            f"kappa={_fmt(r.kappa)} [{_fmt(r.kappa_ci95.low)}, {_fmt(r.kappa_ci95.high)}] "
            f"tp={r.confusion['tp']} fp={r.confusion['fp']} fn={r.confusion['fn']} tn={r.confusion['tn']}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if len(results) > 1:
        out.print(
            f"pooled: n={record.n} agreement={record.agreement:.3f} kappa={_fmt(record.kappa)} "
            f"worst={record.worst_agreement:.3f}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"scorer: {record.scorer_id} (95% CIs: percentile bootstrap)", markup=False, highlight=False, soft_wrap=True)
    trust = _trust(results)
    out.print(trust, markup=False, highlight=False, soft_wrap=True)
    if failures:
        out.print(f"judge failures (counted as 'no'): {failures}", markup=False, highlight=False, soft_wrap=True)
    if saved:
        out.print(f"saved: {saved}", markup=False, highlight=False, soft_wrap=True)


def _trust(results: list[CalibrationResult]) -> str:
    """What the gates will trust from these results (evals.calibration.trust_for on the saved record)."""
    held = [r for r in results if r.held_out]
    n = sum(r.n for r in held)
    if not n:
        return "trust: none (no held-out rows: in-sample figures are never trusted)"
    agree = sum(r.confusion["tp"] + r.confusion["tn"] for r in held)
    lo, hi = wilson_interval(agree, n)
    return f"trust: held-out n={n} agreement={agree / n:.3f} Wilson 95% [{lo:.3f}, {hi:.3f}] (gates use {lo:.3f})"


@calibrate_app.command("refusal")
@handle_errors
def refusal_cmd(
    labels: LabelsOpt,
    as_json: JsonOpt = False,
    save: SaveOpt = False,
    force: ForceOpt = False,
    seed: SeedOpt = DEFAULT_SEED,
    boot: BootOpt = DEFAULT_BOOT,
) -> None:
    """Offline refusal scorer vs. XSTest-format labels (prompt, completion, final_label).

    A labels file the scorer was trained on is scored by the same training without that file
    (leave-one-file-out), so every figure is held out.

    Example: llmgate calibrate refusal --labels xstest/completions_gpt4.csv --save
    """
    results, record = calibrate_refusal(labels, seed=seed, n_boot=boot)
    _emit(results, record, as_json=as_json, save=save, force=force)


@calibrate_app.command("correctness")
@handle_errors
def correctness_cmd(
    labels: LabelsOpt,
    ground_truth: Annotated[Path, typer.Option("--ground-truth", help="Ground-truth version the labelled "
                                               "questions come from.")] = Path("ground_truth/v3"),
    as_json: JsonOpt = False,
    save: SaveOpt = False,
    force: ForceOpt = False,
    seed: SeedOpt = DEFAULT_SEED,
    boot: BootOpt = DEFAULT_BOOT,
) -> None:
    """The correctness scorer (facts first, similarity for paraphrase) vs. labels (question, response, label).

    Example: llmgate calibrate correctness --labels ground_truth/v3/labels/correctness.csv --save
    """
    from evals.correctness_calibration import calibrate_correctness

    results, record = calibrate_correctness(labels, ground_truth, seed=seed, n_boot=boot)
    _emit(results, record, as_json=as_json, save=save, force=force)


@calibrate_app.command("judge")
@handle_errors
def judge_cmd(
    labels: LabelsOpt,
    dimension: Annotated[str, typer.Option("--dimension", help="faithfulness or answer_relevance.")],
    judge_url: Annotated[str, typer.Option("--judge-url", help="OpenAI-compatible base URL (…/v1).")],
    judge_model: Annotated[str, typer.Option("--judge-model", help="Model name the judge serves.")],
    judge_key_env: Annotated[
        str | None, typer.Option("--judge-key-env", help="Environment variable holding the judge key.")
    ] = "LLMGATE_JUDGE_API_KEY",
    judge_key_file: Annotated[Path | None, typer.Option("--judge-key-file", help="File holding the judge key.")] = None,
    threshold: Annotated[float, typer.Option("--threshold", help="Score at or above which the judge says yes.")] = 0.5,
    timeout_s: Annotated[float, typer.Option("--timeout", callback=positive_seconds,
                                             help="Seconds per judge call.")] = 60.0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=MAX_CONCURRENCY,
                                             help="Samples judged at once.")] = 4,
    as_json: JsonOpt = False,
    save: SaveOpt = False,
    force: ForceOpt = False,
    seed: SeedOpt = DEFAULT_SEED,
    boot: BootOpt = DEFAULT_BOOT,
) -> None:
    """An LLM judge on a ragas dimension vs. labels (question, response, label[, contexts]).

    Example: llmgate calibrate judge --labels labels.csv --dimension faithfulness --judge-url http://judge:8000/v1 --judge-model judge
    """
    from evals.judge_calibration import calibrate_judge
    from pipeline.config import JudgeConfig

    judge = JudgeConfig(
        base_url=judge_url,
        model=judge_model,
        api_key_env=judge_key_env,
        api_key_file=str(judge_key_file) if judge_key_file else None,
        timeout_s=timeout_s,
        concurrency=concurrency,
    )
    cal = calibrate_judge(labels, dimension, judge, threshold=threshold, seed=seed, n_boot=boot)
    _emit(cal.results, cal.record, as_json=as_json, save=save, force=force, failures=cal.failures)

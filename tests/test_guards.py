"""Guards that only a planted fault shows working. Each test here fails when its guard is removed (a
mutation audit changed each guard's one line and the rest of the suite still passed):

- secrets masked in progress/CI log lines (`pipeline.progress.PrintReporter`, and the terminal reporter)
  and in the container logs the boot stage records (`pipeline.stages.boot._save_logs`);
- error text is not mangled by redaction ("[REDACTED] arg": a `where` ending in a credential-named field
  read as `key: value`), and short registered values are not masked as substrings;
- the readiness-lag sign (`pipeline.bench.startup.judge_readiness`: a probe that says ready long after
  completions work is dishonest; one that says ready before them is not);
- a server that rejects `ignore_eos` is detected and the bench goes on without it
  (`pipeline.stages.bench._probe_ignore_eos`), against a double answering as vLLM does.
"""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from pipeline.bench.startup import Probe, StartupTimeline, judge_readiness, watch_startup
from pipeline.config import PipelineConfig
from pipeline.models import ImageRef, RunRecord, StageStatus
from pipeline.progress import PrintReporter
from pipeline.redact import MASK, redact_text, register_secret
from pipeline.schemas import BenchDetails
from pipeline.stages.bench import bench_stage
from pipeline.stages.boot import _save_logs
from pipeline.workspace import Workspace
from tests.doubles.metronome import Running
from tests.stage_helpers import served_ctx

SECRET = "pl4nted-guard-s3cret-7319"
GH_TOKEN = "ghp_" + "A1b2C3d4E5" * 4  # a credential format masked without being registered


def test_ci_log_lines_mask_registered_secrets_and_credential_formats() -> None:
    register_secret(SECRET)
    buf = io.StringIO()
    rep = PrintReporter(stream=buf)
    rep.step(f"#9 [4/7] RUN echo {SECRET} > /tmp/x")
    rep.step(f"push: denied for {GH_TOKEN}\nsecond line {SECRET}")
    text = buf.getvalue()
    assert SECRET not in text and GH_TOKEN not in text
    assert text.count(MASK) == 3 and f"RUN echo {MASK} > /tmp/x" in text


def test_terminal_progress_lines_mask_secrets() -> None:
    from pipeline.cli.rich_reporter import RichReporter

    register_secret(SECRET)
    buf = io.StringIO()
    rep = RichReporter(Console(file=buf, force_terminal=True, width=200, color_system=None))
    rep.step(f"boot: log said token={SECRET}")
    assert SECRET not in buf.getvalue() and MASK in buf.getvalue()


class _LoggedContainer:
    """Container TEST DOUBLE: only what `_save_logs` reads from a docker container, its log text."""

    name = "llmgate-boot-test"

    def __init__(self, text: str) -> None:
        self.text = text

    def logs(self, tail: int | str = "all") -> str:
        return self.text


def test_recorded_container_logs_are_redacted(tmp_path) -> None:
    register_secret(SECRET)
    art = _save_logs(tmp_path, _LoggedContainer(f"loading weights\nHF_TOKEN={SECRET}\nauth {GH_TOKEN}\nready\n"),
                     "boot-rep0.log")
    saved = (tmp_path / "boot-rep0.log").read_text()
    assert SECRET not in saved and GH_TOKEN not in saved and saved.count(MASK) == 2
    assert "loading weights" in saved and art.sha256 is not None


def test_error_text_is_not_mangled_by_redaction() -> None:
    """The cause of "[REDACTED] arg": an error renders as `where: message`, and a `where` that ends in a
    credential-named field (`build.build_args.API_TOKEN`, `/etc/passwd`, `sign.password`) followed by ": "
    read as `token: value`, so the message's first word was masked. A credential key must start a word."""
    for text in ("build.build_args.API_TOKEN: build arg API_TOKEN carries (part of) the value of secret 'pip_conf'",
                 "/etc/passwd: exists and is not a directory", "sign.password: cannot read password file"):
        assert redact_text(text) == text
    # ...while a credential written as key=value or key: value anywhere in a line still is masked
    for text, kept in (("HF_TOKEN=hf0123456789 rest", "HF_TOKEN="), ("export API_KEY=zzzz9999", "API_KEY="),
                       ("registry password: abcd1234", "password: "), ("--password=hunter22", "--password=")):
        assert redact_text(text).startswith(text[:text.index(kept)] + kept + MASK), redact_text(text)


def test_a_short_registered_value_is_not_masked_inside_ordinary_words() -> None:
    """A registered secret of a few characters ("build") is also a word; values shorter than
    MIN_SECRET_CHARS are not registered (the leak check refuses such a build secret anyway)."""
    register_secret("build")
    register_secret(b"arg\n")
    assert redact_text("build arg DEBUG carries (part of) the value") == "build arg DEBUG carries (part of) the value"
    long = "s3cr3t-value-0042"
    register_secret(long)
    assert redact_text(f"x{long}y") == f"x{MASK}y"


# -- readiness honesty ---------------------------------------------------------------------------------
def _timeline(health_ok_s: float | None, first_completion_s: float) -> StartupTimeline:
    return StartupTimeline(port_open_s=0.1, health_ok_s=health_ok_s, first_completion_s=first_completion_s,
                           probes=[Probe(t_s=0.5, status=503)])


def test_a_probe_ready_long_after_completions_work_is_dishonest() -> None:
    honest, why = judge_readiness(_timeline(health_ok_s=20.0, first_completion_s=2.0), "/health", 5.0)
    assert honest is False and "became ready 18.0s after completions worked" in why


def test_a_probe_ready_before_completions_work_is_honest() -> None:
    honest, why = judge_readiness(_timeline(health_ok_s=1.0, first_completion_s=4.0), "/health", 0.5)
    assert honest is True, why
    honest, _ = judge_readiness(_timeline(health_ok_s=4.4, first_completion_s=4.0), "/health", 0.5)
    assert honest is True  # within tolerance


def test_a_real_probe_still_not_ready_after_the_tolerance_is_dishonest() -> None:
    """The metronome serves completions at once but says ready on its probe path only 5 s after it started;
    the watch gives the probe `lag_tolerance_s` after the first good completion, then judges it."""
    import time

    with Running("--ready-after-s", "5", "--complete-after-s", "0") as m:
        tl = asyncio.run(watch_startup(base_url=m.base_url, alive=lambda: (True, None), t0=time.perf_counter(),
                                       timeout_s=15, readiness_path="/health", interval_s=0.1, lag_tolerance_s=1.0,
                                       request_timeout_s=5))
    assert tl.ready and tl.health_ok_s is None and tl.probes and tl.probes[-1].status == 503
    assert tl.readiness_honest is False and "still not ready 1s after completions worked" in tl.readiness_reason


# -- ignore_eos --------------------------------------------------------------------------------------------
def _bench_cfg(tmp_path) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {"boot": {"model_dir": str(tmp_path / "no-model")},
         "bench": {"prompts": "synthetic", "requests": 6, "warmup": 1, "concurrency": 2, "max_tokens": 6,
                   "input_tokens": 8, "request_timeout_s": 5, "ignore_eos": True, "same_run_baseline": False}})


def test_a_server_that_rejects_ignore_eos_is_detected_and_the_bench_goes_on_without_it(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running("--reject-ignore-eos") as m:
        res = bench_stage(run, served_ctx(_bench_cfg(tmp_path), ws, m.base_url, "metronome"))
    details = res.details_as(BenchDetails)
    assert details is not None and details.ignore_eos.startswith("rejected by server: HTTP 400")
    assert "extra_forbidden" in details.ignore_eos and "ignore_eos" in details.ignore_eos
    assert res.status is StageStatus.OK and res.metrics["error_rate"] == 0.0, details.error_reasons
    assert details.ignore_eos_honoured is None  # not sent, so not judged


def test_a_server_that_accepts_ignore_eos_gets_it(tmp_path) -> None:
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("x/y:z"))
    with Running() as m:
        res = bench_stage(run, served_ctx(_bench_cfg(tmp_path), ws, m.base_url, "metronome"))
    details = res.details_as(BenchDetails)
    assert details is not None and details.ignore_eos == "sent" and details.ignore_eos_honoured == 1.0

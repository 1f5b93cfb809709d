"""Bench stage: streamed requests against a running server; TTFT, TPOT, ITL, E2E, throughput, errors,
goodput. Definitions: `pipeline.bench.stats` (and docs/METRICS.md).

Target: the server the runner holds (the boot stage started it, or `--server-url` attached to one).
Every per-request sample is kept as a JSONL artifact; `samples` carries `ttft_s`, `tpot_s`, `e2e_s` for
rank tests.
Status: `failed` when the server stopped accepting connections during the run (died), when every
request failed, or when TPOT is below the decode floor (a broken measurement); otherwise `ok`, with
the error rate as a metric for the gates.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from pipeline.bench import floor as floor_mod
from pipeline.bench import prompts as prompts_mod
from pipeline.bench.client import API_PATHS, RequestSample, request_payload, stream_request
from pipeline.bench.environment import EnvironmentProbe
from pipeline.bench.interleave import Interleaved, interleave
from pipeline.bench.load import Target, fixed_concurrency, poisson, sweep
from pipeline.bench.server_metrics import Scraper, cross_check, detect
from pipeline.bench.stats import Slo, error_reasons, summarize
from pipeline.config import PipelineConfig
from pipeline.metrics import Metric, Series
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.progress import Reporter
from pipeline.schemas import BenchDetails, BootDetails
from pipeline.schemas.bench import BenchAttempt, SameRunBaseline
from pipeline.stages.context import StageContext, StageOptions
from pipeline.stages.spec import EVIDENCE, StageSpec


async def _probe_ignore_eos(target: Target, payload: dict[str, Any]) -> str:
    """Send one request with ignore_eos; a 400/422 naming the field means the server rejects it."""
    async with target.client(2) as client:
        s = await stream_request(client, target.url, payload, timeout_s=target.timeout_s)
    if s.status_code in (400, 422) and s.error and "ignore_eos" in s.error:
        return f"rejected by server: {s.error[:160]}"
    return "sent"


def _payloads(texts: list[str], model: str | None, max_tokens: int, ignore_eos: bool, api: str) -> list[dict[str, Any]]:
    return [request_payload(api, model, t, max_tokens, ignore_eos=ignore_eos) for t in texts]


def _floor(cfg: PipelineConfig, run: RunRecord, tpot_p50: float | None) -> tuple[dict[str, Any] | None, str]:
    mbytes = cfg.bench.model_bytes or (run.model.bytes if run.model else floor_mod.model_bytes(cfg.boot.model_dir))
    bw = cfg.bench.gpu_bandwidth_gbps
    gpu_name = None
    boot = run.details_as(BootDetails)
    gpus = boot.gpu.gpus if boot else []
    if bw is None and gpus:
        gpu_name = gpus[0].name
        bw = floor_mod.bandwidth_for(gpu_name)
    if mbytes is None:
        return None, "not computed: model bytes unknown (set bench.model_bytes)"
    if bw is None:
        why = f"GPU {gpu_name!r} not in the bandwidth table" if gpu_name else "no GPU recorded by boot"
        return None, f"not computed: {why} (set bench.gpu_bandwidth_gbps)"
    out = floor_mod.floor_check(tpot_p50, mbytes, bw)
    out["gpu"] = gpu_name
    return out, ""


async def _measure(
    cfg: PipelineConfig,
    target: Target,
    payloads: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    scraper: Scraper,
    reporter: Reporter,
    details: BenchDetails,
    probe: EnvironmentProbe,
    baseline: tuple[Target, str | None] | None = None,
    deadline: float | None = None,
) -> tuple[list[RequestSample], dict[str, Any], Interleaved | None]:
    """The measured samples, the server-metrics cross-check and, with a baseline server, both sides
    interleaved block by block. `deadline` (perf_counter) bounds warm-up and measurement together."""
    b = cfg.bench
    end = deadline if deadline is not None else time.perf_counter() + b.deadline_s

    def left() -> float:
        return max(0.0, end - time.perf_counter())

    slo = Slo(b.slo_ttft_s, b.slo_tpot_s, b.slo_e2e_s)
    both: Interleaved | None = None
    probe.before()  # the server is up and idle: a quiet window to judge the machine by
    async with httpx.AsyncClient(trust_env=False) as mclient:
        if b.shape == "sweep":
            base = payloads

            def make(c: int) -> list[dict[str, Any]]:
                n = max(len(base), 2 * c)
                return [base[i % len(base)] for i in range(n)]

            await fixed_concurrency(target, [], max(1, b.concurrency), warmup=warm, deadline_s=left())
            before = await scraper.snapshot(mclient)
            probe.start()
            levels, sat = await sweep(target, make, b.sweep_levels, slo=slo, deadline_s=left())
            details.environment = probe.stop()
            after = await scraper.snapshot(mclient)
            details.sweep = [{"concurrency": lv.concurrency, **lv.metrics} for lv in levels]
            details.saturation_concurrency = sat
            pick = next((lv for lv in levels if lv.concurrency == sat), levels[-1] if levels else None)
            details.concurrency = pick.concurrency if pick else None
            samples = pick.samples if pick else []
            gauges: dict[str, list[float]] = {}
        else:
            interleaved = baseline is not None and b.shape == "concurrency"
            samples = [] if interleaved else await fixed_concurrency(
                target, [], max(1, b.concurrency), warmup=warm, deadline_s=left())
            before = await scraper.snapshot(mclient)
            names = detect(before)[1] if before else {}
            poller = asyncio.ensure_future(scraper.poll_gauges(mclient, names)) if before else None
            reporter.total(len(payloads), "bench requests")
            probe.start()
            try:
                if baseline is not None and interleaved:
                    both = await interleave(target, baseline[0], payloads, concurrency=b.concurrency,
                                            block_size=b.block_size, warmup=warm, baseline_model=baseline[1],
                                            deadline_s=left())
                    samples = [*both.warmup.get("candidate", []), *both.candidate]
                elif b.shape == "poisson":
                    samples += await poisson(
                        target, payloads, b.rate_rps, seed=b.seed, max_concurrency=None, deadline_s=left()
                    )
                else:
                    samples += await fixed_concurrency(target, payloads, b.concurrency, deadline_s=left())
            finally:
                details.environment = probe.stop()
                if poller is not None:
                    poller.cancel()
                    await asyncio.gather(poller, return_exceptions=True)
            reporter.advance(len(payloads))
            after = await scraper.snapshot(mclient)
            gauges = scraper.gauges
        measured = [s for s in samples if s.phase == "measure" and s.ok]
        means = {
            "ttft": _mean([s.ttft_s for s in measured]),
            "itl": _mean([x for s in measured for x in s.itl_s]),
            "e2e": _mean([s.e2e_s for s in measured]),
        }
        xc = cross_check(before, after, means, gauges)
        if scraper.available is False:
            xc["reason"] = scraper.reason
        return samples, xc, both


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def planned_requests(cfg: PipelineConfig, ctx: StageContext, run: RunRecord, *, same_run: bool) -> tuple[int, str]:
    """How many requests (per side) to send, and why: the configured number, or what the policy needs
    (its latency comparisons only when there is a baseline release to compare with)."""
    b = cfg.bench
    policy = ctx.policy
    need = None
    if policy is not None:
        compared = same_run or ctx.ws.store.last_promoted(run.target) is not None
        from pipeline.gates import sizing  # scipy: loaded when a bench is sized, not with the plan

        need, needs = sizing.bench_requests(policy, stored=not same_run, comparisons=compared)
        top = needs[0].why if needs else f"min_n {policy.min_n}"
    if b.requests is not None:
        if need is not None and b.requests < need:
            return b.requests, (f"bench.requests={b.requests} as configured, fewer than the {need} the policy needs "
                                f"({top}): the gates judge what was sent")
        return b.requests, f"bench.requests={b.requests} as configured"
    if need is None:
        return DEFAULT_REQUESTS, f"{DEFAULT_REQUESTS} requests (no gate policy to size the bench by)"
    if need > b.max_requests:
        return b.max_requests, (f"the policy needs {need} requests ({top}), capped at bench.max_requests="
                                f"{b.max_requests}: the gates will say what this many cannot show")
    return need, f"{need} requests, what the policy needs ({top})"


def _undecided_on_disturbed(ctx: StageContext, run: RunRecord, metrics: dict[str, float | None],
                            same_run: bool) -> list[str]:
    """The required performance gates a disturbed measurement leaves undecided: a violated threshold
    (the disturbance may explain it) or a comparison with a baseline (not judged on a disturbed run)."""
    policy = ctx.policy
    if policy is None:
        return []
    stored = None if same_run else ctx.ws.store.last_promoted(run.target)
    out = []
    for g in policy.gates:
        src, cmp = g.parsed_source, g.parsed_compare
        if not g.required or src.stage is not Stage.BENCH:
            continue
        if src.performance and g.threshold is not None:
            v = metrics.get(src.name)
            if v is not None and not (v <= g.threshold if g.direction == "max" else v >= g.threshold):
                out.append(f"{g.name} threshold")
        if cmp is not None and cmp.performance and g.margin is not None and (same_run or stored is not None):
            out.append(f"{g.name} comparison")
    return out


def _judge_attempt(cfg: PipelineConfig, ctx: StageContext, run: RunRecord, details: BenchDetails,
                   metrics: dict[str, float | None], both: Interleaved | None, n: int) -> tuple[str | None, int]:
    """Why this measurement should be repeated (None: it stands), and the requests the next one sends.
    A disturbed machine is measured again only when that leaves a gate undecided (a threshold met on a
    disturbed machine is met: other work only slows a release down)."""
    env = details.environment
    if env is not None and env.disturbed:
        undecided = _undecided_on_disturbed(ctx, run, metrics, both is not None)
        if undecided:
            return f"environment disturbed ({'; '.join(env.reasons)}), undecided: {', '.join(undecided)}", n
    if both is not None and ctx.policy is not None:
        from pipeline.gates import sizing

        need = sizing.remeasure_need(ctx.policy, both.series("candidate"), both.series("baseline"))
        if need is not None and n < cfg.bench.max_requests:
            return f"underpowered: {need.why}", min(max(need.n, n + 1), cfg.bench.max_requests)
    return None, n


def _wait_quiet(probe: EnvironmentProbe, wait_s: float, deadline: float, reporter: Reporter) -> bool:
    """Sample one-second windows until one is quiet, for at most `wait_s` (and never past the deadline)."""
    end = min(time.perf_counter() + wait_s, deadline)
    while time.perf_counter() < end:
        if probe.quiet(1.0):
            return True
        reporter.step("bench: waiting for the machine to become quiet before measuring again")
        time.sleep(min(4.0, max(0.0, end - time.perf_counter())))
    return False


def bench_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    cfg, reporter = ctx.cfg, ctx.reporter
    server = ctx.require_server("bench")
    b = cfg.bench
    deadline = time.perf_counter() + b.deadline_s  # the whole stage: probe, warm-up, measurements
    url, model = server.base_url, cfg.boot.served_model_name or server.model
    ctx.adapters.server().require_up(url)
    tokenizer = prompts_mod.load_tokenizer(cfg.boot.model_dir)
    base = ctx.baseline_server
    if base is not None and b.shape != "concurrency":
        reporter.step(f"bench: the same-run baseline needs the concurrency shape, not {b.shape}: stored samples")
        base = None
    n, sized = planned_requests(cfg, ctx, run, same_run=base is not None)
    target = Target(url, path=API_PATHS[cfg.boot.api], timeout_s=b.request_timeout_s,
                    count_tokens=prompts_mod.token_counter(tokenizer))
    ignore = "not requested"
    if b.ignore_eos and b.prompts == "synthetic":
        first = _prompt_set(cfg, tokenizer, 1).prompts[:1]
        ignore = asyncio.run(_probe_ignore_eos(target, _payloads(first, model, 2, True, cfg.boot.api)[0]))
    send_ignore = ignore == "sent"
    against = "" if base is None else f", interleaved with baseline run {base.run_id} at {base.base_url}"
    base_target = None if base is None else (
        Target(base.base_url, path=target.path, timeout_s=b.request_timeout_s, count_tokens=target.count_tokens),
        base.model)
    # the bench's own side: this process (client) and the servers under test, when their pids are known
    servers = [s for s in (server, base) if s is not None]
    local = any(_is_local(s.base_url) for s in servers)
    own = [os.getpid(), *(s.pid for s in servers if s.pid)]
    attributable = not local or all(s.pid for s in servers if _is_local(s.base_url))
    probe = EnvironmentProbe(own=own if attributable else None)
    attempts: list[BenchAttempt] = []
    t_origin = time.perf_counter()
    while True:
        pset = _prompt_set(cfg, tokenizer, n + b.warmup)
        warm = _payloads(pset.prompts[:b.warmup], model, b.max_tokens, send_ignore, cfg.boot.api)
        payloads = _payloads(pset.prompts[b.warmup :], model, b.max_tokens, send_ignore, cfg.boot.api)
        details = BenchDetails(
            base_url=url,
            model=model,
            shape=b.shape,
            prompts=pset.source,
            exact_input_tokens=pset.exact_input_tokens,
            requests=len(payloads),
            requests_sized=sized,
            warmup=len(warm),
            concurrency=b.concurrency if b.shape != "poisson" else None,
            rate_rps=b.rate_rps if b.shape == "poisson" else None,
            max_tokens=b.max_tokens,
            ignore_eos=ignore,
            tokens_estimated=False,
            slo={"ttft_s": b.slo_ttft_s, "tpot_s": b.slo_tpot_s, "e2e_s": b.slo_e2e_s},
        )
        reporter.step(f"bench: {len(payloads)} requests ({b.shape}) against {url}{against}"
                      + (f" (attempt {len(attempts) + 1})" if attempts else "") + f"; {sized}")
        t_origin = time.perf_counter()
        samples, xc, both = asyncio.run(_measure(cfg, target, payloads, warm, Scraper(url, b.metrics_path), reporter,
                                                 details, probe, base_target, deadline))
        slo = Slo(b.slo_ttft_s, b.slo_tpot_s, b.slo_e2e_s)
        m = both.metrics("candidate", slo) if both is not None else summarize(samples, slo)
        again, next_n = _judge_attempt(cfg, ctx, run, details, m, both, n)
        attempts.append(BenchAttempt(requests=len(payloads), disturbed=bool(details.environment and
                                                                            details.environment.disturbed),
                                     repeat_because=again))
        if again is None or len(attempts) > b.remeasure or time.perf_counter() >= deadline:
            break
        reporter.step(f"bench: measuring again: {again}")
        disturbed = details.environment is not None and details.environment.disturbed
        if disturbed and not _wait_quiet(probe, b.quiet_wait_s, deadline, reporter):
            attempts[-1].repeat_because = f"{again}; the machine did not become quiet within {b.quiet_wait_s:g} s"
            break
        if next_n != n:
            n, sized = next_n, f"{next_n} requests after an underpowered measurement"
    details.attempts = attempts
    result = StageResult(stage=Stage.BENCH, status=StageStatus.OK)
    details.server_metrics = xc
    measured = [s for s in samples if s.phase == "measure"]
    ok = [s for s in measured if s.ok]
    details.tokens_estimated = bool(m.pop("tokens_estimated", 0.0))
    m.pop("requests", None)
    for s in ok:
        details.tokens_source[s.tokens_source or "?"] = details.tokens_source.get(s.tokens_source or "?", 0) + 1
    implausible = [s for s in ok if s.tokens_discrepancy]
    if implausible:
        details.token_count_discrepancies = len(implausible)
        details.token_count_discrepancy = implausible[0].tokens_discrepancy
    if send_ignore and ok:
        details.ignore_eos_honoured = sum(1 for s in ok if s.output_tokens == s.max_tokens) / len(ok)
    details.error_reasons = error_reasons(samples)
    details.rx_timestamps = target.rx.source
    lags = [s.sent_s - s.scheduled_s for s in measured if s.scheduled_s is not None]
    if lags:
        details.send_lag_p99_s = float(sorted(lags)[min(len(lags) - 1, int(0.99 * len(lags)))])
    if "client_minus_server_ttft_s" in xc:
        m["client_minus_server_ttft_s"] = xc["client_minus_server_ttft_s"]
    details.floor, details.floor_reason = _floor(cfg, run, m.get("tpot_p50_s"))
    if details.floor:
        m["decode_floor_s"] = details.floor["decode_floor_s"]
        m["mbu"] = details.floor.get("mbu")
    if details.environment is not None:
        m |= details.environment.metrics()
    result.metrics = m
    result.samples = both.samples() if both is not None else {
        "ttft_s": [s.ttft_s for s in ok if s.ttft_s is not None],
        "tpot_s": [s.tpot_s for s in ok if s.tpot_s is not None],
        "e2e_s": [s.e2e_s for s in ok if s.e2e_s is not None],
    }
    if both is not None and base is not None:
        details.same_run_baseline = SameRunBaseline(
            run_id=base.run_id, image=base.image, model_digest=base.model_digest, base_url=base.base_url,
            block_size=b.block_size, blocks=len(both.blocks), metrics=both.metrics("baseline", slo))
    path = ctx.ws.run_dir(run.run_id) / "bench-samples.jsonl"
    with path.open("w") as f:
        for s in samples:
            f.write(json.dumps(s.to_json(t_origin)) + "\n")
        for s in both.baseline if both is not None else []:
            f.write(json.dumps({**s.to_json(t_origin), "side": "baseline"}) + "\n")
    result.artifacts.append(Artifact(name="bench-samples.jsonl", path=str(path), media_type="application/x-ndjson"))
    result.details = details
    failed = len(measured) - len(ok)
    gone = failed > 0 and not ctx.adapters.server().reachable(url)
    if gone:
        result.status = StageStatus.FAILED
        result.reason = (
            f"server stopped accepting connections during the run ({failed} of {len(measured)} requests failed: "
            f"{details.error_reasons})"
        )
    elif measured and not ok:
        result.status, result.reason = StageStatus.FAILED, f"every request failed: {details.error_reasons}"
    elif details.floor and details.floor.get("below_floor"):
        result.status = StageStatus.FAILED
        result.reason = (
            f"broken measurement: TPOT p50 {m.get('tpot_p50_s')}s is below the decode floor "
            f"{details.floor['decode_floor_s']:.6f}s"
        )
    notes = []
    if implausible:
        notes.append(f"server token counts implausible in {len(implausible)} of {len(ok)} requests "
                     f"({details.token_count_discrepancy}); counted from the stream instead")
    if "fewer than" in sized or "capped" in sized:
        notes.append(sized)
    if len(attempts) > 1:
        notes.append(f"measured {len(attempts)} times: " + "; ".join(
            f"{a.requests} requests, again because {a.repeat_because}" for a in attempts[:-1]))
    if attempts and attempts[-1].repeat_because:
        notes.append(f"the last measurement stands although {attempts[-1].repeat_because} (re-measures: "
                     f"bench.remeasure={b.remeasure})")
    for note in notes:
        result.reason = f"{result.reason}; {note}" if result.reason else note
    unsent = sum(1 for s in measured if (s.error or "").startswith("not sent: run deadline"))
    if unsent:
        note = f"bench.deadline_s={b.deadline_s:g}s reached: {unsent} of {len(measured)} requests not sent"
        result.reason = f"{result.reason}; {note}" if result.reason else note
    reporter.step(
        f"bench: TTFT p50 {_ms(m.get('ttft_p50_s'))} p99 {_ms(m.get('ttft_p99_s'))}, TPOT p50 "
        f"{_ms(m.get('tpot_p50_s'))} p99 {_ms(m.get('tpot_p99_s'))}, errors {m.get('error_rate')}"
    )
    return result


DEFAULT_REQUESTS = 40  # without a policy to size by (a stage run on its own)


def _prompt_set(cfg: PipelineConfig, tokenizer: Any, count: int) -> prompts_mod.PromptSet:
    b = cfg.bench
    if b.prompts == "synthetic":
        return prompts_mod.synthetic(count, b.input_tokens, tokenizer, seed=b.seed)
    return prompts_mod.ground_truth(cfg.eval.ground_truth, count)


def _is_local(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms"


def reuse_key(run: RunRecord, cfg: PipelineConfig, _options: StageOptions) -> dict[str, object] | None:
    if run.release.model_digest is None:
        return None
    # The policy too: it may size the bench (how many requests its comparisons need).
    return {"image": run.release.image_digest, "model": run.release.model_digest,
            "bench": cfg.bench.model_dump(mode="json"), "boot": cfg.boot.model_dump(mode="json"),
            "policy": run.release.policy_sha256}


def _latency(name: str, series: str | None) -> Metric:
    return Metric(name, "s", "lower", f"samples:{series}" if series else None, performance=True)


# The help of `llmgate bench`.
HELP = (
    "Measure TTFT, TPOT, ITL, E2E, throughput, error rate and goodput (boots the image first).\n"
    "\n"
    "Exit 0 measured, 3 the server failed. Load shape and sizes come from the config's `bench:` "
    "section.\n"
    "\n"
    "Example: llmgate bench --run 3f2a9c1b7d4e"
)

SPEC = StageSpec(
    help=HELP,
    stage=Stage.BENCH, evidence=True, run=bench_stage, details=BenchDetails, needs=(Stage.BOOT,), server=True,
    credentials=EVIDENCE, reuse_key=reuse_key, measurement=True, measures_machine=True,
    metrics=(
        *(_latency(f"ttft_{s}_s", "ttft_s") for s in ("mean", "p50", "p90", "p99")),
        *(_latency(f"tpot_{s}_s", "tpot_s") for s in ("mean", "p50", "p90", "p99")),
        *(_latency(f"itl_{s}_s", None) for s in ("p50", "p99")),
        *(_latency(f"e2e_{s}_s", "e2e_s") for s in ("p50", "p99")),
        Metric("output_tokens_per_s", "tokens/s", "higher", performance=True),
        Metric("requests_per_s", "requests/s", "higher", performance=True),
        Metric("error_rate", "ratio", "lower"),
        Metric("goodput", "ratio", "higher", performance=True,
               description="share of all requests that succeeded and met every SLO at once"),
        # Noisy-neighbour readings (pipeline/bench/environment.py): CPU steal is the share of CPU time the
        # hypervisor gave to other guests; busy, the share of CPU time not idle in a quiet window before the
        # bench; load, the 1-minute load average per CPU; disturbed (1/0) is the judgement.
        Metric("env_steal_before", "ratio", "lower"),
        Metric("env_steal_during", "ratio", "lower"),
        Metric("env_busy_before", "ratio", "lower"),
        Metric("env_load_before", "load", "lower"),
        Metric("env_load_during", "load", "lower"),
        # CPU time of processes other than the bench and the server under test, during the bench; and the
        # share of the machine other work took (what a disturbed run's slowdown can be blamed on)
        Metric("env_others_during", "ratio", "lower"),
        Metric("env_disturbance", "ratio", "lower"),
        Metric("env_disturbed", "bool", "lower"),
    ),
    # measured on the machine as much as on the release, like the performance metrics
    samples=tuple(Series(s, performance=True) for s in ("ttft_s", "tpot_s", "e2e_s")),
    doc="TTFT, TPOT, ITL, throughput, errors and goodput under load",
)

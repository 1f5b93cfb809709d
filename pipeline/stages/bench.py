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
import time
from typing import Any

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
from pipeline.models import Artifact, RunRecord, Stage, StageResult, StageStatus
from pipeline.progress import Reporter
from pipeline.schemas import BenchDetails, BootDetails
from pipeline.schemas.bench import SameRunBaseline
from pipeline.stages.context import StageContext


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
    boot = run.payload(BootDetails)
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


def bench_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    cfg, reporter = ctx.cfg, ctx.reporter
    server = ctx.require_server("bench")
    b = cfg.bench
    deadline = time.perf_counter() + b.deadline_s  # the whole stage: probe, warm-up and measurement
    url, model = server.base_url, cfg.boot.served_model_name or server.model
    ctx.adapters.server().require_up(url)
    tokenizer = prompts_mod.load_tokenizer(cfg.boot.model_dir)
    n = b.requests
    if b.prompts == "synthetic":
        pset = prompts_mod.synthetic(n + b.warmup, b.input_tokens, tokenizer, seed=b.seed)
    else:
        pset = prompts_mod.ground_truth(cfg.eval.ground_truth, n + b.warmup)
    target = Target(url, path=API_PATHS[cfg.boot.api], timeout_s=b.request_timeout_s,
                    count_tokens=prompts_mod.token_counter(tokenizer))
    ignore = "not requested"
    if b.ignore_eos and b.prompts == "synthetic":
        ignore = asyncio.run(_probe_ignore_eos(target, _payloads(pset.prompts[:1], model, 2, True, cfg.boot.api)[0]))
    send_ignore = ignore == "sent"
    warm = _payloads(pset.prompts[:b.warmup], model, b.max_tokens, send_ignore, cfg.boot.api)
    payloads = _payloads(pset.prompts[b.warmup :], model, b.max_tokens, send_ignore, cfg.boot.api)
    details = BenchDetails(
        base_url=url,
        model=model,
        shape=b.shape,
        prompts=pset.source,
        exact_input_tokens=pset.exact_input_tokens,
        requests=len(payloads),
        warmup=len(warm),
        concurrency=b.concurrency if b.shape != "poisson" else None,
        rate_rps=b.rate_rps if b.shape == "poisson" else None,
        max_tokens=b.max_tokens,
        ignore_eos=ignore,
        tokens_estimated=False,
        slo={"ttft_s": b.slo_ttft_s, "tpot_s": b.slo_tpot_s, "e2e_s": b.slo_e2e_s},
    )
    base = ctx.baseline_server
    against = ""
    if base is not None and b.shape != "concurrency":
        reporter.step(f"bench: the same-run baseline needs the concurrency shape, not {b.shape}: stored samples")
        base = None
    elif base is not None:
        against = f", interleaved with baseline run {base.run_id} at {base.base_url}"
    reporter.step(f"bench: {len(payloads)} requests ({b.shape}) against {url}{against}")
    result = StageResult(stage=Stage.BENCH, status=StageStatus.OK)
    t_origin = time.perf_counter()
    base_target = None if base is None else (
        Target(base.base_url, path=target.path, timeout_s=b.request_timeout_s, count_tokens=target.count_tokens),
        base.model)
    samples, xc, both = asyncio.run(_measure(cfg, target, payloads, warm, Scraper(url, b.metrics_path), reporter,
                                             details, EnvironmentProbe(), base_target, deadline))
    details.server_metrics = xc
    slo = Slo(b.slo_ttft_s, b.slo_tpot_s, b.slo_e2e_s)
    m = both.metrics("candidate", slo) if both is not None else summarize(samples, slo)
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
    if implausible:
        note = (f"server token counts implausible in {len(implausible)} of {len(ok)} requests "
                f"({details.token_count_discrepancy}); counted from the stream instead")
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


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f} ms"

"""guidellm vs llmgate on the same server and workload, in one run.

Starts `transformers serve` on a tiny local model (or uses --url), runs guidellm (its own venv under
.llmgate/guidellm/, since its pins differ from ours) and then llmgate's bench with the same workload:
synthetic prompts of --input-tokens tokens, --output-tokens max tokens, fixed concurrency, same count.
Prints the ratio of medians (guidellm / llmgate) and which guidellm figure is compared with which of ours:

    guidellm time_to_first_token_ms   <-> llmgate ttft  (send -> first content chunk)
    guidellm inter_token_latency_ms   <-> llmgate tpot  ((E2E - TTFT) / (N - 1))
    guidellm time_per_output_token_ms  = E2E / N, no llmgate equivalent (printed for reference)

Controls: --pin (server on its own CPU), --replay (guidellm's own request bodies through llmgate's harness),
--wire (each tool's TTFT against the same request's time on the wire, tcpdump on lo; benchmarks/wire.py),
--metronome (the test double, whose true times are known). Figures: docs/METRICS.md.

    python benchmarks/guidellm_compare.py --model-dir .llmgate/engB/tiny [--url http://127.0.0.1:PORT]
    python benchmarks/guidellm_compare.py --pin --replay --wire
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.server
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
VENV = REPO / ".llmgate" / "guidellm" / "venv"


def ensure_guidellm(version: str) -> Path:
    exe = VENV / "bin" / "guidellm"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", f"guidellm=={version}"], check=True)
    return exe


def start_server(model_dir: Path, port: int, threads: int | None = None) -> subprocess.Popen:
    exe = Path(sys.executable).parent / "transformers"
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    proc = subprocess.Popen(
        [str(exe), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise SystemExit("transformers serve did not come up")


def guidellm_argv(exe: Path, url: str, model_dir: Path, a: argparse.Namespace, out_dir: Path) -> list[str]:
    # guidellm 0.8 syntax (kind=...,key=value). max_tokens goes on the backend, not in the data spec:
    # with output_tokens in the data guidellm adds `ignore_eos`, which `transformers serve` rejects (422);
    # llmgate probes for that and drops the field, so both send the same request body shape.
    argv = [
        str(exe), "run",
        # JSON form, for the nested extras: greedy decoding like llmgate's requests (temperature 0); left
        # out, the server samples, which costs it more per token and is then "measured" as a difference
        "--backend", json.dumps({"kind": "openai_http", "target": url, "model": str(model_dir),
                                 "max_tokens": a.output_tokens, "extras": {"body": {"temperature": 0.0}}}),
        "--profile", f"kind=concurrent,streams={a.concurrency}",
        "--constraint", f"kind=max_requests,count={a.requests}",
        "--data", f"kind=synthetic_text,prompt_tokens={a.input_tokens}",
        "--tokenizer", f"kind=hf_auto,model={model_dir}",
        "--output", f"kind=json,path={out_dir / 'guidellm.json'}",
        "--disable-console-interactive",
    ]
    return argv


def run_guidellm(exe: Path, url: str, model_dir: Path, a: argparse.Namespace, out_dir: Path) -> dict[str, list]:
    argv = guidellm_argv(exe, url, model_dir, a, out_dir)
    print("guidellm:", " ".join(argv))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"guidellm failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    report = json.loads((out_dir / "guidellm.json").read_text())
    reqs = [r for b in report["benchmarks"] for r in b["requests"]["successful"]]
    out = {k: [r[k] for r in reqs if r.get(k) is not None]
           for k in ("time_to_first_token_ms", "inter_token_latency_ms", "time_per_output_token_ms")}
    # for --wire: each request's start (wall clock, guidellm's own clock) with its TTFT
    out["ttft_at"] = [((r.get("info") or {}).get("timings", {}).get("request_start"), r["time_to_first_token_ms"])
                      for r in reqs if r.get("time_to_first_token_ms") is not None]
    out["prompt_tokens"] = [r.get("prompt_tokens") or (r.get("input_metrics") or {}).get("text_tokens") for r in reqs]
    out["output_tokens"] = [r.get("output_tokens") or (r.get("output_metrics") or {}).get("text_tokens") for r in reqs]
    return out


def capture_guidellm_bodies(exe: Path, model_dir: Path, a: argparse.Namespace) -> list[dict]:
    """The request bodies guidellm sends for this workload, caught by a stand-in server (answers 500),
    so llmgate's harness can send exactly the same requests: a control for "same workload"."""
    bodies: list[dict] = []

    class Catch(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            out = json.dumps({"object": "list", "data": [{"id": str(model_dir), "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers.get("content-length") or 0))))
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Catch)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with tempfile.TemporaryDirectory() as d:
            argv = guidellm_argv(exe, f"http://127.0.0.1:{server.server_address[1]}", model_dir, a, Path(d))
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
            subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=600)
    finally:
        server.shutdown()
    if not bodies:
        raise SystemExit("guidellm sent no request to the capture server")
    return bodies


def replay(url: str, bodies: list[dict], concurrency: int) -> dict[str, list]:
    from pipeline.bench.load import Target, fixed_concurrency

    samples = asyncio.run(fixed_concurrency(Target(url, timeout_s=300), bodies, concurrency, warmup=bodies[:1]))
    ok = [s for s in samples if s.phase == "measure" and s.ok]
    return {"ttft_ms": [s.ttft_s * 1000 for s in ok], "tpot_ms": [s.tpot_s * 1000 for s in ok if s.tpot_s]}


def start_capture(a: argparse.Namespace, url: str, tmp: Path) -> contextlib.AbstractContextManager:
    from wire import LoopbackCapture

    if not a.wire:
        return contextlib.nullcontext()
    if a.concurrency != 1:
        raise SystemExit("--wire matches requests in order: concurrency 1 only")
    why = LoopbackCapture.available()
    if why:
        raise SystemExit(f"--wire: {why}")
    return LoopbackCapture(httpx.URL(url).port or 80, tmp / "lo.pcap")


def print_wire(wire: list, g_at: list[tuple[float | None, float]], ours_seq: list[list[float | None]],
               windows: list[tuple[float, float]]) -> None:
    """Each tool's TTFT minus the same request's TTFT on the wire: guidellm's requests matched by their
    start time, llmgate's by order (the last requests of each of its rounds: warm-up and probe come first)."""
    med = statistics.median
    diffs: dict[str, list[float]] = {"guidellm": [], "llmgate": []}
    on_wire: dict[str, list[float]] = {"guidellm": [], "llmgate": []}
    for start, ttft_ms in g_at:
        near = min(wire, key=lambda w: abs(w.start - start)) if wire and start else None
        if near is not None and abs(near.start - start) < 0.05 and near.ttft_s is not None:
            diffs["guidellm"].append(ttft_ms - near.ttft_s * 1000)
            on_wire["guidellm"].append(near.ttft_s * 1000)
    for (w0, w1), seq in zip(windows, ours_seq, strict=True):
        inside = [w for w in wire if w0 <= w.start <= w1][-len(seq):]
        for w, ttft_ms in zip(inside, seq, strict=False):
            if ttft_ms is not None and w.ttft_s is not None:
                diffs["llmgate"].append(ttft_ms - w.ttft_s * 1000)
                on_wire["llmgate"].append(w.ttft_s * 1000)
    for tool in ("guidellm", "llmgate"):
        d = diffs[tool]
        if not d:
            print(f"on the wire: no {tool} request matched")
            continue
        p90 = sorted(abs(x) for x in d)[int(0.9 * (len(d) - 1))]
        print(f"on the wire (tcpdump, lo): {tool}'s requests n={len(d)}: TTFT median {med(on_wire[tool]):.2f} ms; "
              f"reported - wire per request: median {med(d):+.2f} ms, p90 |.| {p90:.2f} ms")


def run_llmgate(url: str, model: str, model_dir: Path, a: argparse.Namespace, ws_dir: Path) -> dict[str, list]:
    from pipeline.config import PipelineConfig
    from pipeline.models import ImageRef, RunRecord
    from pipeline.stages.bench import bench_stage
    from pipeline.workspace import Workspace

    cfg = PipelineConfig.model_validate({
        "boot": {"model_dir": str(model_dir)},
        "bench": {"prompts": "synthetic", "requests": a.requests, "warmup": 1, "concurrency": a.concurrency,
                  "max_tokens": a.output_tokens, "input_tokens": a.input_tokens, "request_timeout_s": 300},
    })
    run = RunRecord(image=ImageRef.parse("external/compare"))
    ws = Workspace(ws_dir)
    bench_stage(run, cfg, ws, base_url=url, model=model)
    # guidellm's inter_token_latency_ms on our own samples: (last content chunk - first) / (N - 1),
    # i.e. without the tail between the last visible chunk and the end of the stream
    rows = [json.loads(x) for x in (ws.run_dir(run.run_id) / "bench-samples.jsonl").read_text().splitlines()]
    gl = [sum(r["itl_s"]) / (r["output_tokens"] - 1) for r in rows
          if r["phase"] == "measure" and not r["error"] and (r["output_tokens"] or 0) > 1]
    ok = [r for r in rows if r["phase"] == "measure" and not r["error"]]
    measured = [r for r in rows if r["phase"] == "measure"]
    return {"ttft_seq": [[r["ttft_s"] * 1000 if r["ttft_s"] is not None else None for r in measured]],
            "ttft_ms": [r["ttft_s"] * 1000 for r in ok], "tpot_ms": [r["tpot_s"] * 1000 for r in ok if r["tpot_s"]],
            "itl_gdef_ms": [x * 1000 for x in gl], "prompt_tokens": [r["prompt_tokens"] for r in ok],
            "output_tokens": [r["output_tokens"] for r in ok], "errors": sum(1 for r in rows if r["phase"] == "measure" and r["error"])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", type=Path, default=REPO / ".llmgate" / "engB" / "tiny")
    ap.add_argument("--url")
    ap.add_argument("--port", type=int, default=18441)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--input-tokens", type=int, default=32)
    ap.add_argument("--output-tokens", type=int, default=16)
    ap.add_argument("--guidellm-version", default="0.8.1")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--pin", action="store_true",
                    help="server on the last CPU, both clients on the others: guidellm's client CPU "
                         "(tens of seconds) then no longer slows the server it is measuring")
    ap.add_argument("--replay", action="store_true",
                    help="also send guidellm's own request bodies through llmgate's harness each round")
    ap.add_argument("--wire", action="store_true",
                    help="referee: capture lo with tcpdump and compare each tool's TTFT with the same request's "
                         "time on the wire (concurrency 1)")
    ap.add_argument("--metronome", action="store_true",
                    help="target the metronome test double (known TTFT and gap) instead of a model server")
    ap.add_argument("--metronome-ttft-ms", type=float, default=50)
    ap.add_argument("--metronome-gap-ms", type=float, default=20)
    a = ap.parse_args()
    exe = ensure_guidellm(a.guidellm_version)
    metronome = None
    if a.metronome:
        from tests.doubles.metronome import Running

        metronome = Running("--ttft-ms", str(a.metronome_ttft_ms), "--gap-ms", str(a.metronome_gap_ms),
                            "--model-name", str(a.model_dir.resolve()))
        a.url = metronome.base_url
    # pinned to one CPU, torch must not run a thread pool sized for all of them
    server = None if a.url else start_server(a.model_dir.resolve(), a.port, threads=1 if a.pin else None)
    url = a.url or f"http://127.0.0.1:{a.port}"
    if a.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least 2 CPUs")
        served = server or (metronome.proc if metronome else None)
        if served is None:
            raise SystemExit("--pin needs a server this script starts (not --url)")
        for task in os.listdir(f"/proc/{served.pid}/task"):  # every thread, torch's pool included
            os.sched_setaffinity(int(task), {cpus[-1]})
        os.sched_setaffinity(0, set(cpus[:-1]))  # guidellm inherits it
        print(f"pinned: server on CPU {cpus[-1]}, clients on {cpus[:-1]}")
    stack = contextlib.ExitStack()
    try:
        print(f"load average: {os.getloadavg()}")
        g: dict[str, list] = {}
        ours: dict[str, list] = {}
        cpu = {"guidellm": 0.0, "llmgate": 0.0}
        per_round = max(2, a.requests // a.rounds)
        a.requests = per_round
        bodies = capture_guidellm_bodies(exe, a.model_dir.resolve(), a) if a.replay else []
        same: dict[str, list] = {}
        capture = stack.enter_context(start_capture(a, url, Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        windows: list[tuple[float, float]] = []  # llmgate's rounds, wall clock
        # alternate the tools round by round, so that load from neighbours hits both alike
        for i in range(a.rounds):
            with tempfile.TemporaryDirectory() as d:
                c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                for k, v in run_guidellm(exe, url, a.model_dir.resolve(), a, Path(d)).items():
                    g.setdefault(k, []).extend(v)
                c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                s0 = resource.getrusage(resource.RUSAGE_SELF)
                w0 = time.time()
                for k, v in run_llmgate(url, str(a.model_dir.resolve()), a.model_dir.resolve(), a, Path(d) / "ws").items():
                    ours.setdefault(k, []).extend(v if isinstance(v, list) else [v])
                windows.append((w0, time.time()))
                s1 = resource.getrusage(resource.RUSAGE_SELF)
                cpu["guidellm"] += c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime
                cpu["llmgate"] += s1.ru_utime + s1.ru_stime - s0.ru_utime - s0.ru_stime
                if bodies:
                    for k, v in replay(url, bodies, a.concurrency).items():
                        same.setdefault(k, []).extend(v)
            print(f"round {i + 1}/{a.rounds} done")
        stack.close()  # stops the capture
        wire = capture.requests() if capture else []
    finally:
        stack.close()
        if server:
            server.terminate()
        if metronome:
            metronome.stop()
    med = statistics.median
    print(f"workload: {a.rounds} rounds x {per_round} requests per tool, concurrency {a.concurrency}, "
          f"{a.input_tokens} in / {a.output_tokens} out; load average {os.getloadavg()}")
    print(f"guidellm n={len(g['time_to_first_token_ms'])}: TTFT median {med(g['time_to_first_token_ms']):.2f} ms, "
          f"inter_token_latency median {med(g['inter_token_latency_ms']):.2f} ms, "
          f"time_per_output_token median {med(g['time_per_output_token_ms']):.2f} ms")
    print(f"llmgate  n={len(ours['ttft_ms'])}: TTFT median {med(ours['ttft_ms']):.2f} ms, "
          f"TPOT median {med(ours['tpot_ms']):.2f} ms, errors {sum(ours['errors'])}")
    print(f"TTFT  guidellm time_to_first_token_ms / llmgate ttft: {med(g['time_to_first_token_ms']) / med(ours['ttft_ms']):.3f}")
    print(f"TPOT  guidellm inter_token_latency_ms / llmgate tpot: "
          f"{med(g['inter_token_latency_ms']) / med(ours['tpot_ms']):.3f}")
    print(f"      guidellm's definition ((last content chunk - first)/(N-1)) on llmgate's samples: "
          f"{med(ours['itl_gdef_ms']):.2f} ms, ratio {med(g['inter_token_latency_ms']) / med(ours['itl_gdef_ms']):.3f}")
    if same:
        print(f"llmgate on guidellm's own request bodies ({len(bodies)} captured, replayed each round) n={len(same['ttft_ms'])}: "
              f"TTFT median {med(same['ttft_ms']):.2f} ms, TPOT median {med(same['tpot_ms']):.2f} ms")
    if a.wire:
        print_wire(wire, g["ttft_at"], ours["ttft_seq"], windows)
    print(f"client CPU seconds (whole run, both share the server's 2 cores): guidellm {cpu['guidellm']:.1f}, "
          f"llmgate {cpu['llmgate']:.1f}")
    pt = [x for x in g["prompt_tokens"] if x]
    ot = [x for x in g["output_tokens"] if x]
    print(f"prompt tokens median: guidellm {med(pt) if pt else '?'}, llmgate {med(ours['prompt_tokens'])}; "
          f"output tokens median: guidellm {med(ot) if ot else '?'}, llmgate {med(ours['output_tokens'])}")
    print("      (guidellm time_per_output_token_ms = E2E/N includes the first token: no llmgate equivalent)")

if __name__ == "__main__":
    main()

"""TEST DOUBLE "metronome": an OpenAI-compatible SSE server that emits tokens at known times.

It is not a model server. It exists to measure the bench harness itself: each content chunk carries
`"metronome": {"recv": t, "sent": t, "i": n}`, the server's CLOCK_MONOTONIC (perf_counter) when it
received the request and when it wrote that chunk, so a client on the same host can subtract what the
server really did from what it measured. Standard library only, so it also runs as a container on the
bare local base image (python3, nothing else).

Timing: chunk i (0-based) is due at recv + ttft + i * gap, where recv is when the request's first
bytes reached this host (the kernel's receive stamp, SO_TIMESTAMPNS): the counterpart of the client's
"send", so neither side's scheduling delays count as the other's. Before the first content chunk a role-only
chunk is sent at once (content-free, so it must not count as TTFT). Then a finish chunk, a usage chunk
(`choices: []`, like vLLM) and `data: [DONE]`.

Fault modes (global `--fault`, or per request with the text `FAULT:<mode>` in the prompt):
malformed (invalid JSON after 2 tokens), cut (connection closed mid-stream after 2 tokens),
http500, hang (headers and role chunk, then silence), die (process exits at once with --exit-code),
silent (the request is read, nothing is ever answered), keepalive (headers and role chunk, then an SSE
comment line every 0.2 s, never a token: how a proxy or server keeps an idle stream open), drip (content
tokens every --gap-ms forever, never a finish_reason). --error-body sets the http500 body (default
`{"error":{"message":"injected failure"}}`). --reject-ignore-eos answers a request carrying `ignore_eos`
with HTTP 400 and the body vLLM's validation handler sends for a field its request model forbids
(`{"error": {"message": <the pydantic errors>, "type": "BadRequestError", "param": null, "code": 400}}`).
Start-up: --listen-after-s (port closed until then), --ready-after-s (readiness path and /health 503
until then), --complete-after-s (completions 503 until then), --never-ready, --die-after-s,
--die-after-requests. --close answers every request with `connection: close` and closes the connection
after it (as servers behind some proxies do); --usage-tokens N reports `completion_tokens: N` in the usage
chunk whatever was streamed (a server whose counts lie). Every option also reads METRONOME_<OPTION> from
the environment.

Run: `python3 metronome.py --port 0 --print-port` prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import sys
import time
from typing import Self

_FAULT_RE = re.compile(r"FAULT:(\w+)")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python names it on Linux only


def _kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """SCM_TIMESTAMPNS (CLOCK_REALTIME) on the perf_counter clock. The same conversion as
    pipeline/bench/rx_pump.py, repeated because this double runs alone (stdlib only, in containers)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec = int.from_bytes(data[:8], sys.byteorder, signed=True)
            rx_real_ns = sec * 1_000_000_000 + int.from_bytes(data[8:16], sys.byteorder, signed=True)
            now_real, now_mono = time.time_ns(), time.perf_counter_ns()
            if 0 <= now_real - rx_real_ns <= 60_000_000_000:
                return (now_mono - (now_real - rx_real_ns)) / 1e9
    return None


def _stamps_on(listener: socket.socket) -> None:
    """Wait until the kernel really stamps: with SO_TIMESTAMPNS on the listener (which every accepted
    socket inherits and which keeps stamping on while we run), Linux still switches stamping on later,
    from a work queue, and TCP segments that arrive before then carry no stamp. A loopback connection to
    ourselves tells when it is on (2 s at most; then requests fall back to user-space stamps)."""
    host, port = listener.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    give_up = time.monotonic() + 2.0
    with socket.create_connection((host, port), timeout=2.0) as tx:
        rx, _addr = listener.accept()
        with rx:
            rx.settimeout(2.0)
            while time.monotonic() < give_up:
                tx.sendall(b".")
                _data, anc, _flags, _addr = rx.recvmsg(1, socket.CMSG_SPACE(16))
                if _kernel_stamp(anc) is not None:
                    return
                time.sleep(0.001)


def _set_once(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Conn:
    """One accepted connection. Reads keep the kernel's arrival stamp (asyncio's streams cannot: the
    loop reads on its own and drops ancillary data); writes are buffered like asyncio's transport."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # SO_TIMESTAMPNS: from the listener
        self.buf = bytearray()
        self.buf_rx = 0.0  # arrival of the oldest unread byte
        self.out = bytearray()

    async def fill(self) -> bool:
        """Wait for bytes and read them; False at EOF."""
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(16))
                break
            except (BlockingIOError, InterruptedError):
                ready = self.loop.create_future()
                self.loop.add_reader(self.sock.fileno(), _set_once, ready)
                try:
                    await ready
                finally:
                    self.loop.remove_reader(self.sock.fileno())
        if not data:
            return False
        if not self.buf:
            stamp = _kernel_stamp(anc)
            self.buf_rx = stamp if stamp is not None else time.perf_counter()
        self.buf += data
        return True

    async def read_until(self, sep: bytes) -> bytes:
        while (at := self.buf.find(sep)) < 0:
            if not await self.fill():
                raise asyncio.IncompleteReadError(bytes(self.buf), None)
        return self.take(at + len(sep))

    async def read_exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self.fill():
                raise asyncio.IncompleteReadError(bytes(self.buf), n)
        return self.take(n)

    def take(self, n: int) -> bytes:
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def write(self, data: bytes) -> None:
        if not self.out:
            try:
                data = data[self.sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
        self.out += data

    def get_write_buffer_size(self) -> int:
        return len(self.out)

    async def drain(self) -> None:
        if self.out:
            pending, self.out = bytes(self.out), bytearray()
            await self.loop.sock_sendall(self.sock, pending)

    def abort(self) -> None:
        """Close with nothing more flushed: a connection cut mid-stream."""
        self.out.clear()
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


def _env(name: str, default: str) -> str:
    return os.environ.get("METRONOME_" + name.upper().replace("-", "_"), default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="metronome test double: OpenAI-compatible SSE at known times")
    p.add_argument("--host", default=_env("host", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(_env("port", "0")))
    p.add_argument("--ttft-ms", type=float, default=float(_env("ttft_ms", "20")))
    p.add_argument("--gap-ms", type=float, default=float(_env("gap_ms", "10")))
    p.add_argument("--tokens", type=int, default=int(_env("tokens", "0")), help="0: use max_tokens")
    p.add_argument("--model-name", default=_env("model_name", "metronome"))
    p.add_argument("--ready-path", default=_env("ready_path", "/v1/models"))
    p.add_argument("--listen-after-s", type=float, default=float(_env("listen_after_s", "0")))
    p.add_argument("--ready-after-s", type=float, default=float(_env("ready_after_s", "-1")), help="-1: same as complete")
    p.add_argument("--complete-after-s", type=float, default=float(_env("complete_after_s", "0")))
    p.add_argument("--never-ready", action="store_true", default=_env("never_ready", "") == "1")
    p.add_argument("--die-after-s", type=float, default=float(_env("die_after_s", "0")))
    p.add_argument("--die-after-requests", type=int, default=int(_env("die_after_requests", "0")))
    p.add_argument("--exit-code", type=int, default=int(_env("exit_code", "7")))
    p.add_argument("--fault", default=_env("fault", "none"))
    p.add_argument("--no-usage", action="store_true", default=_env("no_usage", "") == "1")
    p.add_argument("--no-metrics", action="store_true", default=_env("no_metrics", "") == "1")
    p.add_argument("--error-body", default=_env("error_body", '{"error":{"message":"injected failure"}}'))
    p.add_argument("--reject-ignore-eos", action="store_true", default=_env("reject_ignore_eos", "") == "1")
    p.add_argument("--close", action="store_true", default=_env("close", "") == "1")
    p.add_argument("--usage-tokens", type=int, default=int(_env("usage_tokens", "-1")), help="-1: the true count")
    p.add_argument("--print-port", action="store_true")
    return p.parse_args(argv)


class Metronome:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.t0 = time.perf_counter()
        self.requests = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.itl_sum = 0.0
        self.itl_count = 0
        self.running = 0

    def _since(self) -> float:
        return time.perf_counter() - self.t0

    def _ready(self) -> bool:
        after = self.a.ready_after_s if self.a.ready_after_s >= 0 else self.a.complete_after_s
        return not self.a.never_ready and self._since() >= after

    def _can_complete(self) -> bool:
        return not self.a.never_ready and self._since() >= self.a.complete_after_s

    async def handle(self, conn: Conn) -> None:
        try:
            while True:
                if not conn.buf and not await conn.fill():
                    return
                # t=0 is when the request's first bytes arrived, the counterpart of the client's
                # "send" (its first byte written): how late this loop reads them is not harness error
                recv = conn.buf_rx
                head = (await conn.read_until(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, path, _ = head[0].split(" ", 2)
                headers: dict[str, str] = {}
                for h in head[1:]:
                    k, _, v = h.partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await conn.read_exactly(int(headers.get("content-length", "0") or 0))
                keep = await self.route(method, path.split("?")[0], body, recv, conn)
                if not keep:
                    return
        except (OSError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            conn.close()

    async def _send(self, conn: Conn, status: int, body: bytes, ctype: str) -> bool:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(status, "X")
        close = "connection: close\r\n" if self.a.close else ""
        conn.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n{close}\r\n"
            .encode() + body
        )
        await conn.drain()
        return not self.a.close

    async def route(self, method: str, path: str, body: bytes, recv: float, conn: Conn) -> bool:
        js = "application/json"
        if method == "GET" and path == "/metrics":
            if self.a.no_metrics:
                return await self._send(conn, 404, b'{"detail":"Not Found"}', js)
            return await self._send(conn, 200, self.metrics().encode(), "text/plain; version=0.0.4")
        if method == "GET" and path in (self.a.ready_path, "/health"):
            if not self._ready():
                return await self._send(conn, 503, b'{"status":"loading"}', js)
            if path == "/v1/models":
                data = {"object": "list", "data": [{"id": self.a.model_name, "object": "model"}]}
                return await self._send(conn, 200, json.dumps(data).encode(), js)
            return await self._send(conn, 200, b'{"status":"ok"}', js)
        if method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            return await self.complete(path, body, recv, conn)
        return await self._send(conn, 404, b'{"detail":"Not Found"}', js)

    def metrics(self) -> str:
        """vLLM metric names, so the harness's /metrics cross-check can be exercised."""
        lines = [
            "# TYPE vllm:time_to_first_token_seconds histogram",
            f'vllm:time_to_first_token_seconds_sum{{model_name="{self.a.model_name}"}} {self.ttft_sum}',
            f'vllm:time_to_first_token_seconds_count{{model_name="{self.a.model_name}"}} {self.ttft_count}',
            "# TYPE vllm:inter_token_latency_seconds histogram",
            f'vllm:inter_token_latency_seconds_sum{{model_name="{self.a.model_name}"}} {self.itl_sum}',
            f'vllm:inter_token_latency_seconds_count{{model_name="{self.a.model_name}"}} {self.itl_count}',
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{self.a.model_name}"}} {self.running}',
            "# TYPE vllm:num_requests_waiting gauge",
            f'vllm:num_requests_waiting{{model_name="{self.a.model_name}"}} 0',
            "# TYPE vllm:kv_cache_usage_perc gauge",
            f'vllm:kv_cache_usage_perc{{model_name="{self.a.model_name}"}} {min(1.0, self.running / 256)}',
        ]
        return "\n".join(lines) + "\n"

    async def complete(self, path: str, body: bytes, recv: float, conn: Conn) -> bool:
        self.requests += 1
        if self.a.die_after_requests and self.requests > self.a.die_after_requests:
            print(f"metronome: dying after {self.a.die_after_requests} requests", flush=True)
            os._exit(self.a.exit_code)
        if not self._can_complete():
            return await self._send(conn, 503, b'{"error":{"message":"model loading"}}', "application/json")
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return await self._send(conn, 400, b'{"error":{"message":"bad json"}}', "application/json")
        text = json.dumps(req.get("messages") or req.get("prompt") or "")
        m = _FAULT_RE.search(text)
        fault = m.group(1) if m else self.a.fault
        n = self.a.tokens or int(req.get("max_tokens") or 16)
        chat = path.endswith("chat/completions")
        if fault == "die":
            print("metronome: dying on request", flush=True)
            os._exit(self.a.exit_code)
        if fault == "http500":
            return await self._send(conn, 500, self.a.error_body.encode(), "application/json")
        if self.a.reject_ignore_eos and "ignore_eos" in req:
            errors = [{"type": "extra_forbidden", "loc": ("body", "ignore_eos"), "msg": "Extra inputs are not permitted",
                       "input": req["ignore_eos"]}]
            body = {"error": {"message": str(errors), "type": "BadRequestError", "param": None, "code": 400}}
            return await self._send(conn, 400, json.dumps(body).encode(), "application/json")
        if fault == "silent":
            await asyncio.sleep(3600)
            return False
        ttft, gap = self.a.ttft_ms / 1000.0, self.a.gap_ms / 1000.0
        if not req.get("stream"):
            await asyncio.sleep(max(0.0, recv + ttft + gap * (n - 1) - time.perf_counter()))
            out = {
                "id": "m",
                "object": "chat.completion" if chat else "text_completion",
                "model": self.a.model_name,
                "choices": [
                    {"index": 0, "finish_reason": "length"}
                    | ({"message": {"role": "assistant", "content": " t0" * n}} if chat else {"text": " t0" * n})
                ],
                "usage": {"prompt_tokens": 8, "completion_tokens": n, "total_tokens": 8 + n},
            }
            return await self._send(conn, 200, json.dumps(out).encode(), "application/json")

        conn.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
            b"transfer-encoding: chunked\r\n" + (b"connection: close\r\n" if self.a.close else b"") + b"\r\n"
        )

        def chunk(obj: dict | str) -> None:
            data = obj if isinstance(obj, str) else json.dumps(obj)
            payload = f"data: {data}\n\n".encode()
            conn.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")

        def choice(content: str | None, finish: str | None = None) -> dict:
            if chat:
                delta = {"role": "assistant"} if content is None and finish is None else {}
                if content is not None:
                    delta["content"] = content
                return {"index": 0, "delta": delta, "finish_reason": finish}
            return {"index": 0, "text": content or "", "finish_reason": finish}

        base = {"id": f"m{self.requests}", "object": "chat.completion.chunk", "model": self.a.model_name}
        self.running += 1
        try:
            if chat:
                chunk(base | {"choices": [choice(None)]})  # role-only: carries no content
                await conn.drain()
            prev = None
            if chat:
                head = 'data: {{"id":"{}","object":"chat.completion.chunk","model":{},"choices":[{{"index":0,"delta":{{"content":'.format(
                    base["id"], json.dumps(self.a.model_name))
                tail = '},"finish_reason":null}],'
            else:
                head = 'data: {{"id":"{}","object":"text_completion","model":{},"choices":[{{"index":0,"text":'.format(
                    base["id"], json.dumps(self.a.model_name))
                tail = ',"finish_reason":null}],'
            if fault == "keepalive":
                while True:  # the stream stays open and busy, and never carries a token
                    await asyncio.sleep(0.2)
                    conn.write(b"%x\r\n: keep-alive\n\n\r\n" % len(b": keep-alive\n\n"))
                    await conn.drain()
            if fault == "drip":
                n = 1 << 62  # content without end: never a finish_reason
            for i in range(n):
                await asyncio.sleep(max(0.0, recv + ttft + gap * i - time.perf_counter()))
                if fault == "hang" and i == 0:
                    await asyncio.sleep(3600)
                if fault in ("malformed", "cut") and i == 2:
                    if fault == "malformed":
                        payload = b'data: {"choices": [{"delta": {"content": "x"\n\n'
                        conn.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
                        conn.write(b"0\r\n\r\n")
                        await conn.drain()
                        return True
                    conn.abort()  # cut: no terminating chunk
                    return False
                sent = time.perf_counter()
                # built by hand (not json.dumps): at 128 streams the double must cost less than the harness
                body = f'{head}" t{i}"{tail}"metronome":{{"recv":{recv!r},"sent":{sent!r},"i":{i}}}}}\n\n'.encode()
                conn.write(b"%x\r\n%s\r\n" % (len(body), body))
                if conn.get_write_buffer_size():
                    await conn.drain()
                if prev is None:
                    self.ttft_sum += sent - recv
                    self.ttft_count += 1
                else:
                    self.itl_sum += sent - prev
                    self.itl_count += 1
                prev = sent
            chunk(base | {"choices": [choice(None, "length")] if not chat else [{"index": 0, "delta": {}, "finish_reason": "length"}]})
            if not self.a.no_usage:
                told = n if self.a.usage_tokens < 0 else self.a.usage_tokens
                chunk(base | {"choices": [], "usage": {"prompt_tokens": 8, "completion_tokens": told,
                                                       "total_tokens": 8 + told}})
            chunk("[DONE]")
            conn.write(b"0\r\n\r\n")
            await conn.drain()
            return not self.a.close
        finally:
            self.running -= 1


async def serve(args: argparse.Namespace) -> None:
    met = Metronome(args)
    if args.die_after_s > 0:
        asyncio.get_running_loop().call_later(args.die_after_s, lambda: (print("metronome: dying", flush=True), os._exit(args.exit_code)))
    if args.listen_after_s > 0:
        await asyncio.sleep(args.listen_after_s)
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        pass
    listener.bind((args.host, args.port))
    listener.listen(1024)
    try:
        _stamps_on(listener)
    except OSError:  # cannot reach itself: requests then fall back to user-space stamps
        pass
    listener.setblocking(False)
    port = listener.getsockname()[1]
    print(f"PORT {port}" if args.print_port else f"metronome listening on {args.host}:{port}", flush=True)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        sock, _addr = await loop.sock_accept(listener)
        task = asyncio.create_task(met.handle(Conn(sock)))
        tasks.add(task)  # a task nobody references can be collected mid-request
        task.add_done_callback(tasks.discard)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()


class Running:
    """A metronome in its own process (so its timing never shares our GIL); context manager."""

    def __init__(self, *args: str) -> None:
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--port", "0", "--print-port", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"metronome did not start: {line!r}")
        self.port = int(line.split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:  # noqa: BLE001
                self.proc.kill()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StampLog:
    """Collects the metronome's own stamps as the harness receives them (pass `.on_chunk` to the
    bench `Target`) and compares the harness's figures with what the server really did:

    - ttft error  = measured TTFT - (first content chunk sent - request received), server clock;
    - tpot error  = measured TPOT - (last content sent - first content sent) / (N - 1);
    - chunk error = client receive time - server send time, per content chunk (bounds ITL error).
    Both clocks are CLOCK_MONOTONIC on one host, so they subtract directly.
    """

    def __init__(self) -> None:
        self.by_sample: dict[int, list[tuple[float, dict]]] = {}

    def on_chunk(self, sample, now: float, obj: dict) -> None:
        stamp = obj.get("metronome")
        if stamp is not None:
            self.by_sample.setdefault(id(sample), []).append((now, stamp))

    def errors(self, samples) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"ttft": [], "tpot": [], "chunk": []}
        for s in samples:
            got = self.by_sample.get(id(s))
            if not s.ok or not got:
                continue
            first, last = got[0][1], got[-1][1]
            out["ttft"].append(s.ttft_s - (first["sent"] - first["recv"]))
            n = s.output_tokens or 0
            if n >= 2 and s.tpot_s is not None:
                out["tpot"].append(s.tpot_s - (last["sent"] - first["sent"]) / (n - 1))
            out["chunk"] += [now - st["sent"] for now, st in got]
        return out

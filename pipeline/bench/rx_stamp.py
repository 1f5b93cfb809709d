"""Kernel receive timestamps for the bench client's plain-HTTP connections.

A Python client stamps a chunk when its coroutine gets to run, not when the bytes arrived: with 128
streams whose servers emit a token for every sequence at once (one decode step), the last stream of a
burst is stamped after the client has parsed the 127 before it, and that queueing was measured as
server latency (p99 error ~130 ms at 128 streams on 2 cores). Linux stamps every TCP segment as it is
received (SO_TIMESTAMPNS, returned by recvmsg as ancillary data), so the harness reads the arrival time
the kernel recorded, whatever its own backlog.

This is an httpcore network backend: httpx still does HTTP/1.1, pooling, timeouts and errors; only
the socket reads change. Each read remembers its arrival time (`last_rx`, perf_counter seconds); the
client takes it for every chunk that read produced. Where the kernel gives no stamp (another OS, a
socket option refused, a clock step) the read is stamped in user space and counted, so a run states
which kind of stamps it has. TLS connections use httpx's default backend (user-space stamps).

Limit: when one read returns several segments, the kernel reports the last one's arrival; an event
that arrived earlier in that read is stamped late by the gap. The pump thread (below) reads within
~0.5 ms of arrival, so that needs a stall longer than a token interval.

Each backend has its own pump thread, and the bench's ClientPool gives every stream its own client, so
a burst of 128 arrivals is read by 128 threads waiting in epoll, none queued behind another's syscalls
(each recvmsg gives up the GIL and must win it back). The price: 129 runnable threads on a small
machine, and now and then one is not scheduled for a token interval (figures in docs/METRICS.md).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import select
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python names it on Linux only
_ANC_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
AVAILABLE = hasattr(select, "epoll")  # Linux; elsewhere the default httpx backend (user-space stamps)
_MAX_KERNEL_LAG_S = 60.0  # a stamp older than this (or in the future) means the realtime clock stepped


@dataclass
class RxStats:
    """How a client's reads were stamped, over all its connections."""

    kernel: int = 0
    userspace: int = 0

    @property
    def source(self) -> str:
        if self.kernel and not self.userspace:
            return "kernel"
        if self.kernel:
            return "mixed"
        return "userspace"


def _kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The SCM_TIMESTAMPNS of a recvmsg, converted to the perf_counter clock; None when absent or insane."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            rx_real_ns = int.from_bytes(data[:8], sys.byteorder, signed=True) * 1_000_000_000 + int.from_bytes(
                data[8:16], sys.byteorder, signed=True
            )
            # CLOCK_REALTIME -> CLOCK_MONOTONIC (perf_counter): both read back to back, ~100 ns apart
            now_real, now_mono = time.time_ns(), time.perf_counter_ns()
            lag_s = (now_real - rx_real_ns) / 1e9
            if not (-0.001 <= lag_s <= _MAX_KERNEL_LAG_S):
                return None
            return (now_mono - (now_real - rx_real_ns)) / 1e9
    return None


class _Pump:
    """One thread that drains every stamped socket as soon as the kernel has bytes for it.

    The kernel stamps each segment, but one recvmsg over several segments reports only the last one's
    time. Reads pulled by the event loop come late whenever the loop is busy (128 streams starting at
    once keep it busy for tens of ms), so a stream's first token and the next one were read together
    and the first was stamped a token interval late. This thread waits in epoll without the GIL and
    reads within a GIL switch interval (5 ms, well under any token interval), so every event keeps
    its own stamp while the loop parses at its own pace."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.streams: dict[int, StampedStream] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def register(self, stream: StampedStream) -> None:
        with self.lock:
            self.streams[stream.fd] = stream
            self.epoll.register(stream.fd, select.EPOLLIN)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="llmgate-rx-pump", daemon=True)
                self.thread.start()

    def unregister(self, stream: StampedStream) -> None:
        with self.lock:
            if self.streams.pop(stream.fd, None) is not None:
                with contextlib.suppress(OSError):
                    self.epoll.unregister(stream.fd)

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.streams:
                    self.thread = None  # the next register starts a fresh one
                    return
            fresh: list[StampedStream] = []
            for fd, _ev in self.epoll.poll(0.05):
                with self.lock:
                    stream = self.streams.get(fd)
                if stream is None:
                    continue
                if stream.drain():
                    self.unregister(stream)
                fresh.append(stream)
            if fresh:
                # one wake-up per batch: every syscall here gives up the GIL and waits to get it back
                _wake_all(fresh)


_EOF = b""


def _wake_all(streams: list[StampedStream]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[StampedStream]] = {}
    for st in streams:
        by_loop.setdefault(st.loop, []).append(st)
    for loop, group in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is reading any more
            loop.call_soon_threadsafe(lambda g=group: [st._wake() for st in g])


class StampedStream(httpcore.AsyncNetworkStream):
    """A TCP socket drained by the pump thread; `read` hands out what arrived, piece by piece, and
    sets `last_rx` to when that piece arrived."""

    def __init__(self, sock: socket.socket, kernel: bool, stats: RxStats, pump: _Pump,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.kernel = kernel
        self.stats = stats
        self.pump = pump
        self.loop = loop
        self.last_rx: float | None = None
        self.request_tx: float | None = None  # the first write of the request in flight
        self._between_requests = True
        self.inbox: collections.deque[tuple[float, bytes] | OSError] = collections.deque()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None
        pump.register(self)

    def drain(self) -> bool:
        """Pump thread: one read of what is there; True once the stream has ended (EOF or error)."""
        # One recvmsg per readiness (epoll is level-triggered and reports the rest): each call gives
        # up the GIL, and getting it back from a busy loop costs up to a switch interval.
        try:
            data, anc, _flags, _addr = self.sock.recvmsg(65536, _ANC_SPACE if self.kernel else 0)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.inbox.append(exc)
            return True
        if not data:
            self.inbox.append((time.perf_counter(), _EOF))
            return True
        stamp = _kernel_stamp(anc) if self.kernel else None
        if stamp is None:
            stamp = time.perf_counter()
            self.stats.userspace += 1
        else:
            self.stats.kernel += 1
        self.inbox.append((stamp, data))
        return False

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        while not self.inbox:
            if self.ended:
                return _EOF
            self.waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self.waiter
            except TimeoutError as exc:
                raise httpcore.ReadTimeout("read timed out") from exc
            finally:
                self.waiter = None
        piece = self.inbox.popleft()
        if isinstance(piece, OSError):
            self.ended = True
            raise httpcore.ReadError(str(piece)) from piece
        stamp, data = piece
        if not data:
            self.ended = True
            return _EOF
        if len(data) > max_bytes:  # the rest stays first in line, with the same arrival time
            self.inbox.appendleft((stamp, data[max_bytes:]))
            data = data[:max_bytes]
        self.last_rx = stamp
        self._between_requests = True
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._between_requests:
            self.request_tx, self._between_requests = time.perf_counter(), False
        try:
            async with asyncio.timeout(timeout):
                await asyncio.get_running_loop().sock_sendall(self.sock, buffer)
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("write timed out") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    async def aclose(self) -> None:
        self.pump.unregister(self)
        self.sock.close()

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("kernel-stamped connections are plain HTTP; https uses the default backend")

    def get_extra_info(self, info: str) -> Any:
        if info == "socket":
            return self.sock
        if info == "client_addr":
            return self.sock.getsockname()
        if info == "server_addr":
            return self.sock.getpeername()
        if info == "is_readable":
            # httpcore asks before reusing a keep-alive connection: readable while idle = closed by peer
            return bool(self.inbox) or self.ended
        return None


class StampedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, stats: RxStats | None = None) -> None:
        self.stats = stats or RxStats()
        self.pump = _Pump()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                last: OSError | None = None
                for family, kind, proto, _name, addr in infos:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        for opt in socket_options or ():
                            sock.setsockopt(*opt)
                        if local_address:
                            sock.bind((local_address, 0))
                        await loop.sock_connect(sock, addr)
                    except OSError as exc:
                        sock.close()
                        last = exc
                        continue
                    return StampedStream(sock, _enable_stamps(sock), self.stats, self.pump, loop)
                raise last or OSError(f"no address for {host}")
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not benchmarked")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _enable_stamps(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


class StampedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, error mapping) over a pool on `StampedBackend`.

    httpx offers no `network_backend` argument, so the pool it built is replaced by an equivalent one;
    `_pool` is the attribute its handle_async_request uses."""

    def __init__(self, *, limits: httpx.Limits, stats: RxStats, ssl_context: ssl.SSLContext) -> None:
        # the context is shared and unused (plain HTTP), passed only so that httpx does not build one
        # per client: loading the CA bundle costs ~40 ms, 5 s for 128 streams
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=StampedBackend(stats),
        )


@contextlib.contextmanager
def responsive_pump(switch_interval_s: float = 0.0005) -> Iterator[None]:
    """While a load shape runs, let the pump thread take the GIL from the busy event loop within
    0.5 ms instead of CPython's 5 ms: at 128 streams the default let a stream's next token arrive
    before its previous one was read (p99 first-token stamp error 21 ms; 0.1 ms with this)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, switch_interval_s))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def request_tx(response: httpx.Response) -> float | None:
    """When the request's first bytes went to the socket (stamped connections only)."""
    return getattr(response.extensions.get("network_stream"), "request_tx", None)


def rx_time(response: httpx.Response) -> float:
    """When the bytes the response just yielded arrived: the kernel's stamp for stamped connections,
    else now."""
    stream = response.extensions.get("network_stream")
    stamp = getattr(stream, "last_rx", None)
    return stamp if stamp is not None else time.perf_counter()

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

One read over several queued segments reports only the last one's arrival (and segments that wait in
the receive queue are merged, keeping the later stamp), so a socket must be read before its next event
arrives or the earlier event is stamped late by the gap. The client's event loop cannot promise that,
and neither could pump threads in its process: each read needs the GIL. So a separate pump process
(`rx_pump`) reads every socket as it becomes readable and relays the bytes with their stamps over a
Unix socket; the loop reads the relay whenever it gets round to it, which no longer matters. Designs
measured before this one are in docs/METRICS.md.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import select
import socket
import ssl
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from pipeline.bench import rx_pump

# Linux; elsewhere httpx's default backend (user-space stamps)
AVAILABLE = hasattr(select, "epoll") and hasattr(socket, "SOCK_SEQPACKET")


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


class PumpGone(OSError):
    """The pump process exited: what it had not relayed is lost, so the streams it was reading fail
    (reason "rx pump ...", never mistaken for a server fault) instead of hanging; the next connection
    starts a fresh pump."""


class _PumpClient:
    """This event loop's end of one pump process: registers sockets with it and files what it relays
    into each stream's inbox. The loop reads the relay in batches (no thread, no GIL hand-offs); how
    late it gets round to that does not matter, the stamps were taken in the pump."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ctl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with child:
            # -I: the pump imports nothing from the environment or the project; stdlib only
            self.proc = subprocess.Popen([sys.executable, "-I", rx_pump.__file__, str(child.fileno())],
                                         pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        self.streams: dict[int, StampedStream] = {}
        # Connections being opened for this pump (between `_pump_for` and `register`): it must not close
        # under them. Closing when the last stream ended while another coroutine was still connecting
        # left that coroutine registering on a closed socket (EBADF, "connect failed") whenever a
        # server closed every connection at once.
        self.holds = 0
        self.next_id = 0
        self.dead: PumpGone | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self.ctl.fileno(), self._relayed)

    def register(self, stream: StampedStream) -> int:
        if self.dead is not None:
            raise self.dead
        self.next_id += 1
        self.streams[self.next_id] = stream
        # blocking send of a few bytes to a pump that reads its control socket on every wake-up
        socket.send_fds(self.ctl, [rx_pump.REGISTER + rx_pump.ID.pack(self.next_id)], [stream.fd])
        return self.next_id

    def unregister(self, cid: int) -> None:
        if self.streams.pop(cid, None) is not None and self.dead is None:
            with contextlib.suppress(OSError):
                self.ctl.send(rx_pump.UNREGISTER + rx_pump.ID.pack(cid))
        self._close_if_idle()

    def release(self) -> None:
        """A connection being opened is registered now, or failed: the pump may close when idle."""
        self.holds -= 1
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if not self.streams and not self.holds:
            self.close()

    def close(self) -> None:
        """Closing our end ends the pump (it exits on EOF)."""
        if _pumps.get(self.loop) is self:
            del _pumps[self.loop]
        with contextlib.suppress(RuntimeError, ValueError, OSError):  # loop already closed / socket closed
            self.loop.remove_reader(self.ctl.fileno())
        self.ctl.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)

    def _relayed(self) -> None:
        while True:
            try:
                msg = self.ctl.recv(1 << 17, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                return self._gone(str(exc))
            if not msg:
                return self._gone(f"exit status {self.proc.poll()}")
            if msg == rx_pump.READY:
                self.ready.set_result(None)
                continue
            self._file(msg)

    def _file(self, msg: bytes) -> None:
        woken: set[StampedStream] = set()
        at, head = 0, rx_pump.RECORD.size
        while at < len(msg):
            cid, kind, stamp, n = rx_pump.RECORD.unpack_from(msg, at)
            payload = msg[at + head : at + head + n]
            at += head + n
            stream = self.streams.get(cid)
            if stream is None:  # closed by us while the pump was reading it
                continue
            if kind == rx_pump.ERROR:
                stream.inbox.append(OSError(payload.decode(errors="replace")))
            elif kind == rx_pump.EOF:
                stream.inbox.append((stamp, _EOF))
            else:
                stream.inbox.append((stamp, payload))
                if kind == rx_pump.DATA_KERNEL:
                    stream.stats.kernel += 1
                else:
                    stream.stats.userspace += 1
            woken.add(stream)
        for stream in woken:
            stream._wake()

    def _gone(self, why: str) -> None:
        self.dead = PumpGone(f"rx pump: process ended ({why}); what it had read is lost")
        if not self.ready.done():
            self.ready.set_exception(self.dead)
        for stream in self.streams.values():
            stream.inbox.append(self.dead)
            stream._wake()
        self.streams.clear()
        self.close()


# One pump process per event loop, started with its first stamped connection and ended with its last.
_pumps: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _PumpClient] = weakref.WeakKeyDictionary()


async def _pump_for(loop: asyncio.AbstractEventLoop) -> _PumpClient:
    """This loop's pump, held for one connection being opened: the caller must `release()` it once the
    connection is registered or has failed."""
    pump = _pumps.get(loop)
    if pump is None:
        pump = _pumps[loop] = _PumpClient(loop)
    pump.holds += 1
    try:
        await asyncio.shield(pump.ready)  # ~40 ms once per loop: the interpreter starting
    except BaseException:
        pump.release()
        raise
    return pump


_EOF = b""


class StampedStream(httpcore.AsyncNetworkStream):
    """A TCP socket read by the pump process; the client writes to it directly, and `read` hands out
    what the pump relayed, piece by piece, setting `last_rx` to when that piece arrived."""

    def __init__(self, sock: socket.socket, stats: RxStats, loop: asyncio.AbstractEventLoop, pump: _PumpClient,
                 connect_tx: float) -> None:
        self.sock = sock
        self.connect_tx = connect_tx  # when opening this connection began
        self.fd = sock.fileno()
        self.stats = stats
        self.loop = loop
        self.last_rx: float | None = None
        self.request_tx: float | None = None  # the first write of the request in flight
        self._between_requests = True
        self.inbox: collections.deque[tuple[float, bytes] | OSError] = collections.deque()
        self.ended = False
        self.waiter: asyncio.Future[None] | None = None
        self.pump = pump
        self.cid = pump.register(self)

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
        if isinstance(piece, PumpGone):
            self.ended = True
            raise piece  # the harness failed, not the server: its own reason, not a "stream cut"
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
        self.pump.unregister(self.cid)
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
    """Opens stamped connections. From its first connection until `release()` (its transport closing)
    it holds the loop's pump, so a server that closes every connection does not make the pump end and
    restart (~40 ms each) whenever all of a client's connections happen to be closed at once."""

    def __init__(self, stats: RxStats | None = None) -> None:
        self.stats = stats or RxStats()
        self._held: _PumpClient | None = None

    def _hold(self, pump: _PumpClient) -> None:
        if self._held is pump:
            return
        self.release()
        pump.holds += 1
        self._held = pump

    def release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        pump: _PumpClient | None = None
        try:
            async with asyncio.timeout(timeout):
                pump = await _pump_for(loop)
                self._hold(pump)
                # the connection's "send", after the pump's start-up, which is the harness's, not the server's
                started = time.perf_counter()
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                last: OSError | None = None
                for family, kind, proto, _name, addr in infos:
                    sock = socket.socket(family, kind, proto)
                    try:
                        sock.setblocking(False)
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                        # refused: the pump gets no stamps and counts its reads as user-space
                        with contextlib.suppress(OSError):
                            sock.setsockopt(socket.SOL_SOCKET, rx_pump.SO_TIMESTAMPNS, 1)
                        for opt in socket_options or ():
                            sock.setsockopt(*opt)
                        if local_address:
                            sock.bind((local_address, 0))
                        await loop.sock_connect(sock, addr)
                    except OSError as exc:
                        sock.close()
                        last = exc
                        continue
                    return StampedStream(sock, self.stats, loop, pump, started)
                raise last or OSError(f"no address for {host}")
        except PumpGone:
            raise
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connect to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        finally:
            if pump is not None:
                pump.release()

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.UnsupportedProtocol("unix sockets are not benchmarked")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class StampedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport (request mapping, error mapping) over a pool on `StampedBackend`.

    httpx offers no `network_backend` argument, so the pool it built is replaced by an equivalent one;
    `_pool` is the attribute its handle_async_request uses."""

    def __init__(self, *, limits: httpx.Limits, stats: RxStats, ssl_context: ssl.SSLContext) -> None:
        # the context is shared and unused (plain HTTP), passed only so that httpx does not build one
        # per client: loading the CA bundle costs ~40 ms, 5 s for 128 streams
        super().__init__(verify=ssl_context, limits=limits, trust_env=False)
        self._backend = StampedBackend(stats)
        self._pool = httpcore.AsyncConnectionPool(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self._backend,
        )

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._backend.release()  # the pump ends with the last client that used it


def request_tx(response: httpx.Response) -> float | None:
    """When the request's first bytes went to the socket (stamped connections only)."""
    return getattr(response.extensions.get("network_stream"), "request_tx", None)


def connect_tx(response: httpx.Response) -> float | None:
    """When opening the response's connection began (stamped connections only)."""
    return getattr(response.extensions.get("network_stream"), "connect_tx", None)


def rx_time(response: httpx.Response) -> float:
    """When the bytes the response just yielded arrived: the kernel's stamp for stamped connections,
    else now."""
    stream = response.extensions.get("network_stream")
    stamp = getattr(stream, "last_rx", None)
    return stamp if stamp is not None else time.perf_counter()

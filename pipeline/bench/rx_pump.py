"""The receive pump: a small process that reads the bench client's TCP sockets the moment the kernel
has bytes for them and relays each read with its kernel receive time.

Why a process: the kernel stamps every TCP segment, but one recvmsg over several queued segments
reports only the last one's time (and the receive queue merges segments that wait, keeping the later
stamp). So each socket must be read before its next event arrives, tens of ms at most. In the client's
process every read needs the GIL, which a busy event loop parsing 128 streams holds; here nothing else
wants the CPU, and a process that mostly sleeps is scheduled promptly when it wakes.

Runs as `python -I rx_pump.py FD`: standard library only, FD one end of an AF_UNIX SOCK_SEQPACKET pair.
Parent -> pump: b"R" + connection id (u32) with the TCP socket passed as SCM_RIGHTS (register), b"U" +
id (unregister: the pump closes its copy). Pump -> parent: messages of records, each RECORD header +
payload: data (payload = bytes read), EOF, or ERROR (payload = the OS error's text), after a first
message READY. Exits when the parent's end closes, so it never outlives the client. What the parent has
not yet taken waits here, not in the sockets (a slow parent must not delay the reads); for LLM streams
that is kilobytes.
"""

from __future__ import annotations

import array
import collections
import contextlib
import errno
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator

RECORD = struct.Struct("<IBdI")  # connection id, kind, arrival (perf_counter s), payload length
DATA_KERNEL, DATA_USER, EOF, ERROR = 0, 1, 2, 3
REGISTER, UNREGISTER, READY = b"R", b"U", b"ready"
ID = struct.Struct("<I")
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python names it on Linux only
_ANC_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
_READ = 65536
_MESSAGE_MAX = 96 * 1024  # below the default AF_UNIX send buffer, so one message always fits
_MAX_KERNEL_LAG_S = 60.0  # a stamp older than this (or in the future) means the realtime clock stepped
_STAMPS_ON_WITHIN_S = 2.0


def kernel_stamp(ancillary: list[tuple[int, int, bytes]]) -> float | None:
    """The SCM_TIMESTAMPNS of a recvmsg, converted to the perf_counter clock; None when absent or insane."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            rx_real_ns = int.from_bytes(data[:8], sys.byteorder, signed=True) * 1_000_000_000 + int.from_bytes(
                data[8:16], sys.byteorder, signed=True
            )
            # CLOCK_REALTIME -> CLOCK_MONOTONIC (perf_counter, the same clock in every process): read
            # back to back, ~100 ns apart
            now_real, now_mono = time.time_ns(), time.perf_counter_ns()
            lag_s = (now_real - rx_real_ns) / 1e9
            if not (-0.001 <= lag_s <= _MAX_KERNEL_LAG_S):
                return None
            return (now_mono - (now_real - rx_real_ns)) / 1e9
    return None


def hold_kernel_stamps() -> socket.socket:
    """Switch the kernel's receive stamping on and keep it on while the returned socket is open.

    Linux stamps incoming packets only while some socket asks for stamps, and the first such socket
    switches stamping on later, from a work queue: TCP segments that arrive before that carry no stamp,
    and TCP (unlike UDP) then gives no stamp at all. Measured here, 10-50 % of fresh connections lost
    their first stamp when no other socket held it on. So: hold it on from this socket, and wait until a
    loopback segment really comes back stamped."""
    holder = socket.socket()
    with contextlib.suppress(OSError):
        holder.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    # no loopback to probe, or stamps still off at the deadline: go on; reads then count as user-space,
    # and the run says so
    with contextlib.suppress(OSError):
        _wait_until_stamped()
    return holder


def _wait_until_stamped() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener, socket.create_connection(
        listener.getsockname()[:2], timeout=_STAMPS_ON_WITHIN_S
    ) as tx:
        rx, _ = listener.accept()
        with rx:
            rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            rx.settimeout(_STAMPS_ON_WITHIN_S)
            give_up = time.monotonic() + _STAMPS_ON_WITHIN_S
            while time.monotonic() < give_up:
                tx.sendall(b".")
                _data, anc, _flags, _addr = rx.recvmsg(1, _ANC_SPACE)
                if kernel_stamp(anc) is not None:
                    return
                time.sleep(0.001)


def read_record(sock: socket.socket, cid: int) -> tuple[bytes, bool]:
    """One read of a ready socket as a record; True when the socket is done (EOF or error)."""
    try:
        data, anc, _flags, _addr = sock.recvmsg(_READ, _ANC_SPACE)
    except (BlockingIOError, InterruptedError):
        return b"", False
    except OSError as exc:
        text = (exc.strerror or str(exc)).encode()
        return RECORD.pack(cid, ERROR, time.perf_counter(), len(text)) + text, True
    if not data:
        return RECORD.pack(cid, EOF, time.perf_counter(), 0), True
    stamp = kernel_stamp(anc)
    kind = DATA_KERNEL if stamp is not None else DATA_USER
    return RECORD.pack(cid, kind, stamp if stamp is not None else time.perf_counter(), len(data)) + data, False


def serve(ctl: socket.socket) -> None:
    ep = select.epoll()
    ep.register(ctl.fileno(), select.EPOLLIN)
    ctl.send(READY)  # registrations sent before this would wait while their data merged
    socks: dict[int, tuple[int, socket.socket]] = {}  # fd -> (connection id, socket)

    def drop(fd: int) -> None:
        _cid, sock = socks.pop(fd)
        ep.unregister(fd)
        sock.close()

    outbox: collections.deque[bytes] = collections.deque()  # messages the parent has not taken yet
    while True:
        out: list[bytes] = []
        for fd, ev in ep.poll():
            if fd != ctl.fileno():
                if fd not in socks:
                    continue
                record, done = read_record(socks[fd][1], socks[fd][0])
                if record:
                    out.append(record)
                if done:
                    drop(fd)
                continue
            while ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    msg, fds = _recv_control(ctl)
                except BlockingIOError:
                    break
                if not msg:
                    return  # the parent is gone
                (cid,) = ID.unpack(msg[1:5])
                if msg[:1] == REGISTER and fds:
                    sock = socket.socket(fileno=fds[0])
                    sock.setblocking(False)
                    socks[fds[0]] = (cid, sock)
                    ep.register(fds[0], select.EPOLLIN)
                elif msg[:1] == UNREGISTER:
                    for fd2 in [f for f, (c, _s) in socks.items() if c == cid]:
                        drop(fd2)
        was_waiting = bool(outbox)
        outbox.extend(_messages(out))
        _flush(ctl, outbox)
        if bool(outbox) != was_waiting:  # wait for room only while something waits for it
            ep.modify(ctl.fileno(), select.EPOLLIN | (select.EPOLLOUT if outbox else 0))


def _recv_control(ctl: socket.socket) -> tuple[bytes, list[int]]:
    """One control message and the descriptor it carries. (socket.recv_fds would do, but in Python
    3.11 it drops its flags argument, and a blocking read here would stall every socket.)"""
    msg, anc, _flags, _addr = ctl.recvmsg(16, socket.CMSG_SPACE(array.array("i").itemsize), socket.MSG_DONTWAIT)
    fds = array.array("i")
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return msg, list(fds)


def _messages(records: list[bytes]) -> Iterator[bytes]:
    """Records joined into as few messages as fit: the parent takes them in a batch, not a syscall each."""
    batch: list[bytes] = []
    size = 0
    for r in records:
        if batch and size + len(r) > _MESSAGE_MAX:
            yield b"".join(batch)
            batch, size = [], 0
        batch.append(r)
        size += len(r)
    if batch:
        yield b"".join(batch)


def _flush(ctl: socket.socket, outbox: collections.deque[bytes]) -> None:
    """Send what the parent has room for, never wait: a parent busy for tens of ms (parsing, GC) must
    not keep the sockets unread, or their segments merge and lose their own stamps."""
    while outbox:
        try:
            ctl.send(outbox[0], socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        outbox.popleft()


def main(argv: list[str]) -> None:
    ctl = socket.socket(fileno=int(argv[1]))
    try:
        with hold_kernel_stamps():  # before READY: no stamped connection starts unstamped
            serve(ctl)
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
            raise


if __name__ == "__main__":
    main(sys.argv)

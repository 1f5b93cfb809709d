"""A referee for client-side latency figures: TTFT as the loopback interface saw it.

tcpdump records every segment on `lo` with the kernel's timestamp (wall clock). A request starts with the
client's segment that begins "POST"; its first token is the server's first segment on that connection
carrying a non-empty `"content"` (or `"text"`). Whatever a client reports can then be checked, request
by request, against the same request's time on the wire; neither client's own scheduling is in it.

Used by guidellm_compare.py --wire. Needs tcpdump (Debian `tcpdump`) and the right to capture (root).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

_CONTENT = re.compile(rb'"(?:content|text)":\s*"[^"]')
_LINKTYPE_ETHERNET, _LINKTYPE_LINUX_SLL = 1, 113


@dataclass
class WireRequest:
    client_port: int
    start: float  # the POST segment, wall-clock seconds
    first_content: float | None = None

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_content is None else self.first_content - self.start


class LoopbackCapture:
    """tcpdump on lo for one TCP port, for the life of the `with` block."""

    def __init__(self, port: int, path: Path) -> None:
        self.port, self.path = port, path
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: list[WireRequest] = []

    @staticmethod
    def available() -> str | None:
        """None when a capture can run here, else why not."""
        return None if shutil.which("tcpdump") else "tcpdump not found"

    def __enter__(self) -> Self:
        # -U: write each packet as it comes, so nothing is lost when tcpdump is stopped; -B: a large
        # kernel buffer, so a burst is not dropped before tcpdump reads it
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-w", str(self.path), "-s", "0", "-U", "-B", "16384", f"tcp port {self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not (self.path.exists() and self.path.stat().st_size >= 24):  # the pcap header: listening
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"tcpdump did not start: {err.strip()[-300:]}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            time.sleep(0.5)  # the last segments
            self.proc.terminate()
            self.proc.wait(10)
            self.seen = parse(self.path.read_bytes(), self.port)  # before the file's folder goes

    def requests(self) -> list[WireRequest]:
        return self.seen


def parse(raw: bytes, port: int) -> list[WireRequest]:
    """Requests to `port`, in the order they started, from a classic pcap file."""
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", raw[20:24])[0]
    link_len = {_LINKTYPE_ETHERNET: 14, _LINKTYPE_LINUX_SLL: 16}.get(linktype)
    if link_len is None:
        raise ValueError(f"pcap link type {linktype} not handled (expected Ethernet or Linux SLL)")
    out: list[WireRequest] = []
    open_: dict[int, WireRequest] = {}
    at = 24
    while at + 16 <= len(raw):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", raw[at : at + 16])
        pkt = raw[at + 16 : at + 16 + incl]
        at += 16 + incl
        t = sec + frac / (1e9 if nano else 1e6)
        ip = pkt[link_len:]
        if not ip or ip[0] >> 4 != 4:
            continue  # IPv6 on lo is not used by these benchmarks
        tcp = ip[(ip[0] & 15) * 4 :]
        sport, dport = struct.unpack(">HH", tcp[:4])
        payload = tcp[(tcp[12] >> 4) * 4 :]
        if not payload:
            continue
        if dport == port and payload.startswith(b"POST "):
            open_[sport] = WireRequest(sport, t)
            out.append(open_[sport])
        elif sport == port and dport in open_ and open_[dport].first_content is None and _CONTENT.search(payload):
            open_[dport].first_content = t
    return out

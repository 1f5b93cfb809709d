"""Input and output files are regular files: the one place a path given by a person is opened.

A FIFO blocks its reader until someone writes (a hang with no timeout), `/dev/zero` and `/dev/urandom`
never end (memory grows until the machine kills something), `/dev/full` fails every write, and a
directory or a symlink loop cannot be read at all. Each is refused before a byte is read, as BadInput
naming the file; a regular file is read up to a size limit, so no input can take more memory than its
limit allows.

The check and the open agree: the file is opened with O_NONBLOCK (opening a FIFO does not wait for a
writer) and the descriptor, not the name, is checked again, so a file swapped for a FIFO between the
two is still refused.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pipeline.errors import BadInput

_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def kind_of(mode: int) -> str:
    """What a file of `mode` is, in words ("a FIFO (named pipe)", "a directory", ...)."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "a symlink loop (too many levels of symbolic links)"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long"
    return exc.strerror or str(exc)


def _refuse(path: Path, what: str, where: str | None, st: os.stat_result) -> BadInput:
    return BadInput(f"is {kind_of(st.st_mode)}, not a {what}; give a regular file", where=where or str(path))


def read_regular(path: str | Path, *, what: str = "file", limit: int, where: str | None = None,
                 not_found: str = "file not found") -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them.

    BadInput naming `where` (default: the path) when it is missing (`not_found`), not a regular file
    (directory, FIFO, device, socket), a symlink loop, unreadable, or larger than `limit`."""
    p = Path(path)
    at = where or str(p)
    if not str(path):
        raise BadInput(f"empty path: name a {what}", where=at)
    try:
        st = os.stat(p)
    except FileNotFoundError as exc:
        raise BadInput(not_found, where=at) from exc
    except OSError as exc:
        raise BadInput(f"cannot read: {_why(exc)}", where=at) from exc
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(p, what, where, st)
    if st.st_size > limit:
        raise BadInput(f"{st.st_size} bytes is too large for a {what} (limit {limit})", where=at)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadInput(f"cannot read: {_why(exc)}", where=at) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
            raise _refuse(p, what, where, st)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise BadInput(f"cannot read: {_why(exc)}", where=at) from exc
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while it was read
        raise BadInput(f"larger than the {limit}-byte limit for a {what}", where=at)
    return data


def check_output(path: str | Path, *, what: str = "output file", where: str | None = None) -> Path:
    """`path` as a Path, if a regular file may be written there: refused (BadInput naming it) when it is
    empty, or already exists as anything but a regular file (a directory, a FIFO, a device such as
    /dev/full, a socket) or a symlink loop. A missing file (or directory on its way) is for the writer
    to create, or to say why it cannot."""
    at = where or str(path)
    if not str(path):
        raise BadInput(f"empty path: name a {what}", where=at)
    p = Path(path)
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        return p  # nothing there yet; making it is the writer's (who says why it cannot)
    except OSError as exc:
        raise BadInput(f"cannot write: {_why(exc)}", where=at) from exc
    if not stat.S_ISREG(st.st_mode):
        raise BadInput(f"is {kind_of(st.st_mode)}, not a {what}; give a regular file", where=at)
    return p


def append_text(path: str | Path, text: str, *, what: str = "output file", where: str | None = None) -> None:
    """Append `text` (UTF-8) to the regular file at `path`, creating it. Every refusal and every failed
    write (no such directory, no permission, disk full) is BadInput naming the file."""
    p = check_output(path, what=what, where=where)
    at = where or str(p)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOCTTY, 0o644)
    except OSError as exc:
        raise BadInput(f"cannot write: {_why(exc)}", where=at) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BadInput(f"is {kind_of(st.st_mode)}, not a {what}; give a regular file", where=at)
        with os.fdopen(fd, "ab", closefd=False) as fh:
            fh.write(text.encode("utf-8"))
    except OSError as exc:
        raise BadInput(f"cannot write: {_why(exc)}", where=at) from exc
    finally:
        os.close(fd)

"""Text from outside (model answers, server bodies, tool output) made safe to keep and to show.

- `keepable`: a JSON string may carry a lone UTF-16 surrogate (`"\\ud800"`), which Python decodes into
  a `str` that no UTF-8 encoder accepts: storing it, serialising it or printing it raises. It is
  replaced by U+FFFD where the text enters a record, so one odd answer cannot lose a run's results.
- `printable`: control characters (ESC starts terminal escape sequences that recolour, move the cursor
  or retitle the window) and Unicode bidi controls (U+202E turns the rest of a line around, so a
  reader sees something other than what is there) are shown as visible escapes (`\\x1b`, `\\u202e`).
  Tabs and newlines are kept only where the caller allows them.
"""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but tab/newline, DEL, C1 controls, and the bidi embedding/override/isolate controls and marks.
_UNSAFE = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_UNSAFE_KEEP_LINES = re.compile(f"[{_UNSAFE}]")
_UNSAFE_ONE_LINE = re.compile(f"[{_UNSAFE}\t\n]")


def keepable(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (a valid pair never reaches a `str` as two
    code points from json.loads, so any surrogate code point here is unpaired)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, *, keep_lines: bool = True) -> str:
    """`text` with control and bidi characters shown as escapes (and lone surrogates replaced), safe to
    print on a terminal or in a log; `keep_lines=False` escapes tabs and newlines too."""
    pattern = _UNSAFE_KEEP_LINES if keep_lines else _UNSAFE_ONE_LINE
    text = keepable(text)
    return pattern.sub(_escape, text) if pattern.search(text) else text

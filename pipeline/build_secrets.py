"""Build secrets: read by source (file or env var), registered for redaction, handed to BuildKit as files.

The values are needed twice: by the build (as files BuildKit mounts at /run/secrets/<id>) and by the
leak gate (as byte sequences to search for in the pushed image). Neither ever puts a value on a
command line.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import BuildConfig
from pipeline.secrets import read_secret


def load_build_secrets(build: BuildConfig) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for sid, src in build.secrets.items():
        value = read_secret(src, where=f"build.secrets.{sid}")
        assert value is not None  # required
        out[sid] = value
    return out


@contextmanager
def secret_files(build: BuildConfig, values: dict[str, bytes]) -> Iterator[dict[str, Path]]:
    """id -> file for `--secret id=…,src=…`; env-sourced values live in a 0600 temp file meanwhile."""
    out: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="llmgate-secrets-") as tmp:
        os.chmod(tmp, 0o700)
        for sid, src in build.secrets.items():
            if src.file is not None:
                out[sid] = Path(src.file).expanduser().resolve()
            else:
                p = Path(tmp) / sid
                fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(values[sid])
                out[sid] = p
        yield out

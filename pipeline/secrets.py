"""The one reader of secret values: a `SecretSource` (a file or an environment variable) to bytes.

Every value read is registered with the redactor before it is returned, so it is masked in every log,
report and store write from then on. Values never come from command-line arguments.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.config import SecretSource
from pipeline.errors import BadInput
from pipeline.redact import register_secret
from pipeline.regular_files import read_regular

MAX_SECRET_FILE_BYTES = 16 << 20  # a key, a pip.conf, a CA bundle (~200 KB): never a large file


def read_secret(src: SecretSource | None, *, where: str, required: bool = True, allow_empty: bool = False) -> bytes | None:
    """The value behind `src`; None when it is not configured or (with `required=False`) not set.

    `where` names the config field, for the error message."""
    if src is None:
        if required:
            raise BadInput("no secret configured", where=where)
        return None
    if (src.file is None) == (src.env is None):
        raise BadInput("a secret names exactly one source: `file` or `env`", where=where)
    if src.file is not None:
        path = Path(src.file).expanduser()
        if not path.exists() and not required:
            return None
        try:
            value = read_regular(path, what="secret file", limit=MAX_SECRET_FILE_BYTES)
        except BadInput as exc:
            raise BadInput(f"{path}: {exc.message}", where=f"{where}.file") from None
    else:
        assert src.env is not None
        if src.env not in os.environ:
            if required:
                raise BadInput(f"environment variable {src.env} is not set", where=f"{where}.env")
            return None
        value = os.environ[src.env].encode()
    if not value.strip() and not allow_empty:
        raise BadInput("secret is empty", where=where)
    register_secret(value)
    return value

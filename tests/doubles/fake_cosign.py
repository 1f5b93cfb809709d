"""TEST DOUBLE "cosign": a stand-in `cosign` executable for tests of the promotion guard.

It is not cosign and verifies nothing cryptographically. `install(bin_dir, bad_digests)` writes an
executable `cosign` that answers `cosign verify ... REF` like cosign does for a good signature (exit
0, one JSON payload naming REF's digest) unless REF's digest is listed in `bad_digests`, for which
it fails like cosign with no matching signature (exit 1). Every call is appended to `calls.log`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPT = """#!{python}
import json, sys
from pathlib import Path
here = Path(__file__).resolve().parent
with open(here / "calls.log", "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
bad = set(json.loads((here / "bad_digests.json").read_text()))
if sys.argv[1:2] != ["verify"]:
    print("fake cosign: only `verify` is played", file=sys.stderr)
    sys.exit(2)
ref = sys.argv[-1]
digest = ref.split("@", 1)[1]
if digest in bad:
    print("Error: no matching signatures", file=sys.stderr)
    sys.exit(1)
print(json.dumps([{{"critical": {{"identity": {{"docker-reference": ref.split("@")[0]}},
                  "image": {{"docker-manifest-digest": digest}}, "type": "cosign container image signature"}},
                  "optional": None}}]))
"""


def install(bin_dir: Path, bad_digests: list[str] | None = None) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "bad_digests.json").write_text(json.dumps(bad_digests or []))
    exe = bin_dir / "cosign"
    exe.write_text(SCRIPT.format(python=sys.executable))
    exe.chmod(0o755)
    return exe


def calls(bin_dir: Path) -> list[list[str]]:
    log = bin_dir / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

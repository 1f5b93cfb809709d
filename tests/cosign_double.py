"""TEST DOUBLE for the cosign binary, which cannot be installed here.

`install(tmp_path, monkeypatch)` puts an executable named `cosign` first on PATH. It records every
call (argv and the secret-bearing environment variables) as JSON lines, keeps "signed"/"attested"
markers per digest in a state directory, and prints what the real cosign prints on success:
`verify` a JSON array of simple-signing payloads naming the digest, `triangulate` the
`repo:sha256-<hex>.sig` tag. Knobs via environment: FAKE_COSIGN_FAIL=<subcommand> makes that
subcommand exit 1 (echoing the private key on stderr, as a leaky tool might), FAKE_COSIGN_WRONG_DIGEST=1
makes verify name another digest.
"""

from __future__ import annotations

import json
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SCRIPT = r'''#!__PYTHON__
import hashlib, json, os, sys
from pathlib import Path
state = Path(__STATE__)
state.mkdir(parents=True, exist_ok=True)
argv = sys.argv[1:]
rec = {"argv": sys.argv, "env": {k: os.environ.get(k) for k in ("COSIGN_PRIVATE_KEY", "COSIGN_PASSWORD", "SIGSTORE_ID_TOKEN")}}
with open(state / "calls.jsonl", "a") as f:
    f.write(json.dumps(rec) + "\n")
sub = argv[0] if argv else ""
ref = argv[-1] if argv else ""
if os.environ.get("FAKE_COSIGN_FAIL") == sub:
    sys.stderr.write("Error: signing failed with key " + (os.environ.get("COSIGN_PRIVATE_KEY") or "") + "\n")
    sys.exit(1)
repo, _, digest = ref.partition("@")
marker = state / digest.replace(":", "_")
def need_key():
    if "--key" in argv and argv[argv.index("--key") + 1].startswith("env://"):
        var = argv[argv.index("--key") + 1][len("env://"):]
        if not os.environ.get(var) or "COSIGN_PASSWORD" not in os.environ:
            sys.stderr.write("Error: reading key from env: not set\n"); sys.exit(1)
if sub == "sign":
    need_key()
    marker.with_suffix(".sig").write_text("signed")
    sys.stderr.write("Pushing signature to: " + repo + "\n")
elif sub == "attest":
    need_key()
    pred = Path(argv[argv.index("--predicate") + 1])
    json.loads(pred.read_text())
    marker.with_suffix(".att").write_text(argv[argv.index("--type") + 1])
elif sub == "verify":
    if not marker.with_suffix(".sig").exists():
        sys.stderr.write("Error: no signatures found\n"); sys.exit(10)
    named = "sha256:" + "f" * 64 if os.environ.get("FAKE_COSIGN_WRONG_DIGEST") else digest
    print(json.dumps([{"critical": {"identity": {"docker-reference": repo}, "image": {"docker-manifest-digest": named},
                                     "type": "cosign container image signature"}, "optional": None}]))
elif sub == "verify-attestation":
    att = marker.with_suffix(".att")
    if not att.exists() or att.read_text() != argv[argv.index("--type") + 1]:
        sys.stderr.write("Error: no matching attestations\n"); sys.exit(10)
    print(json.dumps({"payloadType": "application/vnd.in-toto+json", "payload": "e30="}))
elif sub == "triangulate":
    print(repo + ":" + digest.replace(":", "-") + ".sig")
else:
    sys.stderr.write("unknown command " + sub + "\n"); sys.exit(2)
'''


@dataclass
class FakeCosign:
    bin_dir: Path
    state: Path

    @property
    def path(self) -> Path:
        return self.bin_dir / "cosign"

    def calls(self) -> list[dict[str, Any]]:
        log = self.state / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def subcommands(self) -> list[str]:
        return [c["argv"][1] for c in self.calls()]


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeCosign:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    state = tmp_path / "fake-cosign-state"
    exe = bin_dir / "cosign"
    exe.write_text(SCRIPT.replace("__PYTHON__", sys.executable).replace("__STATE__", repr(str(state))))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    return FakeCosign(bin_dir, state)

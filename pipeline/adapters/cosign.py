"""The cosign binary as a `Signer` (pipeline/adapters/signer.py), used when `cosign` is on PATH.

It writes the same tag layout as `PythonSigner` (`cosign_layout`): signatures under
`sha256-<hex>.sig`, attestations under `sha256-<hex>.att`, with no transparency log
(`--tlog-upload=false`) and the legacy layout instead of a bundle referrer: the local registry
(distribution 2.8) has no OCI referrers API. Verification passes `--insecure-ignore-tlog=true`: the
public key is the trust root. Plain-HTTP loopback registries need `--allow-http-registry=true`.

Versions (read from sigstore/cosign's cmd/cosign/cli/options): cosign v2.0.0 is the oldest supported;
it has every flag used here except two. `sign` and `attest` gained `--new-bundle-format` and
`--use-signing-config` in v2.6.0 (`attest` had `--new-bundle-format` from v2.5.0), off by default, and
v3.0.0 turned both on. So the adapter asks the binary its version (`cosign version --json`) before it
signs, passes both flags `=false` from v2.6.0 on, and leaves them out before (where the legacy layout is
the only one). An older or unrecognisable cosign is refused with the version it reported.

Secret handling: the private key travels only in the child's environment (`--key
env://COSIGN_PRIVATE_KEY`, re-encrypted under a one-time password in `COSIGN_PASSWORD`), never on
argv (visible in /proc and in CI logs); both are registered with the redactor, and commands that
need no secret get an environment with those variables removed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.adapters import cosign_layout as L
from pipeline.adapters.signer import AttestationCheck, Pushed, SignatureCheck, SigningKeyLike, split_image
from pipeline.adapters.tools import find_tool
from pipeline.errors import InfraError
from pipeline.redact import redact_text, register_secret

KEY_ENV = "COSIGN_PRIVATE_KEY"
PASSWORD_ENV = "COSIGN_PASSWORD"
TOKEN_ENV = "SIGSTORE_ID_TOKEN"
SECRET_ENVS = (KEY_ENV, PASSWORD_ENV, TOKEN_ENV)
COSIGN_NOT_FOUND = "cosign not found"
MIN_VERSION = (2, 0, 0)
BUNDLE_FLAGS_SINCE = (2, 6, 0)  # `sign`/`attest --new-bundle-format --use-signing-config`; on by default in v3
SUPPORTED = "cosign v2.0.0 or later (v2.x, v3.x)"
# Write the legacy tag layout without a transparency log (the flags for cosign v2.6.0 and later).
LEGACY_SIGN_FLAGS = ["--tlog-upload=false", "--new-bundle-format=false", "--use-signing-config=false"]
_VERSION = re.compile(r'"?gitVersion"?\s*[:=]?\s*"?v?(\d+)\.(\d+)\.(\d+)', re.IGNORECASE)


@dataclass(frozen=True)
class CosignVersion:
    major: int
    minor: int
    patch: int

    @property
    def number(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    @classmethod
    def parse(cls, output: str) -> CosignVersion | None:
        """The version `cosign version --json` (or plain `cosign version`) reports: its `gitVersion`."""
        m = _VERSION.search(output)
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def legacy_sign_flags(version: CosignVersion) -> list[str]:
    """The flags that make `cosign sign`/`attest` of this version write the tag layout without a log."""
    if version.number >= BUNDLE_FLAGS_SINCE:
        return list(LEGACY_SIGN_FLAGS)
    return ["--tlog-upload=false"]


@dataclass
class CosignCall:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str  # redacted

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class CosignOptions:
    allow_http_registry: bool = False
    timeout_s: float = 300
    extra_env: dict[str, str] = field(default_factory=dict)


def is_loopback(image: str) -> bool:
    return image.startswith(("127.", "localhost", "[::1]"))


class Cosign:
    """Runs the binary; secrets only through the environment."""

    def __init__(self, binary: str | Path, options: CosignOptions | None = None) -> None:
        self.binary = str(binary)
        self.options = options or CosignOptions()
        self._version: CosignVersion | None = None

    @classmethod
    def discover(cls, options: CosignOptions | None = None) -> Cosign | None:
        found = find_tool("cosign")
        return cls(found, options) if found else None

    def run(self, args: list[str], secret_env: dict[str, str] | None = None) -> CosignCall:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENVS}
        env.update(self.options.extra_env)
        for value in (secret_env or {}).values():
            register_secret(value)
        env.update(secret_env or {})
        argv = [self.binary, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                                  timeout=self.options.timeout_s, check=False)
        except FileNotFoundError as exc:
            raise InfraError(COSIGN_NOT_FOUND, where=self.binary) from exc
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"cosign {args[0]} did not finish within {self.options.timeout_s:.0f}s",
                             where=args[-1]) from exc
        return CosignCall(argv=argv, returncode=proc.returncode, stdout=proc.stdout, stderr=redact_text(proc.stderr))

    def registry_flags(self, image: str) -> list[str]:
        return ["--allow-http-registry=true"] if self.options.allow_http_registry or is_loopback(image) else []

    def version(self) -> CosignVersion:
        """The binary's version, asked once; InfraError when it cannot say or is older than MIN_VERSION."""
        if self._version is None:
            call = self.run(["version", "--json"])
            found = CosignVersion.parse(call.stdout + "\n" + call.stderr) if call.ok else None
            if found is None:
                said = _tail(call.stdout + "\n" + call.stderr)
                raise InfraError(f"cannot tell which cosign this is (`cosign version --json` exit {call.returncode}: "
                                 f"{said})", where=self.binary, hint=f"llmgate supports {SUPPORTED}")
            if found.number < MIN_VERSION:
                raise InfraError(f"cosign {found} is older than llmgate supports", where=self.binary,
                                 hint=f"install {SUPPORTED}, or take it off PATH to sign with the built-in signer")
            self._version = found
        return self._version

    def sign_flags(self) -> list[str]:
        return legacy_sign_flags(self.version())


class CosignCliSigner:
    """`Signer` over the cosign binary (same layout as PythonSigner; see the module docstring)."""

    name = "cosign"

    def __init__(self, cosign: Cosign) -> None:
        self.cosign = cosign
        self.calls: list[list[str]] = []  # argv of every call, for the record (never a secret)

    @classmethod
    def discover(cls, options: CosignOptions | None = None) -> CosignCliSigner | None:
        """The cosign on PATH, its version checked now (a clear error before anything is signed), or None."""
        found = Cosign.discover(options)
        if found is None:
            return None
        found.version()
        return cls(found)

    def _key_env(self, key: SigningKeyLike) -> dict[str, str]:
        password = secrets.token_urlsafe(24)
        return {KEY_ENV: key.encrypted_pem(password.encode()).decode(), PASSWORD_ENV: password}

    def _run(self, args: list[str], secret_env: dict[str, str] | None = None) -> CosignCall:
        call = self.cosign.run(args, secret_env)
        self.calls.append(call.argv)
        return call

    def _pushed(self, image: str, suffix: str) -> Pushed:
        repo, digest = split_image(image)
        return Pushed(tag_ref=f"{repo}:{L.tag_for(digest, suffix)}", manifest_digest=None, appended=True)

    def sign_image(self, image: str, key: SigningKeyLike) -> Pushed:
        split_image(image)
        call = self._run(["sign", "--yes", "--key", f"env://{KEY_ENV}", *self.cosign.sign_flags(),
                          *self.cosign.registry_flags(image), image], self._key_env(key))
        if not call.ok:
            raise InfraError(f"cosign sign failed (exit {call.returncode}): {_tail(call.stderr)}", where=image)
        return self._pushed(image, L.SIG_SUFFIX)

    def attest(self, image: str, predicate_type: str, predicate: Mapping[str, Any], key: SigningKeyLike) -> Pushed:
        split_image(image)
        with tempfile.TemporaryDirectory(prefix="llmgate-attest-") as tmp:
            path = Path(tmp) / "predicate.json"
            path.write_text(json.dumps(dict(predicate)))
            call = self._run(["attest", "--yes", "--key", f"env://{KEY_ENV}", "--type", predicate_type,
                              "--predicate", str(path), *self.cosign.sign_flags(), *self.cosign.registry_flags(image),
                              image], self._key_env(key))
        if not call.ok:
            raise InfraError(f"cosign attest failed (exit {call.returncode}): {_tail(call.stderr)}", where=image)
        return self._pushed(image, L.ATT_SUFFIX)

    def attach_attestation(self, image: str, predicate_type: str, envelope: bytes) -> Pushed:
        """`cosign attach attestation`: a DSSE envelope signed elsewhere, attached unchanged."""
        split_image(image)
        with tempfile.TemporaryDirectory(prefix="llmgate-attach-") as tmp:
            path = Path(tmp) / "envelope.json"
            path.write_bytes(envelope)
            call = self._run(["attach", "attestation", "--attestation", str(path),
                              *self.cosign.registry_flags(image), image])
        if not call.ok:
            raise InfraError(f"cosign attach attestation failed (exit {call.returncode}): {_tail(call.stderr)}",
                             where=image)
        return self._pushed(image, L.ATT_SUFFIX)

    def _verify(self, sub: list[str], image: str, public_key_pem: bytes) -> CosignCall:
        with tempfile.TemporaryDirectory(prefix="llmgate-verify-") as tmp:
            pub = Path(tmp) / "cosign.pub"
            pub.write_bytes(public_key_pem)
            return self._run([*sub, "--key", str(pub), "--insecure-ignore-tlog=true", "--output", "json",
                              *self.cosign.registry_flags(image), image])

    def verify_image(self, image: str, public_key_pem: bytes) -> SignatureCheck:
        _, digest = split_image(image)
        call = self._verify(["verify"], image, public_key_pem)
        if not call.ok:
            return SignatureCheck(False, f"cosign verify refused (exit {call.returncode}): {_tail(call.stderr)}")
        payloads = _json_docs(call.stdout)
        named = {((p.get("critical") or {}).get("image") or {}).get("docker-manifest-digest") for p in payloads}
        if not payloads:
            return SignatureCheck(False, "cosign verify printed no signature payload")
        if named != {digest}:
            return SignatureCheck(False, f"signed payload names {sorted(map(str, named))}, not {digest}")
        return SignatureCheck(True, "signature verified by cosign", payloads)

    def verify_attestations(self, image: str, predicate_type: str, public_key_pem: bytes) -> AttestationCheck:
        _, digest = split_image(image)
        call = self._verify(["verify-attestation", "--type", predicate_type], image, public_key_pem)
        if not call.ok:
            return AttestationCheck(False, f"cosign verify-attestation refused (exit {call.returncode}): "
                                           f"{_tail(call.stderr)}")
        statements = []
        for env in _json_docs(call.stdout):  # one DSSE envelope per verified attestation
            try:
                body = base64.b64decode(env.get("payload", ""))
                st = L.parse_statement(body)
            except (ValueError, L.LayoutError):
                continue
            if st.predicate_type == predicate_type and digest in [d for _, d in st.subjects]:
                statements.append(json.loads(body))
        if not statements:
            return AttestationCheck(False, f"cosign verified no attestation of {predicate_type} about {digest}")
        return AttestationCheck(True, f"{len(statements)} attestation(s) of {predicate_type} verified by cosign",
                                statements)


def _json_docs(text: str) -> list[dict[str, Any]]:
    """cosign prints one JSON array (verify) or one JSON object per line (verify-attestation)."""
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
        return [d for d in (data if isinstance(data, list) else [data]) if isinstance(d, dict)]
    except json.JSONDecodeError:
        out = []
        for line in text.splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(d, dict):
                out.append(d)
        return out


def _tail(text: str, n: int = 400) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:n]

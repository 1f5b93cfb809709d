"""The cosign binary: sign, attest and verify an image by digest.

Secret handling: the private key, its password and a keyless identity token travel only in the
child's environment (`--key env://COSIGN_PRIVATE_KEY`, `COSIGN_PASSWORD`, `SIGSTORE_ID_TOKEN`),
never on argv (visible in /proc and in CI logs); they are registered with the redactor before
cosign runs, and commands that need no secret (verify, triangulate) get an environment with those
variables removed.

Offline / private registry (the default here): cosign v3 refuses `--tlog-upload=false` together
with its signing-config flow, so signing uses a signing config that names no transparency log and
no timestamp authority, and verification passes `--insecure-ignore-tlog=true` (the key is the trust
root). Plain-HTTP loopback registries need `--allow-http-registry`.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.adapters.tools import find_tool
from pipeline.errors import BadInput, InfraError
from pipeline.redact import redact_text, register_secret

KEY_ENV = "COSIGN_PRIVATE_KEY"
PASSWORD_ENV = "COSIGN_PASSWORD"
TOKEN_ENV = "SIGSTORE_ID_TOKEN"
SECRET_ENVS = (KEY_ENV, PASSWORD_ENV, TOKEN_ENV)
BUNDLE_ARTIFACT_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
OFFLINE_SIGNING_CONFIG = {
    "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
    "rekorTlogConfig": {},
    "tsaConfig": {},
}
COSIGN_NOT_FOUND = "cosign not found"


@dataclass
class SigningSecrets:
    """Secret values for one cosign call; kept out of repr so they never reach a log by accident."""

    private_key: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.private_key is not None:
            out[KEY_ENV] = self.private_key
        if self.private_key is not None:
            out[PASSWORD_ENV] = self.password or ""  # empty password: cosign must not prompt
        if self.identity_token is not None:
            out[TOKEN_ENV] = self.identity_token
        for v in out.values():
            register_secret(v)
        return out


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
class VerifyResult:
    verified: bool
    reason: str
    payloads: list[dict[str, Any]] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)


@dataclass
class CosignOptions:
    offline: bool = True
    allow_http_registry: bool = False
    signing_config: Path | None = None  # written on demand in offline mode
    timeout_s: float = 300


class Cosign:
    def __init__(self, binary: str | Path, options: CosignOptions | None = None) -> None:
        self.binary = str(binary)
        self.options = options or CosignOptions()

    @classmethod
    def discover(cls, options: CosignOptions | None = None) -> Cosign | None:
        found = find_tool("cosign")
        return cls(found, options) if found else None

    # -- plumbing -----------------------------------------------------------------------------
    def _run(self, args: list[str], secrets: SigningSecrets | None = None) -> CosignCall:
        env = {k: v for k, v in os.environ.items() if k not in SECRET_ENVS}
        if secrets is not None:
            env.update(secrets.env())
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

    def _registry_flags(self) -> list[str]:
        return ["--allow-http-registry=true"] if self.options.allow_http_registry else []

    def _signing_flags(self, workdir: Path, keyless: bool) -> list[str]:
        if not self.options.offline:
            return []
        if keyless:
            raise BadInput("keyless signing needs the public Sigstore services (Fulcio, Rekor)",
                           where="sign.offline", hint="set sign.offline: false or use sign.mode: key")
        path = self.options.signing_config or workdir / "signing-config.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(OFFLINE_SIGNING_CONFIG))
        return ["--signing-config", str(path)]

    @staticmethod
    def _require_digest(ref: str) -> None:
        if "@sha256:" not in ref:
            raise BadInput("cosign signs and verifies by digest only, never a tag", where=ref)

    # -- commands -----------------------------------------------------------------------------
    def sign(self, ref: str, secrets: SigningSecrets, *, workdir: Path, keyless: bool = False) -> CosignCall:
        self._require_digest(ref)
        args = ["sign", "--yes"]
        if not keyless:
            if secrets.private_key is None:
                raise BadInput("no signing key", where=f"env {KEY_ENV}")
            args += ["--key", f"env://{KEY_ENV}"]
        args += self._signing_flags(workdir, keyless) + self._registry_flags() + [ref]
        return self._run(args, secrets)

    def attest(self, ref: str, predicate: Path, predicate_type: str, secrets: SigningSecrets, *, workdir: Path,
               keyless: bool = False) -> CosignCall:
        self._require_digest(ref)
        args = ["attest", "--yes", "--predicate", str(predicate), "--type", predicate_type]
        if not keyless:
            args += ["--key", f"env://{KEY_ENV}"]
        args += self._signing_flags(workdir, keyless) + self._registry_flags() + [ref]
        return self._run(args, secrets)

    def _verify_flags(self, public_key: Path | None, identity: dict[str, str] | None) -> list[str]:
        args: list[str] = []
        if public_key is not None:
            if not public_key.is_file():
                raise BadInput("public key for verification not found", where=str(public_key))
            args += ["--key", str(public_key)]
        elif identity:
            for flag in ("certificate-identity", "certificate-identity-regexp", "certificate-oidc-issuer"):
                if identity.get(flag):
                    args += [f"--{flag}", identity[flag]]
        else:
            raise BadInput("nothing to verify against: configure sign.public_key or a certificate identity",
                           where="sign.public_key")
        if self.options.offline:
            args.append("--insecure-ignore-tlog=true")
        return args + self._registry_flags()

    def verify(self, ref: str, *, public_key: Path | None = None, identity: dict[str, str] | None = None) -> VerifyResult:
        """Verify the signature on `ref`; verified only when cosign succeeds *and* every payload names
        exactly this digest (a signature for another digest must not count)."""
        self._require_digest(ref)
        digest = ref.split("@", 1)[1]
        call = self._run(["verify", "--output", "json", *self._verify_flags(public_key, identity), ref])
        if not call.ok:
            return VerifyResult(False, f"cosign verify failed (exit {call.returncode}): {_tail(call.stderr)}",
                                argv=call.argv)
        payloads = _json_lines(call.stdout)
        if not payloads:
            return VerifyResult(False, "cosign verify printed no signature payload", argv=call.argv)
        named = {((p.get("critical") or {}).get("image") or {}).get("docker-manifest-digest") for p in payloads}
        if named != {digest}:
            return VerifyResult(False, f"signature payload names {sorted(map(str, named))}, not {digest}",
                                payloads=payloads, argv=call.argv)
        return VerifyResult(True, "signature verified", payloads=payloads, argv=call.argv)

    def verify_attestation(self, ref: str, predicate_type: str, *, public_key: Path | None = None,
                           identity: dict[str, str] | None = None) -> VerifyResult:
        self._require_digest(ref)
        call = self._run(["verify-attestation", "--type", predicate_type, "--output", "json",
                          *self._verify_flags(public_key, identity), ref])
        if not call.ok:
            return VerifyResult(False, f"cosign verify-attestation failed (exit {call.returncode}): {_tail(call.stderr)}",
                                argv=call.argv)
        return VerifyResult(True, "attestation verified", payloads=_json_lines(call.stdout), argv=call.argv)

    def triangulate(self, ref: str) -> str | None:
        """The legacy `repo:sha256-<hex>.sig` location cosign uses for the signature of `ref`."""
        self._require_digest(ref)
        call = self._run(["triangulate", *self._registry_flags(), ref])
        out = call.stdout.strip().splitlines()
        return out[-1].strip() if call.ok and out else None


def _json_lines(text: str) -> list[dict[str, Any]]:
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

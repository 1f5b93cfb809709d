"""Stage `sign`: cosign signs the image digest, attaches the scan report as an attestation, and
verifies the signature against the configured public key (metric `sign.verified`, 1/0).

Fails closed: without cosign the stage is an error with `verified = 0` (never skipped into a pass),
and `verified` is 1 only when `cosign verify` accepted a signature naming exactly this digest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from pipeline.adapters.cosign import (
    BUNDLE_ARTIFACT_TYPE,
    COSIGN_NOT_FOUND,
    Cosign,
    CosignOptions,
    SigningSecrets,
)
from pipeline.adapters.trivy import Trivy, is_local_registry
from pipeline.config import PipelineConfig, SecretSource, SignConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import Artifact, RunRecord, StageResult, StageStatus
from pipeline.progress import NullReporter, Reporter
from pipeline.redact import register_secret
from pipeline.workspace import Workspace

VULN_PREDICATE = "vuln"  # cosign's vulnerability predicate (https://cosign.sigstore.dev/attestation/vuln/v1)
TRIVY_PREDICATE = "https://trivy.dev/report/json/v2"  # raw trivy JSON when it cannot be converted


class SignDetails(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ref: str
    mode: str
    signature_ref: str | None = None  # OCI referrer (bundle) digest ref, else the legacy .sig tag
    signature_ref_kind: str | None = None  # "referrer" | "tag"
    attestation: str | None = None  # predicate type attached, or why not
    attestation_verified: bool | None = None
    verify_reason: str = ""
    commands: list[list[str]] = Field(default_factory=list)  # argv only: secrets travel in the environment


def read_secret(src: SecretSource | None, what: str) -> str | None:
    """The value behind a SecretSource, registered with the redactor; None when not configured/set."""
    if src is None:
        return None
    value: str | None = None
    if src.file:
        try:
            value = Path(src.file).expanduser().read_text()
        except OSError as exc:
            raise BadInput(f"cannot read {what}: {exc.strerror}", where=src.file) from exc
    elif src.env:
        value = os.environ.get(src.env)
    if value is not None:
        register_secret(value)
    return value


def cosign_options(sc: SignConfig, ref: str) -> CosignOptions:
    allow_http = sc.allow_http_registry if sc.allow_http_registry is not None else is_local_registry(ref)
    return CosignOptions(offline=sc.offline, allow_http_registry=allow_http, timeout_s=sc.timeout_s)


def identity(sc: SignConfig) -> dict[str, str] | None:
    ids = {
        "certificate-identity": sc.certificate_identity or "",
        "certificate-identity-regexp": sc.certificate_identity_regexp or "",
        "certificate-oidc-issuer": sc.certificate_oidc_issuer or "",
    }
    return {k: v for k, v in ids.items() if v} or None


def verify_image(cosign: Cosign, ref: str, sc: SignConfig):  # type: ignore[no-untyped-def]
    if sc.mode == "key":
        return cosign.verify(ref, public_key=Path(sc.public_key))
    return cosign.verify(ref, identity=identity(sc))


def _signature_ref(cosign: Cosign, ref: str) -> tuple[str | None, str | None]:
    repo, digest = ref.split("@", 1)
    try:
        from pipeline.adapters.registry import RegistryClient, split_repository

        host, name = split_repository(repo)
        with RegistryClient(host) as reg:
            found = reg.referrers(name, digest, artifact_type=BUNDLE_ARTIFACT_TYPE)
        if found:
            return f"{repo}@{found[-1]['digest']}", "referrer"
    except (BadInput, InfraError, KeyError, ValueError):
        pass  # fall back to cosign's own idea of where the signature lives
    tag = cosign.triangulate(ref)
    return (tag, "tag") if tag else (None, None)


def _predicate(run: RunRecord, out_dir: Path) -> tuple[Path, str] | None:
    scan = run.stage("scan")
    if scan is None:
        return None
    report = next((Path(a.path) for a in scan.artifacts if a.name == "trivy-report"), None)
    if report is None or not report.is_file():
        return None
    trivy = Trivy.discover()
    if trivy is not None:
        try:
            return trivy.convert(report, "cosign-vuln", out_dir / "vuln-predicate.json"), VULN_PREDICATE
        except InfraError:
            pass
    return report, TRIVY_PREDICATE


def sign_stage(
    run: RunRecord,
    cfg: PipelineConfig,
    ws: Workspace,
    reporter: Reporter = NullReporter(),
    *,
    cosign: Cosign | None = None,
) -> StageResult:
    sc = cfg.sign
    ref = run.image.by_digest
    cosign = cosign or Cosign.discover(cosign_options(sc, ref))
    if cosign is None:
        # Fail closed: an unsigned image must never look like a skipped-but-fine stage.
        return StageResult(stage="sign", status=StageStatus.ERROR, reason=f"{COSIGN_NOT_FOUND} (signing fails closed)",
                           metrics={"verified": 0.0}).finish()
    out_dir = ws.run_dir(run.run_id) / "sign"
    out_dir.mkdir(parents=True, exist_ok=True)
    keyless = sc.mode == "keyless"
    if keyless:
        secrets = SigningSecrets(identity_token=read_secret(sc.identity_token, "identity token"))
    else:
        key = read_secret(sc.key, "signing key")
        if not key:
            where = sc.key.file or f"env {sc.key.env}"
            raise BadInput("signing key not available", where=where, hint="set sign.key to a file or env variable")
        secrets = SigningSecrets(private_key=key, password=read_secret(sc.password, "key password"))
    details = SignDetails(ref=ref, mode=sc.mode)

    reporter.step(f"sign: cosign sign {ref}")
    call = cosign.sign(ref, secrets, workdir=out_dir, keyless=keyless)
    details.commands.append(call.argv)
    if not call.ok:
        details.verify_reason = f"cosign sign failed (exit {call.returncode}): {call.stderr.strip()[-400:]}"
        return StageResult(stage="sign", status=StageStatus.ERROR, reason=details.verify_reason,
                           metrics={"verified": 0.0}, details=details.model_dump()).finish()

    artifacts: list[Artifact] = []
    if sc.attest:
        pred = _predicate(run, out_dir)
        if pred is None:
            details.attestation = "not attached: no scan report in this run"
        else:
            path, ptype = pred
            call = cosign.attest(ref, path, ptype, secrets, workdir=out_dir, keyless=keyless)
            details.commands.append(call.argv)
            if not call.ok:
                details.verify_reason = f"cosign attest failed (exit {call.returncode}): {call.stderr.strip()[-400:]}"
                return StageResult(stage="sign", status=StageStatus.ERROR, reason=details.verify_reason,
                                   metrics={"verified": 0.0}, details=details.model_dump()).finish()
            details.attestation = ptype
            artifacts.append(Artifact(name="attestation-predicate", path=str(path), media_type="application/json"))

    reporter.step("sign: verifying against the configured key")
    result = verify_image(cosign, ref, sc)
    details.commands.append(result.argv)
    details.verify_reason = result.reason
    if result.verified and details.attestation in (VULN_PREDICATE, TRIVY_PREDICATE):
        pub = Path(sc.public_key) if sc.mode == "key" else None
        att = cosign.verify_attestation(ref, details.attestation, public_key=pub,
                                        identity=None if pub else identity(sc))
        details.commands.append(att.argv)
        details.attestation_verified = att.verified
    details.signature_ref, details.signature_ref_kind = _signature_ref(cosign, ref)
    (out_dir / "verify.json").write_text(json.dumps(result.payloads, indent=2))
    artifacts.append(Artifact(name="cosign-verify", path=str(out_dir / "verify.json"), media_type="application/json"))
    verified = result.verified and details.attestation_verified is not False
    return StageResult(
        stage="sign",
        status=StageStatus.OK if verified else StageStatus.FAILED,
        reason=None if verified else (result.reason if not result.verified else "attestation did not verify"),
        metrics={"verified": 1.0 if verified else 0.0},
        artifacts=artifacts,
        details=details.model_dump(),
    ).finish()

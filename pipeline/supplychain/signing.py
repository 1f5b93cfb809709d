"""Sign an image digest, attest a release, and verify both: the domain side of the trust chain.

Stages call `sign_image` (after the push) and `attest_release` (after the gate); `llmgate verify`
and the promotion guard call `verify_release` / `verified_verdicts`. What a signer writes and reads
is cosign's tag layout (see pipeline/adapters/cosign_layout.py), so `cosign verify` and
`cosign verify-attestation` accept it, and what cosign writes is accepted here.

Keys: the private key is a `cosign.key` (cosign's encrypted PEM) named by `sign.key` (a file or an
environment variable holding the PEM), its password by `sign.password` (env or file, empty allowed);
the public key is the `cosign.pub` file at `sign.public_key`. Neither ever comes from argv.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipeline.adapters.cosign import CosignCliSigner, CosignOptions
from pipeline.adapters.signer import PythonSigner, Signer
from pipeline.adapters.trivy import Trivy
from pipeline.config import SignConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import ImageRef, RunRecord
from pipeline.schemas.attest import AttestationRef, AttestDetails
from pipeline.schemas.build import BuildDetails
from pipeline.schemas.sign import SignDetails
from pipeline.secrets import read_secret
from pipeline.supplychain import cosign_keys
from pipeline.supplychain.predicates import (
    DEFAULT_BUILDER_ID,
    PROVENANCE_TYPE,
    SBOM_TYPE,
    VERDICT_TYPE,
    VerdictPredicate,
    provenance_predicate,
)


@dataclass(frozen=True)
class PublicKey:
    """A validated `cosign.pub`: its PEM bytes (what signers take) and its id."""

    pem: bytes
    key_id: str
    source: str


def load_public_key(path: str | Path) -> PublicKey:
    """BadInput (exit 2) naming the file for a missing, garbled, wrong-curve or expired key file."""
    key = cosign_keys.load_public_key_file(path)
    return PublicKey(pem=cosign_keys.public_pem(key), key_id=cosign_keys.key_id(key), source=str(path))


def load_signing_key(sc: SignConfig) -> cosign_keys.SigningKey:
    """The private key `sign.key` names, decrypted with `sign.password` (absent password = empty)."""
    where = sc.key.file or f"env {sc.key.env}"
    pem = read_secret(sc.key, where="sign.key")
    assert pem is not None
    password = read_secret(sc.password, where="sign.password", required=False, allow_empty=True) or b""
    return cosign_keys.load_private_key(pem, password, where=where)


def default_signer(*, prefer_cosign: bool = True, timeout_s: float | None = None) -> Signer:
    """The cosign CLI when it is on PATH (CI, the tool image), else the Python signer. `timeout_s`
    (`sign.timeout_s`) bounds each cosign call."""
    if prefer_cosign:
        cli = CosignCliSigner.discover(CosignOptions() if timeout_s is None else CosignOptions(timeout_s=timeout_s))
        if cli is not None:
            return cli
    return PythonSigner()


def _commands(signer: Signer) -> list[list[str]]:
    return list(getattr(signer, "calls", []))


def _image(image: ImageRef | str) -> str:
    ref = image if isinstance(image, ImageRef) else ImageRef.parse(image)
    if ref.digest is None:
        raise BadInput("sign and verify an image by digest, never a tag", where=ref.by_tag)
    return ref.by_digest


# -- signing --------------------------------------------------------------------------------------
def sign_image(image: ImageRef | str, key: cosign_keys.SigningKey, public_key: PublicKey, *,
               signer: Signer) -> SignDetails:
    """Sign `image` (by digest) and read the signature back against `public_key`."""
    ref = _image(image)
    pushed = signer.sign_image(ref, key)
    check = signer.verify_image(ref, public_key.pem)
    return SignDetails(ref=ref, signer=signer.name, key_id=cosign_keys.key_id(key.public),
                       signature_ref=pushed.tag_ref, signature_manifest=pushed.manifest_digest,
                       appended=pushed.appended, verified=check.verified, verify_reason=check.reason,
                       commands=_commands(signer))


def _canonical_sha256(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _attach(signer: Signer, ref: str, ptype: str, predicate: dict[str, Any], key: cosign_keys.SigningKey,
            public_key: PublicKey) -> AttestationRef:
    pushed = signer.attest(ref, ptype, predicate, key)
    check = signer.verify_attestations(ref, ptype, public_key.pem)
    want = _canonical_sha256(predicate)
    found = any(_canonical_sha256(st.get("predicate") or {}) == want for st in check.statements)
    return AttestationRef(predicate_type=ptype, ref=pushed.tag_ref, manifest_digest=pushed.manifest_digest,
                          verified=check.verified and found,
                          reason=check.reason if found or not check.verified else
                          f"{check.reason}, but none carries the predicate just signed",
                          sha256=want)


def attest_release(
    run: RunRecord,
    key: cosign_keys.SigningKey,
    public_key: PublicKey,
    *,
    signer: Signer,
    work_dir: Path,
    trivy: Trivy | None = None,
    sbom: Path | None = None,
    builder_id: str = DEFAULT_BUILDER_ID,
) -> AttestDetails:
    """Sign the verdict, the SBOM and the provenance of `run`'s release as attestations on its image
    digest, and read each back. An SBOM needs trivy (or a given CycloneDX file); provenance needs the
    run's build stage: when either is missing it is listed unverified with the reason."""
    ref = _image(run.image)
    details = AttestDetails(image=ref, model_digest=run.model.digest if run.model else None, signer=signer.name,
                            key_id=cosign_keys.key_id(key.public), decision=run.decision.value)
    verdict = VerdictPredicate.from_run(run).model_dump(mode="json")
    details.attestations.append(_attach(signer, ref, VERDICT_TYPE, verdict, key, public_key))

    sbom_doc: dict[str, Any] | None = None
    reason = ""
    if sbom is None and trivy is not None:
        try:
            sbom = trivy.sbom_image(ref, work_dir / "sbom.cdx.json")
        except InfraError as exc:  # the verdict is attested already; a missing SBOM is stated, not fatal
            reason = f"no SBOM: {exc.message}"
    if sbom is None:
        reason = reason or "no SBOM: trivy not found"
    else:
        try:
            sbom_doc = json.loads(Path(sbom).read_text())
        except (OSError, ValueError) as exc:
            raise BadInput(f"SBOM is not readable JSON: {exc}", where=str(sbom)) from exc
        if not isinstance(sbom_doc, dict) or sbom_doc.get("bomFormat") != "CycloneDX":
            raise BadInput("SBOM is not a CycloneDX JSON document", where=str(sbom))
    if sbom_doc is not None:
        details.attestations.append(_attach(signer, ref, SBOM_TYPE, sbom_doc, key, public_key))
    else:
        details.attestations.append(AttestationRef(predicate_type=SBOM_TYPE, reason=reason))

    build_res = run.stage("build")
    build = build_res.payload(BuildDetails) if build_res is not None else None
    if build is None:
        details.attestations.append(AttestationRef(predicate_type=PROVENANCE_TYPE,
                                                   reason="no provenance: this run has no build stage"))
    else:
        assert build_res is not None
        prov = provenance_predicate(
            builder_id=builder_id, dockerfile=build.dockerfile, dockerfile_sha256=build.dockerfile_sha256,
            base_image=build.base_image, source_commit=run.source_commit, secret_ids=build.secret_ids,
            build_arg_names=build.build_arg_names, invocation_id=run.run_id, started=build_res.started_at,
            finished=build_res.finished_at)
        details.attestations.append(_attach(signer, ref, PROVENANCE_TYPE, prov, key, public_key))
    details.commands = _commands(signer)
    return details


# -- verifying ------------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    valid: bool
    reason: str
    predicate: Any = None  # the typed verdict, or the newest verified predicate (dict)


@dataclass
class ReleaseVerification:
    image: str
    key_id: str
    signature: Check
    verdict: Check
    sbom: Check
    provenance: Check
    checks: list[Check] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(c.valid for c in self.checks)


def verified_verdicts(image: ImageRef | str, public_key: PublicKey, *, signer: Signer) -> tuple[list[VerdictPredicate], str]:
    """Every verdict predicate about `image` whose attestation verifies with `public_key`, newest
    first, and the verifier's reason. A signed statement that does not parse as a verdict is skipped."""
    ref = _image(image)
    check = signer.verify_attestations(ref, VERDICT_TYPE, public_key.pem)
    verdicts = []
    for st in check.statements:
        try:
            verdicts.append(VerdictPredicate.model_validate(st.get("predicate")))
        except ValidationError:
            continue
    _, digest = ref.split("@", 1)
    verdicts = [v for v in verdicts if v.image.digest == digest]
    verdicts.sort(key=lambda v: v.created, reverse=True)
    if check.verified and not verdicts:
        return [], f"{check.reason}, but none is a verdict about {digest}"
    return verdicts, check.reason


def _newest(signer: Signer, ref: str, ptype: str, public_key: PublicKey, name: str) -> Check:
    check = signer.verify_attestations(ref, ptype, public_key.pem)
    if not check.verified:
        return Check(name, False, check.reason)
    return Check(name, True, check.reason, check.statements[-1].get("predicate"))


def verify_release(image: ImageRef | str, public_key: PublicKey, *, signer: Signer) -> ReleaseVerification:
    """Signature, verdict, SBOM and provenance of `image`, each valid or refused with its reason."""
    ref = _image(image)
    sig = signer.verify_image(ref, public_key.pem)
    signature = Check("signature", sig.verified, sig.reason)
    verdicts, reason = verified_verdicts(ref, public_key, signer=signer)
    verdict = (Check("verdict", True, f"{reason}; newest: run {verdicts[0].run_id}, decision "
                                      f"{verdicts[0].decision.value}", verdicts[0])
               if verdicts else Check("verdict", False, reason))
    sbom = _newest(signer, ref, SBOM_TYPE, public_key, "sbom")
    provenance = _newest(signer, ref, PROVENANCE_TYPE, public_key, "provenance")
    return ReleaseVerification(image=ref, key_id=public_key.key_id, signature=signature, verdict=verdict,
                               sbom=sbom, provenance=provenance, checks=[signature, verdict, sbom, provenance])

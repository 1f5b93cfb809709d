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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from pipeline.adapters.signer import Signer
from pipeline.adapters.trivy import Trivy
from pipeline.config import SignConfig
from pipeline.errors import BadInput, InfraError
from pipeline.models import ImageRef, RunRecord
from pipeline.schemas.attest import AttestationRef, AttestDetails
from pipeline.schemas.build import BuildDetails
from pipeline.schemas.sign import SignDetails
from pipeline.secrets import read_secret
from pipeline.supplychain import cosign_keys
from pipeline.supplychain.evidence import LinkCheck
from pipeline.supplychain.predicates import (
    DEFAULT_BUILDER_ID,
    PROVENANCE_TYPE,
    SBOM_TYPE,
    VERDICT_TYPE,
    VerdictPredicate,
    provenance_predicate,
)
from pipeline.supplychain.verdict_log import LogRefused, VerdictLog, verdict_sha256
from pipeline.supplychain.verdicts import SignedVerdict, check_verdict_links


@dataclass(frozen=True)
class PublicKey:
    """A validated `cosign.pub`: its PEM bytes (what signers take) and its id."""

    pem: bytes
    key_id: str
    source: str

    @property
    def key(self) -> ec.EllipticCurvePublicKey:
        return cosign_keys.load_public_key(self.pem, where=self.source)


def load_public_key(path: str | Path) -> PublicKey:
    """BadInput (exit 2) naming the file for a missing, garbled, wrong-curve or expired key file."""
    key = cosign_keys.load_public_key_file(path)
    return PublicKey(pem=cosign_keys.public_pem(key), key_id=cosign_keys.key_id(key), source=str(path))


def trusted_public_key(sc: SignConfig) -> PublicKey:
    """The public key every signature and link is verified with (`sign.public_key`)."""
    return load_public_key(sc.public_key)


def load_signing_key(sc: SignConfig) -> cosign_keys.SigningKey:
    """The private key `sign.key` names, decrypted with `sign.password` (absent password = empty)."""
    where = sc.key.file or f"env {sc.key.env}"
    pem = read_secret(sc.key, where="sign.key")
    assert pem is not None
    password = read_secret(sc.password, where="sign.password", required=False, allow_empty=True) or b""
    return cosign_keys.load_private_key(pem, password, where=where)


@dataclass(frozen=True)
class ReleaseKeys:
    """The keys one invocation works with: the signing key when one is configured and present (else
    results and verdicts are unsigned previews, and `unsigned` says why), and the public key
    verification trusts."""

    signing: cosign_keys.SigningKey | None
    public: PublicKey | None
    unsigned: str = ""

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey | None:
        if self.signing is not None:
            return self.signing.public
        return self.public.key if self.public is not None else None


def _key_present(sc: SignConfig) -> bool:
    if sc.key.file is not None:
        return Path(sc.key.file).expanduser().exists()
    return bool(sc.key.env and os.environ.get(sc.key.env, "").strip())


def release_keys(sc: SignConfig) -> ReleaseKeys:
    """Without a signing key (a pull-request job: the file is absent, the variable unset or empty) the
    keys are the public key alone. A key that is there but unreadable, or that is not the key
    `sign.public_key` names, is bad input (exit 2): never a silent fall back to unsigned results."""
    public = trusted_public_key(sc) if Path(sc.public_key).expanduser().exists() else None
    if not _key_present(sc):
        where = f"file {sc.key.file}" if sc.key.file else f"environment variable {sc.key.env}"
        return ReleaseKeys(None, public, unsigned=f"no signing key ({where} is not there)")
    key = load_signing_key(sc)
    if public is None:
        raise BadInput("public key file not found: results are signed only with the key they are verified with",
                       where=f"sign.public_key: {sc.public_key}")
    if cosign_keys.key_id(key.public) != public.key_id:
        raise BadInput(f"the signing key is not the key sign.public_key names ({public.key_id[:23]}…)",
                       where="sign.key", hint="sign with the key pair the configuration pins")
    return ReleaseKeys(key, public)


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


def _publish_verdict(signer: Signer, ref: str, verdict: SignedVerdict, public_key: PublicKey) -> AttestationRef:
    """Attach the envelope the gate signed, unchanged, and read it back."""
    pushed = signer.attach_attestation(ref, VERDICT_TYPE, verdict.envelope.encode())
    check = signer.verify_attestations(ref, VERDICT_TYPE, public_key.pem)
    found = any(verdict_sha256(st.get("predicate") or {}) == verdict.sha256 for st in check.statements)
    return AttestationRef(predicate_type=VERDICT_TYPE, ref=pushed.tag_ref, manifest_digest=pushed.manifest_digest,
                          verified=check.verified and found,
                          reason=check.reason if found or not check.verified else
                          f"{check.reason}, but none is the verdict the gate signed",
                          sha256=verdict.sha256)


def attest_release(
    run: RunRecord,
    verdict: SignedVerdict,
    key: cosign_keys.SigningKey,
    public_key: PublicKey,
    *,
    signer: Signer,
    work_dir: Path,
    trivy: Trivy | None = None,
    sbom: Path | None = None,
    builder_id: str = DEFAULT_BUILDER_ID,
) -> AttestDetails:
    """Publish the verdict the gate signed for `run` (unchanged: attest signs no verdict of its own),
    and sign the SBOM and the provenance of its release, as attestations on its image digest; each is
    read back. An SBOM needs trivy (or a given CycloneDX file); provenance needs the run's build
    stage: when either is missing it is listed unverified with the reason."""
    ref = _image(run.image)
    details = AttestDetails(image=ref, model_digest=run.model.digest if run.model else None, signer=signer.name,
                            key_id=cosign_keys.key_id(key.public), decision=verdict.predicate.decision.value)
    details.attestations.append(_publish_verdict(signer, ref, verdict, public_key))

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
    build = build_res.details_as(BuildDetails) if build_res is not None else None
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
    evidence: Check
    log: Check
    sbom: Check
    provenance: Check
    links: list[LinkCheck] = field(default_factory=list)  # each evidence link the verdict names
    position: LogPosition | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return all(c.valid for c in self.checks)


@dataclass(frozen=True)
class LogPosition:
    """Where a verdict stands in the verdict log."""

    origin: str
    index: int | None
    size: int
    root: str
    newest: tuple[int, str] | None  # the newest entry for the verdict's pair: (index, description)

    @property
    def is_newest(self) -> bool:
        return self.index is not None and self.newest is not None and self.newest[0] == self.index


def verdict_digest(v: VerdictPredicate) -> str:
    """The digest the verdict log names `v` by."""
    return verdict_sha256(v.model_dump(mode="json"))


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


def _evidence_check(v: VerdictPredicate | None, public_key: PublicKey) -> tuple[Check, list[LinkCheck]]:
    if v is None:
        return Check("evidence", False, "no verdict, so no evidence links"), []
    links = check_verdict_links(v, public_key.key)
    if not links:
        return Check("evidence", False, f"the verdict of run {v.run_id} names no evidence links"), []
    bad = [c for c in links if not c.verified]
    if bad:
        return Check("evidence", False, "; ".join(c.line() for c in bad)), links
    return Check("evidence", True, f"{len(links)} evidence links verified ({', '.join(c.stage for c in links)})"), links


def _log_check(v: VerdictPredicate | None, log: VerdictLog | None) -> tuple[Check, LogPosition | None]:
    if v is None:
        return Check("log", False, "no verdict to find in the verdict log"), None
    if log is None:
        return Check("log", False, "no verdict log to check against"), None
    model = v.model.digest if v.model else None
    try:
        view = log.view(v.image.repository)
    except LogRefused as exc:
        return Check("log", False, exc.message), None
    index = view.index_of(verdict_digest(v))
    newest = view.newest_for(v.image.digest, model, v.target)
    pos = LogPosition(origin=view.origin, index=index, size=view.size,
                      root=view.checkpoint.root_b64 if view.checkpoint else "",
                      newest=(newest[0], newest[1].describe()) if newest else None)
    if index is None:
        return Check("log", False, f"the verdict of run {v.run_id} is not in the verdict log ({view.describe()})"), pos
    if not pos.is_newest:
        assert newest is not None
        return Check("log", False, f"entry #{index} of {view.size}, but not the newest for its pair: entry "
                                   f"#{newest[0]} ({newest[1].describe()}) is"), pos
    return Check("log", True, f"entry #{index} of {view.size} (checkpoint root {pos.root}), the newest for "
                              f"(image, model {model}) gated for target {v.target}"), pos


def verify_release(image: ImageRef | str, public_key: PublicKey, *, signer: Signer,
                   log: VerdictLog | None = None, model_digest: str | None = None) -> ReleaseVerification:
    """Signature, verdict, its evidence links, its place in the verdict log, SBOM and provenance of
    `image`, each valid or refused with its reason. The verdict shown is the newest verified one (about
    `model_digest` when given: one image can serve several weights)."""
    ref = _image(image)
    sig = signer.verify_image(ref, public_key.pem)
    signature = Check("signature", sig.verified, sig.reason)
    verdicts, reason = verified_verdicts(ref, public_key, signer=signer)
    if model_digest is not None:
        verdicts = [v for v in verdicts if v.model is not None and v.model.digest == model_digest]
        reason = reason if verdicts else f"{reason}, but none about model {model_digest}"
    newest = verdicts[0] if verdicts else None
    verdict = (Check("verdict", True, f"{reason}; newest: run {newest.run_id}, decision {newest.decision.value}",
                     newest) if newest else Check("verdict", False, reason))
    evidence, links = _evidence_check(newest, public_key)
    in_log, position = _log_check(newest, log)
    sbom = _newest(signer, ref, SBOM_TYPE, public_key, "sbom")
    provenance = _newest(signer, ref, PROVENANCE_TYPE, public_key, "provenance")
    return ReleaseVerification(image=ref, key_id=public_key.key_id, signature=signature, verdict=verdict,
                               evidence=evidence, log=in_log, sbom=sbom, provenance=provenance, links=links,
                               position=position,
                               checks=[signature, verdict, evidence, in_log, sbom, provenance])

"""cosign v3's default output read from the real local registry: Sigstore bundles attached as OCI referrers.

cosign itself is not on this machine, so the bundles are built here byte for byte as cosign v3 writes
them with a key (sigstore/cosign `pkg/oci/remote/write.go` WriteAttestationNewBundleFormat/WriteReferrer,
`cmd/cosign/cli/sign` signDigestBundle; sigstore-go `pkg/sign` for the bundle JSON): a DSSE envelope over
an in-toto statement, `verificationMaterial.publicKey.hint` = base64 SHA-256 of the DER public key, the
referrer manifest with the empty config, and, as go-containerregistry does on a registry without the
Referrers API (Debian's distribution 2.8 here), the `sha256-<hex>` index listing it. Each refusal is one
cosign (sigstore-go) refuses too; none is accepted that cosign would refuse."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from pipeline.adapters import cosign_layout as L
from pipeline.adapters import sigstore_bundle as B
from pipeline.adapters.registry import OCI_INDEX, OCI_MANIFEST, RegistryClient
from pipeline.adapters.signer import PythonSigner
from pipeline.models import Decision, utcnow
from pipeline.schemas.gate import BaselineInfo, GateDetails, GateStatus, GateVerdict
from pipeline.store import Store
from pipeline.supplychain import cosign_keys as ck
from pipeline.supplychain.guard import check_promotable
from pipeline.supplychain.predicates import VERDICT_TYPE
from pipeline.supplychain.signing import load_public_key, verify_release
from pipeline.supplychain.verdict_log import VerdictLog
from pipeline.supplychain.verdicts import sign_verdict
from tests.trust_images import trust_repo

pytestmark = pytest.mark.docker
EMPTY = b"{}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hint(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


def sign_statement(digest: str, predicate_type: str = B.COSIGN_SIGN_PREDICATE,
                   predicate: dict[str, Any] | None = None, name: str | None = None) -> bytes:
    """The in-toto statement cosign v3 signs: `cosign sign` names no subject name and an empty predicate."""
    subject: dict[str, Any] = {"digest": {"sha256": digest.split(":", 1)[1]}}
    if name:
        subject = {"name": name, **subject}
    return json.dumps({"_type": L.STATEMENT_V1, "subject": [subject], "predicateType": predicate_type,
                       "predicate": predicate or {}}).encode()


def dsse_bundle(body: bytes, key: ck.SigningKey, **over: Any) -> dict[str, Any]:
    sig = key.sign(L.pae(L.INTOTO_PAYLOAD_TYPE, body))
    return {"mediaType": B.MEDIA_TYPE_V03,
            "verificationMaterial": {"publicKey": {"hint": hint(key.public)}},
            "dsseEnvelope": {"payload": _b64(body), "payloadType": L.INTOTO_PAYLOAD_TYPE,
                             "signatures": [{"sig": _b64(sig)}]}, **over}


def message_bundle(digest: str, key: ck.SigningKey) -> dict[str, Any]:
    raw = bytes.fromhex(digest.split(":", 1)[1])
    sig = key.private.sign(raw, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    return {"mediaType": B.MEDIA_TYPE_V03, "verificationMaterial": {"publicKey": {"hint": hint(key.public)}},
            "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": _b64(raw)},
                                 "signature": _b64(sig)}}


def attach(reg: RegistryClient, name: str, image_digest: str, bundle: dict[str, Any], predicate_type: str, *,
           subject_digest: str | None = None) -> str:
    """Write a bundle referrer as cosign v3 does, and list it under the referrers tag as go-containerregistry
    does where the registry has no Referrers API. Returns the referrer manifest digest."""
    data = json.dumps(bundle).encode()
    layer = reg.upload_blob(name, data)
    config = reg.upload_blob(name, EMPTY)
    subject = reg.manifest(name, subject_digest or image_digest)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": B.EMPTY_MEDIA_TYPE, "size": len(EMPTY), "digest": config,
                   "artifactType": B.MEDIA_TYPE_V03},
        "layers": [{"mediaType": B.MEDIA_TYPE_V03, "size": len(data), "digest": layer}],
        "annotations": {"org.opencontainers.image.created": "2025-03-20T10:00:00Z",
                        B.CONTENT_ANNOTATION: "dsse-envelope", B.PREDICATE_ANNOTATION: predicate_type},
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": len(subject.raw)},
        "artifactType": B.MEDIA_TYPE_V03,
    }).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    reg.put_manifest(name, digest, manifest, OCI_MANIFEST)
    fallback = image_digest.replace(":", "-")
    index = (json.loads(reg.manifest(name, fallback).raw) if reg.has_manifest(name, fallback)
             else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    # go-containerregistry records the referrer's config media type as its artifactType in this index.
    index["manifests"].append({"mediaType": OCI_MANIFEST, "size": len(manifest), "digest": digest,
                               "artifactType": B.EMPTY_MEDIA_TYPE})
    index["manifests"].sort(key=lambda d: d["digest"])
    reg.put_manifest(name, fallback, json.dumps(index).encode(), OCI_INDEX)
    return digest


@pytest.fixture(scope="module")
def keys(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = fixtures_dir / "cosign"
    key = ck.load_private_key_file(d / "cosign_generated_encrypted_empty_private.key", b"")
    other = ck.SigningKey(private=ck.generate_key(), source="other")
    return key, load_public_key(d / "cosign_generated_encrypted_empty_private.pub"), other


@pytest.fixture
def repo(local_stack):  # type: ignore[no-untyped-def]
    with trust_repo() as r:
        yield r


@pytest.fixture
def signer():  # type: ignore[no-untyped-def]
    s = PythonSigner()
    yield s
    s.close()


def test_a_cosign_v3_signature_bundle_verifies_the_image(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    image = repo.image()
    digest = image.split("@")[1]
    assert not signer.verify_image(image, pub.pem).verified
    attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest), key), B.COSIGN_SIGN_PREDICATE)
    check = signer.verify_image(image, pub.pem)
    assert check.verified, check.reason
    # What `cosign verify` prints for a bundle signature (its transformOutput).
    assert check.payloads == [{"critical": {"identity": {"docker-reference": repo.repository},
                                            "image": {"docker-manifest-digest": digest},
                                            "type": B.COSIGN_SIGN_PREDICATE}, "optional": None}]
    # A signature bundle is not an attestation of any predicate, and counts for no other image.
    assert not signer.verify_attestations(image, VERDICT_TYPE, pub.pem).verified
    assert not signer.verify_image(repo.image(), pub.pem).verified


def _verdict_statement(image: str, model: str, key: ck.SigningKey, decision: Decision) -> tuple[bytes, Any]:
    from pipeline.models import ImageRef, ModelRef, PolicyRef, RunRecord, Stage, StageResult, StageStatus
    from pipeline.stages.registry import STAGES
    from pipeline.supplychain.evidence import check_run
    from tests.stage_helpers import record_measured

    run = RunRecord(image=ImageRef.parse(image), model=ModelRef(path="/m", digest=model, files=1, bytes=1), target="canary",
                    policy=PolicyRef(name="gates.yaml", files=["gates.yaml"], sha256="a" * 64))
    status = GateStatus.PASS if decision is Decision.PASS else GateStatus.FAIL
    gate = GateDetails(policy_name="gates.yaml", policy_files=["gates.yaml"], policy_sha256="a" * 64,
                       baseline=BaselineInfo(kind="first_release"), decision=decision.value, reason="",
                       verdicts=[GateVerdict(name="correctness", source="eval.correctness_mean", status=status)])
    # the evidence link of its eval result, as a gate names the links it verified
    record_measured(run, StageResult(stage=Stage.EVAL, status=StageStatus.OK, metrics={"correctness_mean": 0.9}),
                    signing=key)
    signed = sign_verdict(run, gate, check_run(run, key.public, STAGES.linked), key, created=utcnow())
    return L.parse_envelope(signed.envelope.encode()).body, signed


def test_a_release_signed_and_attested_only_as_cosign_v3_bundles_is_promotable(repo, signer, keys,
                                                                             tmp_path: Path) -> None:
    key, pub, _ = keys
    image = repo.image()
    digest = image.split("@")[1]
    model = "sha256:" + "1" * 64
    body, signed = _verdict_statement(image, model, key, Decision.PASS)
    log = VerdictLog(Store(tmp_path / "results.db"), pub.key, seen_dir=tmp_path / "seen")
    log.append(repo.repository, signed.entry(), key)
    attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest), key), B.COSIGN_SIGN_PREDICATE)
    attach(repo.reg, repo.name, digest, dsse_bundle(body, key), VERDICT_TYPE)
    assert not repo.reg.has_manifest(repo.name, L.tag_for(digest, L.SIG_SUFFIX))  # no tag layout at all
    ok = check_promotable(image, model, "canary", pub, signer=signer, log=log)
    assert ok.verdict.run_id == signed.predicate.run_id
    v = verify_release(image, pub, signer=signer, log=log)
    assert v.signature.valid and v.verdict.valid and v.evidence.valid and v.log.valid, [c.reason for c in v.checks]
    assert [c.stage for c in v.links] == ["eval"]  # the link, read from the v3 bundle alone
    # the statement as `cosign verify-attestation` prints it: the signed in-toto statement itself
    att = signer.verify_attestations(image, VERDICT_TYPE, pub.pem)
    assert att.statements == [json.loads(body)]


Tamper = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Tamper:
    def edit(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for p in parents:
            doc = doc[p]
        doc[last] = value
    return edit


@pytest.mark.parametrize(("case", "why"), [
    ("other-key", "bundle signature does not verify with the key (another key, or altered)"),
    ("other-subject", "signed statement is about sha256:"),
    ("copied-referrer", "names subject sha256:"),
    ("altered-payload", "bundle signature does not verify with the key"),
    ("two-signatures", "DSSE envelope has 2 signatures; exactly one is required"),
    ("message-signature", "a messageSignature bundle (it verifies), which cosign does not accept on an image"),
    ("bundle-v0.2", "bundle version 0.2 is too old (cosign requires v0.3)"),
    ("bundle-v0.4", "bundle version 0.4 is not supported"),
    ("certificate", "bundle is signed with a certificate (keyless)"),
    ("tlog-without-proof", "transparency log entries without an inclusion proof"),
    ("payload-type", "DSSE payloadType is 'application/json'"),
])
def test_bundles_cosign_would_refuse_are_refused(repo, signer, keys, case: str, why: str) -> None:  # type: ignore[no-untyped-def]
    key, pub, other = keys
    image, elsewhere = repo.image(), repo.image()
    digest, other_digest = image.split("@")[1], elsewhere.split("@")[1]
    body = sign_statement(digest)
    bundle = dsse_bundle(body, key)
    subject = None
    if case == "other-key":
        bundle = dsse_bundle(body, other)
    elif case == "other-subject":
        bundle = dsse_bundle(sign_statement(other_digest), key)
    elif case == "copied-referrer":  # a valid bundle of the other image, listed under this one
        bundle, subject = dsse_bundle(sign_statement(other_digest), key), other_digest
    elif case == "altered-payload":
        _set("dsseEnvelope.payload", _b64(sign_statement(digest, predicate={"x": 1})))(bundle)
    elif case == "two-signatures":
        bundle["dsseEnvelope"]["signatures"] *= 2
    elif case == "message-signature":
        bundle = message_bundle(digest, key)
    elif case == "bundle-v0.2":
        _set("mediaType", "application/vnd.dev.sigstore.bundle+json;version=0.2")(bundle)
    elif case == "bundle-v0.4":
        _set("mediaType", "application/vnd.dev.sigstore.bundle.v0.4+json")(bundle)
    elif case == "certificate":
        bundle["verificationMaterial"] = {"certificate": {"rawBytes": _b64(b"not a cert")}}
    elif case == "tlog-without-proof":
        bundle["verificationMaterial"]["tlogEntries"] = [{"logIndex": "1", "integratedTime": "1700000000"}]
    elif case == "payload-type":
        sig = key.sign(L.pae("application/json", body))
        bundle["dsseEnvelope"].update(payloadType="application/json", signatures=[{"sig": _b64(sig)}])
    ref = attach(repo.reg, repo.name, digest, bundle, B.COSIGN_SIGN_PREDICATE, subject_digest=subject)
    check = signer.verify_image(image, pub.pem)
    assert not check.verified
    assert why in check.reason, check.reason
    # each refusal names the referrer by its short digest (sha256: and 12 hex digits)
    named = f"bundle referrer {ref[:19]} " if case == "copied-referrer" else f"bundle {ref[:19]}: "
    assert check.reason.startswith(named), check.reason


def test_referrers_that_are_not_sigstore_bundles_are_left_alone(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _ = keys
    image = repo.image()
    digest = image.split("@")[1]
    # An SBOM referrer of another tool: one layer, not a bundle media type.
    attach(repo.reg, repo.name, digest, {"bomFormat": "CycloneDX"}, "https://cyclonedx.org/bom")
    sbom = repo.reg.referrers(repo.name, digest)[0]["digest"]
    manifest = json.loads(repo.reg.manifest(repo.name, sbom).raw)
    manifest["layers"][0]["mediaType"] = "application/vnd.cyclonedx+json"
    raw = json.dumps(manifest).encode()
    repo.reg.put_manifest(repo.name, "sha256:" + hashlib.sha256(raw).hexdigest(), raw, OCI_MANIFEST)
    index = json.loads(repo.reg.manifest(repo.name, digest.replace(":", "-")).raw)
    index["manifests"] = [{"mediaType": OCI_MANIFEST, "size": len(raw),
                           "digest": "sha256:" + hashlib.sha256(raw).hexdigest()}]
    repo.reg.put_manifest(repo.name, digest.replace(":", "-"), json.dumps(index).encode(), OCI_INDEX)
    repo.reg.delete_manifest(repo.name, sbom)
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and check.reason.startswith("no signature: nothing is tagged")
    good = attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest), key), B.COSIGN_SIGN_PREDICATE)
    index = json.loads(repo.reg.manifest(repo.name, digest.replace(":", "-")).raw)
    index["manifests"].sort(key=lambda d: d["digest"] == good)  # the other tool's referrer first: read past it
    repo.reg.put_manifest(repo.name, digest.replace(":", "-"), json.dumps(index).encode(), OCI_INDEX)
    assert [d["digest"] for d in repo.reg.referrers(repo.name, digest)][-1] == good
    assert signer.verify_image(image, pub.pem).verified




def test_a_referrer_gone_or_refused_is_named_and_hides_no_bundle_listed_after_it(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    """A referrers index can list a manifest the registry no longer holds (deleted after it was listed), a
    bundle about another image and a bundle signed with another key: the verifier names each by its short
    digest with the reason, and still reads the bundles listed after them."""
    key, pub, other = keys
    image = repo.image()
    digest = image.split("@")[1]
    fallback = digest.replace(":", "-")
    gone = attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest, name="gone"), key),
                  B.COSIGN_SIGN_PREDICATE)
    elsewhere = repo.image().split("@")[1]
    copied = attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(elsewhere), key), B.COSIGN_SIGN_PREDICATE,
                    subject_digest=elsewhere)  # a valid bundle of another image, listed under this one
    forged = attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest), other), B.COSIGN_SIGN_PREDICATE)
    good = attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest), key), B.COSIGN_SIGN_PREDICATE)
    index = json.loads(repo.reg.manifest(repo.name, fallback).raw)
    order = [gone, copied, forged, good]  # the failing ones first, as a registry may list them
    index["manifests"].sort(key=lambda d: order.index(d["digest"]))
    repo.reg.put_manifest(repo.name, fallback, json.dumps(index).encode(), OCI_INDEX)
    repo.reg.delete_manifest(repo.name, gone)
    assert [d["digest"] for d in repo.reg.referrers(repo.name, digest)] == order
    assert signer.verify_image(image, pub.pem).verified

    repo.reg.delete_manifest(repo.name, good)
    check = signer.verify_image(image, pub.pem)
    assert not check.verified
    assert check.reason == "; ".join([f"referrer {gone[:19]}: manifest not found in the registry",
                                      f"bundle referrer {copied[:19]} names subject {elsewhere}, not {digest}",
                                      (f"bundle {forged[:19]}: bundle signature does not verify with the key "
                                       "(another key, or altered)"),
                                      f"referrer {good[:19]}: manifest not found in the registry"]), check.reason


def test_a_bundle_statement_reads_back_exactly_as_signed_every_subject_included(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    """`verify_attestations` shows the signed statement itself, as `cosign verify-attestation` prints it: each
    subject's name and digest value as written, even one that is no plain hex digest."""
    key, pub, _ = keys
    image = repo.image()
    digest = image.split("@")[1]
    ptype = "https://llmgate.dev/test/v1"
    doc = {"_type": L.STATEMENT_V1, "predicateType": ptype, "predicate": {"answer": 42},
           "subject": [{"name": repo.repository, "digest": {"sha256": digest.split(":", 1)[1]}},
                       {"name": "notes", "digest": {"sha256": "not:a:hex:digest"}}]}
    attach(repo.reg, repo.name, digest, dsse_bundle(json.dumps(doc).encode(), key), ptype)
    att = signer.verify_attestations(image, ptype, pub.pem)
    assert att.verified and att.statements == [doc], att.reason


def test_a_bundle_layer_may_claim_up_to_the_bundle_limit_and_not_a_byte_more(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    """The referrer's layer descriptor is read before the blob: a size claim up to MAX_BUNDLE_BYTES is read (the
    blob itself is then bounded again), one byte more is refused unread, naming the limit."""
    key, pub, _ = keys
    image = repo.image()
    digest = image.split("@")[1]
    fallback = digest.replace(":", "-")
    ref = attach(repo.reg, repo.name, digest, dsse_bundle(sign_statement(digest), key), B.COSIGN_SIGN_PREDICATE)
    manifest = json.loads(repo.reg.manifest(repo.name, ref).raw)
    written = [ref]
    for claim, verified in ((B.MAX_BUNDLE_BYTES, True), (B.MAX_BUNDLE_BYTES + 1, False)):
        manifest["layers"][0]["size"] = claim
        raw = json.dumps(manifest).encode()
        claimed = "sha256:" + hashlib.sha256(raw).hexdigest()
        repo.reg.put_manifest(repo.name, claimed, raw, OCI_MANIFEST)
        written.append(claimed)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [{"mediaType": OCI_MANIFEST, "size": len(raw), "digest": claimed}]}
        repo.reg.put_manifest(repo.name, fallback, json.dumps(index).encode(), OCI_INDEX)
        check = signer.verify_image(image, pub.pem)
        assert check.verified is verified, check.reason
    assert check.reason == f"bundle {claimed[:19]}: bundle layer exceeds {B.MAX_BUNDLE_BYTES} bytes"
    for d in written:  # the index lists only the last; the trust repository's clean-up removes what it lists
        repo.reg.delete_manifest(repo.name, d)

"""Image signatures and attestations in cosign's tag layout, against the real local registry and real
keys (the cosign-generated fixture key and keys made here). Every refusal is checked for its reason."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from pipeline.adapters import cosign_layout as L
from pipeline.adapters.signer import PythonSigner
from pipeline.errors import BadInput
from pipeline.supplychain import cosign_keys as ck
from pipeline.supplychain.signing import PublicKey, load_public_key, sign_image
from tests.trust_images import trust_repo


@pytest.fixture(scope="module")
def keys(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(cosign-made key, its PublicKey, another key, its PublicKey)."""
    d = fixtures_dir / "cosign"
    cosign_key = ck.load_private_key_file(d / "cosign_generated_encrypted_empty_private.key", b"")
    cosign_pub = load_public_key(d / "cosign_generated_encrypted_empty_private.pub")
    other_dir = tmp_path_factory.mktemp("other-key")
    files = ck.write_key_pair(other_dir, b"other-password")
    other = ck.load_private_key_file(files.private_key, b"other-password")
    return cosign_key, cosign_pub, other, load_public_key(files.public_key)


@pytest.fixture
def repo(local_stack):  # type: ignore[no-untyped-def]
    with trust_repo() as r:
        yield r


@pytest.fixture
def signer():  # type: ignore[no-untyped-def]
    s = PythonSigner()
    yield s
    s.close()


def test_pae_matches_the_dsse_spec_example() -> None:
    # https://github.com/secure-systems-lab/dsse/blob/master/protocol.md (test vector)
    assert L.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_signature_manifest_is_cosigns_layout(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _, _ = keys
    image = repo.image()
    details = sign_image(image, key, pub, signer=signer)
    digest = image.split("@")[1]
    assert details.verified and details.signer == "python" and details.key_id == pub.key_id
    assert details.signature_ref == f"{repo.repository}:sha256-{digest[7:]}.sig"
    m = repo.reg.manifest(repo.name, f"sha256-{digest[7:]}.sig")
    doc = json.loads(m.raw)
    assert doc["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = doc["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert set(layer["annotations"]) == {"dev.cosignproject.cosign/signature"}
    payload = repo.reg.blob_bytes(repo.name, layer["digest"])
    assert json.loads(payload) == {"critical": {"identity": {"docker-reference": repo.repository},
                                                "image": {"docker-manifest-digest": digest},
                                                "type": "cosign container image signature"},
                                   "optional": None}
    # What cosign checks: ECDSA-SHA256 over the payload blob's bytes, DER signature in base64.
    sig = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    assert ck.verify_signature(ck.load_public_key(pub.pem, where="pub"), sig, payload)
    config = json.loads(repo.reg.blob_bytes(repo.name, doc["config"]["digest"]))
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}

    # Signing again with the same key adds nothing (cosign's duplicate check); another key appends.
    again = sign_image(image, key, pub, signer=signer)
    assert not again.appended and again.signature_manifest == details.signature_manifest
    _, _, other, other_pub = keys
    third = sign_image(image, other, other_pub, signer=signer)
    assert third.appended and third.verified
    assert len(json.loads(repo.reg.manifest(repo.name, f"sha256-{digest[7:]}.sig").raw)["layers"]) == 2
    assert signer.verify_image(image, pub.pem).verified  # either key's signature verifies on its own


def test_unsigned_and_wrong_key_are_refused(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    _key, pub, other, _other_pub = keys
    image = repo.image()
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and check.reason.startswith("no signature: nothing is tagged")
    signer.sign_image(image, other)
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and f"does not verify with key {pub.key_id[:23]}" in check.reason


def _rewrite_sig_layer(repo, image: str, payload: bytes, signature_b64: str) -> None:  # type: ignore[no-untyped-def]
    digest = image.split("@")[1]
    layer = L.LayerDescriptor.of(L.SIMPLESIGNING_MEDIA_TYPE, payload, {L.SIGNATURE_ANNOTATION: signature_b64})
    repo.reg.upload_blob(repo.name, payload)
    config = L.config_blob([layer])
    repo.reg.upload_blob(repo.name, config)
    repo.reg.put_manifest(repo.name, L.tag_for(digest, L.SIG_SUFFIX), L.signatures_manifest([layer], config),
                          L.OCI_MANIFEST)


def test_tampered_payload_is_refused(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _, _ = keys
    image = repo.image()
    signer.sign_image(image, key)
    m = json.loads(repo.reg.manifest(repo.name, L.tag_for(image.split("@")[1], L.SIG_SUFFIX)).raw)
    sig = m["layers"][0]["annotations"][L.SIGNATURE_ANNOTATION]
    payload = json.loads(repo.reg.blob_bytes(repo.name, m["layers"][0]["digest"]))
    payload["optional"] = {"approved-by": "someone"}
    _rewrite_sig_layer(repo, image, json.dumps(payload).encode(), sig)
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and "does not verify" in check.reason and "altered" in check.reason


def test_payload_naming_another_digest_is_refused(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _, _ = keys
    image, other_image = repo.image(), repo.image()
    other_digest = other_image.split("@")[1]
    payload = L.simple_signing_payload(repo.repository, other_digest)  # validly signed, for the other image
    _rewrite_sig_layer(repo, image, payload, base64.b64encode(key.sign(payload)).decode())
    check = signer.verify_image(image, pub.pem)
    assert not check.verified
    assert check.reason == f"signed payload names {other_digest}, not {image.split('@')[1]} (a signature of another image)"


def test_signature_copied_from_another_image_is_refused(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _, _ = keys
    signed, unsigned = repo.image(), repo.image()
    signer.sign_image(signed, key)
    src = repo.reg.manifest(repo.name, L.tag_for(signed.split("@")[1], L.SIG_SUFFIX))
    repo.reg.put_manifest(repo.name, L.tag_for(unsigned.split("@")[1], L.SIG_SUFFIX), src.raw, L.OCI_MANIFEST)
    check = signer.verify_image(unsigned, pub.pem)
    assert not check.verified and f"names {signed.split('@')[1]}, not {unsigned.split('@')[1]}" in check.reason
    assert signer.verify_image(signed, pub.pem).verified


def test_attestation_layout_and_refusals(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _other, other_pub = keys
    image, second = repo.image(), repo.image()
    digest = image.split("@")[1]
    ptype = "https://llmgate.dev/test/v1"
    signer.attest(image, ptype, {"answer": 42}, key)
    doc = json.loads(repo.reg.manifest(repo.name, L.tag_for(digest, L.ATT_SUFFIX)).raw)
    (layer,) = doc["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"dev.cosignproject.cosign/signature": "", "predicateType": ptype}
    env = json.loads(repo.reg.blob_bytes(repo.name, layer["digest"]))
    assert env["payloadType"] == "application/vnd.in-toto+json" and env["signatures"][0]["keyid"] == ""
    statement = json.loads(base64.b64decode(env["payload"]))
    assert statement == {"_type": "https://in-toto.io/Statement/v1", "predicateType": ptype,
                         "subject": [{"name": repo.repository, "digest": {"sha256": digest[7:]}}],
                         "predicate": {"answer": 42}}
    sig = base64.b64decode(env["signatures"][0]["sig"])
    assert ck.verify_signature(key.public, sig, L.pae(env["payloadType"], base64.b64decode(env["payload"])))

    ok = signer.verify_attestations(image, ptype, pub.pem)
    assert ok.verified and ok.statements == [statement]
    assert signer.verify_attestations(image, "https://llmgate.dev/other/v1", pub.pem).reason == \
        "no attestation of https://llmgate.dev/other/v1"
    wrong = signer.verify_attestations(image, ptype, other_pub.pem)
    assert not wrong.verified and "does not verify with key" in wrong.reason
    missing = signer.verify_attestations(second, ptype, pub.pem)
    assert not missing.verified and missing.statements == []
    assert missing.reason.startswith("no attestation: nothing is tagged")
    # The envelope of `image` copied under `second`: validly signed, but about another digest.
    repo.reg.put_manifest(repo.name, L.tag_for(second.split("@")[1], L.ATT_SUFFIX),
                          repo.reg.manifest(repo.name, L.tag_for(digest, L.ATT_SUFFIX)).raw, L.OCI_MANIFEST)
    copied = signer.verify_attestations(second, ptype, pub.pem)
    assert not copied.verified and f"is about {digest}, not {second.split('@')[1]}" in copied.reason


def test_tags_and_bad_keys_are_bad_input(repo, signer, keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key, _, _, _ = keys
    with pytest.raises(BadInput, match="by digest"):
        signer.sign_image(f"{repo.repository}:latest", key)
    garbled = tmp_path / "garbled.pub"
    garbled.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all!\n-----END PUBLIC KEY-----\n")
    with pytest.raises(BadInput) as ei:
        load_public_key(garbled)
    assert ei.value.where == str(garbled) and ei.value.exit_code == 2
    assert isinstance(load_public_key(Path(keys[1].source)), PublicKey)


def test_sign_gate_reads_the_sign_stage() -> None:
    from pipeline.models import GateStatus, ImageRef, RunRecord, Stage, StageResult, StageStatus
    from pipeline.schemas.sign import SignDetails
    from pipeline.supplychain.gate_sections import SignPolicy, sign_gate_verdict

    image = "127.0.0.1:5000/trust-gate/img@sha256:" + "e" * 64
    run = RunRecord(image=ImageRef.parse(image))
    assert sign_gate_verdict(SignPolicy(), run).status is GateStatus.NOT_RUN
    refused = SignDetails(ref=image, signer="python", key_id="sha256:" + "0" * 64, verified=False,
                          verify_reason="no signature: nothing is tagged")
    run.add_stage(StageResult(stage=Stage.SIGN, status=StageStatus.FAILED, reason=refused.verify_reason,
                              metrics={"verified": 0.0}, details=refused))
    g = sign_gate_verdict(SignPolicy(), run)
    assert g.status is GateStatus.FAIL and "no signature" in g.reason
    run.add_stage(StageResult(stage=Stage.SIGN, status=StageStatus.OK, metrics={"verified": 1.0},
                              details=refused.model_copy(update={"verified": True, "verify_reason": "ok"})))
    assert sign_gate_verdict(SignPolicy(), run).status is GateStatus.PASS


def _put_layers(repo, image: str, suffix: str, layers: list[tuple[str, bytes, dict[str, str]]]) -> list[str]:  # type: ignore[no-untyped-def]
    """Tag `layers` (media type, blob, annotations) as `image`'s signatures (.sig) or attestations (.att)."""
    descs = [L.LayerDescriptor.of(media_type, blob, ann) for media_type, blob, ann in layers]
    for _, blob, _ in layers:
        repo.reg.upload_blob(repo.name, blob)
    config = L.config_blob(descs)
    repo.reg.upload_blob(repo.name, config)
    repo.reg.put_manifest(repo.name, L.tag_for(image.split("@")[1], suffix), L.signatures_manifest(descs, config),
                          L.OCI_MANIFEST)
    return [d.digest for d in descs]


def test_each_unusable_layer_is_named_by_its_digest(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    _key, pub, _, _ = keys
    image = repo.image()
    plain, bad_b64, unsigned = _put_layers(repo, image, L.SIG_SUFFIX, [
        ("text/plain", b"not a payload", {}),
        (L.SIMPLESIGNING_MEDIA_TYPE, b"{}", {L.SIGNATURE_ANNOTATION: "%%% not base64"}),
        (L.SIMPLESIGNING_MEDIA_TYPE, b"{ }", {}),
    ])
    check = signer.verify_image(image, pub.pem)
    assert not check.verified
    first, second, third = check.reason.split("; ")
    assert first == f"layer {plain[:19]} is text/plain, not a simple-signing payload"
    assert second.startswith(f"layer {bad_b64[:19]}: ")  # then base64's own complaint
    assert third == f"layer {unsigned[:19]} has no {L.SIGNATURE_ANNOTATION} annotation"

    ptype = "https://llmgate.dev/test/v1"
    wrong_type, junk = _put_layers(repo, image, L.ATT_SUFFIX, [
        ("text/plain", b"not an envelope", {}),
        (L.DSSE_MEDIA_TYPE, b"not json", {L.PREDICATE_TYPE_ANNOTATION: ptype}),
    ])
    att = signer.verify_attestations(image, ptype, pub.pem)
    assert not att.verified
    first, second = att.reason.split("; ")
    assert first == f"layer {wrong_type[:19]} is text/plain, not a DSSE envelope"
    assert second.startswith(f"layer {junk[:19]}: ")


def test_an_attestation_without_the_predicate_type_annotation_still_verifies(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    """The annotation is outside the signature, a filter only: the signed statement decides."""
    key, pub, _, _ = keys
    image = repo.image()
    ptype = "https://llmgate.dev/test/v1"
    signer.attest(image, ptype, {"answer": 42}, key)
    (layer,) = json.loads(repo.reg.manifest(repo.name, L.tag_for(image.split("@")[1], L.ATT_SUFFIX)).raw)["layers"]
    envelope = repo.reg.blob_bytes(repo.name, layer["digest"])
    _put_layers(repo, image, L.ATT_SUFFIX, [(L.DSSE_MEDIA_TYPE, envelope, {L.SIGNATURE_ANNOTATION: ""})])
    ok = signer.verify_attestations(image, ptype, pub.pem)
    assert ok.verified and [st["predicate"] for st in ok.statements] == [{"answer": 42}]
    other = signer.verify_attestations(image, "https://llmgate.dev/other/v1", pub.pem)
    assert not other.verified and other.reason == "no attestation of https://llmgate.dev/other/v1"


def test_strict_base64_oversized_layers_and_signed_non_statements_are_refused(repo, signer, keys) -> None:  # type: ignore[no-untyped-def]
    key, pub, _, _ = keys
    image = repo.image()
    digest = image.split("@")[1]
    # A valid signature with a stray character inside: cosign's base64 decoding refuses it, and so does this.
    payload = L.simple_signing_payload(repo.repository, digest)
    good_b64 = base64.b64encode(key.sign(payload)).decode()
    _put_layers(repo, image, L.SIG_SUFFIX, [(L.SIMPLESIGNING_MEDIA_TYPE, payload,
                                             {L.SIGNATURE_ANNOTATION: good_b64[:10] + "!" + good_b64[10:]})])
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and check.reason.startswith("layer sha256:") and "does not verify" not in check.reason
    _put_layers(repo, image, L.SIG_SUFFIX, [(L.SIMPLESIGNING_MEDIA_TYPE, payload, {L.SIGNATURE_ANNOTATION: good_b64})])
    assert signer.verify_image(image, pub.pem).verified  # the same layer, well encoded

    # A descriptor claiming more than a payload may hold is refused before its blob is read.
    blob = b"{}"
    repo.reg.upload_blob(repo.name, blob)
    huge = L.LayerDescriptor(L.SIMPLESIGNING_MEDIA_TYPE, "sha256:" + hashlib.sha256(blob).hexdigest(),
                             L.MAX_PAYLOAD_BYTES + 1, {L.SIGNATURE_ANNOTATION: good_b64})
    config = L.config_blob([huge])
    repo.reg.upload_blob(repo.name, config)
    repo.reg.put_manifest(repo.name, L.tag_for(digest, L.SIG_SUFFIX), L.signatures_manifest([huge], config),
                          L.OCI_MANIFEST)
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and f"exceeds {L.MAX_PAYLOAD_BYTES}" in check.reason

    # A validly signed payload that is no simple-signing document: refused as malformed, never an error.
    junk = b'{"critical": "not an object"}'
    _put_layers(repo, image, L.SIG_SUFFIX, [(L.SIMPLESIGNING_MEDIA_TYPE, junk,
                                             {L.SIGNATURE_ANNOTATION: base64.b64encode(key.sign(junk)).decode()})])
    check = signer.verify_image(image, pub.pem)
    assert not check.verified and check.reason.startswith("signed payload is malformed: "), check.reason

    # A validly signed envelope whose payload is no in-toto statement.
    ptype = "https://llmgate.dev/test/v1"
    body = b'{"not": "a statement"}'
    env = L.envelope(body, key.sign(L.pae(L.INTOTO_PAYLOAD_TYPE, body)))
    _put_layers(repo, image, L.ATT_SUFFIX, [(L.DSSE_MEDIA_TYPE, env, {L.PREDICATE_TYPE_ANNOTATION: ptype})])
    att = signer.verify_attestations(image, ptype, pub.pem)
    assert not att.verified and att.reason.startswith("signed statement is malformed: ")

"""Signing and verifying image signatures and attestations in a registry: the `Signer` protocol.

Two implementations write and read the same bytes (cosign's tag layout, `cosign_layout`):

- `PythonSigner` (here): ECDSA P-256 with `cryptography`, over the registry client. It needs nothing
  but the registry, so it is what the embedded local default uses.
- `CosignCliSigner` (pipeline/adapters/cosign.py): the `cosign` binary, used when one is on PATH.

Keys reach a signer as objects (`SigningKeyLike`: a loaded key that can sign and re-encrypt itself
for the cosign CLI) and public keys as PEM bytes already validated by the caller; a signer never
reads a key file or a password itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.adapters import cosign_layout as L
from pipeline.adapters import sigstore_bundle as B
from pipeline.adapters.registry import OciRegistry, RegistryClient, split_repository
from pipeline.errors import BadInput, InfraError


class SigningKeyLike(Protocol):
    source: str

    @property
    def public(self) -> ec.EllipticCurvePublicKey: ...

    def sign(self, data: bytes) -> bytes: ...

    def encrypted_pem(self, password: bytes) -> bytes: ...


@dataclass(frozen=True)
class Pushed:
    """Where a signature or attestation was written."""

    tag_ref: str  # repo:sha256-<hex>.sig / .att
    manifest_digest: str | None
    appended: bool  # False: an equal signature by the same key was already there (cosign's dupe check)


@dataclass(frozen=True)
class SignatureCheck:
    verified: bool
    reason: str
    payloads: list[dict[str, Any]] = field(default_factory=list)  # simple-signing payloads that verified


@dataclass(frozen=True)
class AttestationCheck:
    verified: bool
    reason: str
    statements: list[dict[str, Any]] = field(default_factory=list)  # verified statements of the type


class Signer(Protocol):
    name: str

    def sign_image(self, image: str, key: SigningKeyLike) -> Pushed: ...

    def attest(self, image: str, predicate_type: str, predicate: Mapping[str, Any], key: SigningKeyLike) -> Pushed: ...

    def attach_attestation(self, image: str, predicate_type: str, envelope: bytes) -> Pushed: ...

    def verify_image(self, image: str, public_key_pem: bytes) -> SignatureCheck: ...

    def verify_attestations(self, image: str, predicate_type: str, public_key_pem: bytes) -> AttestationCheck: ...


def split_image(image: str) -> tuple[str, str]:
    """`repo@sha256:…` -> (repo, digest); BadInput for a tag or a malformed digest."""
    repo, sep, digest = image.partition("@")
    if not sep or not L.DIGEST_RE.match(digest):
        raise BadInput("sign and verify by digest only (REPO@sha256:<64 hex>), never a tag", where=image)
    return repo, digest


def _public_key(pem: bytes) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadInput("public key is not ECDSA", where="public key")
    return key


def _key_id(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


def _verifies(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


class PythonSigner:
    """cosign's tag layout written and read with `cryptography` over the registry client."""

    name = "python"

    def __init__(self, registries: dict[str, OciRegistry] | None = None) -> None:
        self._registries = registries if registries is not None else {}

    def _registry(self, repo: str) -> tuple[OciRegistry, str]:
        host, name = split_repository(repo)
        if host not in self._registries:
            self._registries[host] = RegistryClient(host)
        return self._registries[host], name

    def close(self) -> None:
        for reg in self._registries.values():
            reg.close()

    # -- the signatures image -------------------------------------------------------------------
    def _existing(self, reg: OciRegistry, name: str, tag: str) -> list[L.LayerDescriptor]:
        if not reg.has_manifest(name, tag):
            return []
        m = reg.manifest(name, tag)
        try:
            return [L.LayerDescriptor.parse(d) for d in m.layers]
        except L.LayoutError as exc:
            raise InfraError(f"signature manifest is malformed: {exc}", where=f"{name}:{tag}") from exc

    def _append(self, repo: str, digest: str, suffix: str, media_type: str, data: bytes,
                annotations: dict[str, str], already: Any) -> Pushed:
        reg, name = self._registry(repo)
        tag = L.tag_for(digest, suffix)
        layers = self._existing(reg, name, tag)
        for layer in layers:
            if layer.media_type == media_type and already(reg, name, layer):
                return Pushed(tag_ref=f"{repo}:{tag}", manifest_digest=reg.resolve(name, tag), appended=False)
        new = L.LayerDescriptor.of(media_type, data, annotations)
        reg.upload_blob(name, data)
        layers = [*layers, new]
        config = L.config_blob(layers)
        reg.upload_blob(name, config)
        manifest_digest = reg.put_manifest(name, tag, L.signatures_manifest(layers, config), L.OCI_MANIFEST)
        return Pushed(tag_ref=f"{repo}:{tag}", manifest_digest=manifest_digest, appended=True)

    def _blob(self, reg: OciRegistry, name: str, layer: L.LayerDescriptor) -> bytes:
        if layer.size > L.MAX_PAYLOAD_BYTES:
            raise L.LayoutError(f"layer of {layer.size} bytes exceeds {L.MAX_PAYLOAD_BYTES}")
        return reg.blob_bytes(name, layer.digest)

    # -- writing ---------------------------------------------------------------------------------
    def sign_image(self, image: str, key: SigningKeyLike) -> Pushed:
        repo, digest = split_image(image)
        payload = L.simple_signing_payload(repo, digest)
        signature = key.sign(payload)

        def already(reg: OciRegistry, name: str, layer: L.LayerDescriptor) -> bool:
            if layer.digest != L.LayerDescriptor.of(L.SIMPLESIGNING_MEDIA_TYPE, payload, {}).digest:
                return False
            try:
                sig = base64.b64decode(layer.annotations.get(L.SIGNATURE_ANNOTATION, ""), validate=True)
            except binascii.Error:
                return False
            return _verifies(key.public, sig, payload)

        return self._append(repo, digest, L.SIG_SUFFIX, L.SIMPLESIGNING_MEDIA_TYPE, payload,
                            {L.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}, already)

    def attest(self, image: str, predicate_type: str, predicate: Mapping[str, Any], key: SigningKeyLike) -> Pushed:
        repo, digest = split_image(image)
        body = L.statement(repo, digest, predicate_type, dict(predicate))
        env = L.envelope(body, key.sign(L.pae(L.INTOTO_PAYLOAD_TYPE, body)))
        return self._append(repo, digest, L.ATT_SUFFIX, L.DSSE_MEDIA_TYPE, env,
                            {L.SIGNATURE_ANNOTATION: "", L.PREDICATE_TYPE_ANNOTATION: predicate_type},
                            lambda *_: False)

    def attach_attestation(self, image: str, predicate_type: str, envelope: bytes) -> Pushed:
        """A DSSE envelope signed elsewhere (the gate's verdict) as an attestation layer, unchanged
        (`cosign attach attestation`); the same envelope twice is one layer."""
        repo, digest = split_image(image)
        same = L.LayerDescriptor.of(L.DSSE_MEDIA_TYPE, envelope, {}).digest
        return self._append(repo, digest, L.ATT_SUFFIX, L.DSSE_MEDIA_TYPE, envelope,
                            {L.SIGNATURE_ANNOTATION: "", L.PREDICATE_TYPE_ANNOTATION: predicate_type},
                            lambda _reg, _name, layer: layer.digest == same)

    # -- verifying -------------------------------------------------------------------------------
    def verify_image(self, image: str, public_key_pem: bytes) -> SignatureCheck:
        """Signatures in either cosign layout: the `.sig` tag, and cosign v3 bundles (OCI referrers)."""
        f = self._find(image, public_key_pem, L.SIG_SUFFIX, B.COSIGN_SIGN_PREDICATE, self._check_signature_layer,
                       B.simple_signing_view)
        if f.good:
            return SignatureCheck(True, f"signature verified with key {f.key_id}", f.good)
        if not f.layers and not f.reasons:
            return SignatureCheck(False, f"no signature: nothing is tagged {f.tagged}, and no signature bundle "
                                         "refers to it")
        return SignatureCheck(False, "; ".join(dict.fromkeys(f.reasons)) or "no signature layer")

    def _find(self, image: str, public_key_pem: bytes, suffix: str, predicate_type: str, check: _LayerCheck,
              view: Callable[[str, L.Statement], dict[str, Any]]) -> _Found:
        """What verifies for `image` in both layouts: each layer of its `suffix` tag through `check`, and the
        statements of `predicate_type` in the bundles that refer to it, each seen through `view`."""
        repo, digest = split_image(image)
        pub = _public_key(public_key_pem)
        reg, name = self._registry(repo)
        tag = L.tag_for(digest, suffix)
        layers = self._existing(reg, name, tag)
        good: list[dict[str, Any]] = []
        reasons = [reason for layer in layers if (reason := check(reg, name, layer, pub, digest, good))]
        found, why = self._bundle_statements(reg, name, repo, digest, pub, predicate_type)
        good.extend(view(repo, st) for st in found)
        return _Found(f"{repo}:{tag}", _key_id(pub), layers, found, why, good, reasons + why)

    # -- cosign v3: Sigstore bundles as OCI referrers ----------------------------------------------------
    def _bundle_statements(self, reg: OciRegistry, name: str, repo: str, digest: str,
                           pub: ec.EllipticCurvePublicKey, predicate_type: str) -> tuple[list[L.Statement], list[str]]:
        """The statements of `predicate_type` about `digest` in the bundles that refer to it and verify with
        `pub`, and why each other bundle did not count."""
        good: list[L.Statement] = []
        reasons: list[str] = []
        for desc in reg.referrers(name, digest)[:B.MAX_REFERRERS]:
            ref = str(desc.get("digest", ""))
            try:
                manifest = reg.manifest(name, ref)
            except InfraError as exc:
                reasons.append(f"referrer {ref[:19]}: {exc.message}")
                continue
            layer = B.bundle_layer(manifest.data)
            if layer is None:
                continue  # another tool's referrer (an SBOM, a Notation signature): not a Sigstore bundle
            subject = manifest.data.get("subject")
            if not isinstance(subject, dict) or subject.get("digest") != digest:
                reasons.append(f"bundle referrer {ref[:19]} names subject "
                               f"{subject.get('digest') if isinstance(subject, dict) else None}, not {digest}")
                continue
            try:
                if int(layer.get("size", 0)) > B.MAX_BUNDLE_BYTES:
                    raise B.BundleError(f"bundle layer exceeds {B.MAX_BUNDLE_BYTES} bytes")
                bundle = B.parse_bundle(reg.blob_bytes(name, str(layer.get("digest"))))
                if bundle.envelope is None:
                    signed = B.message_signature_verifies(bundle, pub, digest)
                    raise B.BundleError(f"a messageSignature bundle ({'it verifies' if signed else 'it does not verify'}"
                                        "), which cosign does not accept on an image: only DSSE envelopes count")
                statement = B.verify_dsse(bundle, pub, digest)
            except (B.BundleError, InfraError) as exc:
                reasons.append(f"bundle {ref[:19]}: {exc.message if isinstance(exc, InfraError) else exc}")
                continue
            if statement.predicate_type != predicate_type:
                continue  # a bundle of another kind (an attestation when signatures are asked for)
            good.append(statement)
        return good, reasons

    def _check_signature_layer(self, reg: OciRegistry, name: str, layer: L.LayerDescriptor,
                               pub: ec.EllipticCurvePublicKey, digest: str, good: list[dict[str, Any]]) -> str:
        if layer.media_type != L.SIMPLESIGNING_MEDIA_TYPE:
            return f"layer {layer.digest[:19]} is {layer.media_type}, not a simple-signing payload"
        b64 = layer.annotations.get(L.SIGNATURE_ANNOTATION)
        if not b64:
            return f"layer {layer.digest[:19]} has no {L.SIGNATURE_ANNOTATION} annotation"
        try:
            signature = base64.b64decode(b64, validate=True)
            payload = self._blob(reg, name, layer)
        except (binascii.Error, L.LayoutError) as exc:
            return f"layer {layer.digest[:19]}: {exc}"
        if not _verifies(pub, signature, payload):
            return f"signature does not verify with key {_key_id(pub)} (another key, or the payload was altered)"
        try:
            ss = L.parse_simple_signing(payload)
        except L.LayoutError as exc:
            return f"signed payload is malformed: {exc}"
        if ss.type != L.SIGNATURE_TYPE:
            return f"signed payload has type {ss.type!r}, not {L.SIGNATURE_TYPE!r}"
        if ss.digest != digest:
            return f"signed payload names {ss.digest}, not {digest} (a signature of another image)"
        good.append(json.loads(payload))
        return ""

    def verify_attestations(self, image: str, predicate_type: str, public_key_pem: bytes) -> AttestationCheck:
        """Attestations in either cosign layout: the `.att` tag, and cosign v3 bundles (OCI referrers)."""
        f = self._find(image, public_key_pem, L.ATT_SUFFIX, predicate_type,
                       lambda reg, name, layer, pub, digest, good: self._check_attestation_layer(
                           reg, name, layer, pub, digest, predicate_type, good),
                       lambda _repo, st: _statement_doc(st))
        if not f.layers and not f.bundled and not f.bundle_reasons:
            return AttestationCheck(False, f"no attestation: nothing is tagged {f.tagged}, and no bundle refers "
                                           "to it")
        if f.good:
            return AttestationCheck(True, f"{len(f.good)} attestation(s) of {predicate_type} verified with key "
                                          f"{f.key_id}", f.good)
        return AttestationCheck(False, "; ".join(dict.fromkeys(f.reasons)) or f"no attestation of {predicate_type}")

    def _check_attestation_layer(self, reg: OciRegistry, name: str, layer: L.LayerDescriptor,
                                 pub: ec.EllipticCurvePublicKey, digest: str, predicate_type: str,
                                 good: list[dict[str, Any]]) -> str:
        if layer.media_type != L.DSSE_MEDIA_TYPE:
            return f"layer {layer.digest[:19]} is {layer.media_type}, not a DSSE envelope"
        # The annotation is outside the signature: a cheap filter, never trusted on its own.
        annotated = layer.annotations.get(L.PREDICATE_TYPE_ANNOTATION)
        if annotated is not None and annotated != predicate_type:
            return f"no attestation of {predicate_type}"
        try:
            env = L.parse_envelope(self._blob(reg, name, layer))
        except L.LayoutError as exc:
            return f"layer {layer.digest[:19]}: {exc}"
        if env.payload_type != L.INTOTO_PAYLOAD_TYPE:
            return f"envelope payloadType is {env.payload_type!r}, not {L.INTOTO_PAYLOAD_TYPE!r}"
        signed = L.pae(env.payload_type, env.body)
        if not any(_verifies(pub, s, signed) for s in env.signatures):
            return f"attestation signature does not verify with key {_key_id(pub)} (another key, or altered)"
        try:
            st = L.parse_statement(env.body)
        except L.LayoutError as exc:
            return f"signed statement is malformed: {exc}"
        if st.predicate_type != predicate_type:
            return f"no attestation of {predicate_type}"
        if digest not in [d for _, d in st.subjects]:
            return f"signed statement is about {', '.join(d for _, d in st.subjects)}, not {digest}"
        good.append(json.loads(env.body))
        return ""


def _statement_doc(st: L.Statement) -> dict[str, Any]:
    return {"_type": st.type, "subject": [{"name": n, "digest": {"sha256": d.split(":", 1)[1]}} for n, d in st.subjects],
            "predicateType": st.predicate_type, "predicate": st.predicate}


# check(reg, name, layer, pub, digest, good): why the layer does not count, or "" when it does (it has then
# appended its payload to `good`)
_LayerCheck = Callable[[OciRegistry, str, L.LayerDescriptor, ec.EllipticCurvePublicKey, str, list[dict[str, Any]]], str]


@dataclass(frozen=True)
class _Found:
    tagged: str  # repo:tag of the tag layout
    key_id: str
    layers: list[L.LayerDescriptor]  # the tag's layers
    bundled: list[L.Statement]  # statements of bundles that verified
    bundle_reasons: list[str]  # why each other bundle did not count
    good: list[dict[str, Any]]  # what verified, in either layout
    reasons: list[str]  # why each other layer or bundle did not count

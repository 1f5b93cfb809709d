"""cosign v3's default output, as bytes: Sigstore bundles attached to an image as OCI referrers.

No I/O here (the signer reads the registry). What cosign v3 writes (sigstore/cosign
`pkg/oci/remote/write.go` `WriteAttestationNewBundleFormat`/`WriteReferrer`, `cmd/cosign/cli/sign`):

- one referrer manifest per signature or attestation: an OCI image manifest whose `artifactType` (and
  config `artifactType`) is the bundle media type `application/vnd.dev.sigstore.bundle.v0.3+json`, config
  the empty descriptor (`application/vnd.oci.empty.v1+json`, blob `{}`), exactly one layer of that media
  type holding the bundle JSON, the image as `subject`, and the annotations
  `dev.sigstore.bundle.content: dsse-envelope` and `dev.sigstore.bundle.predicateType: <type>`;
- it is found through the OCI 1.1 Referrers API, or where a registry has none (Debian's distribution
  2.8) through the referrers tag schema: an OCI index tagged `sha256-<hex>` listing the referrers
  (go-containerregistry writes it; its entries carry the config media type as `artifactType`, so
  they are not filtered by type here either, as cosign's `GetBundles` does not);
- an image signature is a DSSE bundle whose in-toto statement has predicate type
  `https://sigstore.dev/cosign/sign/v1` and the image digest as subject; an attestation is a DSSE bundle
  whose statement carries the predicate.

A bundle (sigstore/protobuf-specs `Bundle`, validated as sigstore-go `pkg/bundle` does) is accepted
here only as strictly as `cosign verify --key … --insecure-ignore-tlog=true` accepts it: media type
v0.3 (cosign requires at least v0.3; sigstore-go refuses v0.4 and later), content a DSSE envelope with
exactly one signature (sigstore-go) verified over PAE with the key, `verificationMaterial.publicKey`
(its `hint` names the key but is never trusted; a certificate means keyless signing, which the pinned
key cannot verify), transparency-log entries only with inclusion proofs (bundle v0.2+ rule; they are
not needed with a key). A `messageSignature` bundle is checked but never counted: cosign verifies
referrers only when they hold a DSSE envelope ("bundle does not contain a DSSE envelope").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from pipeline.adapters import cosign_layout as L

MEDIA_TYPE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
MAX_BUNDLE_BYTES = 32 * 1024 * 1024
MAX_REFERRERS = 1000  # cosign's maxLayers bound, applied to the referrers read for one image
# sigstore-go getBundleVersion: "...bundle+json;version=0.N" (0.1-0.3) or "...bundle.vX.Y[.Z]+json"
_LEGACY = re.compile(r"^application/vnd\.dev\.sigstore\.bundle\+json;version=0\.([123])$")
_VERSIONED = re.compile(r"^application/vnd\.dev\.sigstore\.bundle\.v(\d+)\.(\d+)(?:\.(\d+))?\+json$")


class BundleError(ValueError):
    """A bundle that is not one cosign would accept; the message says why."""


def bundle_version(media_type: str) -> tuple[int, int]:
    """(major, minor) of a bundle media type; BundleError for one sigstore-go does not know."""
    if m := _LEGACY.match(media_type):
        return 0, int(m.group(1))
    if m := _VERSIONED.match(media_type):
        return int(m.group(1)), int(m.group(2))
    raise BundleError(f"unsupported bundle media type {media_type!r}")


@dataclass(frozen=True)
class Bundle:
    media_type: str
    envelope: L.Envelope | None  # DSSE content
    message_digest: bytes | None  # messageSignature content
    message_signature: bytes | None
    public_key_hint: str


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise BundleError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BundleError(f"{what} is not base64") from exc


def parse_bundle(raw: bytes) -> Bundle:
    """A Sigstore bundle as cosign reads it from a referrer (sigstore-go `Bundle.validate`, cosign's
    v0.3 minimum), for verification with a public key."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(raw)} bytes exceeds {MAX_BUNDLE_BYTES}")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BundleError("bundle is not JSON") from exc
    if not isinstance(doc, dict):
        raise BundleError("bundle is not a JSON object")
    version = bundle_version(str(doc.get("mediaType", "")))
    if version < (0, 3):
        raise BundleError(f"bundle version {version[0]}.{version[1]} is too old (cosign requires v0.3)")
    if version >= (0, 4):
        raise BundleError(f"bundle version {version[0]}.{version[1]} is not supported (sigstore-go reads up to v0.3)")
    material = doc.get("verificationMaterial")
    if not isinstance(material, dict):
        raise BundleError("bundle has no verificationMaterial")
    if "x509CertificateChain" in material:
        raise BundleError("verification material cannot be an X.509 certificate chain (bundle v0.3)")
    if "certificate" in material:
        raise BundleError("bundle is signed with a certificate (keyless); the configured public key cannot verify it")
    public = material.get("publicKey")
    if not isinstance(public, dict):
        raise BundleError("bundle has no publicKey verification material")
    entries = material.get("tlogEntries") or []
    if not isinstance(entries, list) or any(not isinstance(e, dict) or "inclusionProof" not in e for e in entries):
        raise BundleError("transparency log entries without an inclusion proof (required since bundle v0.2)")
    dsse, message = doc.get("dsseEnvelope"), doc.get("messageSignature")
    if (dsse is None) == (message is None):
        raise BundleError("bundle content must be either a message signature or a DSSE envelope")
    hint = str(public.get("hint", ""))
    if dsse is not None:
        if not isinstance(dsse, dict) or not isinstance(dsse.get("signatures"), list):
            raise BundleError("dsseEnvelope is malformed")
        sigs = [_b64(s.get("sig") if isinstance(s, dict) else None, "dsseEnvelope signature")
                for s in dsse["signatures"]]
        env = L.Envelope(payload_type=str(dsse.get("payloadType", "")),
                         body=_b64(dsse.get("payload"), "dsseEnvelope payload"), signatures=sigs)
        return Bundle(str(doc["mediaType"]), env, None, None, hint)
    if not isinstance(message, dict) or not isinstance(message.get("messageDigest"), dict):
        raise BundleError("messageSignature is malformed")
    md = message["messageDigest"]
    if md.get("algorithm") != "SHA2_256":
        raise BundleError(f"messageDigest algorithm {md.get('algorithm')!r} is not SHA2_256")
    return Bundle(str(doc["mediaType"]), None, _b64(md.get("digest"), "messageDigest"),
                  _b64(message.get("signature"), "messageSignature signature"), hint)


def verify_dsse(bundle: Bundle, public_key: ec.EllipticCurvePublicKey, digest: str) -> L.Statement:
    """The statement of a DSSE bundle about `digest` (sha256:<hex>) signed by `public_key`, as
    sigstore-go's `verifyEnvelopeWithArtifactDigests` checks it; BundleError otherwise."""
    env = bundle.envelope
    if env is None:
        raise BundleError("bundle does not contain a DSSE envelope (cosign verifies only those on images)")
    if len(env.signatures) != 1:
        raise BundleError(f"DSSE envelope has {len(env.signatures)} signatures; exactly one is required")
    if env.payload_type != L.INTOTO_PAYLOAD_TYPE:
        raise BundleError(f"DSSE payloadType is {env.payload_type!r}, not {L.INTOTO_PAYLOAD_TYPE!r}")
    try:
        public_key.verify(env.signatures[0], L.pae(env.payload_type, env.body), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise BundleError("bundle signature does not verify with the key (another key, or altered)") from exc
    try:
        statement = L.parse_statement(env.body)
    except L.LayoutError as exc:
        raise BundleError(f"signed statement is malformed: {exc}") from exc
    if digest not in [d for _, d in statement.subjects]:
        raise BundleError(f"signed statement is about {', '.join(d for _, d in statement.subjects) or 'nothing'}, "
                          f"not {digest}")
    return statement


def message_signature_verifies(bundle: Bundle, public_key: ec.EllipticCurvePublicKey, digest: str) -> bool:
    """Whether a messageSignature bundle signs `digest` (checked for the record: cosign does not accept
    one as an image signature or attestation)."""
    if bundle.message_digest is None or bundle.message_signature is None:
        return False
    want = bytes.fromhex(digest.split(":", 1)[1])
    if bundle.message_digest != want:
        return False
    try:
        public_key.verify(bundle.message_signature, want, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def bundle_layer(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The one bundle layer of a referrer manifest (cosign's `ociremote.Bundle`), or None when the
    referrer is not a Sigstore bundle (other referrers are not ours to judge)."""
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        return None
    return layers[0] if str(layers[0].get("mediaType", "")).startswith(MEDIA_TYPE_PREFIX) else None


def simple_signing_view(docker_reference: str, statement: L.Statement) -> dict[str, Any]:
    """The payload `cosign verify` prints for a bundle signature (its `transformOutput`)."""
    return {"critical": {"identity": {"docker-reference": docker_reference},
                         "image": {"docker-manifest-digest": statement.subjects[0][1] if statement.subjects else ""},
                         "type": statement.predicate_type},
            "optional": None}

"""cosign's registry layout for signatures and attestations (the "legacy" tag layout), as bytes.

No I/O here: this module builds and parses what `cosign sign --key … --tlog-upload=false` and
`cosign attest` push, so the Python signer writes it and both signers' output can be checked
against it. Names and media types are cosign's own (sigstore/cosign, `pkg/types`,
`pkg/oci/static`, `pkg/oci/empty`):

- signatures of ``REPO@sha256:<hex>`` live in the image manifest tagged ``sha256-<hex>.sig`` in the
  same repository; attestations under ``sha256-<hex>.att`` (`cosign triangulate` prints these);
- that manifest is an OCI image manifest (``application/vnd.oci.image.manifest.v1+json``) whose
  config is ``application/vnd.oci.image.config.v1+json`` ("empty.Signatures()"), one layer per
  signature, appended on each new signature;
- an image-signature layer is the simple-signing payload, media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``, with the layer annotation
  ``dev.cosignproject.cosign/signature`` = base64 of the ASN.1 DER ECDSA signature over the
  payload bytes (SHA-256) ("SignatureAnnotationKey");
- an attestation layer is a DSSE envelope, media type ``application/vnd.dsse.envelope.v1+json``
  ("DssePayloadType"), annotated ``predicateType`` = the statement's predicate type and an empty
  ``dev.cosignproject.cosign/signature`` (the signature is inside the envelope). The envelope's
  payloadType is ``application/vnd.in-toto+json``; its signature is over the DSSE
  pre-authentication encoding ``PAE(type, body) = "DSSEv1" SP len(type) SP type SP len(body) SP body``.

The simple-signing payload is the JSON cosign marshals::

    {"critical":{"identity":{"docker-reference":"REPO"},
                 "image":{"docker-manifest-digest":"sha256:…"},
                 "type":"cosign container image signature"},
     "optional":{…}|null}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.models import DIGEST_RE

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_TYPE_ANNOTATION = "predicateType"
SIGNATURE_TYPE = "cosign container image signature"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"  # what cosign attest itself writes; both are read
SIG_SUFFIX, ATT_SUFFIX = ".sig", ".att"
_ZERO_TIME = "0001-01-01T00:00:00Z"  # go-containerregistry's zero v1.Time in an empty image config
# cosign refuses payloads above 128 MiB; attestations here are far smaller, so refuse earlier.
MAX_PAYLOAD_BYTES = 32 * 1024 * 1024


class LayoutError(ValueError):
    """Bytes that do not follow cosign's layout; the message says which part."""


def tag_for(digest: str, suffix: str) -> str:
    """`sha256:<hex>` -> `sha256-<hex>.sig` (or `.att`)."""
    if not DIGEST_RE.match(digest):
        raise LayoutError(f"not a sha256 digest: {digest!r}")
    return digest.replace(":", "-") + suffix


def _json(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


# -- image signatures -----------------------------------------------------------------------------
def simple_signing_payload(docker_reference: str, digest: str, optional: dict[str, str] | None = None) -> bytes:
    return _json({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": optional,
    })


@dataclass(frozen=True)
class SimpleSigning:
    docker_reference: str
    digest: str
    type: str
    optional: dict[str, Any] | None


def parse_simple_signing(payload: bytes) -> SimpleSigning:
    try:
        doc = json.loads(payload)
        crit = doc["critical"]
        return SimpleSigning(docker_reference=str(crit["identity"]["docker-reference"]),
                             digest=str(crit["image"]["docker-manifest-digest"]), type=str(crit["type"]),
                             optional=doc.get("optional"))
    except (ValueError, KeyError, TypeError) as exc:
        raise LayoutError(f"not a simple-signing payload ({exc.__class__.__name__})") from exc


# -- attestations ---------------------------------------------------------------------------------
def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the envelope's signature covers."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def statement(subject_name: str, digest: str, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    algo, _, hexdigest = digest.partition(":")
    return _json({
        "_type": STATEMENT_V1,
        "subject": [{"name": subject_name, "digest": {algo: hexdigest}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })


def envelope(body: bytes, signature: bytes, payload_type: str = INTOTO_PAYLOAD_TYPE, keyid: str = "") -> bytes:
    return _json({
        "payloadType": payload_type,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": keyid, "sig": base64.b64encode(signature).decode()}],
    })


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    body: bytes
    signatures: list[bytes]


def parse_envelope(raw: bytes) -> Envelope:
    try:
        doc = json.loads(raw)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in doc["signatures"]]
        return Envelope(payload_type=str(doc["payloadType"]), body=base64.b64decode(doc["payload"], validate=True),
                        signatures=sigs)
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise LayoutError(f"not a DSSE envelope ({exc.__class__.__name__})") from exc


@dataclass(frozen=True)
class Statement:
    type: str
    subjects: list[tuple[str, str]]  # (name, "sha256:<hex>")
    predicate_type: str
    predicate: dict[str, Any]


def parse_statement(body: bytes) -> Statement:
    try:
        doc = json.loads(body)
        if doc["_type"] not in (STATEMENT_V1, STATEMENT_V01):
            raise LayoutError(f"unknown in-toto statement type {doc['_type']!r}")
        subjects = [(str(s.get("name", "")), f"sha256:{s['digest']['sha256']}") for s in doc["subject"]]
        pred = doc["predicate"]
        if not isinstance(pred, dict):
            raise LayoutError("statement predicate is not an object")
        return Statement(type=doc["_type"], subjects=subjects, predicate_type=str(doc["predicateType"]),
                         predicate=pred)
    except (ValueError, KeyError, TypeError) as exc:
        if isinstance(exc, LayoutError):
            raise
        raise LayoutError(f"not an in-toto statement ({exc.__class__.__name__})") from exc


# -- the signatures image -------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerDescriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d

    @classmethod
    def of(cls, media_type: str, data: bytes, annotations: dict[str, str]) -> LayerDescriptor:
        return cls(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data), dict(annotations))

    @classmethod
    def parse(cls, d: dict[str, Any]) -> LayerDescriptor:
        try:
            return cls(str(d["mediaType"]), str(d["digest"]), int(d["size"]),
                       {str(k): str(v) for k, v in (d.get("annotations") or {}).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(f"malformed layer descriptor ({exc.__class__.__name__})") from exc


def config_blob(layers: list[LayerDescriptor]) -> bytes:
    """The image config go-containerregistry writes for empty.Signatures() plus appended layers
    (static layers are uncompressed, so each diff_id is the layer digest)."""
    return _json({
        "architecture": "",
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
        "config": {},
    })


def signatures_manifest(layers: list[LayerDescriptor], config: bytes) -> bytes:
    return _json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config),
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest()},
        "layers": [layer.as_json() for layer in layers],
    })

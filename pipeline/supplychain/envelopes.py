"""DSSE envelopes over in-toto statements, sealed and opened with the release key.

Evidence links and verdicts are kept as DSSE envelopes (https://github.com/secure-systems-lab/dsse):
the payload is an in-toto Statement v1, the one signature covers `PAE(payloadType, payload)`
(pipeline/adapters/cosign_layout.py), ASN.1 DER ECDSA P-256 over SHA-256 as cosign makes them. An
envelope carries exactly one signature, as a Sigstore bundle must (sigstore-go refuses any other
count), so what is sealed here can be attached to an image as it is, in either cosign layout.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.adapters import cosign_layout as L
from pipeline.supplychain import cosign_keys

# A verdict names its evidence links (a few KiB each); nothing sealed here comes near this.
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024


class EnvelopeRefused(ValueError):
    """An envelope that does not open with the key; the message says why."""


@dataclass(frozen=True)
class Opened:
    """A verified envelope: the statement it carries and the exact payload bytes that were signed."""

    statement: L.Statement
    body: bytes

    @property
    def sha256(self) -> str:
        """The digest of the signed statement: how a verdict names a link, and the log names a verdict."""
        return hashlib.sha256(self.body).hexdigest()


def statement_body(subject_name: str, digest: str, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    return L.statement(subject_name, digest, predicate_type, predicate)


def seal(body: bytes, key: cosign_keys.SigningKey) -> str:
    """The DSSE envelope (JSON text) of an in-toto statement, signed with `key`."""
    signature = key.sign(L.pae(L.INTOTO_PAYLOAD_TYPE, body))
    return L.envelope(body, signature, keyid=cosign_keys.key_id(key.public)).decode()


def open_envelope(raw: str | bytes, public_key: ec.EllipticCurvePublicKey) -> Opened:
    """The statement of `raw` if its one signature verifies with `public_key`; EnvelopeRefused otherwise."""
    data = raw.encode() if isinstance(raw, str) else raw
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeRefused(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    try:
        env = L.parse_envelope(data)
    except L.LayoutError as exc:
        raise EnvelopeRefused(str(exc)) from exc
    if env.payload_type != L.INTOTO_PAYLOAD_TYPE:
        raise EnvelopeRefused(f"payloadType is {env.payload_type!r}, not {L.INTOTO_PAYLOAD_TYPE!r}")
    if len(env.signatures) != 1:
        raise EnvelopeRefused(f"{len(env.signatures)} signatures; exactly one is required")
    if not cosign_keys.verify_signature(public_key, env.signatures[0], L.pae(env.payload_type, env.body)):
        raise EnvelopeRefused(f"signature does not verify with key {cosign_keys.key_id(public_key)[:23]}… "
                              "(another key, or the envelope was altered)")
    try:
        statement = L.parse_statement(env.body)
    except L.LayoutError as exc:
        raise EnvelopeRefused(f"signed statement is malformed: {exc}") from exc
    return Opened(statement=statement, body=env.body)


def envelope_key_id(raw: str) -> str:
    """The keyid hint an envelope names (outside the signature: shown, never trusted)."""
    try:
        sigs = json.loads(raw).get("signatures") or []
        return str(sigs[0].get("keyid") or "") if sigs and isinstance(sigs[0], dict) else ""
    except (ValueError, AttributeError):
        return ""

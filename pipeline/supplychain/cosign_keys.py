"""Key files in cosign's format: read what `cosign generate-key-pair` writes, write what cosign reads.

Private key (`cosign.key`): a PEM block of type ``ENCRYPTED SIGSTORE PRIVATE KEY`` (older cosign
releases wrote ``ENCRYPTED COSIGN PRIVATE KEY``; both are read, the first is written) whose body is
the JSON document of go-securesystemslib's ``encrypted`` package::

    {"kdf": {"name": "scrypt", "params": {"N": 65536, "r": 8, "p": 1}, "salt": "<base64, 32 bytes>"},
     "cipher": {"name": "nacl/secretbox", "nonce": "<base64, 24 bytes>"},
     "ciphertext": "<base64>"}

The secretbox key is 32 bytes of scrypt(password, salt, N, r, p); the plaintext is a PKCS#8 DER
ECDSA P-256 private key. Public key (`cosign.pub`): SubjectPublicKeyInfo PEM (``PUBLIC KEY``).
Signatures are ASN.1 DER ECDSA over SHA-256, as cosign makes them.

Libraries, not hand-written crypto: ECDSA, PKCS#8 and SPKI come from `cryptography`; XSalsa20-Poly1305
(nacl/secretbox, which `cryptography` does not offer) from PyNaCl; scrypt from hashlib (OpenSSL).

Every failure to read a key file is `BadInput` naming the file; the password is never part of a
message. Passwords come from the environment or a secret file (`password_from_env`), never argv.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from nacl.exceptions import CryptoError
from nacl.secret import SecretBox

from pipeline.errors import BadInput
from pipeline.redact import register_secret
from pipeline.regular_files import read_regular

SIGSTORE_PEM_TYPE = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PEM_TYPE = "ENCRYPTED COSIGN PRIVATE KEY"  # written by cosign before v1.x; read only
PRIVATE_PEM_TYPES = (SIGSTORE_PEM_TYPE, COSIGN_PEM_TYPE)
# What cosign's current `generate-key-pair` writes (the shared fixture carries these values).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
SALT_BYTES, NONCE_BYTES, BOX_KEY_BYTES = 32, 24, 32
# Bounds on the KDF parameters a key file may ask for: a crafted file must not make the loader
# allocate gigabytes (scrypt needs 128 * N * r bytes).
_MAX_N, _MAX_R, _MAX_P = 1 << 20, 32, 16
# ...and on their product: scrypt's memory is 128 * N * r bytes and its time grows with N * r * p. Four
# times cosign's own (2^16 * 8 * 1): 256 MiB and a fraction of a second at most, so a crafted file
# cannot make loading it allocate gigabytes or run for minutes.
_MAX_WORK = 4 * SCRYPT_N * SCRYPT_R * SCRYPT_P
PASSWORD_ENV = "COSIGN_PASSWORD"
MAX_KEY_FILE_BYTES = 1 << 20  # a PEM key or certificate chain is a few KB


@dataclass(frozen=True)
class SigningKey:
    """An ECDSA P-256 private key, loaded; `source` names where it came from (never its bytes)."""

    private: ec.EllipticCurvePrivateKey = field(repr=False)
    source: str

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return public_pem(self.public)

    def sign(self, data: bytes) -> bytes:
        """ASN.1 DER ECDSA signature over SHA-256(data)."""
        return self.private.sign(data, ec.ECDSA(hashes.SHA256()))

    def encrypted_pem(self, password: bytes) -> bytes:
        """This key as a `cosign.key` under `password` (how it reaches the cosign CLI: env://)."""
        return encrypt_private_key(self.private, password)


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the DER SubjectPublicKeyInfo: a stable, printable name for a public key."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def verify_signature(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# -- PEM ----------------------------------------------------------------------------------------
def _pem_block(text: str, where: str) -> tuple[str, bytes]:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("-----BEGIN ") or not lines[0].endswith("-----"):
        raise BadInput("not a PEM key file (no -----BEGIN line)", where=where)
    label = lines[0][len("-----BEGIN "):-len("-----")]
    end = f"-----END {label}-----"
    if end not in lines:
        raise BadInput(f"truncated PEM: no {end} line", where=where)
    body = "".join(lines[1:lines.index(end)])
    try:
        return label, base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput("PEM body is not valid base64", where=where) from exc


def _b64field(doc: dict[str, Any], path: str, where: str) -> bytes:
    cur: Any = doc
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if not isinstance(cur, str):
        raise BadInput(f"encrypted key has no {path}", where=where)
    try:
        return base64.b64decode(cur, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"encrypted key field {path} is not base64", where=where) from exc


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=BOX_KEY_BYTES, maxmem=256 * r * n + (1 << 20))


def _require_p256(key: object, where: str) -> None:
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        raise BadInput(f"not an ECDSA key ({type(key).__name__}); cosign key pairs are ECDSA P-256", where=where)
    if not isinstance(key.curve, ec.SECP256R1):
        raise BadInput(f"ECDSA key on curve {key.curve.name}, not P-256 (secp256r1)", where=where)


# -- private keys -------------------------------------------------------------------------------
def load_private_key(pem: str | bytes, password: bytes | str, *, where: str) -> SigningKey:
    """Decrypt a cosign private key; `where` names its file (or environment variable) in errors."""
    text = pem.decode("utf-8", "replace") if isinstance(pem, bytes) else pem
    pw = password.encode() if isinstance(password, str) else password
    label, body = _pem_block(text, where)
    if label not in PRIVATE_PEM_TYPES:
        raise BadInput(f"PEM block is {label!r}, not a cosign private key ({SIGSTORE_PEM_TYPE})", where=where)
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadInput("encrypted key body is not JSON", where=where) from exc
    if not isinstance(doc, dict):
        raise BadInput("encrypted key body is not a JSON object", where=where)
    kdf, cipher = doc.get("kdf") or {}, doc.get("cipher") or {}
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise BadInput("encrypted key: unsupported kdf (cosign uses scrypt)", where=where)
    if not isinstance(cipher, dict) or cipher.get("name") != "nacl/secretbox":
        raise BadInput("encrypted key: unsupported cipher (cosign uses nacl/secretbox)", where=where)
    params = kdf.get("params") or {}
    try:
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput("encrypted key: scrypt params N, r, p missing", where=where) from exc
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= _MAX_R and 1 <= p <= _MAX_P
            and n * r * p <= _MAX_WORK):
        raise BadInput(f"encrypted key: scrypt params out of bounds (N={n}, r={r}, p={p})", where=where)
    salt = _b64field(doc, "kdf.salt", where)
    nonce = _b64field(doc, "cipher.nonce", where)
    ciphertext = _b64field(doc, "ciphertext", where)
    if len(nonce) != NONCE_BYTES:
        raise BadInput(f"encrypted key: nonce is {len(nonce)} bytes, not {NONCE_BYTES}", where=where)
    try:
        plaintext = SecretBox(_scrypt(pw, salt, n, r, p)).decrypt(ciphertext, nonce)
    except CryptoError as exc:
        raise BadInput("cannot decrypt the private key: wrong password, or the file was altered",
                       where=where, hint=f"the password comes from {PASSWORD_ENV} (empty for a key made without one)") from exc
    try:
        key = serialization.load_der_private_key(plaintext, password=None)
    except (ValueError, TypeError) as exc:
        raise BadInput("decrypted key is not a PKCS#8 private key", where=where) from exc
    _require_p256(key, where)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return SigningKey(private=key, source=where)


def _read_key_file(p: Path, what: str) -> str:
    """The text of a key file (`what`: "private key file", "public key file"), or BadInput naming it."""
    try:
        raw = read_regular(p, what=what, limit=MAX_KEY_FILE_BYTES, not_found=f"{what} not found")
    except BadInput as exc:
        raise BadInput(exc.message if exc.message.endswith("not found") else
                       f"cannot read {what}: {exc.message}", where=str(p)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"cannot read {what}: {exc}", where=str(p)) from exc


def load_private_key_file(path: str | Path, password: bytes | str) -> SigningKey:
    p = Path(path)
    return load_private_key(_read_key_file(p, "private key file"), password, where=str(p))


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, password: bytes | str, *,
                        n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> bytes:
    """The `cosign.key` PEM of `key` under `password` (empty allowed, as with cosign)."""
    pw = password.encode() if isinstance(password, str) else password
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    salt, nonce = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(NONCE_BYTES)
    box = SecretBox(_scrypt(pw, salt, n, r, p))
    ciphertext = box.encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": p}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    body = base64.b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return ("\n".join([f"-----BEGIN {SIGSTORE_PEM_TYPE}-----", *lines, f"-----END {SIGSTORE_PEM_TYPE}-----"])
            + "\n").encode()


@dataclass(frozen=True)
class KeyPairFiles:
    private_key: Path
    public_key: Path
    key_id: str


def write_key_pair(out_dir: str | Path, password: bytes | str, *, key: ec.EllipticCurvePrivateKey | None = None,
                   ) -> KeyPairFiles:
    """Write `cosign.key` (mode 0600) and `cosign.pub` into `out_dir`; refuses to overwrite either."""
    out = Path(out_dir)
    priv_path, pub_path = out / "cosign.key", out / "cosign.pub"
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:  # a file where the directory should be: nothing would be overwritten
        what = "is not a directory" if blocker == out else f"cannot be made: {blocker} is not a directory"
        raise BadInput(f"{what}; --out names the directory for cosign.key and cosign.pub", where=str(out))
    for p in (priv_path, pub_path):
        if p.exists() or p.is_symlink():
            raise BadInput("refusing to overwrite an existing key file", where=str(p),
                           hint="move it away or choose another --out directory")
    key = key or generate_key()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(encrypt_private_key(key, password))
        fd = os.open(pub_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(public_pem(key.public_key()))
    except FileExistsError as exc:
        raise BadInput("refusing to overwrite an existing key file", where=str(exc.filename)) from exc
    except OSError as exc:
        raise BadInput(f"cannot write key files: {exc.strerror}", where=str(exc.filename or out)) from exc
    return KeyPairFiles(priv_path, pub_path, key_id(key.public_key()))


# -- public keys --------------------------------------------------------------------------------
def load_public_key(pem: str | bytes, *, where: str, now: datetime | None = None) -> ec.EllipticCurvePublicKey:
    """A `cosign.pub` (SPKI PEM), or an X.509 certificate PEM whose validity period includes now."""
    text = pem.decode("utf-8", "replace") if isinstance(pem, bytes) else pem
    label, der = _pem_block(text, where)
    key: object
    if label == "PUBLIC KEY":
        try:
            key = serialization.load_der_public_key(der)
        except (ValueError, TypeError) as exc:
            raise BadInput("PUBLIC KEY block does not hold a valid SubjectPublicKeyInfo", where=where) from exc
    elif label == "CERTIFICATE":
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise BadInput("CERTIFICATE block does not hold a valid X.509 certificate", where=where) from exc
        at = now or datetime.now(UTC)
        if at > cert.not_valid_after_utc:
            raise BadInput(f"certificate expired on {cert.not_valid_after_utc.isoformat()}", where=where)
        if at < cert.not_valid_before_utc:
            raise BadInput(f"certificate not valid before {cert.not_valid_before_utc.isoformat()}", where=where)
        key = cert.public_key()
    elif label in PRIVATE_PEM_TYPES or "PRIVATE KEY" in label:
        raise BadInput("this is a private key; verification takes the public key (cosign.pub)", where=where)
    else:
        raise BadInput(f"PEM block is {label!r}, not PUBLIC KEY", where=where)
    _require_p256(key, where)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def load_public_key_file(path: str | Path, *, now: datetime | None = None) -> ec.EllipticCurvePublicKey:
    p = Path(path)
    return load_public_key(_read_key_file(p, "public key file"), where=str(p), now=now)


# -- passwords ----------------------------------------------------------------------------------
def password_from_env(env: str = PASSWORD_ENV, file: str | Path | None = None) -> bytes | None:
    """The key password from a secret file (first) or an environment variable; None when neither is set.
    A file's single trailing newline is dropped (as `echo pw > file` leaves one)."""
    if file is not None:
        try:
            raw = read_regular(file, what="password file", limit=MAX_KEY_FILE_BYTES)
        except BadInput as exc:
            raise BadInput(f"cannot read password file: {exc.message}", where=str(file)) from None
        pw = raw[:-1] if raw.endswith(b"\n") else raw
    else:
        value = os.environ.get(env)
        if value is None:
            return None
        pw = value.encode()
    register_secret(pw)
    return pw

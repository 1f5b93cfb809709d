"""Key files in cosign's format, against a key written by `cosign generate-key-pair` (shared fixture)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from pipeline.errors import BadInput
from pipeline.supplychain import cosign_keys as ck


@pytest.fixture(scope="module")
def cosign_made(fixtures_dir: Path) -> tuple[Path, Path]:
    d = fixtures_dir / "cosign"
    return d / "cosign_generated_encrypted_empty_private.key", d / "cosign_generated_encrypted_empty_private.pub"


def test_reads_a_cosign_generated_key_and_signs_for_its_public_key(cosign_made) -> None:  # type: ignore[no-untyped-def]
    key_path, pub_path = cosign_made
    key = ck.load_private_key_file(key_path, b"")
    pub = ck.load_public_key_file(pub_path)
    assert ck.key_id(key.public) == ck.key_id(pub)
    sig = key.sign(b"payload")
    assert ck.verify_signature(pub, sig, b"payload")
    assert not ck.verify_signature(pub, sig, b"payload!")
    assert repr(key) == f"SigningKey(source={str(key_path)!r})"


def test_wrong_password_is_bad_input_naming_the_file(cosign_made) -> None:  # type: ignore[no-untyped-def]
    key_path, _ = cosign_made
    with pytest.raises(BadInput, match="wrong password") as ei:
        ck.load_private_key_file(key_path, b"not-the-password")
    assert ei.value.where == str(key_path) and ei.value.exit_code == 2
    assert "not-the-password" not in ei.value.render()


def test_written_pair_round_trips_and_matches_cosign_layout(tmp_path: Path) -> None:
    files = ck.write_key_pair(tmp_path, b"s3cret-pw")
    assert oct(files.private_key.stat().st_mode & 0o777) == "0o600"
    text = files.private_key.read_text()
    assert text.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    body = base64.b64decode("".join(text.strip().splitlines()[1:-1]))
    doc = json.loads(body)
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox" and len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    key = ck.load_private_key_file(files.private_key, "s3cret-pw")
    pub = ck.load_public_key_file(files.public_key)
    assert files.public_key.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert ck.verify_signature(pub, key.sign(b"x"), b"x") and files.key_id == ck.key_id(pub)
    with pytest.raises(BadInput, match="refusing to overwrite"):
        ck.write_key_pair(tmp_path, b"other")
    assert ck.load_private_key_file(files.private_key, "s3cret-pw").public_pem() == key.public_pem()


def test_legacy_cosign_pem_label_is_read(tmp_path: Path) -> None:
    pem = ck.encrypt_private_key(ck.generate_key(), b"pw").decode()
    legacy = pem.replace(ck.SIGSTORE_PEM_TYPE, ck.COSIGN_PEM_TYPE)
    assert ck.load_private_key(legacy, b"pw", where="legacy.key").public.curve.name == "secp256r1"


def _pem(label: str, body: bytes) -> str:
    b64 = base64.b64encode(body).decode()
    return f"-----BEGIN {label}-----\n" + "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64)) + f"\n-----END {label}-----\n"


def _encrypted(plaintext_der: bytes, password: bytes = b"") -> str:
    """A cosign-format file around any plaintext, to reach the checks after decryption."""
    import secrets

    from nacl.secret import SecretBox

    salt, nonce = secrets.token_bytes(32), secrets.token_bytes(24)
    box = SecretBox(ck._scrypt(password, salt, 1024, 8, 1))
    doc = {"kdf": {"name": "scrypt", "params": {"N": 1024, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(box.encrypt(plaintext_der, nonce).ciphertext).decode()}
    return _pem(ck.SIGSTORE_PEM_TYPE, json.dumps(doc).encode())


def test_each_kind_of_broken_private_key_names_its_problem(tmp_path: Path) -> None:
    good = ck.encrypt_private_key(ck.generate_key(), b"").decode()
    lines = good.strip().splitlines()
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    doc = json.loads(base64.b64decode("".join(lines[1:-1])))
    huge = dict(doc, kdf=dict(doc["kdf"], params={"N": 1 << 30, "r": 8, "p": 1}))
    ct = bytearray(base64.b64decode(doc["ciphertext"]))
    ct[20] ^= 1
    altered = dict(doc, ciphertext=base64.b64encode(bytes(ct)).decode())
    cases = {
        "truncated PEM": "\n".join(lines[:-1]),
        "no -----BEGIN": "garbage\n",
        "not valid base64": lines[0] + "\n@@@@\n" + lines[-1],
        "not JSON": _pem(ck.SIGSTORE_PEM_TYPE, b"\x00\x01binary"),
        "not P-256": _encrypted(p384),
        "not a PKCS#8": _encrypted(b"\x30\x03\x02\x01\x00"),
        "out of bounds": _pem(ck.SIGSTORE_PEM_TYPE, json.dumps(huge).encode()),
        "not a cosign private key": _pem("RSA PRIVATE KEY", b"\x30\x00"),
        "wrong password": _pem(ck.SIGSTORE_PEM_TYPE, json.dumps(altered).encode()),  # or an altered ciphertext
    }
    for fragment, text in cases.items():
        f = tmp_path / f"{fragment.replace(' ', '_')}.key"
        f.write_text(text)
        with pytest.raises(BadInput, match=fragment) as ei:
            ck.load_private_key_file(f, b"")
        assert ei.value.where == str(f), fragment
    with pytest.raises(BadInput, match="not found"):
        ck.load_private_key_file(tmp_path / "missing.key", b"")


def _certificate(days_valid: tuple[int, int]) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "llmgate test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now + timedelta(days=days_valid[0]))
            .not_valid_after(now + timedelta(days=days_valid[1])).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def test_public_key_files_garbled_wrong_curve_expired(tmp_path: Path, cosign_made) -> None:  # type: ignore[no-untyped-def]
    key_path, pub_path = cosign_made
    p384 = ck.public_pem(ec.generate_private_key(ec.SECP384R1()).public_key()).decode()
    cases = {
        "not P-256": p384,
        "does not hold a valid SubjectPublicKeyInfo": _pem("PUBLIC KEY", b"\x30\x03\x02\x01\x00"),
        "truncated PEM": pub_path.read_text().strip().rsplit("\n", 1)[0],
        "this is a private key": key_path.read_text(),
        "certificate expired": _certificate((-30, -1)),
        "not valid before": _certificate((1, 30)),
    }
    for fragment, text in cases.items():
        f = tmp_path / f"{fragment.replace(' ', '_')}.pub"
        f.write_text(text)
        with pytest.raises(BadInput, match=fragment) as ei:
            ck.load_public_key_file(f)
        assert ei.value.where == str(f)
    valid = tmp_path / "cert.pem"
    valid.write_text(_certificate((-1, 30)))
    assert ck.load_public_key_file(valid).curve.name == "secp256r1"


def test_password_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    assert ck.password_from_env() is None
    monkeypatch.setenv("COSIGN_PASSWORD", "from-env-pw")
    assert ck.password_from_env() == b"from-env-pw"
    f = tmp_path / "pw"
    f.write_bytes(b"from-file-pw\n")
    assert ck.password_from_env(file=f) == b"from-file-pw"
    from pipeline.redact import redact_text

    assert "from-file-pw" not in redact_text("password was from-file-pw")


def _cli(args: list[str], env: dict[str, str]):  # type: ignore[no-untyped-def]
    import pipeline.cli.keys_cmd  # noqa: F401  (registers `keys`)
    from pipeline.cli.app import app

    return CliRunner().invoke(app, args, env=env)


def test_cli_keys_generate(tmp_path: Path) -> None:
    res = _cli(["keys", "generate", "--out", str(tmp_path)], {"COSIGN_PASSWORD": "cli-pw-1234"})
    assert res.exit_code == 0, res.output
    assert "cli-pw-1234" not in res.output
    key = ck.load_private_key_file(tmp_path / "cosign.key", b"cli-pw-1234")
    assert ck.key_id(key.public) == ck.key_id(ck.load_public_key_file(tmp_path / "cosign.pub"))
    again = _cli(["keys", "generate", "--out", str(tmp_path)], {"COSIGN_PASSWORD": "x"})
    assert again.exit_code == 2 and "refusing to overwrite" in " ".join(again.output.split())
    empty = _cli(["keys", "generate", "--out", str(tmp_path / "e")], {"COSIGN_PASSWORD": ""})
    assert empty.exit_code == 0 and "empty password" in " ".join(empty.output.split())
    ck.load_private_key_file(tmp_path / "e" / "cosign.key", b"")
    assert not os.path.exists(tmp_path / "e" / "cosign.key.tmp")


def test_signing_key_from_the_sign_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import SecretSource, SignConfig
    from pipeline.supplychain.signing import load_signing_key

    files = ck.write_key_pair(tmp_path, b"cfg-pw-5678")
    monkeypatch.setenv("COSIGN_PRIVATE_KEY", files.private_key.read_text())
    monkeypatch.setenv("COSIGN_PASSWORD", "cfg-pw-5678")
    from_env = SignConfig(key=SecretSource(env="COSIGN_PRIVATE_KEY"))  # CI: the key in a secret variable
    assert ck.key_id(load_signing_key(from_env).public) == files.key_id
    assert SignConfig().key.file == ".llmgate/keys/cosign.key"  # the embedded default: the local key pair
    from_file = SignConfig(key=SecretSource(file=str(files.private_key)))
    assert load_signing_key(from_file).source == str(files.private_key)
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    with pytest.raises(BadInput, match="wrong password") as ei:
        load_signing_key(from_file)
    assert ei.value.where == str(files.private_key)
    monkeypatch.delenv("COSIGN_PRIVATE_KEY")
    with pytest.raises(BadInput, match="COSIGN_PRIVATE_KEY is not set"):
        load_signing_key(from_env)

"""The cosign CLI signer: how it calls cosign (argv, environment, secrets), and interoperability.

cosign is not installed on these machines, so two kinds of test live here:

- `refusing_cosign`: a TEST DOUBLE of the binary that records its argv and the secret-bearing
  environment variables and then fails like cosign with no usable signature (exit 1, "Error: no
  signatures found"). It verifies nothing and accepts nothing, so it can only show how cosign is
  called and that a failure is reported as a refusal, never as a pass.
- `test_each_signer_verifies_what_the_other_signs` runs only where a real `cosign` is on PATH
  (marked `cosign`; set LLMGATE_REQUIRE_COSIGN=1 to make its absence a failure, e.g. in the tool
  image). Without cosign, interoperability rests on tests/test_signing.py, which checks the bytes
  the Python signer writes against cosign's documented layout.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from pipeline.adapters.cosign import LEGACY_SIGN_FLAGS, Cosign, CosignCliSigner
from pipeline.adapters.signer import PythonSigner
from pipeline.adapters.tools import find_tool
from pipeline.errors import BadInput, InfraError
from pipeline.supplychain import cosign_keys as ck
from pipeline.supplychain.signing import load_public_key

IMAGE = "127.0.0.1:5000/trust-cli/img@sha256:" + "d" * 64

DOUBLE = r'''#!__PYTHON__
import json, os, sys
if sys.argv[1:2] == ["version"]:
    # `cosign version --json`: sigs.k8s.io/release-utils prints Info as indented JSON with cobra's
    # cmd.Println, which writes to stderr unless the command sets an output.
    sys.stderr.write(json.dumps({"gitVersion": __VERSION__, "gitCommit": "0" * 40, "gitTreeState": "clean",
                                 "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.6",
                                 "compiler": "gc", "platform": "linux/amd64"}, indent=2) + "\n")
    sys.exit(0)
rec = {"argv": sys.argv[1:], "env": {k: os.environ.get(k) for k in ("COSIGN_PRIVATE_KEY", "COSIGN_PASSWORD")}}
with open(__LOG__, "a") as f:
    f.write(json.dumps(rec) + "\n")
sys.stderr.write("Error: no signatures found\n")
sys.exit(1)
'''


def _double(tmp_path: Path, version: str = "v3.0.2") -> tuple[Path, Path]:
    log = tmp_path / "calls.jsonl"
    exe = tmp_path / "cosign"
    exe.write_text(DOUBLE.replace("__PYTHON__", sys.executable).replace("__LOG__", repr(str(log)))
                   .replace("__VERSION__", repr(version)))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe, log


@pytest.fixture
def refusing_cosign(tmp_path: Path) -> tuple[CosignCliSigner, Path]:
    exe, log = _double(tmp_path)
    return CosignCliSigner(Cosign(exe)), log


@pytest.fixture(scope="module")
def fixture_key(fixtures_dir: Path):  # type: ignore[no-untyped-def]
    d = fixtures_dir / "cosign"
    return (ck.load_private_key_file(d / "cosign_generated_encrypted_empty_private.key", b""),
            load_public_key(d / "cosign_generated_encrypted_empty_private.pub"))


def _calls(log: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_sign_passes_the_key_only_through_the_environment(refusing_cosign, fixture_key) -> None:  # type: ignore[no-untyped-def]
    signer, log = refusing_cosign
    key, _ = fixture_key
    with pytest.raises(InfraError, match=r"cosign sign failed \(exit 1\): Error: no signatures found"):
        signer.sign_image(IMAGE, key)
    (call,) = _calls(log)
    assert call["argv"] == ["sign", "--yes", "--key", "env://COSIGN_PRIVATE_KEY", *LEGACY_SIGN_FLAGS,
                            "--allow-http-registry=true", IMAGE]
    # The env holds the same key, re-encrypted in cosign's format under a one-time password.
    pem, password = call["env"]["COSIGN_PRIVATE_KEY"], call["env"]["COSIGN_PASSWORD"]
    assert pem.startswith("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----") and len(password) >= 24
    assert ck.key_id(ck.load_private_key(pem, password, where="env").public) == ck.key_id(key.public)
    assert password not in json.dumps(call["argv"]) and "PRIVATE KEY" not in json.dumps(call["argv"])
    assert signer.calls == [[signer.cosign.binary, *call["argv"]]]


def test_attest_and_verify_argv_and_refusals(refusing_cosign, fixture_key) -> None:  # type: ignore[no-untyped-def]
    signer, log = refusing_cosign
    key, pub = fixture_key
    with pytest.raises(InfraError, match="cosign attest failed"):
        signer.attest(IMAGE, "https://llmgate.dev/verdict/v1", {"decision": "pass"}, key)
    check = signer.verify_image(IMAGE, pub.pem)
    assert not check.verified and check.reason == "cosign verify refused (exit 1): Error: no signatures found"
    att = signer.verify_attestations(IMAGE, "https://llmgate.dev/verdict/v1", pub.pem)
    assert not att.verified and att.reason.startswith("cosign verify-attestation refused (exit 1)")
    attest, verify, verify_att = _calls(log)
    a = attest["argv"]
    assert a[:5] == ["attest", "--yes", "--key", "env://COSIGN_PRIVATE_KEY", "--type"]
    assert a[5] == "https://llmgate.dev/verdict/v1" and a[6] == "--predicate" and a[-1] == IMAGE
    for v in (verify, verify_att):
        assert v["env"] == {"COSIGN_PRIVATE_KEY": None, "COSIGN_PASSWORD": None}  # verification gets no secret
        args = v["argv"]
        assert args[args.index("--key") + 1].endswith("cosign.pub")
        assert "--insecure-ignore-tlog=true" in args and args[-1] == IMAGE
    assert verify_att["argv"][:3] == ["verify-attestation", "--type", "https://llmgate.dev/verdict/v1"]


def test_tags_are_refused_before_cosign_runs(refusing_cosign, fixture_key) -> None:  # type: ignore[no-untyped-def]
    signer, log = refusing_cosign
    with pytest.raises(BadInput, match="by digest"):
        signer.sign_image("127.0.0.1:5000/trust-cli/img:latest", fixture_key[0])
    assert not log.exists()


@pytest.mark.parametrize(("version", "flags"), [
    ("v2.0.0", ["--tlog-upload=false"]),
    ("v2.5.3", ["--tlog-upload=false"]),  # attest had --new-bundle-format (off); sign had neither
    ("v2.6.0", LEGACY_SIGN_FLAGS),  # both flags arrive, off by default
    ("v3.0.2", LEGACY_SIGN_FLAGS),  # both on by default: turned off for the tag layout
])
def test_sign_and_attest_flags_follow_the_cosign_version(tmp_path: Path, fixture_key, version, flags) -> None:  # type: ignore[no-untyped-def]
    exe, log = _double(tmp_path, version)
    signer = CosignCliSigner(Cosign(exe))
    key, _ = fixture_key
    with pytest.raises(InfraError, match="cosign sign failed"):
        signer.sign_image(IMAGE, key)
    with pytest.raises(InfraError, match="cosign attest failed"):
        signer.attest(IMAGE, "https://llmgate.dev/verdict/v1", {"decision": "pass"}, key)
    sign, attest = (c["argv"] for c in _calls(log))
    assert sign == ["sign", "--yes", "--key", "env://COSIGN_PRIVATE_KEY", *flags, "--allow-http-registry=true", IMAGE]
    at = attest.index("--predicate") + 2
    assert attest[at:] == [*flags, "--allow-http-registry=true", IMAGE]
    assert str(signer.cosign.version()) == version


@pytest.mark.parametrize(("version", "message"), [
    ("v1.13.1", "cosign v1.13.1 is older than llmgate supports"),
    ("devel", "cannot tell which cosign this is"),
])
def test_an_old_or_unknown_cosign_is_refused_before_it_signs(tmp_path: Path, fixture_key, monkeypatch, version,  # type: ignore[no-untyped-def]
                                                             message) -> None:
    exe, log = _double(tmp_path, version)
    with pytest.raises(InfraError, match=message) as exc:
        CosignCliSigner(Cosign(exe)).sign_image(IMAGE, fixture_key[0])
    assert "v2.0.0 or later" in (exc.value.hint or "")
    assert not log.exists()  # nothing was signed
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")  # the cosign on PATH, found at start
    with pytest.raises(InfraError, match=message):
        CosignCliSigner.discover()


def test_missing_binary_is_infra_error(tmp_path: Path, fixture_key) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InfraError, match="cosign not found"):
        CosignCliSigner(Cosign(tmp_path / "nope")).verify_image(IMAGE, fixture_key[1].pem)


@pytest.mark.cosign
def test_each_signer_verifies_what_the_other_signs(local_stack, fixture_key) -> None:  # type: ignore[no-untyped-def]
    """Needs a real cosign (v2.x or v3.x) on PATH."""
    found = find_tool("cosign")
    if found is None:
        if os.environ.get("LLMGATE_REQUIRE_COSIGN") == "1":
            pytest.fail("LLMGATE_REQUIRE_COSIGN=1 but no cosign on PATH")
        pytest.skip("no cosign on PATH: interoperability is checked against cosign's layout in test_signing.py")
    from tests.trust_images import trust_repo

    key, pub = fixture_key
    cli, py = CosignCliSigner(Cosign(found)), PythonSigner()
    ptype = "https://llmgate.dev/verdict/v1"
    with trust_repo() as repo:
        by_python, by_cosign = repo.image(), repo.image()
        py.sign_image(by_python, key)
        py.attest(by_python, ptype, {"decision": "pass"}, key)
        assert cli.verify_image(by_python, pub.pem).verified
        assert cli.verify_attestations(by_python, ptype, pub.pem).statements[0]["predicate"] == {"decision": "pass"}
        cli.sign_image(by_cosign, key)
        cli.attest(by_cosign, ptype, {"decision": "blocked"}, key)
        assert py.verify_image(by_cosign, pub.pem).verified
        assert py.verify_attestations(by_cosign, ptype, pub.pem).statements[0]["predicate"] == {"decision": "blocked"}
    py.close()

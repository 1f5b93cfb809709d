"""cosign command lines, environment and secret handling, tested against a TEST DOUBLE of the cosign
binary (tests/cosign_double.py: cosign cannot be installed here), plus the fail-closed path."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from pipeline.adapters.cosign import Cosign, CosignOptions, SigningSecrets
from pipeline.adapters.tools import find_tool
from pipeline.config import PipelineConfig, SecretSource, SignConfig
from pipeline.errors import BadInput
from pipeline.models import Artifact, ImageRef, RunRecord, StageResult, StageStatus
from pipeline.progress import PrintReporter
from pipeline.stages.sign import sign_stage
from pipeline.workspace import Workspace
from tests import cosign_double

DIGEST = "sha256:" + "d" * 64
# Port 9 on loopback is closed: the referrers lookup fails fast and the .sig tag is recorded instead.
REPO = "127.0.0.1:9/llmgate/e-sign-test"
REF = f"{REPO}@{DIGEST}"
PRIVATE_KEY = (
    "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    "eyJrZGYiOnsibmFtZSI6InNjcnlwdCJ9LCJ0ZXN0LWRvdWJsZSI6dHJ1ZX0xMjM0NTY3ODkw\n"
    "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
)
PASSWORD = "correct-horse-battery-e"


@pytest.fixture
def signing_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[PipelineConfig, Workspace]:
    monkeypatch.setenv("LLMGATE_E_COSIGN_KEY", PRIVATE_KEY)
    monkeypatch.setenv("LLMGATE_E_COSIGN_PASSWORD", PASSWORD)
    pub = tmp_path / "cosign.pub"
    pub.write_text("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n")
    cfg = PipelineConfig(sign=SignConfig(key=SecretSource(env="LLMGATE_E_COSIGN_KEY"),
                                         password=SecretSource(env="LLMGATE_E_COSIGN_PASSWORD"),
                                         public_key=str(pub)))
    return cfg, Workspace(tmp_path / "ws")


def _run_with_scan(ws: Workspace, fixtures_dir: Path) -> RunRecord:
    run = RunRecord(image=ImageRef.parse(REF))
    report = ws.run_dir(run.run_id) / "scan" / "trivy.json"
    report.parent.mkdir(parents=True)
    shutil.copy(fixtures_dir / "trivy" / "alpine-310.json", report)
    run.add_stage(StageResult(stage="scan", status=StageStatus.OK,
                              artifacts=[Artifact(name="trivy-report", path=str(report))]))
    return run


def _assert_no_secret_anywhere(texts: list[str]) -> None:
    for text in texts:
        assert PRIVATE_KEY.strip() not in text
        assert "eyJrZGYiOnsibmFtZSI6InNjcnlwdCJ9" not in text
        assert PASSWORD not in text


def test_sign_attest_verify_by_key(signing_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                   fixtures_dir: Path, caplog: pytest.LogCaptureFixture,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cfg, ws = signing_env
    fake = cosign_double.install(tmp_path, monkeypatch)
    run = _run_with_scan(ws, fixtures_dir)
    caplog.set_level(logging.DEBUG)
    res = sign_stage(run, cfg, ws, PrintReporter())
    run.add_stage(res)
    assert res.status is StageStatus.OK and res.metrics == {"verified": 1.0}

    calls = fake.calls()
    assert fake.subcommands() == ["sign", "attest", "verify", "verify-attestation", "triangulate"]
    sign_dir = ws.run_dir(run.run_id) / "sign"
    assert calls[0]["argv"][1:] == [
        "sign", "--yes", "--key", "env://COSIGN_PRIVATE_KEY",
        "--signing-config", str(sign_dir / "signing-config.json"), "--allow-http-registry=true", REF,
    ]
    # Key and password reached cosign only through its environment ...
    assert calls[0]["env"] == {"COSIGN_PRIVATE_KEY": PRIVATE_KEY, "COSIGN_PASSWORD": PASSWORD, "SIGSTORE_ID_TOKEN": None}
    assert calls[1]["env"]["COSIGN_PRIVATE_KEY"] == PRIVATE_KEY
    # ... and verification runs without them.
    assert calls[2]["env"] == {"COSIGN_PRIVATE_KEY": None, "COSIGN_PASSWORD": None, "SIGSTORE_ID_TOKEN": None}
    assert calls[2]["argv"][1:] == ["verify", "--output", "json", "--key", cfg.sign.public_key,
                                    "--insecure-ignore-tlog=true", "--allow-http-registry=true", REF]
    assert json.loads((sign_dir / "signing-config.json").read_text()) == {
        "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json", "rekorTlogConfig": {}, "tsaConfig": {}}

    attest = calls[1]["argv"]
    assert attest[attest.index("--type") + 1] == ("vuln" if find_tool("trivy") else "https://trivy.dev/report/json/v2")
    assert res.details["attestation_verified"] is True
    assert res.details["signature_ref"] == f"{REPO}:sha256-{'d' * 64}.sig"
    assert res.details["signature_ref_kind"] == "tag"

    # No secret on any argv, in the record, the checkpoint, the store, logs or progress output.
    ws.checkpoint(run)
    stored = ws.store.get(run.run_id).model_dump_json()
    texts = [json.dumps(c["argv"]) for c in calls] + [
        run.model_dump_json(), (ws.run_dir(run.run_id) / "run.json").read_text(), stored,
        caplog.text, capsys.readouterr().err,
    ]
    _assert_no_secret_anywhere(texts)


def test_cosign_absent_fails_closed(signing_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cfg, ws = signing_env
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    res = sign_stage(RunRecord(image=ImageRef.parse(REF)), cfg, ws)
    assert res.status is StageStatus.ERROR
    assert "cosign not found" in (res.reason or "")
    assert res.metrics == {"verified": 0.0}


def test_sign_failure_is_error_and_redacted(signing_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cfg, ws = signing_env
    fake = cosign_double.install(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_COSIGN_FAIL", "sign")
    res = sign_stage(RunRecord(image=ImageRef.parse(REF)), cfg, ws)
    assert res.status is StageStatus.ERROR and res.metrics == {"verified": 0.0}
    assert "cosign sign failed (exit 1)" in (res.reason or "")
    assert fake.subcommands() == ["sign"]  # nothing verified after a failed signature
    _assert_no_secret_anywhere([res.model_dump_json()])


def test_signature_for_another_digest_does_not_verify(signing_env, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, ws = signing_env
    cosign_double.install(tmp_path, monkeypatch)
    monkeypatch.setenv("FAKE_COSIGN_WRONG_DIGEST", "1")
    res = sign_stage(RunRecord(image=ImageRef.parse(REF)), cfg, ws)
    assert res.status is StageStatus.FAILED and res.metrics == {"verified": 0.0}
    assert "not " + DIGEST in (res.reason or "")


def test_missing_key_is_bad_input(signing_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    cfg, ws = signing_env
    fake = cosign_double.install(tmp_path, monkeypatch)
    monkeypatch.delenv("LLMGATE_E_COSIGN_KEY")
    with pytest.raises(BadInput) as ei:
        sign_stage(RunRecord(image=ImageRef.parse(REF)), cfg, ws)
    assert ei.value.where == "env LLMGATE_E_COSIGN_KEY"
    assert fake.calls() == []


def test_tags_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = cosign_double.install(tmp_path, monkeypatch)
    cosign = Cosign(fake.path)
    with pytest.raises(BadInput, match="by digest"):
        cosign.sign(f"{REPO}:latest", SigningSecrets(private_key=PRIVATE_KEY), workdir=tmp_path)
    with pytest.raises(BadInput, match="by digest"):
        cosign.verify(f"{REPO}:latest", public_key=tmp_path / "k.pub")
    assert fake.calls() == []


def test_keyless_token_only_in_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = cosign_double.install(tmp_path, monkeypatch)
    token = "eyJhbGciOiJSUzI1NiJ9.e-keyless-test-token.c2ln"
    cosign = Cosign(fake.path, CosignOptions(offline=False))
    call = cosign.sign(REF, SigningSecrets(identity_token=token), workdir=tmp_path, keyless=True)
    assert call.ok
    rec = fake.calls()[0]
    assert rec["argv"][1:] == ["sign", "--yes", REF]
    assert rec["env"]["SIGSTORE_ID_TOKEN"] == token and rec["env"]["COSIGN_PRIVATE_KEY"] is None
    assert token not in json.dumps(rec["argv"])
    ident = {"certificate-identity": "https://github.com/acme/llmgate/.github/workflows/release.yml@refs/heads/main",
             "certificate-oidc-issuer": "https://token.actions.githubusercontent.com"}
    result = cosign.verify(REF, identity=ident)
    assert result.verified
    assert fake.calls()[1]["argv"][1:] == ["verify", "--output", "json",
                                           "--certificate-identity", ident["certificate-identity"],
                                           "--certificate-oidc-issuer", ident["certificate-oidc-issuer"], REF]
    with pytest.raises(BadInput, match="keyless signing needs"):
        Cosign(fake.path).sign(REF, SigningSecrets(identity_token=token), workdir=tmp_path, keyless=True)


def test_unsigned_digest_does_not_verify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = cosign_double.install(tmp_path, monkeypatch)
    pub = tmp_path / "k.pub"
    pub.write_text("pub")
    result = Cosign(fake.path).verify(REF, public_key=pub)
    assert not result.verified and "exit 10" in result.reason and "no signatures found" in result.reason
    with pytest.raises(BadInput, match="public key"):
        Cosign(fake.path).verify(REF, public_key=tmp_path / "missing.pub")

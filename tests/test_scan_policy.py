"""The scan policy on every real trivy report, with verdicts derived by hand from the fixture files.

Default policy: max 0 CRITICAL and 0 HIGH vulnerabilities, 0 CRITICAL/HIGH misconfigurations,
any secret fails, unfixed vulnerabilities count."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.gates.sections import SectionContext
from pipeline.models import GateStatus, ImageRef, RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.scan import ScanDetails
from pipeline.supplychain.ignore_file import load_ignore_file
from pipeline.supplychain.scan_policy import (
    SCAN_SECTION,
    ScanPolicy,
    SeverityLimits,
    check_report,
    evaluate,
    load_ignores,
    parse_scanners,
    policy_from_gates,
    proven_scanners,
    relaxations,
    scan_gate_verdict,
    unproven_scanners,
)
from pipeline.supplychain.trivy_report import load_report

TODAY = date(2026, 6, 1)

# file -> (passes?, blocking as (kind, id, pkg, installed, fixed), counts c/h/m/l/u, secrets, misconfigs)
DEFAULT: dict[str, tuple[bool, list[tuple[str, str, str | None, str | None, str | None]], tuple[int, ...], int, int]] = {
    "debian-buster.json": (
        False, [("vulnerability", "CVE-2019-18224", "libidn2-0", "2.0.5-1", "2.0.5-1+deb10u1")], (1, 0, 0, 1, 0), 0, 0),
    "debian-buster-ignore-unfixed.json": (
        False, [("vulnerability", "CVE-2019-18224", "libidn2-0", "2.0.5-1", "2.0.5-1+deb10u1")], (1, 0, 0, 0, 0), 0, 0),
    "alpine-310.json": (True, [], (0, 0, 4, 0, 0), 0, 0),
    "alpine-310.sarif.json": (True, [], (0, 0, 4, 0, 0), 0, 0),
    "centos-7.json": (True, [], (0, 0, 1, 2, 0), 0, 0),
    "ubuntu-1804.json": (True, [], (0, 0, 4, 1, 0), 0, 0),
    "pip.json": (False, [("vulnerability", "CVE-2019-14806", "Werkzeug", "0.11", "0.15.3")], (0, 1, 1, 0, 0), 0, 0),
    "secrets.json": (
        False, [("secret", "aws-access-key-id", None, None, None), ("secret", "mysecret", None, None, None)],
        (0, 0, 0, 0, 0), 2, 0),
    "dockerfile.json": (False, [("misconfig", "DS-0002", None, None, None)], (0, 0, 0, 0, 0), 0, 1),
}


def _report(fixtures_dir: Path, name: str):  # type: ignore[no-untyped-def]
    return load_report(fixtures_dir / "trivy" / name)


def test_every_fixture_has_a_verdict(fixtures_dir: Path) -> None:
    assert {p.name for p in (fixtures_dir / "trivy").glob("*.json")} == set(DEFAULT)


@pytest.mark.parametrize("name", sorted(DEFAULT))
def test_default_policy(fixtures_dir: Path, name: str) -> None:
    passes, blocking, counts, secrets, misconfigs = DEFAULT[name]
    v = evaluate(_report(fixtures_dir, name), ScanPolicy(), today=TODAY)
    assert v.passed is passes
    assert [(b.kind, b.id, b.pkg, b.installed, b.fixed) for b in v.blocking] == blocking
    assert tuple(v.counts[k] for k in ("critical", "high", "medium", "low", "unknown")) == counts
    assert (v.secrets, v.misconfigs) == (secrets, misconfigs)
    m = v.metrics()
    assert m["blocking"] == len(blocking) and m["critical"] == counts[0] and m["secrets"] == secrets


def test_blocking_finding_names_package_and_versions(fixtures_dir: Path) -> None:
    v = evaluate(_report(fixtures_dir, "debian-buster.json"), ScanPolicy(), today=TODAY)
    text = v.summary()
    assert "CVE-2019-18224 in libidn2-0 2.0.5-1 (fixed in 2.0.5-1+deb10u1)" in text
    assert "1 CRITICAL vulnerabilities > max 0" in text


def test_secret_lines_are_named(fixtures_dir: Path) -> None:
    v = evaluate(_report(fixtures_dir, "secrets.json"), ScanPolicy(max=SeverityLimits()), today=TODAY)
    assert not v.passed
    assert [b.render() for b in v.blocking] == [
        "CRITICAL secret aws-access-key-id at deploy.sh:3: any secret finding fails",
        "HIGH secret mysecret at deploy.sh:7: any secret finding fails",
    ]


@pytest.mark.parametrize(
    ("name", "passes", "blocked_pkgs"),
    [
        ("alpine-310.json", False, ["libcrypto1.1", "libcrypto1.1", "libssl1.1", "libssl1.1"]),  # 4 MEDIUM > 3
        ("ubuntu-1804.json", False, ["e2fsprogs", "libcom-err2", "libext2fs2", "libss2"]),  # 4 MEDIUM > 3
        ("centos-7.json", True, []),  # 1 MEDIUM
        ("pip.json", False, ["Werkzeug"]),  # the HIGH still blocks; 1 MEDIUM is within 3
    ],
)
def test_medium_limit(fixtures_dir: Path, name: str, passes: bool, blocked_pkgs: list[str]) -> None:
    policy = ScanPolicy(max=SeverityLimits(critical=0, high=0, medium=3))
    v = evaluate(_report(fixtures_dir, name), policy, today=TODAY)
    assert v.passed is passes and [b.pkg for b in v.blocking] == blocked_pkgs


@pytest.mark.parametrize(
    ("name", "ignore_unfixed", "low", "passes"),
    [
        # bash (no fix) is the only LOW in debian-buster and ubuntu; centos has a fixed LOW openssl-libs too.
        ("debian-buster.json", False, 1, False),
        ("debian-buster.json", True, 0, False),  # the fixed CRITICAL still blocks
        ("ubuntu-1804.json", False, 1, False),
        ("ubuntu-1804.json", True, 0, True),
        ("centos-7.json", False, 2, False),
        ("centos-7.json", True, 1, False),  # CVE-2018-0734 has a fix
    ],
)
def test_ignore_unfixed(fixtures_dir: Path, name: str, ignore_unfixed: bool, low: int, passes: bool) -> None:
    policy = ScanPolicy(max=SeverityLimits(critical=0, high=0, low=0), ignore_unfixed=ignore_unfixed)
    v = evaluate(_report(fixtures_dir, name), policy, today=TODAY)
    assert v.counts["low"] == low and v.passed is passes
    if ignore_unfixed:
        assert [i.by for i in v.ignored] == ["ignore-unfixed"]


def test_ignore_unfixed_matches_trivys_own_flag(fixtures_dir: Path) -> None:
    """Our ignore-unfixed on the full debian report leaves what trivy --ignore-unfixed printed."""
    policy = ScanPolicy(ignore_unfixed=True)
    ours = evaluate(_report(fixtures_dir, "debian-buster.json"), policy, today=TODAY)
    theirs = evaluate(_report(fixtures_dir, "debian-buster-ignore-unfixed.json"), ScanPolicy(), today=TODAY)
    assert ours.counts == theirs.counts
    assert [b.id for b in ours.blocking] == [b.id for b in theirs.blocking]


def _ignore(tmp_path: Path, text: str) -> Path:
    p = tmp_path / ".trivyignore.yaml"
    p.write_text(text)
    return p


def test_ignore_entry_in_force_unblocks(fixtures_dir: Path, tmp_path: Path) -> None:
    p = _ignore(tmp_path, """\
vulnerabilities:
  - id: CVE-2019-18224
    statement: libidn2 is not reachable from the server
    expired_at: 2026-06-01
""")
    entries = load_ignore_file(p)
    v = evaluate(_report(fixtures_dir, "debian-buster-ignore-unfixed.json"), ScanPolicy(), ignores=entries, today=TODAY)
    assert v.passed and v.counts["critical"] == 0
    assert [i.by for i in v.ignored] == [f"{p}:2"]


def test_expired_entry_fails_and_says_which(fixtures_dir: Path, tmp_path: Path) -> None:
    p = _ignore(tmp_path, """\
vulnerabilities:
  - id: CVE-2019-1549
    statement: accepted until the base image moves
    expired_at: 2027-01-01
  - id: CVE-2019-18224
    reason: libidn2 is not reachable from the server
    expires: 2026-05-31
""")
    entries = load_ignore_file(p)
    v = evaluate(_report(fixtures_dir, "debian-buster-ignore-unfixed.json"), ScanPolicy(), ignores=entries, today=TODAY)
    assert not v.passed
    assert v.problems == [
        f"ignore entry CVE-2019-18224 ({p}:5) expired on 2026-05-31 (reason was: libidn2 is not reachable from the server)"
    ]
    # An expired acceptance no longer suppresses the finding either.
    assert [b.id for b in v.blocking] == ["CVE-2019-18224"]
    assert v.unused_ignores == [f"{p}:2"]
    assert v.metrics()["blocking"] == 2


def test_expired_entry_fails_even_when_nothing_matches(fixtures_dir: Path, tmp_path: Path) -> None:
    p = _ignore(tmp_path, "vulnerabilities:\n  - {id: CVE-1999-0001, statement: old, expired_at: 2020-01-01}\n")
    v = evaluate(_report(fixtures_dir, "alpine-310.json"), ScanPolicy(), ignores=load_ignore_file(p), today=TODAY)
    assert not v.passed and "CVE-1999-0001" in v.problems[0] and v.blocking == []


def test_ignore_paths_and_purls_restrict(fixtures_dir: Path, tmp_path: Path) -> None:
    p = _ignore(tmp_path, """\
vulnerabilities:
  - id: CVE-2019-1549
    statement: only libssl
    expired_at: 2027-01-01
    purls: ["pkg:apk/alpine/libssl1.1"]
""")
    policy = ScanPolicy(max=SeverityLimits(medium=0))
    v = evaluate(_report(fixtures_dir, "alpine-310.json"), policy, ignores=load_ignore_file(p), today=TODAY)
    assert [(i.id, i.pkg) for i in v.ignored] == [("CVE-2019-1549", "libssl1.1")]
    assert v.counts["medium"] == 3


def test_misconfig_ignore_accepts_avd_prefix(fixtures_dir: Path, tmp_path: Path) -> None:
    p = _ignore(tmp_path, """\
misconfigurations:
  - id: AVD-DS-0002
    statement: fixture repo, not our image
    expired_at: 2027-01-01
    paths: ["Dockerfile"]
""")
    v = evaluate(_report(fixtures_dir, "dockerfile.json"), ScanPolicy(), ignores=load_ignore_file(p), today=TODAY)
    assert v.passed and v.misconfigs == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("vulnerabilities:\n  - id: CVE-1\n    expired_at: 2027-01-01\n", "has no reason"),
        ("vulnerabilities:\n  - id: CVE-1\n    statement: x\n", "has no expiry"),
        ("vulnerabilities:\n  - id: CVE-1\n    statement: x\n    expired_at: soon\n", "must be a date"),
        ("secrets:\n  - id: aws-access-key-id\n    statement: x\n    expired_at: 2027-01-01\n", "cannot be ignored"),
        ("licenses:\n  - id: GPL-3.0\n", "unknown section"),
        ("vulnerabilities:\n  - id: CVE-1\n    statment: x\n", "unknown key"),
        ("vulnerabilities: [\n", "not valid YAML"),
    ],
)
def test_bad_ignore_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInput, match=message) as ei:
        load_ignore_file(_ignore(tmp_path, text))
    assert str(tmp_path) in (ei.value.where or "")


def test_scanner_not_run_is_never_zero(fixtures_dir: Path) -> None:
    report = _report(fixtures_dir, "dockerfile.json")  # no vulnerabilities in it
    why = "vulnerability DB not available"
    v = evaluate(report, ScanPolicy(misconfig_max=SeverityLimits()), not_run={"vuln": why}, today=TODAY)
    assert not v.passed and v.problems == [f"vuln scanner not run: {why}"]
    assert v.counts["critical"] is None and v.metrics()["critical"] is None and v.metrics()["misconfigs"] == 1
    assert set(v.raw_counts.values()) == {None}  # before ignores too: unknown, not zero
    scanned = evaluate(_report(fixtures_dir, "pip.json"), ScanPolicy(ignore_unfixed=True), today=TODAY)
    assert scanned.raw_counts["high"] == 1 and None not in scanned.raw_counts.values()
    relaxed = ScanPolicy(misconfig_max=SeverityLimits(), require_scanners=["secret", "misconfig"])
    assert evaluate(report, relaxed, not_run={"vuln": why}, today=TODAY).passed
    # misconfigurations: the limit is a maximum, so exactly as many as allowed passes and one more fails
    at_limit = ScanPolicy(misconfig_max=SeverityLimits(high=1), require_scanners=["secret", "misconfig"])
    assert evaluate(report, at_limit, not_run={"vuln": why}, today=TODAY).passed
    over = ScanPolicy(misconfig_max=SeverityLimits(high=0), require_scanners=["secret", "misconfig"])
    v = evaluate(report, over, not_run={"vuln": why}, today=TODAY)
    assert not v.passed and [b.id for b in v.blocking] == ["DS-0002"]


def test_policy_from_gates_yaml() -> None:
    p = policy_from_gates({"scan": {"max": {"critical": 0, "high": 2}, "ignore_unfixed": True}})
    assert p.max.high == 2 and p.max.medium is None and p.ignore_unfixed
    assert policy_from_gates({}) == ScanPolicy()
    with pytest.raises(BadInput) as ei:
        policy_from_gates({"scan": {"max": {"critcal": 0}}})
    assert ei.value.where == "gates.yaml: scan" and "critcal" in ei.value.message
    with pytest.raises(BadInput):
        policy_from_gates({"scan": {"max": {"high": -1}}})
    # through the gate engine's section plug-in: the error names the policy file's scan section once
    with pytest.raises(BadInput) as ei:
        SCAN_SECTION.validate({"max": {"critcal": 0}}, "gates.prod.yaml: scan")
    assert ei.value.where == "gates.prod.yaml: scan"
    with pytest.raises(BadInput) as ei:  # a folder whose name holds ": scan" is still the folder
        SCAN_SECTION.validate({"max": {"critcal": 0}}, "odd: scan dir/gates.yaml: scan")
    assert ei.value.where == "odd: scan dir/gates.yaml: scan"


def test_load_ignores_default_file_may_be_absent(tmp_path: Path) -> None:
    assert load_ignores(ScanPolicy(), base=tmp_path) == []
    # the policy's ignore file, found beside the policy, is in force; a policy without one has no ignores
    _ignore(tmp_path, "vulnerabilities:\n  - id: CVE-1\n    statement: unreachable\n    expired_at: 2030-01-01\n")
    assert [e.id for e in load_ignores(ScanPolicy(ignore_file=".trivyignore.yaml"), base=tmp_path)] == ["CVE-1"]
    assert load_ignores(ScanPolicy(ignore_file=None), base=tmp_path) == []
    with pytest.raises(BadInput, match="not found"):
        load_ignores(ScanPolicy(), tmp_path / "explicit.yaml")


def test_gate_verdict_from_run(fixtures_dir: Path) -> None:
    run = RunRecord(image=ImageRef.parse("127.0.0.1:5000/llmgate/server@sha256:" + "a" * 64))
    assert scan_gate_verdict(run, ScanPolicy()).status is GateStatus.NOT_RUN
    report = _report(fixtures_dir, "pip.json")
    details = ScanDetails(target="img", verdict=evaluate(report, ScanPolicy(), today=TODAY), report=report,
                          scanners=["vuln", "secret", "misconfig"])
    run.add_stage(StageResult(stage=Stage.SCAN, status=StageStatus.OK, details=details))
    g = scan_gate_verdict(run, ScanPolicy(), today=TODAY)
    assert g.status is GateStatus.FAIL and g.value == 1.0 and "Werkzeug 0.11 (fixed in 0.15.3)" in g.reason
    # at most 0 blocking findings, and a gate no policy can make optional
    assert (g.name, g.source, g.threshold, g.direction, g.required) == ("scan", "scan.blocking", 0.0, "max", True)
    assert scan_gate_verdict(run, ScanPolicy(max=SeverityLimits(high=1)), today=TODAY).status is GateStatus.PASS
    ctx = SectionContext(baseline=None, policy_dir=Path("/nonexistent"))
    assert [v.status for v in SCAN_SECTION.evaluate(ScanPolicy(), run, ctx)] == [GateStatus.FAIL]
    # a scan stage that failed part-way: its findings are not a verdict, whatever it recorded
    run.add_stage(StageResult(stage=Stage.SCAN, status=StageStatus.FAILED, reason="trivy crashed", details=details))
    g = scan_gate_verdict(run, ScanPolicy(max=SeverityLimits(high=1)), today=TODAY)
    assert g.status is GateStatus.NOT_RUN and g.reason == "scan stage failed: trivy crashed"
    run.add_stage(StageResult(stage=Stage.SCAN, status=StageStatus.SKIPPED, reason="not run: trivy not found"))
    g = scan_gate_verdict(run, ScanPolicy())
    assert g.status is GateStatus.NOT_RUN and "trivy not found" in g.reason


# -- a report from a file fails closed (issue 19) --------------------------------------------------

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("text", ['{"SchemaVersion": 2}', '{"SchemaVersion": 2, "Results": []}'])
def test_report_proving_no_scanner_is_refused(tmp_path: Path, text: str) -> None:
    report = _write(tmp_path, "trivy.json", text)
    v = check_report(report, REPO / "gates.yaml", scanners=None, today=TODAY)
    assert not v.passed
    assert [p.split(":")[0] for p in v.problems] == ["vuln scanner not run", "secret scanner not run",
                                                      "misconfig scanner not run"]
    assert "holds no vuln finding" in v.problems[0] and "--scanners" in v.problems[0]
    assert v.counts["critical"] is None and v.secrets is None  # unknown, never zero
    # told which scanners ran, the empty report is a clean pass
    assert check_report(report, REPO / "gates.yaml", scanners=["vuln", "secret", "misconfig"], today=TODAY).passed


def test_report_without_the_vulnerability_scanner(fixtures_dir: Path) -> None:
    """Like the demo's own report: misconfiguration findings, no vulnerability scanner."""
    report = fixtures_dir / "trivy" / "dockerfile.json"
    relaxed = ScanPolicy(misconfig_max=SeverityLimits(), require_scanners=["vuln", "misconfig"])
    v = check_report(report, relaxed, scanners=None, today=TODAY)
    assert not v.passed and v.problems[0].startswith("vuln scanner not run: not proven")
    assert check_report(report, relaxed, scanners=["vuln"], today=TODAY).passed  # misconfig proven by its finding
    v = check_report(report, relaxed, scanners=["misconfig"], today=TODAY)
    assert not v.passed and "not among the scanners stated to have run (misconfig)" in v.problems[0]
    # the local policy requires secret and misconfig: the secret scanner is not proven by this report
    v = check_report(report, REPO / "gates.local.yaml", scanners=None, today=TODAY)
    assert any(p.startswith("secret scanner not run") for p in v.problems)
    assert not any(p.startswith("vuln") for p in v.problems)


def test_findings_prove_their_scanners(fixtures_dir: Path) -> None:
    assert proven_scanners(_report(fixtures_dir, "pip.json")) == {"vuln"}
    assert proven_scanners(_report(fixtures_dir, "secrets.json")) == {"secret"}
    assert proven_scanners(_report(fixtures_dir, "dockerfile.json")) == {"misconfig"}
    # each required scanner is judged on its own: one proven does not vouch for the ones after it
    pip = _report(fixtures_dir, "pip.json")
    assert sorted(unproven_scanners(pip, ScanPolicy(), stated=None)) == ["misconfig", "secret"]
    assert sorted(unproven_scanners(pip, ScanPolicy(), stated=["secret"])) == ["misconfig"]


def test_scanner_names_are_checked() -> None:
    assert parse_scanners([" vuln", "secret ", "vuln"]) == ["vuln", "secret"]
    with pytest.raises(BadInput) as exc:
        parse_scanners(["vuln", "licence"])
    assert exc.value.where == "--scanners" and "licence" in exc.value.message
    with pytest.raises(BadInput):
        parse_scanners([])


def test_relaxations_name_every_way_a_child_accepts_more() -> None:
    parent = ScanPolicy()
    child = ScanPolicy(max=SeverityLimits(critical=1), ignore_unfixed=True, ignore_file="other.yaml",
                       misconfig_max=SeverityLimits(critical=0, high=0, medium=2), require_scanners=["secret"])
    fields = [f for f, _ in relaxations(parent, child)]
    assert fields == ["max", "max", "ignore_unfixed", "ignore_file", "require_scanners"]
    msgs = [m for _, m in relaxations(parent, child)]
    assert "max.critical may only get stricter (0 -> 1)" in msgs and "max.high may only get stricter (0 -> None)" in msgs
    assert "require_scanners cannot drop vuln, misconfig" in msgs
    assert relaxations(parent, ScanPolicy(max=SeverityLimits(critical=0, high=0, low=5))) == []  # a new limit tightens

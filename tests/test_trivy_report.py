"""Parsing of real trivy reports (../shared/fixtures/trivy) and of broken ones.

Expected findings were read by hand from each fixture file, not computed by the parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import BadInput
from pipeline.supplychain.trivy_report import Severity, load_report, parse_report

C, H, M, L, U = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.UNKNOWN

# file -> list of (id, pkg, installed, fixed, severity, has_fix), in file order
VULNS: dict[str, list[tuple[str, str, str, str | None, Severity, bool]]] = {
    "debian-buster.json": [
        ("CVE-2019-18276", "bash", "5.0-4", None, L, False),
        ("CVE-2019-18224", "libidn2-0", "2.0.5-1", "2.0.5-1+deb10u1", C, True),
    ],
    "debian-buster-ignore-unfixed.json": [
        ("CVE-2019-18224", "libidn2-0", "2.0.5-1", "2.0.5-1+deb10u1", C, True),
    ],
    "alpine-310.json": [
        ("CVE-2019-1549", "libcrypto1.1", "1.1.1c-r0", "1.1.1d-r0", M, True),
        ("CVE-2019-1551", "libcrypto1.1", "1.1.1c-r0", "1.1.1d-r2", M, True),
        ("CVE-2019-1549", "libssl1.1", "1.1.1c-r0", "1.1.1d-r0", M, True),
        ("CVE-2019-1551", "libssl1.1", "1.1.1c-r0", "1.1.1d-r2", M, True),
    ],
    "alpine-310.sarif.json": [
        ("CVE-2019-1549", "libcrypto1.1", "1.1.1c-r0", "1.1.1d-r0", M, True),
        ("CVE-2019-1551", "libcrypto1.1", "1.1.1c-r0", "1.1.1d-r2", M, True),
        ("CVE-2019-1549", "libssl1.1", "1.1.1c-r0", "1.1.1d-r0", M, True),
        ("CVE-2019-1551", "libssl1.1", "1.1.1c-r0", "1.1.1d-r2", M, True),
    ],
    "centos-7.json": [
        ("CVE-2019-18276", "bash", "4.2.46-31.el7", None, L, False),  # Status will_not_fix
        ("CVE-2019-1559", "openssl-libs", "1:1.0.2k-16.el7", "1:1.0.2k-19.el7", M, True),
        ("CVE-2018-0734", "openssl-libs", "1:1.0.2k-16.el7", "1:1.0.2k-19.el7", L, True),
    ],
    "ubuntu-1804.json": [
        ("CVE-2019-18276", "bash", "4.4.18-2ubuntu1.2", None, L, False),
        ("CVE-2019-5094", "e2fsprogs", "1.44.1-1ubuntu1.1", "1.44.1-1ubuntu1.2", M, True),
        ("CVE-2019-5094", "libcom-err2", "1.44.1-1ubuntu1.1", "1.44.1-1ubuntu1.2", M, True),
        ("CVE-2019-5094", "libext2fs2", "1.44.1-1ubuntu1.1", "1.44.1-1ubuntu1.2", M, True),
        ("CVE-2019-5094", "libss2", "1.44.1-1ubuntu1.1", "1.44.1-1ubuntu1.2", M, True),
    ],
    "pip.json": [
        ("CVE-2019-14806", "Werkzeug", "0.11", "0.15.3", H, True),
        ("CVE-2020-28724", "Werkzeug", "0.11", "0.11.6", M, True),
    ],
    "secrets.json": [],
    "dockerfile.json": [],
}


def test_every_fixture_is_covered(fixtures_dir: Path) -> None:
    on_disk = {p.name for p in (fixtures_dir / "trivy").glob("*.json")}
    assert on_disk == set(VULNS), "a new fixture needs hand-derived expectations here"


@pytest.mark.parametrize("name", sorted(VULNS))
def test_vulnerabilities_as_read_by_hand(fixtures_dir: Path, name: str) -> None:
    report = load_report(fixtures_dir / "trivy" / name)
    got = [(v.id, v.pkg, v.installed, v.fixed, v.severity, v.has_fix) for v in report.vulnerabilities]
    assert got == VULNS[name]
    assert report.format == ("sarif" if name.endswith(".sarif.json") else "json")


def test_statuses_and_targets(fixtures_dir: Path) -> None:
    centos = load_report(fixtures_dir / "trivy" / "centos-7.json")
    assert [v.status for v in centos.vulnerabilities] == ["will_not_fix", "fixed", "fixed"]
    assert centos.vulnerabilities[0].target == "testdata/fixtures/images/centos-7.tar.gz (centos 7.6.1810)"
    deb = load_report(fixtures_dir / "trivy" / "debian-buster.json")
    assert deb.schema_version == 2 and deb.artifact_type == "container_image"
    assert deb.vulnerabilities[1].purl == "pkg:deb/debian/libidn2-0@2.0.5-1?arch=amd64&distro=debian-10.1"


def test_secrets_keep_location_never_content(fixtures_dir: Path) -> None:
    path = fixtures_dir / "trivy" / "secrets.json"
    report = load_report(path)
    got = [(s.rule, s.severity, s.target, s.line) for s in report.secrets]
    assert got == [("aws-access-key-id", C, "deploy.sh", 3), ("mysecret", H, "deploy.sh", 7)]
    # The fixture's context lines carry a GitHub token verbatim; the parsed model must not.
    assert "ghp_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ" in path.read_text()
    dumped = report.model_dump_json()
    assert "ghp_" not in dumped and "AWS_ACCESS_KEY_ID" not in dumped and "echo" not in dumped


def test_dockerfile_misconfiguration(fixtures_dir: Path) -> None:
    report = load_report(fixtures_dir / "trivy" / "dockerfile.json")
    assert len(report.misconfigs) == 1
    m = report.misconfigs[0]
    assert (m.id, m.severity, m.target, m.type) == ("DS-0002", H, "Dockerfile", "Dockerfile Security Check")
    assert m.message == "Specify at least 1 USER command in Dockerfile with non-root user as argument"
    assert m.title == "Image user should not be 'root'"


# --- broken reports --------------------------------------------------------------------------------
def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_truncated_json_names_file_and_line(fixtures_dir: Path, tmp_path: Path) -> None:
    text = (fixtures_dir / "trivy" / "debian-buster.json").read_text()
    p = _write(tmp_path, "cut.json", text[: len(text) // 2])
    with pytest.raises(BadInput) as ei:
        load_report(p)
    assert str(p) in ei.value.where and "truncated" in ei.value.message


def test_unknown_schema_version(fixtures_dir: Path, tmp_path: Path) -> None:
    data = json.loads((fixtures_dir / "trivy" / "alpine-310.json").read_text())
    data["SchemaVersion"] = 3
    p = _write(tmp_path, "v3.json", json.dumps(data))
    with pytest.raises(BadInput) as ei:
        load_report(p)
    assert ei.value.where == f"{p}: SchemaVersion" and "unsupported trivy SchemaVersion 3" in ei.value.message


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["Results"][0]["Vulnerabilities"][1].__setitem__("Severity", "SEVERE"),
         "Results[0].Vulnerabilities[1].Severity"),
        (lambda d: d["Results"][0]["Vulnerabilities"][0].__setitem__("InstalledVersion", 5),
         "Results[0].Vulnerabilities[0].InstalledVersion"),
        (lambda d: d["Results"][0].__setitem__("Vulnerabilities", {"a": 1}), "Results[0].Vulnerabilities"),
        (lambda d: d["Results"][0]["Vulnerabilities"][0].pop("PkgName"), "Results[0].Vulnerabilities[0].PkgName"),
        (lambda d: d.__setitem__("SchemaVersion", "2"), "SchemaVersion"),
    ],
)
def test_wrong_types_name_the_field(fixtures_dir: Path, tmp_path: Path, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads((fixtures_dir / "trivy" / "debian-buster.json").read_text())
    mutate(data)
    p = _write(tmp_path, "bad.json", json.dumps(data))
    with pytest.raises(BadInput) as ei:
        load_report(p)
    assert ei.value.where == f"{p}: {field}"


def test_not_a_report(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no SchemaVersion"):
        parse_report({"Results": []}, source="x.json")
    with pytest.raises(BadInput, match="JSON object"):
        parse_report([1, 2], source="x.json")
    with pytest.raises(BadInput, match="not found"):
        load_report(tmp_path / "missing.json")


def test_sarif_from_another_tool_is_refused(fixtures_dir: Path) -> None:
    data = json.loads((fixtures_dir / "trivy" / "alpine-310.sarif.json").read_text())
    data["runs"][0]["tool"]["driver"]["name"] = "Grype"
    with pytest.raises(BadInput, match="not Trivy"):
        parse_report(data, source="g.sarif")


def test_empty_results_is_a_clean_report() -> None:
    r = parse_report({"SchemaVersion": 2, "ArtifactName": "x", "Results": None}, source="clean.json")
    assert r.vulnerabilities == [] and r.secrets == [] and r.misconfigs == []
    assert r.vuln_counts() == {s: 0 for s in Severity} and U in r.vuln_counts()

"""Policy loading: every malformed or contradictory policy is refused, naming the key, before any stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import BadInput
from pipeline.gates.policy import load_policy

REPO = Path(__file__).resolve().parents[1]


def write(tmp: Path, name: str, data: object) -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def problems(tmp_path: Path, data: object) -> str:
    with pytest.raises(BadInput) as exc:
        load_policy(write(tmp_path, "gates.yaml", data))
    assert exc.value.where and exc.value.where.endswith("gates.yaml")
    return exc.value.message


def gate(**kw: object) -> dict[str, object]:
    return {"name": "g", "source": "eval.correctness_mean", "threshold": 0.5, **kw}


def test_shipped_policies_load() -> None:
    prod = load_policy(REPO / "gates.yaml")
    assert {
        "ttft_p99",
        "tpot_p50",
        "error_rate",
        "goodput",
        "load_time_p95",
        "readiness_honest",
        "correctness",
        "refusal",
        "signature",
    } <= {g.name for g in prod.gates}
    assert all(g.required for g in prod.gates) and "scan" in prod.sections and prod.section_meta["scan"].required
    assert prod.gate("ttft_p99").threshold == 0.5 and prod.gate("ttft_p99").direction == "max"
    assert prod.gate("correctness").resolved_test == "bootstrap"
    assert prod.gate("refusal").resolved_test == "mcnemar"
    assert prod.gate("ttft_p99").resolved_test == "mannwhitney"
    local = load_policy(REPO / "gates.local.yaml")
    sig = local.gate("signature")
    assert not sig.required and "cosign" in (sig.reason or "") and sig.overrides["required"] == [None, False]
    # locally the scan stays required; only the vulnerability scanner (no DB offline) may be missing
    assert local.section_meta["scan"].required and "vulnerability DB" in (local.section_meta["scan"].reason or "")
    assert local.sections["scan"].require_scanners == ["secret", "misconfig"]
    assert prod.sections["scan"].require_scanners == ["vuln", "secret", "misconfig"]
    assert local.gate("ttft_p99").overrides == {"threshold": [0.5, 3.0]}
    assert local.gate("error_rate").overrides == {} and local.gate("error_rate").required
    assert local.files[1].endswith("gates.yaml") and local.sha256 != prod.sha256


def test_unknown_metric_names_key(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(name="ttft", source="bench.ttft_p99", threshold=0.5)]})
    assert "gates.ttft.source" in msg and "unknown metric 'ttft_p99'" in msg and "ttft_p99_s" in msg


def test_unknown_stage_and_dimension(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(source="benchmark.ttft_p99_s"), gate(name="h", source="items:tone")]})
    assert "gates.g.source: unknown stage 'benchmark'" in msg
    assert "gates.h.source: unknown item dimension 'tone'" in msg


def test_threshold_of_wrong_type(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(name="ttft_p99", source="bench.ttft_p99_s", threshold="500ms")]})
    assert "gates.ttft_p99.threshold" in msg and "500ms" in msg
    msg = problems(tmp_path, {"gates": [gate(threshold=True)]})
    assert "gates.g.threshold" in msg


def test_margin_without_baseline_data(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(name="err", source="bench.error_rate", threshold=0.01, margin=0.01)]})
    assert "gates.err.margin" in msg and "baseline data" in msg


def test_index_path_when_name_unusable(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(), {"source": "eval.correctness_mean", "margin": -1}]})
    assert "gates[1].name" in msg and "gates[1].margin" in msg


def test_contradictions(tmp_path: Path) -> None:
    msg = problems(
        tmp_path,
        {
            "gates": [
                gate(name="a", source="bench.ttft_p99_s", threshold=0.5, direction="min"),
                gate(name="b", key=True, required=False, reason="x"),
                gate(name="c", required=False),
                gate(name="d", margin=0.02, test="mcnemar"),
                gate(name="e", source="bench.tpot_p50_s", threshold=0.05, margin=0.1, test="bootstrap"),
                gate(name="f", source="bench.error_rate", threshold=0.01, min_agreement=0.8),
                {"name": "h", "source": "eval.correctness_mean"},
                gate(name="i", compare="items:correctness"),
                gate(name="j", margin=0.02, compare="bench.ttft_p99_s"),
            ]
        },
    )
    assert "gates.a.direction: 'min' contradicts bench.ttft_p99_s" in msg
    assert "gates.b.key: a key gate cannot be optional" in msg
    assert "gates.c.reason" in msg
    assert "gates.d.test: mcnemar needs a 0/1 dimension" in msg
    assert "gates.e.test: bootstrap needs paired per-item scores" in msg
    assert "gates.f.min_agreement" in msg
    assert "gates.h: checks nothing" in msg
    assert "gates.i.compare: compare without a margin" in msg
    assert "gates.j.compare" in msg


def test_unknown_keys_duplicates_and_nothing_required(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(treshold=1)], "alpah": 0.1})
    assert "gates.g.treshold: unknown key" in msg and "alpah: unknown key" in msg
    msg = problems(tmp_path, {"gates": [gate(), gate()]})
    assert "gates[1].name: duplicate gate name 'g'" in msg
    msg = problems(tmp_path, {"gates": [gate(required=False, reason="demo")]})
    assert "no required gate" in msg
    msg = problems(tmp_path, {"gates": [gate()], "resamples": 500})
    assert "resamples" in msg


def test_reserved_section_without_validator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.gates import sections

    monkeypatch.setitem(sections.RESERVED, "attest", "a future owner")
    msg = problems(tmp_path, {"gates": [gate()], "attest": {"identity": "x"}})
    assert "attest: no validator registered" in msg
    msg = problems(tmp_path, {"gates": [gate()], "attestation": {}})
    assert "attestation: unknown key" in msg


def test_scan_section_validated_by_its_owner(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate()], "scan": {"max": {"critical": "none"}}})
    assert "scan" in msg and "critical" in msg
    msg = problems(tmp_path, {"gates": [gate()], "scan": {"required": False}})
    assert "scan.reason" in msg


def test_extends_merge_by_name_requires_reason(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", {"gates": [gate(name="q"), gate(name="sig", source="sign.verified", threshold=1)]})
    child = write(tmp_path, "local.yaml", {"extends": "base.yaml", "gates": [{"name": "sig", "required": False}]})
    with pytest.raises(BadInput) as exc:
        load_policy(child)
    assert "gates.sig.reason" in exc.value.message and "from" in exc.value.message
    child = write(
        tmp_path,
        "local.yaml",
        {
            "extends": "base.yaml",
            "alpha": 0.1,
            "gates": [{"name": "sig", "required": False, "reason": "no cosign"}, gate(name="extra", threshold=0.2)],
        },
    )
    pol = load_policy(child)
    assert [g.name for g in pol.gates] == ["q", "sig", "extra"]
    assert pol.alpha == 0.1 and not pol.gate("sig").required and pol.gate("q").required
    assert pol.gate("sig").origin.endswith("local.yaml") and "base.yaml" in pol.gate("sig").origin


def test_extends_cycle_and_missing_parent(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"extends": "b.yaml", "gates": [gate()]})
    write(tmp_path, "b.yaml", {"extends": "a.yaml", "gates": [gate()]})
    with pytest.raises(BadInput, match="cycle"):
        load_policy(tmp_path / "a.yaml")
    write(tmp_path, "c.yaml", {"extends": "nope.yaml", "gates": [gate()]})
    with pytest.raises(BadInput, match="not found"):
        load_policy(tmp_path / "c.yaml")


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "gates.yaml", "gates:\n  - name: a\n    source: [unclosed\n")
    with pytest.raises(BadInput) as exc:
        load_policy(p)
    assert exc.value.where and "gates.yaml:" in exc.value.where


def test_policy_check_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "check", str(REPO / "gates.local.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "signature" in ok.output and "optional" in ok.output
    bad = write(tmp_path, "bad.yaml", {"gates": [gate(source="bench.nope")]})
    res = runner.invoke(app, ["policy", "check", str(bad)])
    assert res.exit_code == 2
    assert "gates.g.source" in res.output

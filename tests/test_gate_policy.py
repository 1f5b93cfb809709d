"""Policy loading: every malformed, contradictory or hostile policy is refused, naming the key, before any stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.errors import BadInput
from pipeline.gates.policy import gate_sources, load_policy
from pipeline.gates.sections import SectionPlugin
from pipeline.models import Stage
from pipeline.supplychain.gate_sections import SECTIONS

REPO = Path(__file__).resolve().parents[1]


def write(tmp: Path, name: str, data: object) -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return p


def load(path: Path):  # type: ignore[no-untyped-def]
    return load_policy(path, sections=SECTIONS)


def problems(tmp_path: Path, data: object, name: str = "gates.yaml") -> str:
    with pytest.raises(BadInput) as exc:
        load(write(tmp_path, name, data))
    assert exc.value.where and exc.value.where.endswith(name)
    return exc.value.message


def gate(**kw: object) -> dict[str, object]:
    return {"name": "g", "source": "eval.correctness_mean", "threshold": 0.5, **kw}


def test_shipped_policies_load() -> None:
    prod = load(REPO / "gates.yaml")
    assert {
        "ttft_p99", "tpot_p50", "error_rate", "goodput", "load_time_p95", "readiness_honest", "correctness",
        "refusal", "signature", "no_secret_in_image", "manifests",
    } <= {g.name for g in prod.gates}
    assert all(g.required for g in prod.gates) and "scan" in prod.sections and prod.section_meta["scan"].required
    assert {g.name for g in prod.gates if g.locked} == {"no_secret_in_image", "signature", "manifests"}
    assert prod.section_meta["scan"].locked and prod.section_meta["scan"].relaxable == ["require_scanners"]
    assert prod.gate("ttft_p99").threshold == 0.5 and prod.gate("ttft_p99").direction == "max"
    assert prod.gate("correctness").resolved_test == "bootstrap"
    # doubt never passes: every gate the data cannot judge is inconclusive unless a policy makes it fail
    assert {g.inconclusive_action for g in prod.gates} == {"inconclusive"}
    assert prod.gate("refusal").resolved_test == "mcnemar" and prod.gate("refusal").key
    assert prod.gate("under_refusal").key and prod.gate("under_refusal").subset == "refuse"
    assert prod.gate("ttft_p99").resolved_test == "quantile" and prod.gate("ttft_p50").resolved_test == "mannwhitney"
    assert prod.gate("correctness").category_margin == 0.25 and prod.gate("refusal").category_margin == 0.3
    assert prod.drift_allowance == 0.05 and prod.min_n == 30
    local = load(REPO / "gates.local.yaml")
    # signing works on the embedded default: the local job requires the signature again (and cannot not)
    sig = local.gate("signature")
    assert sig.required and sig.key and sig.locked and sig.overrides == {}
    # locally the scan stays required; only the vulnerability scanner (no DB offline) may be missing
    assert local.section_meta["scan"].required and "vulnerability DB" in (local.section_meta["scan"].reason or "")
    assert local.sections["scan"].require_scanners == ["secret", "misconfig"]  # type: ignore[attr-defined]
    assert local.section_overrides["scan"] == {"require_scanners": [["vuln", "secret", "misconfig"], ["secret", "misconfig"]]}
    assert prod.sections["scan"].require_scanners == ["vuln", "secret", "misconfig"]  # type: ignore[attr-defined]
    assert local.gate("ttft_p99").overrides == {"threshold": [0.5, 3.0], "margin": [0.25, None], "expected": [None, 1.0]}
    assert local.gate("error_rate").overrides == {"expected": [None, 0.001]} and local.gate("error_rate").threshold == 0.01
    assert local.gate("correctness").underpowered_action == "inconclusive"
    assert local.files[1].endswith("gates.yaml") and local.sha256 != prod.sha256


def test_gate_sources_name_the_stage_feeding_each_gate() -> None:
    prod = load(REPO / "gates.yaml")
    rows = gate_sources(prod, SECTIONS)
    assert ("ttft_p99", Stage.BENCH, "ttft_p99_s", True) in rows
    assert ("ttft_p99", Stage.BENCH, "samples:ttft_s", True) in rows
    assert ("correctness", Stage.EVAL, "items:correctness", True) in rows
    assert ("no_secret_in_image", Stage.LEAK, "leaks", True) in rows
    assert ("scan", Stage.SCAN, "report", True) in rows
    assert ("reuse", Stage.BENCH, "reused_from", True) in rows
    assert {r.gate for r in rows} == {g.name for g in prod.gates} | {"scan", "reuse"}


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


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("threshold: .inf", "gates.g.threshold"),
        ("threshold: -.inf", "gates.g.threshold"),
        ("threshold: .nan", "gates.g.threshold"),
        ("threshold: 1.0e+999", "gates.g.threshold"),
        ("threshold: 0.5\n    margin: .inf", "gates.g.margin"),
        ("threshold: 0.5\n    margin: .nan", "gates.g.margin"),
    ],
)
def test_thresholds_and_margins_must_be_finite(tmp_path: Path, text: str, key: str) -> None:
    msg = problems(tmp_path, f"gates:\n  - name: g\n    source: eval.correctness_mean\n    {text}\n")
    assert f"{key}: must be a finite number" in msg


def test_top_level_settings_must_be_finite(tmp_path: Path) -> None:
    msg = problems(tmp_path, "alpha: .nan\ndrift_allowance: .inf\ngates:\n  - {name: g, source: leak.leaks, threshold: 0}\n")
    assert "alpha" in msg and "drift_allowance" in msg


def test_duplicate_keys_are_refused_with_key_and_line(tmp_path: Path) -> None:
    text = "gates:\n  - name: g\n    source: eval.correctness_mean\n    threshold: 0.01\n    threshold: 0.99\n"
    with pytest.raises(BadInput) as exc:
        load(write(tmp_path, "gates.yaml", text))
    assert "duplicate key 'threshold' (first at line 4)" in exc.value.message
    assert exc.value.where == f"{tmp_path / 'gates.yaml'}:5"
    with pytest.raises(BadInput, match="duplicate key 'gates'"):
        load(write(tmp_path, "gates.yaml", "gates: []\nalpha: 0.05\ngates: []\n"))
    # YAML merge keys are not duplicates: an explicit key overrides a merged one, as YAML defines
    ok = write(tmp_path, "ok.yaml", "base: &b {source: leak.leaks, threshold: 0}\n"
                                    "gates:\n  - <<: *b\n    name: g\n    threshold: 1\n")
    with pytest.raises(BadInput, match="base: unknown key"):  # the anchor's holder is not a policy key
        load(ok)


def test_not_utf8_and_directory_name_the_path(tmp_path: Path) -> None:
    p = tmp_path / "latin1.yaml"
    p.write_bytes("gates: []  # r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(BadInput) as exc:
        load(p)
    assert exc.value.where == str(p) and "not UTF-8" in exc.value.message and "0xe9" in exc.value.message
    with pytest.raises(BadInput) as exc:
        load(tmp_path)
    assert exc.value.where == str(tmp_path) and "directory" in exc.value.message
    with pytest.raises(BadInput) as exc:
        load(tmp_path / "missing.yaml")
    assert "not found" in exc.value.message


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
                gate(name="b", key=True, required=False, reason="kept for the dashboard only"),
                gate(name="c", required=False),
                gate(name="d", margin=0.02, test="mcnemar"),
                gate(name="e", source="bench.tpot_p50_s", threshold=0.05, margin=0.1, test="bootstrap"),
                gate(name="f", source="bench.error_rate", threshold=0.01, min_agreement=0.8),
                {"name": "h", "source": "eval.correctness_mean"},
                gate(name="i", compare="items:correctness"),
                gate(name="j", margin=0.02, compare="bench.ttft_p99_s"),
                gate(name="k", margin=0.02, drift_allowance=0.1),
                gate(name="l", on_underpowered="inconclusive"),
                gate(name="m", locked=True, required=False, reason="kept for the dashboard only"),
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
    assert "gates.k.drift_allowance: a drift allowance applies to latency samples only" in msg
    assert "gates.l.on_underpowered: on_underpowered without a margin" in msg
    assert "gates.m.locked: a locked gate cannot be optional" in msg


@pytest.mark.parametrize("reason", ["y", "because", "see docs", "  no cosign   "])
def test_a_reason_must_be_a_sentence(tmp_path: Path, reason: str) -> None:
    msg = problems(tmp_path, {"gates": [gate(), gate(name="o", required=False, reason=reason)]})
    assert "gates.o.reason" in msg and "sentence" in msg


def test_unknown_keys_duplicates_and_nothing_required(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate(treshold=1)], "alpah": 0.1})
    assert "gates.g.treshold: unknown key" in msg and "alpah: unknown key" in msg
    msg = problems(tmp_path, {"gates": [gate(), gate()]})
    assert "gates[1].name: duplicate gate name 'g'" in msg
    msg = problems(tmp_path, {"gates": [gate(required=False, reason="a demonstration policy only")]})
    assert "no required gate" in msg
    msg = problems(tmp_path, {"gates": [gate()], "resamples": 500})
    assert "resamples" in msg


def test_reserved_section_without_its_plugin(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate()], "manifests": {"max_violations": 0}})
    assert "manifests: no section plug-in was given" in msg and "manifests stage" in msg
    msg = problems(tmp_path, {"gates": [gate()], "attestation": {}})
    assert "attestation: unknown key" in msg
    # without the supply-chain plug-ins, the scan section of the shipped policy is refused, not skipped
    with pytest.raises(BadInput, match="scan: no section plug-in was given"):
        load_policy(REPO / "gates.yaml", sections=())


def test_scan_section_validated_by_its_owner(tmp_path: Path) -> None:
    msg = problems(tmp_path, {"gates": [gate()], "scan": {"max": {"critical": "none"}}})
    assert "scan" in msg and "critical" in msg
    msg = problems(tmp_path, {"gates": [gate()], "scan": {"required": False}})
    assert "scan.reason" in msg
    msg = problems(tmp_path, {"gates": [gate()], "scan": {"relaxable": ["max"]}})
    assert "scan.relaxable: relaxable names exceptions to a lock" in msg
    msg = problems(tmp_path, {"gates": [gate()], "scan": {"locked": True, "relaxable": ["maximum"]}})
    assert "scan.relaxable: not fields of the section: maximum" in msg


def test_extends_merge_by_name_requires_reason(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", {"gates": [gate(name="q"), gate(name="sig", source="sign.verified", threshold=1)]})
    child = write(tmp_path, "local.yaml", {"extends": "base.yaml", "gates": [{"name": "sig", "required": False}]})
    with pytest.raises(BadInput) as exc:
        load(child)
    assert "gates.sig.reason" in exc.value.message and "from" in exc.value.message
    child = write(
        tmp_path,
        "local.yaml",
        {
            "extends": "base.yaml",
            "alpha": 0.1,
            "gates": [{"name": "sig", "required": False, "reason": "no cosign in this sandbox"},
                      gate(name="extra", threshold=0.2)],
        },
    )
    pol = load(child)
    assert [g.name for g in pol.gates] == ["q", "sig", "extra"]
    assert pol.alpha == 0.1 and not pol.gate("sig").required and pol.gate("q").required
    assert pol.gate("sig").origin.endswith("local.yaml") and "base.yaml" in pol.gate("sig").origin


def test_child_cannot_relax_a_locked_gate(tmp_path: Path) -> None:
    """The repro of issue 19: a child making no_secret_in_image optional with reason "y"."""
    write(tmp_path, "gates.yaml", (REPO / "gates.yaml").read_text())
    child = {"extends": "gates.yaml", "gates": [{"name": "no_secret_in_image", "required": False, "reason": "y"}]}
    msg = problems(tmp_path, child, "child.yaml")
    assert "gates.no_secret_in_image.reason" in msg and "got 'y'" in msg
    assert "gates.no_secret_in_image: locked in" in msg and "required cannot be turned off" in msg
    assert "key cannot be turned off" not in msg  # still key (the child did not touch it) ... but:
    assert "a key gate cannot be optional" in msg
    why = "the sandbox has no registry to read layers from"
    for override, expected in [
        ({"required": False, "key": False}, "required cannot be turned off"),
        ({"key": False}, "key cannot be turned off"),
        ({"locked": False}, "locked cannot be turned off"),
        ({"threshold": 3}, "threshold may only get stricter (0 -> 3, max)"),
        ({"threshold": None, "margin": 0.5, "compare": "items:correctness"}, "threshold cannot be removed"),
        ({"source": "scan.secrets"}, "source cannot change"),
        ({"on_inconclusive": "warn"}, "'warn' is not accepted: a gate the data could not judge never passes"),
        ({"threshold": 1.5, "direction": "max"}, "threshold may only get stricter"),
    ]:
        msg = problems(tmp_path, {"extends": "gates.yaml",
                                  "gates": [{"name": "no_secret_in_image", **override, "reason": why}]}, "child.yaml")
        assert expected in msg, (override, msg)
    # tightening is allowed and shown
    write(tmp_path, "base.yaml", {"gates": [gate(name="q", threshold=0.5, margin=0.05, locked=True)]})
    ok = load(write(tmp_path, "tight.yaml", {"extends": "base.yaml", "gates": [
        {"name": "q", "threshold": 0.6, "margin": 0.02, "alpha": 0.1, "on_inconclusive": "fail",
         "reason": "this service needs a stricter correctness floor"}]}))
    assert ok.gate("q").threshold == 0.6 and ok.gate("q").overrides["margin"] == [0.05, 0.02]
    for override, expected in [
        ({"threshold": 0.4}, "threshold may only get stricter (0.5 -> 0.4, min)"),
        ({"margin": 0.1}, "margin may only shrink"),
        ({"alpha": 0.01}, "alpha may only grow"),
        ({"min_agreement": 0.5}, "min_agreement cannot change"),
    ]:
        msg = problems(tmp_path, {"extends": "base.yaml", "gates": [{"name": "q", **override, "reason": why}]},
                       "child.yaml")
        assert expected in msg, (override, msg)
    msg = problems(tmp_path, {"extends": "base.yaml", "alpha": 0.01, "gates": []}, "child.yaml")
    assert "alpha: a parent locks a compared gate; alpha may only grow" in msg


def test_child_cannot_relax_a_locked_section(tmp_path: Path) -> None:
    write(tmp_path, "gates.yaml", (REPO / "gates.yaml").read_text())
    why = "this sandbox cannot run the full scan"
    for override, expected in [
        ({"required": False}, "required cannot be turned off"),
        ({"max": {"critical": 0, "high": 5}}, "max.high may only get stricter (0 -> 5)"),
        ({"max": {"critical": 0}}, "max.high may only get stricter (0 -> None)"),
        ({"ignore_unfixed": True}, "ignore_unfixed cannot be turned on"),
        ({"ignore_file": "/dev/null"}, "ignore_file cannot change"),
        ({"locked": False}, "locked cannot be turned off"),
        ({"relaxable": ["max"]}, "relaxable is set by the policy that locks the section"),
    ]:
        msg = problems(tmp_path, {"extends": "gates.yaml", "scan": {**override, "reason": why}}, "child.yaml")
        assert f"scan: locked in {tmp_path / 'gates.yaml'}: {expected}" in msg, (override, msg)
    msg = problems(tmp_path, {"extends": "gates.yaml", "scan": {"require_scanners": ["secret"]}}, "child.yaml")
    assert "scan.reason: overrides require_scanners" in msg  # relaxable, but a change still says why
    pol = load(write(tmp_path, "ok.yaml", {"extends": "gates.yaml", "scan": {
        "require_scanners": ["secret", "misconfig"], "max": {"critical": 0, "high": 0, "medium": 10}, "reason": why}}))
    assert pol.sections["scan"].max.medium == 10  # type: ignore[attr-defined]  # a new limit is tightening


def test_locked_section_without_tightening_rule_refuses_any_change(tmp_path: Path) -> None:
    from pydantic import BaseModel, ConfigDict

    class Canary(BaseModel):
        model_config = ConfigDict(extra="forbid")
        limit: int = 0

    canary = SectionPlugin("canary", Stage.BENCH, "samples", lambda raw, where: Canary.model_validate(raw or {}),
                           lambda s, r, c: [])
    write(tmp_path, "base.yaml", {"gates": [gate()], "canary": {"limit": 1, "locked": True}})
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "canary": {"limit": 0, "reason": "stricter here, on purpose"}})
    with pytest.raises(BadInput, match="limit cannot change"):
        load_policy(child, sections=(canary,))


def test_extends_cycle_and_missing_parent(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", {"extends": "b.yaml", "gates": [gate()]})
    write(tmp_path, "b.yaml", {"extends": "a.yaml", "gates": [gate()]})
    with pytest.raises(BadInput, match="cycle"):
        load(tmp_path / "a.yaml")
    write(tmp_path, "c.yaml", {"extends": "nope.yaml", "gates": [gate()]})
    with pytest.raises(BadInput, match="not found"):
        load(tmp_path / "c.yaml")


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    p = write(tmp_path, "gates.yaml", "gates:\n  - name: a\n    source: [unclosed\n")
    with pytest.raises(BadInput) as exc:
        load(p)
    assert exc.value.where and "gates.yaml:" in exc.value.where


def test_policy_check_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["policy", "check", str(REPO / "gates.local.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "signature" in ok.output
    bad = write(tmp_path, "bad.yaml", {"gates": [gate(source="bench.nope")]})
    res = runner.invoke(app, ["policy", "check", str(bad)])
    assert res.exit_code == 2
    assert "gates.g.source" in res.output

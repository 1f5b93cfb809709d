from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipeline.config import PipelineConfig, config_hash, load_config
from pipeline.errors import BadInput
from pipeline.models import SCHEMA_VERSION, ImageRef, RunRecord, StageResult, StageStatus
from pipeline.redact import redact_text, register_secret


def test_image_ref_parse_with_port_tag_and_digest():
    d = "sha256:" + "a" * 64
    ref = ImageRef.parse(f"127.0.0.1:5000/llmgate/server:v1@{d}")
    assert (ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000/llmgate/server", "v1", d)
    assert ref.by_digest == f"127.0.0.1:5000/llmgate/server@{d}"
    assert ImageRef.parse("127.0.0.1:5000/x").tag is None


def test_image_ref_rejects_non_digest():
    with pytest.raises(ValidationError):
        ImageRef(repository="r", digest="sha256:short")
    with pytest.raises(BadInput):
        ImageRef(repository="r", tag="latest").by_digest  # noqa: B018


def test_require_stage_names_the_missing_stage():
    run = RunRecord(image=ImageRef(repository="r"))
    with pytest.raises(BadInput, match="'boot'"):
        run.require_stage("boot")
    run.add_stage(StageResult(stage="boot", status=StageStatus.SKIPPED, reason="not run: docker not found"))
    with pytest.raises(BadInput, match="skipped"):
        run.require_stage("boot")
    assert run.metric("boot.load_time_s") is None


def test_config_unknown_key_is_named(tmp_path):
    p = tmp_path / "llmgate.yaml"
    p.write_text("build:\n  dockerfle: x\n")
    with pytest.raises(BadInput) as exc:
        load_config(p)
    assert "build.dockerfle" in str(exc.value) and str(p) in str(exc.value)


def test_config_yaml_error_has_line(tmp_path):
    p = tmp_path / "llmgate.yaml"
    p.write_text("build:\n  tag: [unclosed\n")
    with pytest.raises(BadInput) as exc:
        load_config(p)
    assert f"{p}:" in str(exc.value)


def test_config_hash_changes_with_policy_file(tmp_path):
    cfg = PipelineConfig()
    f = tmp_path / "gates.yaml"
    f.write_text("gates: []\n")
    h1 = config_hash(cfg, f)
    f.write_text("gates: [{}]\n")
    assert config_hash(cfg, f) != h1
    assert config_hash(cfg, f) == config_hash(PipelineConfig(), f)


def test_redaction_of_known_values_and_patterns():
    register_secret("hunter2-very-secret")
    text = "pw hunter2-very-secret; Authorization: Bearer abc.def.ghi; https://bob:pa55w0rd@host/x; ghp_" + "a" * 36
    red = redact_text(text)
    for leaked in ("hunter2-very-secret", "abc.def.ghi", "pa55w0rd", "ghp_" + "a" * 36):
        assert leaked not in red
    assert "Authorization: Bearer [REDACTED]" in red and "https://bob:[REDACTED]@host" in red


def test_a_schema_1_record_keeps_its_free_form_payload_as_legacy_data():
    """A record stored before payloads were typed still loads: its dict payload is kept, never read as a model."""
    stored = {"schema_version": 1, "run_id": "r1", "image": {"repository": "reg/app", "tag": "v1"},
              "stages": {"scan": {"stage": "scan", "status": "ok", "metrics": {"blocking": 0.0},
                                  "details": {"report": "trivy.json", "critical": 0}}}}
    run = RunRecord.model_validate(stored)
    scan = run.stages["scan"]
    assert run.schema_version == SCHEMA_VERSION
    assert scan.details is None and scan.legacy_details == {"report": "trivy.json", "critical": 0}
    assert scan.metrics == {"blocking": 0.0}


_VERDICT = {"name": "correctness", "source": "eval.correctness_mean", "status": "fail", "value": 0.3}
_GATE = {"stage": "gate", "status": "ok",
         "details": {"stage": "gate", "policy_name": "gates.yaml", "policy_files": ["gates.yaml"],
                     "policy_sha256": "a" * 64, "baseline": {"kind": "first_release"}, "verdicts": [_VERDICT],
                     "decision": "blocked", "reason": "correctness failed"}}


def test_the_verdicts_are_stored_once_in_the_gate_payload():
    """A schema-2 record carried every verdict twice (`gates` and the gate payload); it still loads, reads
    the payload's, and is written back with the one copy."""
    stored = {"schema_version": 2, "run_id": "r2", "image": {"repository": "reg/app", "tag": "v1"},
              "stages": {"gate": _GATE}, "gates": [_VERDICT], "decision": "blocked"}
    run = RunRecord.model_validate(stored)
    assert [(g.name, g.status.value, g.value) for g in run.gates] == [("correctness", "fail", 0.3)]
    written = json.loads(run.model_dump_json())
    assert "gates" not in written and written["schema_version"] == SCHEMA_VERSION == 3
    assert written["stages"]["gate"]["details"]["verdicts"][0]["name"] == "correctness"
    assert RunRecord.model_validate(written).gates == run.gates
    with pytest.raises(ValidationError):  # a second copy is no longer part of the record
        RunRecord.model_validate({**written, "gates": [_VERDICT]})


def test_a_schema_1_record_keeps_its_verdicts_when_its_gate_payload_is_untyped():
    stored = {"schema_version": 1, "run_id": "r1", "image": {"repository": "reg/app", "tag": "v1"},
              "stages": {"gate": {**_GATE, "details": {"free": "form"}}}, "gates": [_VERDICT]}
    run = RunRecord.model_validate(stored)
    assert run.stages["gate"].details is None and [g.name for g in run.gates] == ["correctness"]
    assert RunRecord.model_validate_json(run.model_dump_json()).gates == run.gates


def test_the_latest_gate_stage_is_the_runs_verdicts():
    run = RunRecord(run_id="r3", image=ImageRef(repository="reg/app", tag="v1"))
    assert run.gates == ()
    first = StageResult.model_validate(_GATE)
    run.add_stage(first)
    again = first.model_copy(deep=True)
    assert again.details is not None
    again.details.verdicts[0].status = "pass"  # type: ignore[union-attr]
    run.add_stage(again)
    assert [g.status.value for g in run.gates] == ["pass"]

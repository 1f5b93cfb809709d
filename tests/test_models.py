from __future__ import annotations

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

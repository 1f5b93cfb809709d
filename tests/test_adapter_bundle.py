"""The adapters bundle is the one place outside systems are built: the signer every stage signs and
verifies with comes from it, each cosign call bounded by `sign.timeout_s`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters import cosign
from pipeline.adapters.bundle import Adapters
from pipeline.adapters.signer import PythonSigner
from pipeline.config import PipelineConfig
from pipeline.stages.context import StageContext
from pipeline.workspace import Workspace


def test_without_cosign_the_python_signer_signs_and_is_built_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(cosign.Cosign, "discover", classmethod(lambda cls, options=None: None))
    bundle = Adapters()
    signer = bundle.signing(30.0)
    assert isinstance(signer, PythonSigner)
    assert bundle.signing(30.0) is signer


def test_every_stage_gets_the_bundles_signer_bounded_by_sign_timeout(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch):
    seen: list[cosign.CosignOptions | None] = []

    def discover(cls, options=None):  # type: ignore[no-untyped-def]
        seen.append(options)  # and no cosign on PATH here: what matters is the bound it would run under

    monkeypatch.setattr(cosign.Cosign, "discover", classmethod(discover))
    cfg = PipelineConfig()
    cfg.sign.timeout_s = 7.0
    ctx = StageContext(cfg=cfg, ws=Workspace(tmp_path / "ws"))
    assert isinstance(ctx.signer(), PythonSigner)
    assert [o.timeout_s for o in seen if o is not None] == [7.0]

    double = PythonSigner()  # a test's signer goes in the bundle, and every stage then uses it
    assert StageContext(cfg=cfg, ws=Workspace(tmp_path / "ws2"), adapters=Adapters(signer=double)).signer() is double

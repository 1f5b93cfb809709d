"""The typed contracts between packages: one payload model per stage, loaded back as that model.

`StageDetails` is the discriminated union a `StageResult` carries; the `stage` field of each payload
is the discriminator. Read a payload with `StageResult.payload(Model)` / `RunRecord.payload(Model)`,
never by string keys.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pipeline.schemas.attest import AttestDetails
from pipeline.schemas.base import Payload
from pipeline.schemas.bench import BenchDetails
from pipeline.schemas.boot import BootDetails
from pipeline.schemas.build import BuildDetails
from pipeline.schemas.eval import EvalDetails
from pipeline.schemas.gate import GateDetails
from pipeline.schemas.leak import LeakReport
from pipeline.schemas.manifests import ManifestReport
from pipeline.schemas.promote import PromoteDetails
from pipeline.schemas.scan import ScanDetails
from pipeline.schemas.sign import SignDetails

StageDetails = Annotated[
    BuildDetails
    | LeakReport
    | ScanDetails
    | SignDetails
    | BootDetails
    | BenchDetails
    | EvalDetails
    | ManifestReport
    | GateDetails
    | AttestDetails
    | PromoteDetails,
    Field(discriminator="stage"),
]

__all__ = [
    "AttestDetails",
    "BenchDetails",
    "BootDetails",
    "BuildDetails",
    "EvalDetails",
    "GateDetails",
    "LeakReport",
    "ManifestReport",
    "Payload",
    "PromoteDetails",
    "ScanDetails",
    "SignDetails",
    "StageDetails",
]

"""The typed contracts between packages: one details model per stage, loaded back as that model.

`StageDetails` is the discriminated union a `StageResult` carries, derived from the models registered
by their `stage` field (`Details.union`): a stage's model joins it by being imported here. Read a stage's
details with `StageResult.details_as(Model)` / `RunRecord.details_as(Model)`, never by string keys.
"""

from __future__ import annotations

from pipeline.schemas.attest import AttestDetails
from pipeline.schemas.base import Details
from pipeline.schemas.bench import BenchDetails
from pipeline.schemas.boot import BootDetails
from pipeline.schemas.build import BuildDetails
from pipeline.schemas.eval import EvalDetails
from pipeline.schemas.gate import GateDetails
from pipeline.schemas.leak import LeakDetails
from pipeline.schemas.manifests import ManifestsDetails
from pipeline.schemas.promote import PromoteDetails
from pipeline.schemas.scan import ScanDetails
from pipeline.schemas.sign import SignDetails

StageDetails = Details.union()

__all__ = [
    "AttestDetails",
    "BenchDetails",
    "BootDetails",
    "BuildDetails",
    "Details",
    "EvalDetails",
    "GateDetails",
    "LeakDetails",
    "ManifestsDetails",
    "PromoteDetails",
    "ScanDetails",
    "SignDetails",
    "StageDetails",
]

"""Stage `sign`: sign the image digest and read the signature back (metric `sign.verified`, 1/0).

The work is `pipeline.supplychain.signing.sign_image`; this stage only loads the keys the config
names and picks the signer (the cosign CLI when on PATH, else the Python signer). A missing or
unreadable key is bad input (exit 2), never a skipped pass.
"""

from __future__ import annotations

from pipeline.errors import names_its_limit
from pipeline.metrics import Metric
from pipeline.models import RunRecord, Stage, StageResult, StageStatus
from pipeline.schemas.sign import SignDetails
from pipeline.stages.context import StageContext
from pipeline.stages.spec import EVIDENCE, StageSpec
from pipeline.supplychain.signing import load_public_key, load_signing_key, sign_image


def sign_stage(run: RunRecord, ctx: StageContext) -> StageResult:
    sc = ctx.cfg.sign
    key = load_signing_key(sc)
    public_key = load_public_key(sc.public_key)
    signer = ctx.signer()
    ctx.reporter.step(f"sign: {run.image.by_digest} ({signer.name} signer)")
    with names_its_limit("sign.timeout_s", sc.timeout_s):
        details = sign_image(run.image, key, public_key, signer=signer)
    ctx.reporter.step(f"sign: {details.verify_reason}")
    return StageResult(
        stage=Stage.SIGN,
        status=StageStatus.OK if details.verified else StageStatus.FAILED,
        reason=None if details.verified else details.verify_reason,
        metrics={"verified": 1.0 if details.verified else 0.0},
        details=details,
    ).finish()


# The help of `llmgate sign`.
HELP = (
    "Sign the run's image digest and verify the signature. Exit 0 verified, 1 not, 2 bad key file.\n"
    "\n"
    "Example: llmgate sign --run 3f2a9c1b7d4e"
)

SPEC = StageSpec(
    help=HELP,
    stage=Stage.SIGN, evidence=True, run=sign_stage, details=SignDetails, credentials=("registry_password", *EVIDENCE),
    metrics=(Metric("verified", "bool", "higher"),),
    group="supply-chain", check=lambda r: r.metrics.get("verified") == 1.0,
    doc="sign the image digest and verify the signature",
)

"""How far a scorer can be trusted: the contract between the calibration records (evals) and the gates.

A scorer earns trust by the lower end of its agreement with human labels, measured on labelled data it
was not trained on; the point estimate alone says nothing about how sure that figure is.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ScorerTrust(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    scorer_id: str
    agreement: float = Field(ge=0, le=1)  # point estimate on the labelled rows below
    lower: float = Field(ge=0, le=1)  # lower end of its 95 % Wilson interval: what a gate trusts
    upper: float = Field(ge=0, le=1)
    n: int = Field(ge=0)  # distinct labelled rows it was measured on
    held_out: bool  # measured only on rows the scorer was not trained or tuned on

    @property
    def error_rate(self) -> float:
        """The largest share of wrong verdicts the labels leave plausible (1 - lower)."""
        return 1.0 - self.lower

"""The base every stage's details derive from.

A stage's details are the typed part of its `StageResult` (`StageResult.details`) that only that stage
writes: the `stage` field is the discriminator that lets the record load each back as its own model
(never as a dict read by string keys), and `extra="forbid"` makes details from another version fail
loudly instead of losing fields silently. One name throughout: the field `details`, the base `Details`,
the models `<Stage>Details`, the union `StageDetails`, the reader `details_as(Model)`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Details(BaseModel):
    model_config = ConfigDict(extra="forbid")

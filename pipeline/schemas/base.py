"""The base every stage payload derives from.

A payload is the typed part of a `StageResult` that only its stage writes: the `stage` field is the
discriminator that lets the record load each payload back as its own model (never as a dict read by
string keys), and `extra="forbid"` makes a payload from another version fail loudly instead of
losing fields silently.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")

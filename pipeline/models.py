"""The one data model that flows through every stage.

A `RunRecord` describes the evaluation of exactly one image digest. Stages append typed
`StageResult`s, the gate engine appends `GateVerdict`s, and the record is written to the store
after every stage so that a crash never loses what was already measured.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import BadInput
from pipeline.schemas import BuildDetails, Details, GateDetails, PromoteDetails, StageDetails
from pipeline.schemas.facts import Fact
from pipeline.schemas.gate import Approval, GateStatus, GateVerdict  # noqa: F401  (part of the record's API)

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
# A run id names a directory under the work dir and a row in the store: letters, digits, '_' and '-'
# only, so no id can climb out of the work dir or collide with a path.
# \Z, not $: `$` also matches before a final newline, and "b7\n" is neither a run id nor a tag.
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")
RUN_ID_GRAMMAR = "a letter or digit, then letters, digits, '_' and '-'; at most 64; no path separators"
# 2: stage payloads are typed (`StageResult.details` is a `StageDetails`); the record names its release.
# 3: the verdicts are stored once, in the gate stage's payload (`RunRecord.gates` reads them there).
SCHEMA_VERSION = 3

P = TypeVar("P", bound=Details)


class Stage(StrEnum):
    """Every stage a plan can run, in the order of the local plan."""

    BUILD = "build"
    LEAK = "leak"
    SCAN = "scan"
    SIGN = "sign"
    BOOT = "boot"
    BENCH = "bench"
    EVAL = "eval"
    MANIFESTS = "manifests"
    GATE = "gate"
    ATTEST = "attest"
    PROMOTE = "promote"


def check_run_id(value: str, *, where: str = "run id") -> str:
    """`value` if it is a well-formed run id, else BadInput naming it."""
    if not RUN_ID_RE.match(value):
        raise BadInput(
            f"not a run id: {value!r} ({RUN_ID_GRAMMAR})", where=where
        )
    return value


TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")  # docker's tag grammar


def check_tag(value: str, *, where: str = "--tag") -> str:
    """`value` if docker would accept it as an image tag, else BadInput naming it (before anything is built)."""
    if not TAG_RE.match(value):
        raise BadInput(f"not an image tag: {value!r} (letters, digits, '_', '.' and '-', at most 128, not starting "
                       "with '.' or '-')", where=where)
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StageStatus(StrEnum):
    OK = "ok"  # the stage ran and produced its result
    FAILED = "failed"  # the stage ran and the thing under test misbehaved (server died, ...)
    SKIPPED = "skipped"  # the stage did not run (tool absent, not requested); never a pass
    ERROR = "error"  # the stage could not run because of infrastructure or bad input


class Decision(StrEnum):
    PENDING = "pending"
    PASS = "pass"
    BLOCKED = "blocked"
    # The gates could not show the release safe to ship (too little or disturbed data, a scorer not
    # trusted, no baseline and no meaningful threshold): never promoted, never signed as a pass.
    INCONCLUSIVE = "inconclusive"
    ERROR = "error"
    INTERRUPTED = "interrupted"  # the process running it died (killed, machine lost) mid-stage


class ImageRef(_Model):
    """An image identified by digest; the tag is only a label for people and dashboards."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @field_validator("digest")
    @classmethod
    def _check_digest(cls, v: str | None) -> str | None:
        if v is not None and not DIGEST_RE.match(v):
            raise ValueError(f"not a sha256 digest: {v!r}")
        return v

    @property
    def by_digest(self) -> str:
        if not self.digest:
            raise BadInput("image has no digest yet; build and push it first", where=self.repository)
        return f"{self.repository}@{self.digest}"

    @property
    def by_tag(self) -> str:
        return f"{self.repository}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        """Parse `repo[:tag][@sha256:...]` (the registry host may carry a port)."""
        original = ref
        scheme, sep, _rest = ref.partition("://")
        if sep:  # `http://host:5000/x@…` would be read as registry "http:" and a path starting with "/"
            raise BadInput(f"not an image reference: drop {scheme + sep!r}; an image is named HOST[:PORT]/NAME"
                           "[:TAG][@sha256:…], without a URL scheme", where=original)
        if any(c.isspace() or not c.isprintable() for c in ref):
            raise BadInput("not an image reference: it contains whitespace or a control character", where=repr(original))
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        if not ref:
            raise BadInput("empty repository in the image reference", where=repr(original))
        try:
            return cls(repository=ref, tag=tag, digest=digest)
        except ValidationError as exc:
            why = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise BadInput(f"not an image reference: {why}", where=original) from None


class Artifact(_Model):
    name: str
    path: str
    media_type: str = "application/octet-stream"
    sha256: str | None = None


class ItemResult(_Model):
    """One ground-truth item as answered by the server and scored per dimension.

    Scores are 0..1; `None` for a dimension that does not apply to this item. A scorer error is
    recorded in `errors[dimension]` and the score is 0.0 (a failure is never silently missing).
    """

    item_id: str
    question: str
    reference: str = ""
    expected_behaviour: str = "answer"
    category: str = ""
    response: str | None = None
    contexts: list[str] = Field(default_factory=list)  # grounding passages; faithfulness is judged against them
    answer_kind: str = ""  # pipeline.schemas.facts.AnswerKind from the ground truth; "" before ground truth v3
    facts: list[Fact] = Field(default_factory=list)  # what a correct answer states (evals/facts.py checks it)
    latency_s: float | None = None
    ttft_s: float | None = None
    scores: dict[str, float | None] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)
    error: str | None = None  # collection error (HTTP, timeout): the item failed as a whole


class StageResult(_Model):
    """What one stage produced. `metrics` are scalars gates can read (`stage.metric`),
    `samples` are per-request series for rank tests, `items` per-item eval results,
    `details` the stage's typed payload (a `pipeline.schemas` model; read it with `details_as`).

    `input_key` is the sha256 of everything the stage's result depends on (release identity, the
    stage's own config, tool versions); a later run with the same key may reuse this result, and
    then says so in `reused_from`. `evidence` is what makes the result trustworthy outside the
    process that made it: the store only keeps it."""

    stage: Stage
    status: StageStatus
    reason: str | None = None
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    duration_s: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    samples: dict[str, list[float]] = Field(default_factory=dict)
    items: list[ItemResult] = Field(default_factory=list)
    artifacts: list[Artifact] = Field(default_factory=list)
    details: StageDetails | None = None
    input_key: str | None = None
    reused_from: str | None = None  # run id whose stored result this is
    # The DSSE envelope (JSON) signed over this result in the process that produced it: an in-toto link
    # for a measuring stage, the verdict for the gate (pipeline/supplychain/evidence.py). None: unsigned.
    evidence: str | None = None
    # Details of a record written before they were typed (schema 1): kept, read by nothing.
    legacy_details: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _payload_matches_stage(self) -> StageResult:
        if self.details is not None and self.details.stage != self.stage.value:
            raise ValueError(f"stage {self.stage.value!r} carries a {self.details.stage!r} payload")
        return self

    def details_as(self, model: type[P]) -> P | None:
        """The typed details if they are a `model`, else None."""
        return self.details if isinstance(self.details, model) else None

    def finish(self) -> StageResult:
        self.finished_at = utcnow()
        self.duration_s = (self.finished_at - self.started_at).total_seconds()
        return self


class GroundTruthRef(_Model):
    version: str
    sha256: str
    n_items: int


class ModelRef(_Model):
    """The weights a release serves, by content: `digest` is the sha256 of the canonical manifest of
    every file (relative path, size, sha256) under `path`, so the same bytes give the same digest
    wherever they are mounted."""

    path: str
    digest: str
    files: int
    bytes: int

    @field_validator("digest")
    @classmethod
    def _check_digest(cls, v: str) -> str:
        if not DIGEST_RE.match(v):
            raise ValueError(f"not a sha256 digest: {v!r}")
        return v


class PolicyRef(_Model):
    """The gate policy a verdict was made under: its name (the top file), every file it extends, and
    the sha256 of the effective policy."""

    name: str
    files: list[str]
    sha256: str


class Release(_Model):
    """What a verdict is about. Two runs are of the same release only if every part is equal."""

    image_digest: str | None
    model_digest: str | None
    ground_truth: str | None  # "<version>@<sha256>"
    policy_sha256: str | None
    config_hash: str | None

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.model_dump(), sort_keys=True).encode()).hexdigest()


class PromotionRecord(_Model):
    target: str
    digest: str
    mode: str  # "gitops" | "cluster" | "dry-run"
    outcome: str  # "promoted" | "aborted" | "refused" | "noop" | "failed"
    who: str = ""
    at: datetime = Field(default_factory=utcnow)
    detail: str = ""
    previous_digest: str | None = None
    # A release is the pair (image digest, model digest); the signed verdict that authorised it (its run
    # and gate time): what status, history and rollback name.
    model_digest: str | None = None
    verdict_run_id: str | None = None
    verdict_at: datetime | None = None


class RunRecord(_Model):
    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    target: str = "default"
    image: ImageRef
    model: ModelRef | None = None
    policy: PolicyRef | None = None
    source_commit: str | None = None
    config_hash: str | None = None
    ground_truth: GroundTruthRef | None = None
    stages: dict[str, StageResult] = Field(default_factory=dict)
    # The verdicts of a schema-1 record, whose gate payload is kept untyped: read by `gates`, never written.
    legacy_gates: list[GateVerdict] | None = None
    decision: Decision = Decision.PENDING
    decision_reason: str = ""
    baseline_run_id: str | None = None
    # a person's recorded approval to judge a first release (no baseline) on what was measured
    first_release_approval: Approval | None = None
    promotion: PromotionRecord | None = None
    interrupted_stage: str | None = None  # set when the process running this record died mid-stage
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("run_id")
    @classmethod
    def _check_run_id(cls, v: str) -> str:
        if not RUN_ID_RE.match(v):
            raise ValueError(f"not a run id: {v!r} ({RUN_ID_GRAMMAR})")
        return v

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, dict) or int(data.get("schema_version", SCHEMA_VERSION)) >= 3:
            return data
        data = dict(data)
        # Schemas 1 and 2 kept a second copy of the verdicts beside the gate stage's payload.
        copy = data.pop("gates", None)
        # Schema 1 stored each payload as a free-form dict; keep it as legacy data rather than guess.
        if int(data.get("schema_version", SCHEMA_VERSION)) < 2:
            stages = {}
            for name, res in (data.get("stages") or {}).items():
                if isinstance(res, dict) and isinstance(res.get("details"), dict):
                    res = {**res, "legacy_details": res["details"] or None, "details": None}
                stages[name] = res
            data["stages"] = stages
            if copy:  # its gate payload is untyped now: the copy is the one readable list
                data["legacy_gates"] = copy
        data["schema_version"] = SCHEMA_VERSION
        return data

    @property
    def tag(self) -> str | None:
        return self.image.tag

    @property
    def digest(self) -> str | None:
        return self.image.digest

    @property
    def gates(self) -> tuple[GateVerdict, ...]:
        """The verdicts of the latest gate stage, stored once: in its payload (`GateDetails.verdicts`).
        Read-only: a gate records verdicts by recording its stage (`add_stage`)."""
        gate = self.details_as(GateDetails)
        if gate is not None:
            return tuple(gate.verdicts)
        return tuple(self.legacy_gates or ())

    @property
    def release(self) -> Release:
        gt = self.ground_truth
        return Release(
            image_digest=self.image.digest,
            model_digest=self.model.digest if self.model else None,
            ground_truth=f"{gt.version}@{gt.sha256}" if gt else None,
            policy_sha256=self.policy.sha256 if self.policy else None,
            config_hash=self.config_hash,
        )

    def add_stage(self, result: StageResult) -> StageResult:
        """Record a stage's result. What a stage establishes about the release is applied here, in one
        place: the build's digest identifies the image, the gate's verdicts decide the run."""
        if result.finished_at is None:
            result.finish()
        self.stages[result.stage.value] = result
        build = result.details_as(BuildDetails)
        if build is not None and build.digest is not None and result.status is StageStatus.OK:
            # From here on the run is identified by the digest the registry reported.
            built = ImageRef.parse(build.image)
            self.image = ImageRef(repository=built.repository, tag=built.tag or self.image.tag, digest=build.digest)
        promoted = result.details_as(PromoteDetails)
        if promoted is not None and promoted.outcome == "promoted" and not promoted.dry_run:
            self.promotion = PromotionRecord(target=promoted.target, digest=self.image.digest or promoted.image,
                                             mode=promoted.mode, outcome=promoted.outcome,
                                             detail=promoted.branch or promoted.reason,
                                             previous_digest=ImageRef.parse(promoted.previous).digest
                                             if promoted.previous else None,
                                             model_digest=promoted.model_digest,
                                             verdict_run_id=promoted.guard.verdict_run,
                                             verdict_at=promoted.guard.verdict_at)
        gate = result.details_as(GateDetails)
        if gate is not None:  # the record's decision mirrors the latest gate stage (`gates` reads it there)
            self.policy = PolicyRef(name=gate.policy_name, files=list(gate.policy_files), sha256=gate.policy_sha256)
            self.decision = Decision(gate.decision)
            self.decision_reason = gate.reason
            self.baseline_run_id = gate.baseline.run_id
        self.updated_at = utcnow()
        return result

    def stage(self, name: str) -> StageResult | None:
        return self.stages.get(name)

    def details_as(self, model: type[P]) -> P | None:
        """The typed details of the stage that writes `model`, or None when that stage has not run."""
        name = model.model_fields["stage"].default
        res = self.stages.get(name)
        return None if res is None else res.details_as(model)

    def require_stage(self, name: str, *, ok: bool = True) -> StageResult:
        """The result of an earlier stage this one builds on, or a clear error."""
        res = self.stages.get(name)
        if res is None:
            raise BadInput(
                f"run {self.run_id} has no '{name}' stage result",
                hint=f"run `llmgate {name}` on this run first",
            )
        if ok and res.status is not StageStatus.OK:
            raise BadInput(f"run {self.run_id}: stage '{name}' is {res.status.value}: {res.reason or ''}")
        return res

    def metric(self, source: str) -> float | None:
        """Look up `stage.metric`."""
        stage, _, name = source.partition(".")
        res = self.stages.get(stage)
        return None if res is None else res.metrics.get(name)

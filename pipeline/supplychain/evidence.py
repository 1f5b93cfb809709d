"""Evidence links: each measuring stage's result signed where it was measured, checked before it is judged.

The store and run.json only keep results; they are not trusted. Right after a measuring stage returns,
the runner (the one place every stage runs through) signs an in-toto link over it with the release
key: an in-toto Statement v1 in a DSSE envelope whose subject is the canonical digest of the result
(status, payload, metrics, samples, items: everything the gate reads) and whose predicate, an in-toto
link (https://in-toto.io/attestation/link/v0.3), names the release the stage measured (image digest,
weights digest, ground truth, policy, config hash), its inputs (the input key and the digests of the
earlier results it read) and the run. The envelope is kept with the result (`StageResult.evidence`).

Before judging, the gate opens every link with the pinned public key and checks it against the
result as stored and against the run's release; a result edited in the store, a link signed by
another key, for another release or run, or a result without a link (when a key is configured) is
refused with the stage named (`EvidenceRefused`, exit 1). The verdict then names each link's digest.

The canonical digest is sha256 of the result's JSON with sorted keys and no whitespace (the
envelope itself left out), redacted as the store redacts it, so the in-process record and its
stored copy give the same digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from pipeline.errors import GateFailed
from pipeline.models import RunRecord, Stage, StageResult, StageStatus
from pipeline.redact import redact
from pipeline.schemas.build import BuildDetails
from pipeline.supplychain import cosign_keys
from pipeline.supplychain.envelopes import EnvelopeRefused, open_envelope, seal, statement_body

LINK_TYPE = "https://in-toto.io/attestation/link/v0.3"
SUBJECT_PREFIX = "llmgate:stage/"
IMAGE_PREFIX = "oci://"
MODEL, CONFIG, INPUT_KEY = "llmgate:model", "llmgate:config", "llmgate:input-key"
GROUND_TRUTH_PREFIX, POLICY_PREFIX, INPUT_PREFIX = "llmgate:ground-truth/", "llmgate:policy/", "llmgate:stage/"


class EvidenceRefused(GateFailed):
    """A result the gate will not judge: unsigned, edited, or signed for something else. Exit 1."""


def canonical_json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def result_digest(result: StageResult) -> str:
    """sha256 (hex) of the result as the store keeps it, its evidence left out."""
    doc = redact(json.loads(result.model_dump_json(exclude={"evidence"})))
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def _version() -> str:
    try:
        return metadata.version("llmgate")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- the release a link names --------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """The release parts a link binds (hex sha256 values), as signed or as the run has them."""

    image: str | None
    model: str | None
    ground_truth: str | None  # "<version>@<sha256>"
    config: str | None

    def differences(self, other: Measured) -> list[str]:
        names = {"image": "image digest", "model": "model digest", "ground_truth": "ground truth",
                 "config": "config hash"}
        return [f"{names[k]} {_short(getattr(self, k))} in the signed link, {_short(getattr(other, k))} in this run"
                for k in names if getattr(self, k) != getattr(other, k)]


def _short(v: str | None) -> str:
    return "none" if v is None else (v[:19] + "…" if len(v) > 20 else v)


def _hex(digest: str | None) -> str | None:
    return digest.split(":", 1)[1] if digest and ":" in digest else digest


def _image_digest(run: RunRecord, result: StageResult | None) -> str | None:
    """The image a result is about: the run's, or for a build that succeeded the digest it produced."""
    build = result.details_as(BuildDetails) if result is not None else None
    if build is not None and build.digest and result is not None and result.status is StageStatus.OK:
        return build.digest
    return run.image.digest


def measured_by_run(run: RunRecord, result: StageResult | None = None) -> Measured:
    gt = run.ground_truth
    return Measured(image=_hex(_image_digest(run, result)), model=_hex(run.model.digest) if run.model else None,
                    ground_truth=f"{gt.version}@{gt.sha256}" if gt else None, config=run.config_hash)


def _descriptor(name: str, sha256: str) -> dict[str, Any]:
    return {"name": name, "digest": {"sha256": sha256}}


def _materials(run: RunRecord, result: StageResult, inputs: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    image = _hex(_image_digest(run, result))
    if image:
        out.append(_descriptor(IMAGE_PREFIX + run.image.repository, image))
    if run.model:
        out.append(_descriptor(MODEL, _hex(run.model.digest) or ""))
    if run.ground_truth:
        out.append(_descriptor(GROUND_TRUTH_PREFIX + run.ground_truth.version, run.ground_truth.sha256))
    if run.policy:
        out.append(_descriptor(POLICY_PREFIX + run.policy.name, run.policy.sha256))
    if run.config_hash:
        out.append(_descriptor(CONFIG, run.config_hash))
    if result.input_key:
        out.append(_descriptor(INPUT_KEY, result.input_key))
    out.extend(_descriptor(INPUT_PREFIX + stage, digest) for stage, digest in sorted(inputs.items()))
    return out


def _measured_by_link(materials: list[dict[str, Any]]) -> Measured:
    image = model = gt = config = None
    for m in materials:
        name, sha = str(m.get("name", "")), (m.get("digest") or {}).get("sha256")
        if name.startswith(IMAGE_PREFIX):
            image = sha
        elif name == MODEL:
            model = sha
        elif name.startswith(GROUND_TRUTH_PREFIX):
            gt = f"{name.removeprefix(GROUND_TRUTH_PREFIX)}@{sha}"
        elif name == CONFIG:
            config = sha
    return Measured(image=image, model=model, ground_truth=gt, config=config)


# -- signing -----------------------------------------------------------------------------------------
def sign_result(result: StageResult, run: RunRecord, key: cosign_keys.SigningKey, *, reads: Iterable[Stage] = (),
                reused_link: str | None = None) -> str:
    """Sign `result` (a stage of `run`, just produced) and keep the envelope on it; returns the link's
    statement digest. `reads` are the earlier stages whose results it read (their digests become
    materials); `reused_link` is the digest of the link of the stored result this one reuses."""
    inputs = {s.value: result_digest(r) for s in reads if (r := run.stage(s.value)) is not None}
    byproducts: dict[str, Any] = {"run_id": run.run_id, "status": result.status.value}
    if result.reused_from:
        byproducts["reused_from"] = {"run_id": result.reused_from, "link_sha256": reused_link}
    predicate = {
        "name": result.stage.value,
        "command": ["llmgate", "stage", result.stage.value],
        "materials": _materials(run, result, inputs),
        "byproducts": byproducts,
        "environment": {"llmgate": _version()},
    }
    body = statement_body(SUBJECT_PREFIX + result.stage.value, "sha256:" + result_digest(result), LINK_TYPE,
                          predicate)
    result.evidence = seal(body, key)
    return hashlib.sha256(body).hexdigest()


# -- checking ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinkCheck:
    """One stage's result against its link: verified, or why not."""

    stage: str
    result_sha256: str
    verified: bool
    reason: str
    signed: bool  # the result carries a link at all
    link_sha256: str | None = None
    key_id: str | None = None
    envelope: str | None = None

    def line(self) -> str:
        return f"stage {self.stage}: {self.reason}"


def check_link(stage: str, digest: str, envelope: str | None, *, run_id: str, measured: Measured,
               public_key: ec.EllipticCurvePublicKey | None) -> LinkCheck:
    """The link `envelope` of stage `stage` against the result digest it must sign, the run it must
    name and the release it must have measured."""
    if envelope is None:
        return LinkCheck(stage, digest, False, "the result is unsigned (recorded without a signing key)", False)
    if public_key is None:
        return LinkCheck(stage, digest, False, "no public key to verify its link with", True, envelope=envelope)
    key_id = cosign_keys.key_id(public_key)

    def refused(why: str, link: str | None = None) -> LinkCheck:
        return LinkCheck(stage, digest, False, why, True, link_sha256=link, key_id=key_id, envelope=envelope)

    try:
        opened = open_envelope(envelope, public_key)
    except EnvelopeRefused as exc:
        return refused(f"its link does not open: {exc}")
    st = opened.statement
    if st.predicate_type != LINK_TYPE:
        return refused(f"its envelope carries a {st.predicate_type} statement, not an in-toto link", opened.sha256)
    pred = st.predicate
    if pred.get("name") != stage:
        return refused(f"its link was signed for stage {pred.get('name')!r}", opened.sha256)
    signed_digests = [d.removeprefix("sha256:") for name, d in st.subjects if name == SUBJECT_PREFIX + stage]
    if digest not in signed_digests:
        named = signed_digests[0][:12] + "…" if signed_digests else "nothing"
        return refused(f"the result is not what was signed when it was measured (sha256 {digest[:12]}… now, the "
                       f"link signed {named}): it was changed after the stage ran", opened.sha256)
    byproducts = pred.get("byproducts") if isinstance(pred.get("byproducts"), dict) else {}
    if byproducts.get("run_id") != run_id:
        return refused(f"its link was signed for run {byproducts.get('run_id')!r}, not {run_id}", opened.sha256)
    materials = pred.get("materials") if isinstance(pred.get("materials"), list) else []
    diffs = _measured_by_link([m for m in materials if isinstance(m, dict)]).differences(measured)
    if diffs:
        return refused("it was measured for another release: " + "; ".join(diffs), opened.sha256)
    return LinkCheck(stage, digest, True, f"verified with key {key_id[:23]}…", True, link_sha256=opened.sha256,
                     key_id=key_id, envelope=envelope)


def check_result(result: StageResult, run: RunRecord, public_key: ec.EllipticCurvePublicKey | None) -> LinkCheck:
    """`result` (a stage of `run`) against its link and the run's release."""
    return check_link(result.stage.value, result_digest(result), result.evidence, run_id=run.run_id,
                      measured=measured_by_run(run), public_key=public_key)


def check_run(run: RunRecord, public_key: ec.EllipticCurvePublicKey | None,
              linked: Iterable[Stage]) -> list[LinkCheck]:
    """The result in `run` of every stage in `linked` (the measuring stages, whose results carry links:
    `Plan.linked`), in that order."""
    return [check_result(res, run, public_key) for s in linked if (res := run.stage(s.value)) is not None]


def require_evidence(run: RunRecord, public_key: ec.EllipticCurvePublicKey | None, linked: Iterable[Stage], *,
                     signing: bool, what: str = "") -> list[LinkCheck]:
    """The checks of `run`'s results; `EvidenceRefused` naming every stage that is not verified. With a
    signing key (`signing`) every result must carry a verified link; without one (an unsigned preview)
    unsigned results pass, but a link that exists must still verify."""
    checks = check_run(run, public_key, linked)
    bad = [c for c in checks if not c.verified and (signing or c.signed)]
    if bad:
        subject = what or f"run {run.run_id}"
        raise EvidenceRefused(f"refusing to judge {subject}: " + "; ".join(c.line() for c in bad),
                              where=f"run {run.run_id}",
                              hint="results are trusted only with a link signed when they were measured; measure "
                                   f"the stage of run {run.run_id} again where the signing key is configured "
                                   f"(`llmgate stage NAME --run {run.run_id} --fresh`)")
    return checks


def check_reusable(result: StageResult, input_key: str, public_key: ec.EllipticCurvePublicKey | None) -> str | None:
    """Why a stored result may not stand in for running its stage (None: it may). Its link must open
    with the key, sign exactly this result, and name the input key it is reused for."""
    if public_key is None:
        return None
    if result.evidence is None:
        return "it is unsigned"
    try:
        opened = open_envelope(result.evidence, public_key)
    except EnvelopeRefused as exc:
        return f"its link does not open: {exc}"
    digest = result_digest(result)
    if digest not in [d.removeprefix("sha256:") for _, d in opened.statement.subjects]:
        return "it is not what its link signed (changed after it was measured)"
    materials = opened.statement.predicate.get("materials") or []
    keys = [(m.get("digest") or {}).get("sha256") for m in materials if isinstance(m, dict) and m.get("name") == INPUT_KEY]
    if keys != [input_key]:
        return "its link names other inputs"
    return None


def link_sha256(envelope: str | None) -> str | None:
    """The statement digest of a stored link, without verifying it (for naming, never for trusting)."""
    if envelope is None:
        return None
    try:
        from pipeline.adapters.cosign_layout import parse_envelope

        return hashlib.sha256(parse_envelope(envelope.encode()).body).hexdigest()
    except ValueError:
        return None

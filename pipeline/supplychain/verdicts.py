"""The verdict, signed by the gate that computed it.

The gate signs its verdict in its own process, dated with the gate time, as an in-toto statement
about the image digest (predicate `VERDICT_TYPE`, `VerdictPredicate`) in a DSSE envelope, names the
evidence links it verified, and appends it to the verdict log (pipeline/supplychain/verdict_log.py).
Attest publishes that envelope unchanged, and refuses when a newer verdict for the (image, model)
pair exists: nothing downstream of the gate re-signs what a store says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from pipeline.errors import GateFailed
from pipeline.models import RunRecord
from pipeline.schemas.gate import GateDetails
from pipeline.supplychain import cosign_keys
from pipeline.supplychain.envelopes import EnvelopeRefused, open_envelope, seal, statement_body
from pipeline.supplychain.evidence import LinkCheck, Measured, check_link
from pipeline.supplychain.predicates import VERDICT_TYPE, EvidenceRef, VerdictPredicate, verdict_for_gate
from pipeline.supplychain.verdict_log import LogEntry, verdict_sha256


class VerdictRefused(GateFailed):
    """A verdict that may not be published or acted on (unsigned, altered, about something else, or stale)."""


@dataclass(frozen=True)
class SignedVerdict:
    predicate: VerdictPredicate
    envelope: str  # DSSE envelope (JSON) over the in-toto statement
    sha256: str  # of the predicate as canonical JSON: how the verdict log names it

    def entry(self) -> LogEntry:
        p = self.predicate
        return LogEntry(repository=p.image.repository, image=p.image.digest, model=p.model.digest if p.model else None,
                        decision=p.decision.value, run_id=p.run_id, created=p.created, verdict_sha256=self.sha256,
                        policy_sha256=p.policy.sha256 if p.policy else None, target=p.target)


def evidence_refs(checks: list[LinkCheck]) -> list[EvidenceRef]:
    return [EvidenceRef(stage=c.stage, result_sha256=c.result_sha256, link_sha256=c.link_sha256,
                        key_id=c.key_id or "", envelope=c.envelope)
            for c in checks if c.verified and c.link_sha256 and c.envelope]


def sign_verdict(run: RunRecord, gate: GateDetails, checks: list[LinkCheck], key: cosign_keys.SigningKey, *,
                 created: datetime) -> SignedVerdict:
    """The gate's verdict on `run`, signed now (`created` is the gate time)."""
    predicate = verdict_for_gate(run, gate, created=created, evidence=evidence_refs(checks))
    doc = predicate.model_dump(mode="json")
    envelope = seal(statement_body(run.image.repository, run.image.by_digest.split("@", 1)[1], VERDICT_TYPE, doc), key)
    return SignedVerdict(predicate, envelope, verdict_sha256(doc))


def open_verdict(envelope: str, public_key: ec.EllipticCurvePublicKey) -> SignedVerdict:
    """A signed verdict that opens with `public_key`; VerdictRefused saying why not."""
    try:
        opened = open_envelope(envelope, public_key)
    except EnvelopeRefused as exc:
        raise VerdictRefused(f"the signed verdict does not open: {exc}") from exc
    st = opened.statement
    if st.predicate_type != VERDICT_TYPE:
        raise VerdictRefused(f"the envelope carries a {st.predicate_type} statement, not a verdict")
    try:
        predicate = VerdictPredicate.model_validate(st.predicate)
    except ValidationError as exc:
        raise VerdictRefused(f"the signed verdict is malformed: {exc.errors()[0]['msg']}") from exc
    if predicate.image.digest not in [d for _, d in st.subjects]:
        raise VerdictRefused(f"the signed statement is not about {predicate.image.digest}")
    return SignedVerdict(predicate, envelope, verdict_sha256(st.predicate))


def verdict_of(run: RunRecord, public_key: ec.EllipticCurvePublicKey | None) -> SignedVerdict:
    """The verdict the gate signed for `run`, checked to be about this run's (image, model) pair."""
    where = f"run {run.run_id}"
    gate = run.stage("gate")
    if gate is None:
        raise VerdictRefused("the run has no gate result", where=where, hint=f"run `llmgate gate --run {run.run_id}`")
    if gate.evidence is None:
        raise VerdictRefused("its verdict is an unsigned preview (gated without a signing key): it is never attested "
                             "or promoted", where=where, hint="gate it again where the signing key is configured")
    if public_key is None:
        raise VerdictRefused("no public key to open the signed verdict with", where=where)
    try:
        signed = open_verdict(gate.evidence, public_key)
    except VerdictRefused as exc:
        raise VerdictRefused(exc.message, where=where) from exc
    p = signed.predicate
    model = run.model.digest if run.model else None
    if p.run_id != run.run_id or p.image.digest != run.image.digest or (p.model.digest if p.model else None) != model:
        raise VerdictRefused(f"the signed verdict in the gate result is about run {p.run_id} (image {p.image.digest}, "
                             f"model {p.model.digest if p.model else None}), not this run's pair", where=where)
    return signed


def check_verdict_links(v: VerdictPredicate, public_key: ec.EllipticCurvePublicKey) -> list[LinkCheck]:
    """Each evidence link the verdict names, opened with the key and checked against the verdict's
    run and release (from the registry alone: the store is not consulted)."""
    gt = v.ground_truth

    def hexof(d: str | None) -> str | None:
        return d.split(":", 1)[1] if d and ":" in d else d

    measured = Measured(image=hexof(v.image.digest), model=hexof(v.model.digest) if v.model else None,
                        ground_truth=f"{gt.version}@{gt.sha256}" if gt else None, config=v.config_hash)
    checks = []
    for ref in v.evidence:
        c = check_link(ref.stage, ref.result_sha256, ref.envelope, run_id=v.run_id, measured=measured,
                       public_key=public_key)
        if c.verified and c.link_sha256 != ref.link_sha256:
            c = LinkCheck(c.stage, c.result_sha256, False, f"the verdict names link {ref.link_sha256[:12]}…, the "
                          f"envelope it carries is {str(c.link_sha256)[:12]}…", True, c.link_sha256, c.key_id,
                          c.envelope)
        checks.append(c)
    return checks

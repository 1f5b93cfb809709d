"""Promotion guard: the last check before a release moves to a target.

A release is the pair (image digest, model digest). It is promotable to a target only on signed
facts read from the registry and verified with the configured public key:

1. a valid signature of the image digest,
2. a valid verdict attestation about that digest whose decision is `pass`, whose model digest is
   the pair's, which was gated for this target (its baseline is this target's; a verdict for another
   target is never promoted here), and which was made under a policy the target accepts: a target
   that does not accept local policies refuses a verdict whose policy digest is a local policy's
   (recognised by content, whatever the file was called), a target configured with accepted policy
   digests accepts only those, and a target with a policy floor accepts only a policy that contains
   it (`pipeline.promote.floor`). Which targets are production is configuration
   (`pipeline.promote.targets`), never a name; and
3. that pass names the evidence links the gate judged on, each verifying with the same key and naming
   the verdict's run and release (`unproven_evidence`): a pass signed anywhere but in a gate that
   verified what it judged (before links existed, or by hand) is not promoted; and
4. that pass is the newest entry for the pair in the verdict log (`require_newest_in_log`): a registry
   writer can hide attestation layers, not log entries.

Nothing else is trusted: not the store's decision column, not a run file. Each refusal is a
`PromotionRefused` (exit 1) naming the (image, model) pair and the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from pipeline.adapters.signer import Signer
from pipeline.errors import GateFailed
from pipeline.models import Decision, ImageRef
from pipeline.supplychain.predicates import PolicyIdentity, VerdictPredicate
from pipeline.supplychain.signing import PublicKey, verdict_digest, verified_verdicts
from pipeline.supplychain.verdict_log import LogRefused, VerdictLog, require_newest
from pipeline.supplychain.verdicts import check_verdict_links


class PromotionRefused(GateFailed):
    """The guard refused the promotion; `where` names the (image, model) pair."""


@dataclass(frozen=True)
class TargetPolicy:
    """Which verdicts a target accepts; built from the target's configuration
    (`pipeline.promote.trust.target_policy`)."""

    target: str
    allow_local_policy: bool = False  # fail closed: a target says when it accepts local policies
    accepted_policy_sha256: frozenset[str] | None = None  # None: any policy (subject to the rest)
    production: bool = False
    local_policy_sha256: frozenset[str] = frozenset()  # effective digests of the local policies
    floor: Callable[[PolicyIdentity], str | None] | None = None  # why a policy misses the floor (None: meets it)

    @classmethod
    def for_target(cls, target: str, accepted_policy_sha256: Collection[str] | None = None, *,
                   production: bool = False, local_policy_sha256: Collection[str] = ()) -> TargetPolicy:
        return cls(target=target, allow_local_policy=not production, production=production,
                   accepted_policy_sha256=frozenset(accepted_policy_sha256) if accepted_policy_sha256 else None,
                   local_policy_sha256=frozenset(local_policy_sha256))


@dataclass(frozen=True)
class GuardResult:
    image: str
    model_digest: str
    target: str
    verdict: VerdictPredicate
    signature_reason: str
    verdict_reason: str
    refused_verdicts: list[str] = field(default_factory=list)  # verdicts that did not speak for this pair


def _pair(image: str, model_digest: str | None) -> str:
    return f"(image {image}, model {model_digest or 'unknown'})"


def _not_about(v: VerdictPredicate, model_digest: str, policy: TargetPolicy) -> str | None:
    """Why verdict `v` does not speak for this pair at this target (None: it does)."""
    if v.model is None or v.model.digest != model_digest:
        other = v.model.digest if v.model else "no weights"
        return f"run {v.run_id}: judged model {other}, not {model_digest}"
    return _target_refusal(v, policy) or _policy_refusal(v, policy)


def _target_refusal(v: VerdictPredicate, policy: TargetPolicy) -> str | None:
    """A verdict is for the target (and so the baseline) it was gated for, and for no other."""
    if v.target is None:
        return f"run {v.run_id}: verdict names no target, so no baseline it was judged against"
    if v.target != policy.target:
        return (f"run {v.run_id}: gated for target {v.target} (compared with that target's baseline), "
                f"not for {policy.target}")
    return None


def is_local_policy(p: PolicyIdentity, local_sha256: Collection[str]) -> bool:
    """Made under a local policy: its effective digest is a local policy's (a copy under another name is
    still local), or a file of its extends chain is named as one."""
    return p.sha256 in local_sha256 or p.is_local


def _policy_refusal(v: VerdictPredicate, policy: TargetPolicy) -> str | None:
    if v.policy is None:
        return f"run {v.run_id}: verdict names no policy"
    if not policy.allow_local_policy and is_local_policy(v.policy, policy.local_policy_sha256):
        return (f"run {v.run_id}: made under the local policy {v.policy.name} (sha256 {v.policy.sha256[:12]}), "
                f"which target {policy.target} does not accept")
    if policy.accepted_policy_sha256 is not None and v.policy.sha256 not in policy.accepted_policy_sha256:
        return (f"run {v.run_id}: made under policy {v.policy.name} (sha256 {v.policy.sha256[:12]}), "
                f"not one target {policy.target} accepts")
    if policy.floor is not None:
        missing = policy.floor(v.policy)
        if missing is not None:
            return f"run {v.run_id}: {missing}"
    return None


def require_newest_in_log(log: VerdictLog, v: VerdictPredicate, ref: ImageRef, model_digest: str, *,
                          where: str) -> int:
    """The pass `v` must be the newest entry for the pair in the verdict log (a registry writer can hide
    attestation layers, not log entries); its index, or PromotionRefused saying which entry is newer."""
    try:
        view = log.view(ref.repository)
        index = require_newest(view, image=ref.digest or "", model=model_digest, target=v.target,
                               verdict_sha=verdict_digest(v), what=f"the signed pass of run {v.run_id}")
    except LogRefused as exc:
        raise PromotionRefused(f"verdict log: {exc.message}", where=where) from exc
    return index


def unproven_evidence(v: VerdictPredicate, public_key: PublicKey) -> str | None:
    """Why the verdict's evidence does not stand (None: every link it names verifies with the key and names
    its run and release)."""
    links = check_verdict_links(v, public_key.key)
    if not links:
        return "names no evidence links: it was not signed by a gate that verified the results it judged"
    bad = [c.line() for c in links if not c.verified]
    return "names evidence that does not verify: " + "; ".join(bad) if bad else None


def check_promotable(
    image: ImageRef | str,
    model_digest: str | None,
    target: str | TargetPolicy,
    public_key: PublicKey,
    *,
    signer: Signer,
    log: VerdictLog,
) -> GuardResult:
    """The newest signed passing verdict for the (image, model) pair under a policy `target`
    accepts, or `PromotionRefused` saying why there is none."""
    ref = image if isinstance(image, ImageRef) else ImageRef.parse(image)
    policy = target if isinstance(target, TargetPolicy) else TargetPolicy.for_target(target)
    shown = ref.by_digest if ref.digest else ref.by_tag
    where = _pair(shown, model_digest)
    if ref.digest is None:
        raise PromotionRefused("refusing to promote an image given by tag; promote the digest that was gated",
                               where=where, hint=f"use {ref.repository}@sha256:<digest>")
    if not model_digest:
        raise PromotionRefused("refusing to promote a release without a model digest: the weights it serves "
                               "would be unproven", where=where)
    sig = signer.verify_image(ref.by_digest, public_key.pem)
    if not sig.verified:
        raise PromotionRefused(f"image signature: {sig.reason}", where=where)
    verdicts, reason = verified_verdicts(ref, public_key, signer=signer)
    if not verdicts:
        raise PromotionRefused(f"no signed verdict: {reason}", where=where)
    skipped: list[str] = []
    for v in verdicts:  # newest first: the newest verdict about this pair decides, a pass or not
        why = _not_about(v, model_digest, policy)
        if why is not None:
            skipped.append(why)
            continue
        if v.decision is not Decision.PASS:
            raise PromotionRefused(
                f"the newest signed verdict for this pair (run {v.run_id}) is {v.decision.value}"
                + (f": {v.decision_reason}" if v.decision_reason else ""), where=where)
        if (unproven := unproven_evidence(v, public_key)) is not None:
            raise PromotionRefused(f"the signed pass of run {v.run_id} {unproven}", where=where)
        require_newest_in_log(log, v, ref, model_digest, where=where)
        return GuardResult(image=ref.by_digest, model_digest=model_digest, target=policy.target, verdict=v,
                           signature_reason=sig.reason, verdict_reason=reason, refused_verdicts=skipped)
    raise PromotionRefused("no signed verdict for this pair: " + "; ".join(skipped), where=where)

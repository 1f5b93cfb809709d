"""What a target trusts, from its configuration: the verdicts it accepts (`TargetPolicy`) and the key
their signatures must verify with (`TrustedKey`).

The key: a target that pins keys (`keys:` in targets.yaml, key ids) verifies with the public key at
`sign.public_key` only when that key's id is pinned; replacing the file with another key refuses every
promotion there. A target without pins that accepts the local key (`accept_local_key`, never a
production target) verifies with the local key pair: the public key file must be the public half of the
private key `sign.key` names, so swapping the public key alone in the work dir is refused. Whoever can
write the work dir can also read the local private key and sign with it: the local key proves nothing
beyond the work dir, which is why production targets accept pinned keys only. A target with neither
refuses: it has nothing to verify a verdict with. Every result says which of these applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pipeline.config import SignConfig
from pipeline.errors import LlmgateError
from pipeline.promote.floor import PolicyFloor
from pipeline.promote.targets import Target
from pipeline.supplychain import cosign_keys
from pipeline.supplychain.guard import PromotionRefused, TargetPolicy
from pipeline.supplychain.signing import PublicKey, load_public_key, load_signing_key


@dataclass(frozen=True)
class TrustedKey:
    key: PublicKey
    how: str  # why this key is trusted for this target, for the output and the audit trail


@lru_cache(maxsize=16)
def _local_digests(root: Path, files: tuple[str, ...]) -> frozenset[str]:
    from pipeline.errors import BadInput
    from pipeline.gates.policy import load_policy
    from pipeline.supplychain.gate_sections import SECTIONS

    out = set()
    for name in files:
        try:
            out.add(load_policy(root / name, sections=SECTIONS).sha256)
        except BadInput:
            continue  # a local policy that does not load made no verdict either
    return frozenset(out)


def local_policy_digests(target: Target) -> frozenset[str]:
    """The effective digests of the policies targets.yaml names as local."""
    return _local_digests(target.root.resolve(), target.local_policies)


def target_policy(target: Target) -> TargetPolicy:
    cfg = target.config
    floor = PolicyFloor(target) if cfg.floor is not None else None
    return TargetPolicy(target=target.name, allow_local_policy=cfg.accept_local_policy,
                        accepted_policy_sha256=frozenset(cfg.accepted_policies) or None, production=cfg.production,
                        local_policy_sha256=local_policy_digests(target),
                        floor=floor.problem if floor is not None else None)


def trusted_key(target: Target, sign: SignConfig, *, where: str) -> TrustedKey:
    """The key `target`'s verdicts must verify with, or `PromotionRefused` (exit 1) saying why there is
    none; `where` names the release being moved. A missing or garbled key file is bad input (exit 2)."""
    public = load_public_key(sign.public_key)
    pins = target.config.keys
    if pins:
        if public.key_id in pins:
            return TrustedKey(public, f"key {public.key_id} ({sign.public_key}) pinned for target {target.name} "
                                      f"in {target.source.split(':')[0]}")
        raise PromotionRefused(
            f"the public key {sign.public_key} (id {public.key_id}) is not a key target {target.name} pins "
            f"({', '.join(pins)}): a verdict it verifies proves nothing here", where=where)
    if not target.config.accept_local_key:
        raise PromotionRefused(
            f"target {target.name} pins no signing key, so nothing can verify a verdict for it", where=where,
            hint=f"pin the release key's id (`llmgate keys id PUBLIC_KEY`) under targets.{target.name}.keys in "
                 f"{target.source.split(':')[0]}")
    try:
        private = load_signing_key(sign)
    except LlmgateError as exc:
        raise PromotionRefused(
            f"target {target.name} pins no key and accepts only the local key pair, but the local private key "
            f"cannot vouch for {sign.public_key}: {exc.message}", where=where) from None
    local_id = cosign_keys.key_id(private.public)
    if local_id != public.key_id:
        raise PromotionRefused(
            f"the public key {sign.public_key} (id {public.key_id}) is not the public half of the local signing "
            f"key (id {local_id}): target {target.name} trusts the local key pair only", where=where)
    return TrustedKey(public, f"local key {public.key_id} (not pinned: accepted because target {target.name} is "
                              "non-production and accepts the local key pair; production targets require a pinned key)")

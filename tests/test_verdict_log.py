"""The verdict log: an RFC 6962 Merkle tree of verdicts under C2SP checkpoints signed with the release key,
kept in the store and in the registry, so that neither a registry writer nor a store writer can make an
older pass the newest word on a release. Formats are checked against their specs' own vectors; each
attack is made with the access its attacker has (registry pushes, or SQL on the store) and refused."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import create_engine, text

from pipeline.adapters import cosign_layout as L
from pipeline.adapters import log_artifact
from pipeline.adapters.registry import RegistryClient, split_repository
from pipeline.models import Decision, utcnow
from pipeline.store import Store
from pipeline.supplychain import cosign_keys as ck
from pipeline.supplychain.signing import load_public_key, verified_verdicts
from pipeline.supplychain.verdict_log import (
    EM_DASH,
    LogEntry,
    LogRefused,
    VerdictLog,
    note_key_id,
    open_checkpoint,
    sign_checkpoint,
    tree_root,
)
from tests.evidence_env import Env, install_eval_double, registry_tags
from tests.trust_images import trust_repo

# RFC 6962 test vectors (certificate-transparency's merkle_tree_test): the leaves and the tree head at each size.
LEAVES = ["", "\x00", "\x10", "\x20\x21", "\x30\x31", "\x40\x41\x42\x43", "\x50\x51\x52\x53\x54\x55\x56\x57",
          "\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]
ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
ORIGIN = "127.0.0.1:5000/llmgate/server/llmgate-verdicts"


@pytest.fixture(scope="module")
def key() -> ck.SigningKey:
    return ck.SigningKey(private=ck.generate_key(), source="test")


def test_the_tree_is_rfc6962s() -> None:
    assert tree_root([]).hex() == hashlib.sha256(b"").hexdigest()
    assert [tree_root(LEAVES[:n]).hex() for n in range(1, 9)] == ROOTS


def test_a_checkpoint_is_a_c2sp_signed_note(key) -> None:  # type: ignore[no-untyped-def]
    root = tree_root(LEAVES[:3])
    cp = sign_checkpoint(ORIGIN, 3, root, key)
    text, sig_line = cp.note.split("\n\n")
    assert text == f"{ORIGIN}\n3\n{base64.b64encode(root).decode()}"
    dash, name, blob = sig_line.rstrip("\n").split(" ")
    assert dash == "\u2014" and name == ORIGIN and cp.note.endswith("\n")
    raw = base64.b64decode(blob)
    # Signature type 0x02 (ECDSA): key ID = SHA-256 of the DER SubjectPublicKeyInfo, first four bytes.
    der = key.public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert raw[:4] == hashlib.sha256(der).digest()[:4] == note_key_id(key.public)
    assert ck.verify_signature(key.public, raw[4:], (text + "\n").encode())  # over the note text, newline included
    assert open_checkpoint(cp.note, key.public, origin=ORIGIN) == cp


def test_a_checkpoint_is_refused_unless_our_key_signed_exactly_it(key) -> None:  # type: ignore[no-untyped-def]
    cp = sign_checkpoint(ORIGIN, 3, tree_root(LEAVES[:3]), key)
    other = ck.SigningKey(private=ck.generate_key(), source="other")
    cases = {
        "does not verify": cp.note.replace(f"{ORIGIN}\n3\n", f"{ORIGIN}\n2\n", 1),
        "is of log": cp.note.replace(ORIGIN, "example.com/other"),
        "is not signed by key": sign_checkpoint(ORIGIN, 3, tree_root(LEAVES[:3]), other).note,
        "not a decimal": cp.note.replace(f"{ORIGIN}\n3\n", f"{ORIGIN}\n03\n", 1),
        "not a signed note": cp.note.replace("\n\n", "\n"),
    }
    for why, note in cases.items():
        with pytest.raises(ValueError, match=why):
            open_checkpoint(note, key.public, origin=ORIGIN)
    # A signature by an unknown key (a witness's cosignature, say) is ignored, as the signed-note spec says.
    witness = f"{EM_DASH} witness.example/w1 {base64.b64encode(b'abcd' + b'x' * 64).decode()}\n"
    assert open_checkpoint(cp.note + witness, key.public, origin=ORIGIN).size == 3


def _entry(run_id: str, decision: str, model: str = "sha256:" + "1" * 64) -> LogEntry:
    return LogEntry(repository="127.0.0.1:5000/llmgate/server", image="sha256:" + "a" * 64, model=model,
                    decision=decision, run_id=run_id, created=utcnow(), verdict_sha256=hashlib.sha256(
                        run_id.encode()).hexdigest())


def test_appends_land_in_order_when_another_gate_appends_first(tmp_path: Path, key) -> None:  # type: ignore[no-untyped-def]
    store = Store(tmp_path / "results.db")
    log = VerdictLog(store, key.public, seen_dir=tmp_path / "seen", read_registry=False)
    repo = "127.0.0.1:5000/llmgate/server"
    log.append(repo, _entry("r0", "pass"), key)

    class Racing:
        """The store, with another gate appending between this gate's read and its write."""

        def __init__(self) -> None:
            self.raced = False

        def verdict_log(self, origin: str):  # type: ignore[no-untyped-def]
            return store.verdict_log(origin)

        def append_verdict_log(self, origin: str, index: int, leaf: str, note: str) -> bool:
            if not self.raced:
                self.raced = True
                VerdictLog(store, key.public, seen_dir=None, read_registry=False).append(repo, _entry("r1", "blocked"), key)
            return store.append_verdict_log(origin, index, leaf, note)

    index, view = VerdictLog(Racing(), key.public, seen_dir=None, read_registry=False,  # type: ignore[arg-type]
                             location=store.location).append(
        repo, _entry("r2", "pass"), key)
    assert index == 2 and [e.run_id for e in view.entries()] == ["r0", "r1", "r2"]
    assert log.view(repo).newest_for("sha256:" + "a" * 64, "sha256:" + "1" * 64, None)[1].run_id == "r2"


# -- against the real registry and store ------------------------------------------------------------------
@pytest.fixture
def env(tmp_path: Path, local_stack, store_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LLMGATE_ACTOR", "ci-bot")
    monkeypatch.setenv("LLMGATE_STORE_URL", store_url)
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    double = install_eval_double(monkeypatch)
    with trust_repo() as repo:
        yield Env(tmp_path, repo.repository, repo.image(), store_url, double)


def _registry(env: Env) -> tuple[RegistryClient, str]:
    host, name = split_repository(env.repository)
    return RegistryClient(host), name


def _pass_then_blocked(env: Env):  # type: ignore[no-untyped-def]
    """The same (image, weights) pair gated twice: a pass, then a newer blocked verdict; both attested."""
    weights = env.weights("good", b"good weights")
    passed = env.gated("passing", weights)
    reg, name = _registry(env)
    after_pass = reg.manifest(name, env.log_tag).raw  # what a registry writer saw (and kept) then
    blocked = env.gated("blocking", weights)
    assert (passed.decision, blocked.decision) == (Decision.PASS, Decision.BLOCKED)
    return passed, blocked, after_pass


def _hide_verdict(env: Env, run_id: str) -> None:
    """Rewrite the `.att` manifest without the layer holding run `run_id`'s verdict: a registry push, no key."""
    reg, name = _registry(env)
    tag = L.tag_for(env.image.split("@")[1], L.ATT_SUFFIX)
    layers = [L.LayerDescriptor.parse(d) for d in reg.manifest(name, tag).layers]
    kept = []
    for layer in layers:
        body = L.parse_envelope(reg.blob_bytes(name, layer.digest)).body
        if json.loads(body)["predicate"].get("run_id") != run_id:
            kept.append(layer)
    assert len(kept) == len(layers) - 1
    config = L.config_blob(kept)
    reg.upload_blob(name, config)
    reg.put_manifest(name, tag, L.signatures_manifest(kept, config), L.OCI_MANIFEST)


def test_repro2_a_newer_blocked_verdict_hidden_in_the_registry_still_refuses_the_older_pass(env) -> None:  # type: ignore[no-untyped-def]
    passed, blocked, after_pass = _pass_then_blocked(env)
    _hide_verdict(env, blocked.run_id)
    pub = load_public_key(env.keys / "cosign.pub")
    seen, _ = verified_verdicts(env.image, pub, signer=__import__("pipeline.adapters.signer").adapters.signer
                                .PythonSigner())
    assert [v.run_id for v in seen] == [passed.run_id]  # the registry now shows only the older pass
    reg, name = _registry(env)
    tags, rows = registry_tags(reg, name), env.store_rows()

    details = env.promote(passed.run_id)
    assert details.outcome == "refused", details
    assert f"verdict log: the signed pass of run {passed.run_id} (log entry #0) is not the newest verdict for this " \
           f"pair: entry #1 (run {blocked.run_id}, blocked" in details.reason
    assert registry_tags(reg, name) == tags and env.store_rows() == rows

    # The registry writer also puts back the log artifact from before the blocked verdict: the store's copy
    # is longer and consistent with it, so the blocked verdict still decides.
    reg.put_manifest(name, env.log_tag, after_pass, L.OCI_MANIFEST)
    assert "entry #1 (run" in env.promote(passed.run_id).reason
    # ...or publishes the whole log with the blocked entry turned into a pass (it cannot sign a checkpoint).
    stored = env.ws.store.verdict_log(env.origin)
    assert stored.checkpoint is not None and len(stored.entries) == 2
    forged = [leaf.replace('"decision":"blocked"', '"decision":"pass"') for _, leaf in stored.entries]
    log_artifact.push(reg, name, env.log_tag, stored.checkpoint, forged)
    reason = env.promote(passed.run_id).reason
    assert "the verdict log entries in the registry do not hash to its signed checkpoint" in reason

    res = __import__("tests.test_evidence", fromlist=["_cli"])._cli(
        env, "verify", env.image, "--key", str(env.keys / "cosign.pub"))
    assert res.exit_code == 1 and "log        REFUSED" in res.output


def test_a_store_rollback_of_the_log_is_detected(env) -> None:  # type: ignore[no-untyped-def]
    passed, blocked, _ = _pass_then_blocked(env)
    _hide_verdict(env, blocked.run_id)  # so that only the log can still tell about the blocked verdict
    origin = env.origin
    # Someone with SQL access deletes the newest entry and its checkpoint: a consistent, older log.
    env.sql("DELETE FROM verdict_log WHERE origin = :o AND idx = 1", o=origin)
    env.sql("DELETE FROM verdict_log_checkpoints WHERE origin = :o AND size = 2", o=origin)
    details = env.promote(passed.run_id)  # the registry's copy (published by attest) still has both
    assert details.outcome == "refused" and f"entry #1 (run {blocked.run_id}, blocked" in details.reason
    # The registry's copy goes too (an attacker with both): this verifier has seen the longer log.
    reg, name = _registry(env)
    reg.delete_manifest(name, str(reg.resolve(name, env.log_tag)))
    details = env.promote(passed.run_id)
    assert details.outcome == "refused"
    assert "the verdict log was rolled back: this verifier has seen a checkpoint of 2 entries, but the store holds 1" \
        in details.reason


def _logged(store_url: str, key: ck.SigningKey) -> tuple[VerdictLog, str]:
    """A store's log with a pass and then a blocked verdict for one pair, appended as two gates would."""
    store = Store(store_url)
    log = VerdictLog(store, key.public, seen_dir=None, read_registry=False)
    repo = "127.0.0.1:5000/llmgate/server"
    for run_id, decision in (("r0", "pass"), ("r1", "blocked")):
        log.append(repo, _entry(run_id, decision), key)
    return log, log.origin(repo)


@pytest.mark.parametrize(("attack", "why"), [
    ("DELETE FROM verdict_log_checkpoints WHERE origin = :o AND size = 2",
     ("holds 2 verdict log entries, but its newest signed checkpoint covers 1: checkpoints were deleted or entries "
      "planted")),
    ("UPDATE verdict_log SET leaf = replace(leaf, '\"blocked\"', '\"pass\"') WHERE origin = :o",
     "the verdict log entries in the store do not hash to its signed checkpoint"),
    ("DELETE FROM verdict_log WHERE origin = :o AND idx = 0", "has no entry #0 (deleted)"),
    ("INSERT INTO verdict_log (origin, idx, leaf) VALUES (:o, 2, '{}')", "checkpoints were deleted or entries planted"),
    ("UPDATE verdict_log_checkpoints SET note = replace(note, '\n2\n', '\n3\n') WHERE origin = :o AND size = 2",
     "the checkpoint in the store does not verify: checkpoint signature does not verify"),
])
def test_store_edits_of_the_log_are_refused(store_url: str, key, attack: str, why: str) -> None:  # type: ignore[no-untyped-def]
    log, origin = _logged(store_url, key)
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(attack), {"o": origin})
    finally:
        engine.dispose()
    with pytest.raises(LogRefused) as ei:
        log.view("127.0.0.1:5000/llmgate/server")
    assert why in ei.value.message and ei.value.exit_code == 1


def test_a_log_signed_by_another_key_is_refused(store_url: str, key) -> None:  # type: ignore[no-untyped-def]
    log, origin = _logged(store_url, key)
    other = ck.SigningKey(private=ck.generate_key(), source="forger")
    # Another key has a log of its own in the same store (its id names the key): this one's entries are not in it.
    theirs = VerdictLog(log.store, other.public, seen_dir=None, read_registry=False)
    assert theirs.log_id != log.log_id and theirs.view("127.0.0.1:5000/llmgate/server").size == 0
    # A checkpoint of this log re-signed with the other key (all a store writer with a key of their own can do):
    stored = log.store.verdict_log(origin)
    leaves = [leaf for _, leaf in stored.entries]
    forged = sign_checkpoint(origin, len(leaves), tree_root(leaves), other)
    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE verdict_log_checkpoints SET note = :n WHERE origin = :o AND size = 2"),
                         {"n": forged.note, "o": origin})
    finally:
        engine.dispose()
    with pytest.raises(LogRefused, match="the checkpoint in the store does not verify"):
        log.view("127.0.0.1:5000/llmgate/server")

"""What a stage gets besides the run record: `fn(run, ctx) -> StageResult`.

The context holds the configuration, the work dir (and through it the store), the reporter, the
adapters to outside systems, the policy the run is gated under, per-invocation options, and live
resources: the server the boot stage started is held here for bench and eval, and stopped when the
runner closes the context, never written into the record. A stage reads what earlier stages
established from `run` and returns its result; it never mutates the record or checkpoints it (the
runner does).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.adapters.bundle import Adapters
from pipeline.config import PipelineConfig
from pipeline.errors import BadInput
from pipeline.models import Stage
from pipeline.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from pipeline.adapters.signer import Signer
    from pipeline.gates.policy import Policy
    from pipeline.promote.backend import Backend
    from pipeline.promote.targets import Target
    from pipeline.supplychain.signing import ReleaseKeys
    from pipeline.supplychain.verdict_log import VerdictLog
    from pipeline.workspace import Workspace


@dataclass
class ServedModel:
    """A server bench and eval send requests to. `stop` is None for a server started elsewhere."""

    base_url: str
    model: str | None
    stop: Callable[[], None] | None = None
    pid: int | None = None  # a local server's host pid (its CPU time is the bench's own, not other work)


@dataclass
class BaselineServer(ServedModel):
    """The last promoted release, booted next to the candidate so both are measured on the same machine."""

    run_id: str = ""
    image: str = ""
    model_digest: str | None = None


@dataclass
class PromoteRequest:
    """Where a promote step moves the release; set by the command that asks for a promotion. The target
    is its configuration (targets.yaml) and the backend is built from it (pipeline.promote.factory)."""

    target: Target
    backend: Backend
    dry_run: bool = False
    rollback_of: str | None = None  # the digest a rollback replaces


@dataclass
class StageOptions:
    """Per-invocation choices that are not configuration (they change what runs, not how it is judged)."""

    plan: str = "local"
    server_url: str | None = None  # attach to a server started elsewhere instead of booting one
    fresh: bool = False  # recompute every stage even when a stored result has the same inputs
    remeasure: bool = False  # boot and bench measured again even when a recent one of this machine is stored
    overlay: str = "canary"
    manifests_dir: Path = Path("manifests")
    promote: PromoteRequest | None = None
    scanners_ran: list[str] | None = None  # `scan --report`: which trivy scanners made the given report


@dataclass
class StageContext:
    cfg: PipelineConfig
    ws: Workspace
    reporter: Reporter = field(default_factory=NullReporter)
    adapters: Adapters = field(default_factory=Adapters)
    policy: Policy | None = None
    options: StageOptions = field(default_factory=StageOptions)
    server: ServedModel | None = None
    baseline_server: BaselineServer | None = None
    # The runner's keys, loaded on first use (the key file's KDF is deliberately slow; a promotion never
    # needs the private key). None: loaded here from the config.
    keys_source: Callable[[], ReleaseKeys] | None = None
    # The plan's stages whose results carry evidence links (`Plan.linked`): what the gate verifies.
    linked: tuple[Stage, ...] | None = None
    _resources: ExitStack = field(default_factory=ExitStack, repr=False)
    _keys: ReleaseKeys | None = field(default=None, repr=False)

    def release_keys(self) -> ReleaseKeys:
        """The signing key (None in an unsigned preview) and the public key verification trusts."""
        if self._keys is None:
            if self.keys_source is not None:
                self._keys = self.keys_source()
            else:
                from pipeline.supplychain.signing import release_keys

                self._keys = release_keys(self.cfg.sign)
        return self._keys

    def linked_stages(self) -> tuple[Stage, ...]:
        """The stages whose links must verify; a context that was not told cannot judge (never "none")."""
        if self.linked is None:
            raise RuntimeError("this stage context was built without the plan's evidence stages (`linked`)")
        return self.linked

    def verdict_log(self, repository: str) -> VerdictLog:
        """This store's verdict log, verified with the release key, mirrored to `repository`'s registry."""
        from pipeline.adapters.registry import split_repository
        from pipeline.supplychain.verdict_log import SEEN_DIR, VerdictLog

        keys = self.release_keys()
        assert keys.public_key is not None
        host, _ = split_repository(repository)
        return VerdictLog(self.ws.store, keys.public_key, seen_dir=self.ws.root / SEEN_DIR,
                          registry=self.adapters.registry(host))

    def hold_server(self, server: ServedModel) -> None:
        """Keep `server` for the stages after this one; it is stopped when the context closes."""
        self.release_server()
        self.server = server

    def hold_baseline(self, server: BaselineServer) -> None:
        if self.baseline_server is not None and self.baseline_server.stop is not None:
            self.baseline_server.stop()
        self.baseline_server = server

    def release_server(self) -> None:
        for server in (self.server, self.baseline_server):
            if server is not None and server.stop is not None:
                server.stop()
        self.server = self.baseline_server = None

    def require_server(self, purpose: str) -> ServedModel:
        if self.server is None:
            raise BadInput(f"no server to {purpose}: the boot stage has not started one in this invocation",
                           where="boot", hint="run the boot stage first, or pass --server-url")
        return self.server

    def signer(self) -> Signer:
        """The invocation's signer, from the adapters, each cosign call bounded by `sign.timeout_s`."""
        return self.adapters.signing(self.cfg.sign.timeout_s)

    def require_policy(self) -> Policy:
        if self.policy is None:
            raise BadInput("no gate policy loaded", where="gates_file")
        return self.policy

    def close(self) -> None:
        try:
            self.release_server()
        finally:
            self._resources.close()

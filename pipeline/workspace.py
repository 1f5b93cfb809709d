"""Where a run lives on disk and in the store, and the checkpoint written after every stage."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import BadInput, InfraError
from pipeline.models import RunRecord, check_run_id
from pipeline.redact import redact
from pipeline.store import Store, resolve_store

DEFAULT_ROOT = Path(".llmgate")


class Workspace:
    """The `.llmgate/` directory (stack state, run artifacts) plus the results store."""

    def __init__(self, root: Path | str = DEFAULT_ROOT, store_url: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        # `store_url` is the --store option (a SQLite path); a server URL comes from the environment.
        self.store_location = resolve_store(store_url, self.root)
        self.store_url = self.store_location.shown  # printable: a password is hidden
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_location)
        return self._store

    def run_dir(self, run_id: str) -> Path:
        d = self.root / "runs" / run_id
        d.mkdir(parents=True, exist_ok=True)
        return d

    def checkpoint(self, run: RunRecord) -> Path:
        """Persist the record to the store and as `run.json` next to its artifacts."""
        self.store.save(run)
        path = self.run_dir(run.run_id) / "run.json"
        tmp = path.with_suffix(".json.tmp")
        try:
            tmp.write_text(json.dumps(redact(json.loads(run.model_dump_json())), indent=2))
            tmp.replace(path)  # atomic: a crash mid-write never leaves a torn record
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InfraError(f"cannot write the run record: {exc.strerror} (it is saved in the store)",
                             where=str(path)) from exc
        return path

    def load_run(self, ref: str | None, *, tag: str | None = None) -> RunRecord:
        """A stored run by id (or unique prefix), the newest run of `tag`, or the newest run of all.

        Never a file: the store is the record, and a file must not be able to speak for it."""
        if ref is not None:
            check_run_id(ref, where="--run")
            return self.store.get(ref)
        if tag is not None:
            newest = self.store.newest(tag=tag)
            if newest is None:
                raise BadInput(f"no run of tag {tag!r} in the store", where="--tag")
            return newest
        run = self.store.latest()
        if run is None:
            raise BadInput("the store holds no run yet", where=self.store_url, hint="start with `llmgate run`")
        return run

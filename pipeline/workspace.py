"""Where a run lives on disk and in the store, and the checkpoint written after every stage."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.errors import BadInput
from pipeline.models import RunRecord
from pipeline.redact import redact
from pipeline.store import Store

DEFAULT_ROOT = Path(".llmgate")


class Workspace:
    """The `.llmgate/` directory (stack state, run artifacts) plus the results store."""

    def __init__(self, root: Path | str = DEFAULT_ROOT, store_url: str | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store_url = store_url or str(self.root / "results.db")
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.store_url)
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
        tmp.write_text(json.dumps(redact(json.loads(run.model_dump_json())), indent=2))
        tmp.replace(path)  # atomic: a crash mid-write never leaves a torn record
        return path

    def load_run(self, ref: str | None) -> RunRecord:
        """A run by id (or unique prefix), by path to a run.json, or the latest one."""
        if ref is None:
            run = self.store.latest()
            if run is None:
                raise BadInput("the store holds no run yet", where=self.store_url, hint="start with `llmgate build`")
            return run
        path = Path(ref)
        if path.suffix == ".json" or path.is_file():
            if not path.is_file():
                raise BadInput("run record not found", where=str(path))
            try:
                return RunRecord.model_validate_json(path.read_text())
            except ValueError as exc:
                raise BadInput(f"not a valid run record: {exc}", where=str(path)) from exc
        return self.store.get(ref)

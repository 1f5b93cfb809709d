"""A release gated by the real runner, stages and store, signed with real keys, attested to the real local
registry: the setting of the evidence, verdict-log and replay tests.

The only stand-in is the eval stage's measurement (no model server here): `EvalDouble` returns what an
eval of the run's weights measured, and the runner records and signs it as it does any stage's result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import create_engine, text

from pipeline.adapters import log_artifact
from pipeline.config import PipelineConfig
from pipeline.models import ImageRef, ItemResult, RunRecord, Stage, StageResult, StageStatus
from pipeline.orchestrate import runner as runner_module
from pipeline.orchestrate.plan import get_plan
from pipeline.orchestrate.runner import Runner
from pipeline.progress import NullReporter
from pipeline.promote.gitops import GitopsBackend
from pipeline.stages.context import PromoteRequest, StageContext, StageOptions
from pipeline.supplychain.cosign_keys import write_key_pair
from pipeline.supplychain.signing import load_public_key
from pipeline.supplychain.verdict_log import log_id, origin_for
from pipeline.workspace import Workspace
from tests.promote_helpers import gitops_repo, make_target
from tests.stage_helpers import record_measured

REPO = Path(__file__).resolve().parents[1]
CORRECTNESS = "version: 1\ngates:\n  - name: correctness\n    source: eval.correctness_mean\n    threshold: 0.6\n" \
              "    key: true\n"
PASSING = "version: 1\ngates:\n  - name: signature\n    source: sign.verified\n    threshold: 1\n    key: true\n"
BLOCKING = PASSING + "  - name: no_secret_in_image\n    source: leak.leaks\n    threshold: 0\n    key: true\n"
POLICIES = {"correctness": CORRECTNESS, "passing": PASSING, "blocking": BLOCKING}
TABLES = ("runs", "stage_runs", "gate_verdicts", "verdict_log", "verdict_log_checkpoints")


class EvalDouble:
    """What the eval stage measured for each weights directory (correctness per item, 0/1)."""

    def __init__(self) -> None:
        self.correctness: dict[str, float] = {}

    def __call__(self, run: RunRecord, ctx: StageContext) -> StageResult:
        assert run.model is not None
        mean = self.correctness[Path(run.model.path).name]
        items = [ItemResult(item_id=f"q{i}", question=f"question {i}", response="an answer",
                            scores={"correctness": 1.0 if i < round(mean * 10) else 0.0}) for i in range(10)]
        return StageResult(stage=Stage.EVAL, status=StageStatus.OK, items=items,
                           metrics={"correctness_mean": mean, "items": 10.0})


class Env:
    def __init__(self, tmp: Path, repository: str, image: str, store_url: str, eval_double: EvalDouble) -> None:
        self.tmp, self.repository, self.image, self.store_url = tmp, repository, image, store_url
        self.ws = Workspace(tmp / "ws")  # the store comes from LLMGATE_STORE_URL, as on a CI runner
        self.keys = tmp / "keys"
        write_key_pair(self.keys, b"")
        self.gitops = gitops_repo(tmp)
        self.eval = eval_double

    def cfg(self, policy: str) -> PipelineConfig:
        path = self.tmp / f"{policy}.yaml"
        path.write_text(POLICIES[policy])
        cfg = PipelineConfig()
        cfg.gates_file = str(path)
        cfg.eval.ground_truth = str(REPO / "ground_truth" / "v1")
        cfg.sign.key.file, cfg.sign.public_key = str(self.keys / "cosign.key"), str(self.keys / "cosign.pub")
        return cfg

    def config_file(self, policy: str) -> Path:
        path = self.tmp / f"llmgate-{policy}.yaml"
        path.write_text(yaml.safe_dump(self.cfg(policy).model_dump(mode="json")))
        return path

    def runner(self, cfg: PipelineConfig, **options: Any) -> Runner:
        return Runner(ws=self.ws, cfg=cfg, plan=get_plan("dagger"), reporter=NullReporter(),
                      options=StageOptions(server_url="http://127.0.0.1:9", **options))

    def weights(self, name: str, content: bytes) -> Path:
        d = self.tmp / name
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text("{}")
        (d / "model.safetensors").write_bytes(content)
        return d

    def measured(self, policy: str, weights: Path, *, correctness: float | None = None) -> RunRecord:
        """A run of the image with these weights: its published image recorded, booted, signed, and (with
        `correctness`) evaluated."""
        runner = self.runner(self.cfg(policy))
        run = runner.create(image=ImageRef.parse(self.image), model_dir=weights)
        runner.run_stage(run, Stage.BUILD)
        record_measured(run, StageResult(stage=Stage.BOOT, status=StageStatus.OK,
                                         metrics={"load_time_s": 20.0, "load_time_p95_s": 20.0}), runner.cfg)
        self.ws.checkpoint(run)
        runner.run_stage(run, Stage.SIGN)
        if correctness is not None:
            self.eval.correctness[weights.name] = correctness
            runner.run_stage(run, Stage.EVAL)
        return self.ws.store.get(run.run_id)

    def stage(self, run_id: str, stage: Stage, policy: str) -> StageResult:
        return self.runner(self.cfg(policy)).run_stage(self.ws.store.get(run_id), stage)

    def gated(self, policy: str, weights: Path, *, correctness: float | None = None) -> RunRecord:
        """Measured, gated and attested by the real stages."""
        run = self.measured(policy, weights, correctness=correctness)
        for stage in (Stage.GATE, Stage.ATTEST):
            self.stage(run.run_id, stage, policy)
        return self.ws.store.get(run.run_id)

    def promote(self, run_id: str, target: str = "canary"):  # type: ignore[no-untyped-def]
        chosen = make_target(target)
        runner = self.runner(self.cfg("passing"), promote=PromoteRequest(
            target=chosen, backend=GitopsBackend(repo=self.gitops, overlays={chosen.name: chosen.overlay})))
        return runner.run_stage(self.ws.store.get(run_id), Stage.PROMOTE).details

    @property
    def log_id(self) -> str:
        return log_id(self.ws.store.location, load_public_key(self.keys / "cosign.pub").key)

    @property
    def origin(self) -> str:
        """The verdict log of this store for the image's repository."""
        return origin_for(self.repository, self.log_id)

    @property
    def log_tag(self) -> str:
        return log_artifact.tag_for(self.log_id)

    def sql(self, statement: str, **params: object) -> list[tuple[Any, ...]]:
        """Raw SQL on the store, as someone with database access would run it."""
        engine = create_engine(self.store_url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(statement), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def store_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row a refusal must leave as it was."""
        return {t: self.sql(f"SELECT * FROM {t} ORDER BY 1") for t in TABLES}


def install_eval_double(monkeypatch: Any) -> EvalDouble:
    """The runner runs `EvalDouble` for the eval stage; every other stage is the real one."""
    double = EvalDouble()
    real = runner_module.stage_fn

    def stage_fn(stage: Stage, *, plan: Any) -> Any:
        return double if stage is Stage.EVAL else real(stage, plan=plan)

    monkeypatch.setattr(runner_module, "stage_fn", stage_fn)
    return double


def registry_tags(reg: Any, name: str) -> dict[str, str | None]:
    """Every tag of repository `name` and the manifest it names: what a refusal must leave as it was."""
    return {tag: reg.resolve(name, tag) for tag in sorted(reg.tags(name))}

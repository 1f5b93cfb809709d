"""Creating a run record: the release it is about, fixed before any stage runs.

A run is for a release: image (its digest arrives with the build stage, or is given for an image built
elsewhere), weights (the content digest of the model directory), ground truth (version and sha256),
gate policy (name, files, sha256) and configuration (hash). Everything a person wrote is validated
here, so bad input stops the run before the first side effect.
"""

from __future__ import annotations

from pathlib import Path

from evals.ground_truth import load_ground_truth
from pipeline.adapters.docker_run import has_model_files
from pipeline.adapters.git import source_commit
from pipeline.config import PipelineConfig, config_hash
from pipeline.errors import BadInput
from pipeline.gates.policy import Policy
from pipeline.models import ImageRef, PolicyRef, RunRecord, check_tag
from pipeline.supplychain.model_digest import model_ref


def default_tag(commit: str | None) -> str:
    """The tag people see when none is given: the short commit, `-dirty` when uncommitted changes went in."""
    if not commit:
        return "dev"
    return commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def policy_ref(policy: Policy) -> PolicyRef:
    return PolicyRef(name=Path(policy.files[0]).name, files=list(policy.files), sha256=policy.sha256)


def new_run(
    cfg: PipelineConfig,
    policy: Policy,
    *,
    plan: str,
    tag: str | None = None,
    image: ImageRef | None = None,
    model_dir: Path | None = None,
) -> RunRecord:
    """A new record for the release `cfg` describes (`image` when it was built elsewhere)."""
    if tag is not None:
        check_tag(tag, where="--tag")
    if image is not None and image.tag is not None and not tag:
        check_tag(image.tag, where="--image")
    model_path = Path(model_dir or cfg.boot.model_dir)
    make_demo = "make the demo model with `llmgate demo-model .llmgate/models/demo-v3` (scripts/demo.sh does)"
    if not model_path.is_dir():
        raise BadInput("model directory not found", where=f"boot.model_dir: {model_path}", hint=make_demo)
    if not has_model_files(model_path):
        raise BadInput(f"no model at {model_path} (the directory holds no model file)", where="boot.model_dir",
                       hint=make_demo)
    gt = load_ground_truth(Path(cfg.eval.ground_truth))
    commit = source_commit(Path(cfg.build.context))
    if image is None:
        image = ImageRef(repository=cfg.build.repository, tag=tag or cfg.build.tag or default_tag(commit))
    elif tag:
        image = image.model_copy(update={"tag": tag})
    model = model_ref(model_path)
    return RunRecord(
        target=cfg.target,
        image=image,
        model=model.model_copy(update={"path": str(model_path.resolve())}),
        policy=policy_ref(policy),
        ground_truth=gt.ref(),
        source_commit=commit,
        config_hash=config_hash(cfg),
        labels={"llmgate.plan": plan},
    )

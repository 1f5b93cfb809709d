"""Pipeline configuration: one pydantic model per stage, loaded from `llmgate.yaml`.

Every field has a default that makes the embedded local job work (local stack, CPU image, demo
model), so `llmgate run` needs no config file. Unknown keys are errors that name the key, since a
typo in a release pipeline silently falling back to a default is how bad images get promoted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import BadInput


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretSource(Section):
    """A build or runtime secret, named by where it comes from, never by its value."""

    file: str | None = None
    env: str | None = None


class StackConfig(Section):
    registry: str = "127.0.0.1:5000"
    base_repository: str = "llmgate/base"
    lock_file: str = "dockerfiles/base.lock.json"
    suite: str = "bookworm"


class BuildConfig(Section):
    dockerfile: str = "dockerfiles/cpu.Dockerfile"
    context: str = "."
    repository: str = "127.0.0.1:5000/llmgate/server"
    tag: str | None = None  # default: short git commit, or "dev"
    target: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    # The host CA bundle lets pip reach PyPI inside the build without copying it into a layer.
    secrets: dict[str, SecretSource] = Field(
        default_factory=lambda: {"ca_bundle": SecretSource(file="/etc/ssl/certs/ca-certificates.crt")}
    )
    network: str = "host"
    timeout_s: float = 1800


class BootConfig(Section):
    model_dir: str = ".llmgate/models/demo"
    container_port: int = 8000
    gpus: Literal["none", "all"] | int = "none"
    ready_timeout_s: float = 300
    readiness_path: str = "/v1/models"
    served_model_name: str | None = None  # default: what the server lists
    env: dict[str, str] = Field(default_factory=dict)
    memory: str | None = None


class BenchConfig(Section):
    warmup: int = 2
    requests: int = 24
    concurrency: int = 4
    max_tokens: int = 32
    request_timeout_s: float = 60
    prompts: Literal["ground_truth", "synthetic"] = "ground_truth"


class JudgeConfig(Section):
    base_url: str
    model: str
    api_key_env: str | None = "LLMGATE_JUDGE_API_KEY"
    timeout_s: float = 60
    concurrency: int = 4


class EvalConfig(Section):
    ground_truth: str = "ground_truth/v1"
    concurrency: int = 4
    max_tokens: int = 64
    request_timeout_s: float = 60
    retries: int = 2
    judge: JudgeConfig | None = None


class PipelineConfig(Section):
    target: str = "default"
    gates_file: str = "gates.yaml"
    stack: StackConfig = Field(default_factory=StackConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    boot: BootConfig = Field(default_factory=BootConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    extra: dict[str, Any] = Field(default_factory=dict)


def describe_validation_error(exc: ValidationError) -> str:
    """`build.secrets.ca_bundle.file: Input should be ...`, one line per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


def load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise BadInput("file not found", where=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise BadInput(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from exc


def load_config(path: str | Path | None = None) -> PipelineConfig:
    if path is None:
        default = Path("llmgate.yaml")
        if not default.exists():
            return PipelineConfig()
        path = default
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise BadInput("expected a mapping at the top level", where=str(path))
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise BadInput(describe_validation_error(exc), where=str(path)) from exc


def config_hash(cfg: PipelineConfig, *extra_files: Path) -> str:
    """sha256 over the effective config and the files it points at (gates policy, ...)."""
    h = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode())
    for f in extra_files:
        if f.exists():
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()

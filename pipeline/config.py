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
    # Wheels staged into `<context>/.whl/` (git-ignored) for a bind mount in the build: the CPU torch
    # wheel, since PyPI's default torch is the multi-GB CUDA build. Missing dir = nothing staged.
    wheelhouse: str | None = "/opt/wheels"
    wheels: list[str] = Field(default_factory=lambda: ["torch-*+cpu-*.whl"])
    push_timeout_s: float = 1800


class BootConfig(Section):
    model_dir: str = ".llmgate/models/demo"
    container_port: int = 8000
    gpus: Literal["none", "all"] | int = "none"
    ready_timeout_s: float = 300
    readiness_path: str = "/health"
    served_model_name: str | None = None  # default: the mounted model path, the name transformers serve and vLLM give it
    env: dict[str, str] = Field(default_factory=dict)
    memory: str | None = None
    # Added by the boot stage (engineer B): repetitions are cold starts (new container each).
    repetitions: int = Field(default=1, ge=1)
    completion_path: str = "/v1/chat/completions"
    probe_interval_s: float = 0.25
    readiness_lag_tolerance_s: float = 15.0  # probe may lag the first good completion by this much
    log_tail_lines: int = 40


class BenchConfig(Section):
    warmup: int = 2
    requests: int = 24
    concurrency: int = 4
    max_tokens: int = 32
    request_timeout_s: float = 60
    prompts: Literal["ground_truth", "synthetic"] = "ground_truth"
    # Added by the bench stage (engineer B); definitions in docs/METRICS.md.
    shape: Literal["concurrency", "poisson", "sweep"] = "concurrency"
    rate_rps: float = 2.0  # poisson arrivals
    sweep_levels: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])
    input_tokens: int = 128  # synthetic prompts
    ignore_eos: bool = True  # synthetic prompts; dropped (and recorded) when the server rejects it
    seed: int = 0
    deadline_s: float = 900  # the whole bench, warm-up included
    slo_ttft_s: float | None = 0.5
    slo_tpot_s: float | None = 0.05
    slo_e2e_s: float | None = None
    metrics_path: str = "/metrics"
    model_bytes: int | None = None  # default: size of the weight files in boot.model_dir
    gpu_bandwidth_gbps: float | None = None  # default: from the runner's GPU model, when known


class JudgeConfig(Section):
    base_url: str
    model: str
    api_key_env: str | None = "LLMGATE_JUDGE_API_KEY"
    api_key_file: str | None = None  # a secret file (e.g. a mounted Kubernetes secret); wins over api_key_env
    timeout_s: float = 60
    concurrency: int = 4


class EvalConfig(Section):
    ground_truth: str = "ground_truth/v1"
    concurrency: int = 4
    max_tokens: int = 64
    request_timeout_s: float = 60
    retries: int = 2
    retry_budget: int | None = None  # retries for the whole collection; default max(retries, 10% of items x retries)
    latency_slo_s: float = 10.0  # end-to-end per item (max_tokens answer); latency_adherence = share within it
    judge: JudgeConfig | None = None


class ScanConfig(Section):
    """How trivy runs (the pass/fail policy lives in the `scan:` section of gates.yaml)."""

    scanners: list[Literal["vuln", "secret", "misconfig"]] = Field(
        default_factory=lambda: ["vuln", "secret", "misconfig"]
    )
    source: Literal["registry", "tarball"] = "registry"
    tarball: str | None = None  # for source=tarball; default: the build stage's tarball artifact
    cache_dir: str = ".llmgate/cache/trivy"
    skip_db_update: bool = False
    offline_scan: bool = True
    db_repository: list[str] = Field(default_factory=list)  # empty: trivy's default
    java_db_repository: list[str] = Field(default_factory=list)
    insecure_registry: bool | None = None  # default: true for 127.0.0.1/localhost registries
    timeout_s: float = 900
    ignore_file: str = ".trivyignore.yaml"
    sarif: bool = True


class SignConfig(Section):
    """cosign signing. Key material is named by its source, never given inline."""

    mode: Literal["key", "keyless"] = "key"
    key: SecretSource = Field(default_factory=lambda: SecretSource(env="COSIGN_PRIVATE_KEY"))
    password: SecretSource | None = Field(default_factory=lambda: SecretSource(env="COSIGN_PASSWORD"))
    public_key: str = "cosign.pub"
    identity_token: SecretSource | None = None  # keyless: OIDC token source
    certificate_identity: str | None = None  # keyless verify
    certificate_identity_regexp: str | None = None
    certificate_oidc_issuer: str | None = None
    # Private registry, no public transparency log: sign with an empty signing config, verify
    # with --insecure-ignore-tlog. Set false to use the public Sigstore services.
    offline: bool = True
    attest: bool = True
    allow_http_registry: bool | None = None  # default: true for 127.0.0.1/localhost registries
    timeout_s: float = 300


class PipelineConfig(Section):
    target: str = "default"
    # The embedded local default runs offline on a CPU: its policy extends the strict production
    # policy (gates.yaml) and relaxes, each with a stated reason, only what cannot hold here.
    gates_file: str = "gates.local.yaml"
    stack: StackConfig = Field(default_factory=StackConfig)
    build: BuildConfig = Field(default_factory=BuildConfig)
    boot: BootConfig = Field(default_factory=BootConfig)
    bench: BenchConfig = Field(default_factory=BenchConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    scan: ScanConfig = Field(default_factory=ScanConfig)
    sign: SignConfig = Field(default_factory=SignConfig)
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

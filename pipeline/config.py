"""Pipeline configuration: one pydantic model per stage, loaded from `llmgate.yaml`.

Every field has a default that makes the embedded local job work (local stack, CPU image, demo
model), so `llmgate run` needs no config file. Unknown keys are errors that name the key, since a
typo in a release pipeline silently falling back to a default is how bad images get promoted.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from yaml.nodes import MappingNode

from pipeline.errors import BadInput

# Numbers that size or bound work. A zero or negative count, or a timeout that is zero, infinite or
# NaN, would let a whole build/boot/bench/eval run before anything noticed (a bench of 0 requests
# "passes"); each is refused when the config is loaded, before the first side effect.
# Strict: `requests: true` or `requests: "40"` is a typo, not a count.
Count = Annotated[int, Field(ge=1, strict=True)]
NonNegativeCount = Annotated[int, Field(ge=0, strict=True)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False, strict=True)]
Rate = Annotated[float, Field(gt=0, allow_inf_nan=False, strict=True)]
Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
# Docker's tag grammar: what `docker tag` accepts, so a tag is refused here and not by the engine
# after staging, and no tag can carry markup or a path.
TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


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
    tag: Annotated[str, Field(pattern=TAG_PATTERN)] | None = None  # default: short git commit, or "dev"
    target: str | None = None
    build_args: dict[str, str] = Field(default_factory=dict)
    # The host CA bundle lets pip reach PyPI inside the build without copying it into a layer.
    secrets: dict[str, SecretSource] = Field(
        default_factory=lambda: {"ca_bundle": SecretSource(file="/etc/ssl/certs/ca-certificates.crt")}
    )
    network: str = "host"
    timeout_s: Seconds = 1800
    # Wheels staged into `<context>/.whl/` (git-ignored) for a bind mount in the build: the CPU torch
    # wheel, since PyPI's default torch is the multi-GB CUDA build. Missing dir = nothing staged.
    wheelhouse: str | None = "/opt/wheels"
    wheels: list[str] = Field(default_factory=lambda: ["torch-*+cpu-*.whl"])
    push_timeout_s: Seconds = 1800


class BootConfig(Section):
    model_dir: str = ".llmgate/models/demo-v2"  # scripts/demo.sh makes it
    container_port: Port = 8000
    gpus: Literal["none", "all"] | NonNegativeCount = "none"
    ready_timeout_s: Seconds = 300
    readiness_path: str = "/health"
    served_model_name: str | None = None  # default: the mounted model path, the name transformers serve and vLLM give it
    env: dict[str, str] = Field(default_factory=dict)
    memory: str | None = None
    # Repetitions are cold starts (a new container each).
    repetitions: Count = 1
    # How the server is asked: "chat" (/v1/chat/completions) or "completions" (/v1/completions, for a base
    # model without a chat template, e.g. the llama.cpp target's Gemma 3 270M).
    api: Literal["chat", "completions"] = "chat"
    probe_interval_s: Seconds = 0.25
    readiness_lag_tolerance_s: NonNegativeSeconds = 15.0  # probe may lag the first good completion by this much
    log_tail_lines: Count = 40


class BenchConfig(Section):
    warmup: NonNegativeCount = 2
    requests: Count = 40  # at least the gate policy's min_n (30) per series, so comparisons are not too few
    concurrency: Count = 4
    max_tokens: Count = 32
    request_timeout_s: Seconds = 60
    prompts: Literal["ground_truth", "synthetic"] = "ground_truth"
    # Load shapes and SLOs; definitions in docs/METRICS.md.
    shape: Literal["concurrency", "poisson", "sweep"] = "concurrency"
    rate_rps: Rate = 2.0  # poisson arrivals
    sweep_levels: list[Count] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=1)
    input_tokens: Count = 128  # synthetic prompts
    ignore_eos: bool = True  # synthetic prompts; dropped (and recorded) when the server rejects it
    seed: int = 0
    deadline_s: Seconds = 900  # the whole bench, warm-up included
    slo_ttft_s: Seconds | None = 0.5
    slo_tpot_s: Seconds | None = 0.05
    slo_e2e_s: Seconds | None = None
    metrics_path: str = "/metrics"  # "": the server exposes no Prometheus metrics
    model_bytes: Count | None = None  # default: size of the weight files in boot.model_dir
    gpu_bandwidth_gbps: Rate | None = None  # default: from the runner's GPU model, when known
    # Boot the last promoted release next to the candidate and interleave their requests in blocks, so
    # machine drift hits both (fixed-concurrency shape only; the stored baseline is used otherwise).
    same_run_baseline: bool = True
    block_size: Count = 10


class JudgeConfig(Section):
    base_url: str
    model: str
    api_key_env: str | None = "LLMGATE_JUDGE_API_KEY"
    api_key_file: str | None = None  # a secret file (e.g. a mounted Kubernetes secret); wins over api_key_env
    timeout_s: Seconds = 60
    concurrency: Count = 4


class EvalConfig(Section):
    ground_truth: str = "ground_truth/v2"
    concurrency: Count = 4
    max_tokens: Count = 64
    request_timeout_s: Seconds = 60
    retries: NonNegativeCount = 2
    # retries for the whole collection; default max(retries, 10% of items x retries)
    retry_budget: NonNegativeCount | None = None
    latency_slo_s: Seconds = 10.0  # end-to-end per item (max_tokens answer); latency_adherence = share within it
    # The whole collection: a server that keeps streams alive without finishing them (keep-alive
    # comments, endless content) cannot hold the stage past this; unanswered items are errors.
    deadline_s: Seconds = 1800
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
    timeout_s: Seconds = 900
    ignore_file: str = ".trivyignore.yaml"
    sarif: bool = True


class SignConfig(Section):
    """Signing the image digest and the release's attestations with a key in cosign's format.

    The embedded default uses the local key pair `llmgate keys generate --out .llmgate/keys` makes
    (scripts/setup.sh makes it once); CI names its key by environment variable or mounted file. Key
    material is named by its source, never given inline; the password comes from COSIGN_PASSWORD
    (unset means an empty password)."""

    key: SecretSource = Field(default_factory=lambda: SecretSource(file=".llmgate/keys/cosign.key"))
    password: SecretSource | None = Field(default_factory=lambda: SecretSource(env="COSIGN_PASSWORD"))
    public_key: str = ".llmgate/keys/cosign.pub"
    timeout_s: Seconds = 300


class PromoteConfig(Section):
    """How promotions run on this machine. Which verdicts a target accepts, its keys and its policy floor
    are the target's configuration (targets.yaml, `pipeline.promote.targets`), not settings here."""

    # The promotion lock's lease; a heartbeat renews it every third while a promotion runs, so a rollout
    # may take far longer, and a crashed promoter's lock frees itself within one lease.
    lock_lease_s: Seconds = 120

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and "accepted_policies" in data:
            raise ValueError("accepted_policies moved to the target's configuration: targets.yaml, "
                             "targets.<name>.accepted_policies")
        return data


class PipelineConfig(Section):
    # The target a run is gated for: its baseline is that target's last promoted release, and its verdict
    # promotes to that target only (targets.yaml declares them).
    target: str = "canary"
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
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    extra: dict[str, JsonValue] = Field(default_factory=dict)


def describe_validation_error(exc: ValidationError) -> str:
    """`build.secrets.ca_bundle.file: Input should be ...`, one line per problem."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{loc}: {err['msg']}")
    return "; ".join(lines)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int) -> None:
        self.key, self.line, self.first_line = key, line, first_line


class StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping: PyYAML keeps the last one, so a file
    could say one thing to its reviewer and another to the pipeline (merge keys `<<` keep YAML's meaning)."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # unhashable: SafeConstructor reports it with its own message
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(key, line, first)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


MAX_YAML_BYTES = 1 << 20  # a config file is a page of YAML; anything near this size is not one


def load_yaml(path: Path, *, what: str = "file") -> Any:
    """The parsed document (an empty file is `{}`). Every defect is BadInput naming `path` (and the line):
    missing, a directory, unreadable, too large, not UTF-8, not YAML, a key written twice."""
    where = str(path)
    try:
        if path.is_dir():
            raise BadInput(f"is a directory, not a {what}", where=where)
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise BadInput(f"{size} bytes is too large for a {what} (limit {MAX_YAML_BYTES})", where=where)
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise BadInput("file not found", where=where) from exc
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", where=where) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be decoded",
                       where=where) from exc
    try:
        return yaml.load(text, Loader=StrictLoader) or {}  # StrictLoader is a SafeLoader
    except _DuplicateKey as exc:
        raise BadInput(f"duplicate key {exc.key!r} (first at line {exc.first_line}); a key may appear once per "
                       "mapping", where=f"{where}:{exc.line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise BadInput(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where=at) from exc
    except RecursionError as exc:
        raise BadInput("not valid YAML: nested too deeply", where=where) from exc


def load_config(path: str | Path | None = None) -> PipelineConfig:
    if path is None:
        default = Path("llmgate.yaml")
        if not default.exists():
            return PipelineConfig()
        path = default
    path = Path(path)
    data = load_yaml(path, what="config file")
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

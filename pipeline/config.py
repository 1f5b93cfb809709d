"""Pipeline configuration: one pydantic model per stage, loaded from `llmgate.yaml`.

Every field has a default that makes the embedded local job work (local stack, CPU image, demo
model), so `llmgate run` needs no config file. Unknown keys are errors that name the key, since a
typo in a release pipeline silently falling back to a default is how bad images get promoted.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, model_validator
from yaml.nodes import MappingNode, Node, SequenceNode

from pipeline.errors import BadInput
from pipeline.regular_files import read_regular

# Numbers that size or bound work. A zero or negative count, or a timeout that is zero, infinite or
# NaN, would let a whole build/boot/bench/eval run before anything noticed (a bench of 0 requests
# "passes"); each is refused when the config is loaded, before the first side effect.
# Strict: `requests: true` or `requests: "40"` is a typo, not a count.
Count = Annotated[int, Field(ge=1, strict=True)]
NonNegativeCount = Annotated[int, Field(ge=0, strict=True)]
# Upper bounds on counts that are also memory and time (a prompt, a sample, a connection, a token each):
# past these, `requests: 99999999999999999999999` or an extra zero is refused when the config is loaded,
# instead of filling memory building prompts before the first request (and before any deadline can act).
MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 4096
MAX_TOKENS = 1_000_000
MAX_SYNTHETIC_TOKENS = 5_000_000  # (warm-up + requests) x input_tokens of synthetic prompts, all built up front
Requests = Annotated[int, Field(ge=1, le=MAX_REQUESTS, strict=True)]
Concurrency = Annotated[int, Field(ge=1, le=MAX_CONCURRENCY, strict=True)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS, strict=True)]
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
    model_dir: str = ".llmgate/models/demo-v3"  # scripts/demo.sh makes it
    container_port: Port = 8000
    gpus: Literal["none", "all"] | NonNegativeCount = "none"
    ready_timeout_s: Seconds = 300
    readiness_path: str = "/health"
    served_model_name: str | None = None  # default: the mounted model path, the name transformers serve and vLLM give it
    env: dict[str, str] = Field(default_factory=dict)
    memory: str | None = None
    # Repetitions are cold starts (a new container each).
    repetitions: Annotated[int, Field(ge=1, le=100, strict=True)] = 1
    # How the server is asked: "chat" (/v1/chat/completions) or "completions" (/v1/completions, for a base
    # model without a chat template, e.g. the llama.cpp target's Gemma 3 270M).
    api: Literal["chat", "completions"] = "chat"
    probe_interval_s: Seconds = 0.25
    readiness_lag_tolerance_s: NonNegativeSeconds = 15.0  # probe may lag the first good completion by this much
    log_tail_lines: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 40


class BenchConfig(Section):
    warmup: Annotated[int, Field(ge=0, le=MAX_REQUESTS, strict=True)] = 2
    # None: as many as the gate policy needs (pipeline/gates/sizing.py: every comparison at its margin, every
    # rate and percentile threshold robust to a few unlucky requests), at most max_requests. A number: exactly
    # that many; fewer than the policy needs is stated in the bench result, and the gates judge what was sent.
    requests: Requests | None = None
    max_requests: Requests = 5000  # the most the policy's sizing or a re-measure may send (per side)
    # Re-measurements after a disturbed machine (once it is quiet again, with a fresh interleaved baseline) or
    # an underpowered latency comparison (with the requests it needs, up to max_requests), within deadline_s.
    remeasure: Annotated[int, Field(ge=0, le=10, strict=True)] = 1
    quiet_wait_s: Seconds = 60  # how long a re-measure waits for the machine to become quiet
    concurrency: Concurrency = 4
    max_tokens: Tokens = 32
    request_timeout_s: Seconds = 60
    prompts: Literal["ground_truth", "synthetic"] = "ground_truth"
    # Load shapes and SLOs; definitions in docs/METRICS.md.
    shape: Literal["concurrency", "poisson", "sweep"] = "concurrency"
    rate_rps: Rate = 2.0  # poisson arrivals
    sweep_levels: list[Concurrency] = Field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64], min_length=1,
                                            max_length=64)
    input_tokens: Tokens = 128  # synthetic prompts
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
    block_size: Requests = 10

    @model_validator(mode="after")
    def _synthetic_fits(self) -> BenchConfig:
        tokens = (self.warmup + (self.requests or self.max_requests)) * self.input_tokens
        if self.prompts == "synthetic" and tokens > MAX_SYNTHETIC_TOKENS:
            raise ValueError(f"(warmup + requests) x input_tokens = {tokens} synthetic prompt tokens, more than "
                             f"{MAX_SYNTHETIC_TOKENS} (every prompt is built before the first request)")
        return self


class JudgeConfig(Section):
    base_url: str
    model: str
    api_key_env: str | None = "LLMGATE_JUDGE_API_KEY"
    api_key_file: str | None = None  # a secret file (e.g. a mounted Kubernetes secret); wins over api_key_env
    timeout_s: Seconds = 60
    concurrency: Concurrency = 4


class EvalConfig(Section):
    ground_truth: str = "ground_truth/v3"
    concurrency: Concurrency = 4
    max_tokens: Tokens = 64
    request_timeout_s: Seconds = 60
    retries: Annotated[int, Field(ge=0, le=100, strict=True)] = 2
    # retries for the whole collection; default max(retries, 10% of items x retries)
    retry_budget: Annotated[int, Field(ge=0, le=MAX_REQUESTS, strict=True)] | None = None
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


# YAML 1.1 (PyYAML) reads `1e9` and `1.5e3` as strings: its floats need a dot and a signed exponent.
# YAML 1.2 and JSON read them as numbers, as a person writing `threshold: 1e9` means.
StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))

MAX_YAML_BYTES = 1 << 20  # a config file is a page of YAML; anything near this size is not one
# Aliases may add at most this many nodes to what the file spells out: `<<: *defaults` and a shared
# list stay far below it, a "billion laughs" (each level nine aliases of the one before) passes it at
# its sixth level, long before validating or hashing the expanded tree takes noticeable time or memory.
MAX_ALIAS_NODES = 100_000


class _AliasBomb(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message


def _check_aliases(root: Node) -> None:
    """Refuse a document whose aliases expand past MAX_ALIAS_NODES nodes, or that refers to itself.

    Sizes are counted on the composed node graph (each node once, memoised), before anything is
    constructed, so the check costs what the file spells out, not what it would expand to."""
    size: dict[int, int] = {}
    distinct: set[int] = set()
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            continue
        if key in size:
            continue
        if key in on_path:
            raise _AliasBomb(node.start_mark.line + 1, "an alias refers to a node that contains it (a recursive "
                             "structure)")
        distinct.add(key)
        on_path.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in on_path:
                raise _AliasBomb(child.start_mark.line + 1, "an alias refers to a node that contains it (a "
                                 "recursive structure)")
            if id(child) not in size:
                stack.append((child, False))
    expanded = size[id(root)]
    if expanded - len(distinct) > MAX_ALIAS_NODES:
        raise _AliasBomb(root.start_mark.line + 1, f"aliases expand the document to {expanded} nodes from "
                         f"{len(distinct)} written (at most {MAX_ALIAS_NODES} more are allowed)")


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def load_yaml(path: Path, *, what: str = "file") -> Any:
    """The parsed document (an empty file is `{}`). Every defect is BadInput naming `path` (and the line):
    missing, not a regular file (a directory, a FIFO, a device), unreadable, too large, not UTF-8, not
    YAML, a key written twice, aliases that expand too far or refer to themselves."""
    where = str(path)
    raw = read_regular(path, what=what, limit=MAX_YAML_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be decoded",
                       where=where) from exc
    return parse_yaml(text, where=where)[1] or {}


def parse_yaml(text: str, *, where: str) -> tuple[Node | None, Any]:
    """The composed node (for line numbers) and the document of `text`, read by StrictLoader with the
    alias-expansion limit; every defect is BadInput at `where` (and the line)."""
    loader: StrictLoader | None = None
    try:
        loader = StrictLoader(text)  # a SafeLoader; it refuses a non-printable character at once
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_aliases(node)
        return node, loader.construct_document(node)
    except _AliasBomb as exc:
        raise BadInput(f"not accepted: {exc.message}", where=f"{where}:{exc.line}") from None
    except _DuplicateKey as exc:
        raise BadInput(f"duplicate key {exc.key!r} (first at line {exc.first_line}); a key may appear once per "
                       "mapping", where=f"{where}:{exc.line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{where}:{mark.line + 1}" if mark else where
        raise BadInput(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where=at) from exc
    except RecursionError as exc:
        raise BadInput("not valid YAML: nested too deeply", where=where) from exc
    finally:
        if loader is not None:
            loader.dispose()


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

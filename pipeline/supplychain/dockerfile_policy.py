"""Offline policy for our own Dockerfiles, plus hadolint's findings when it is installed.

Rules (each violation names file, line and rule):
- `from-digest`: every FROM is pinned by digest. A FROM given by an ARG is resolved from the global
  ARG default or the build-arg value, which must itself be a digest reference. A FROM of an earlier
  stage name, or `scratch`, is fine.
- `non-root-user`: the final stage ends with a USER that is not root.
- `credential-arg-env`: no ARG/ENV whose name or value looks like a credential (it would be baked
  into the image config or history).
- `no-weights`: no COPY/ADD of model weights (*.safetensors, *.bin, *.gguf, *.pt, ... or a model
  directory): weights are mounted at run time, never shipped in a layer.
- `secret-mount`: secrets reach a build step only via `RUN --mount=type=secret`: no COPY/ADD of
  credential files, no bind mount of one, no RUN that expands a credential variable.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.adapters.hadolint import Hadolint, HadolintCli
from pipeline.errors import BadInput
from pipeline.redact import redact_text
from pipeline.regular_files import read_regular

DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
_VAR = re.compile(r"\$(?:\{(?P<b>[A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|(?P<n>[A-Za-z_][A-Za-z0-9_]*))")
CREDENTIAL_NAME = re.compile(
    r"(?i)(passw(or)?d|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credential|auth|"
    r"(^|_)pat($|_)|(^|_)key$)"
)
# Names that point at a credential rather than hold it, or that are well-known non-secret settings.
_POINTER_SUFFIX = re.compile(r"(?i)_(file|path|dir|env|id|url|header|type|name)$")
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.gguf", "*.ggml", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.pkl")
MODEL_DIRS = {"models", "model", "weights", "checkpoints", "hf_cache", "huggingface"}
SECRET_FILE_GLOBS = (
    ".env", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_ed25519*", "id_ecdsa*", ".netrc",
    ".npmrc", ".pypirc", "pip.conf", ".dockercfg", "config.json", "credentials", "credentials.*", "*.kubeconfig",
    "kubeconfig", ".git-credentials", "token", "*.token",
)
ROOT_USERS = {"root", "0"}

Rule = Literal["from-digest", "non-root-user", "credential-arg-env", "no-weights", "secret-mount", "parse"]


class Violation(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    line: int
    rule: str  # one of Rule, or `hadolint:DLxxxx`
    message: str
    blocking: bool = True

    def render(self) -> str:
        return f"{self.file}:{self.line}: [{self.rule}] {self.message}"


@dataclass
class Instruction:
    line: int  # first physical line
    keyword: str  # upper case
    args: str  # rest of the logical line, continuations joined


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions with their first line; comments, parser directives and heredoc bodies skipped."""
    out: list[Instruction] = []
    escape = "\\"
    lines = text.splitlines()
    i = 0
    buf: list[str] = []
    start = 0
    heredoc_end: str | None = None
    while i < len(lines):
        raw = lines[i]
        i += 1
        if heredoc_end is not None:
            if raw.strip() == heredoc_end:
                heredoc_end = None
            continue
        stripped = raw.strip()
        if not buf:
            m = re.match(r"^#\s*escape\s*=\s*(\S)", stripped)
            if m and not out:
                escape = m.group(1)
                continue
            if not stripped or stripped.startswith("#"):
                continue
            start = i
        elif not stripped or stripped.startswith("#"):
            continue  # comments and blank lines inside a continuation are dropped by BuildKit too
        if stripped.endswith(escape):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        logical = " ".join(part.strip() for part in buf)
        buf = []
        keyword, _, args = logical.partition(" ")
        inst = Instruction(line=start, keyword=keyword.upper(), args=args.strip())
        out.append(inst)
        hd = re.search(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?", args)
        if hd and inst.keyword in ("RUN", "COPY", "ADD"):
            heredoc_end = hd.group(1)
    if buf:
        keyword, _, args = " ".join(buf).partition(" ")
        out.append(Instruction(line=start, keyword=keyword.upper(), args=args.strip()))
    return out


def _flags_and_rest(args: str) -> tuple[dict[str, list[str]], list[str]]:
    """`--mount=a --from=b x y` -> ({"mount": ["a"], "from": ["b"]}, ["x", "y"]); JSON form supported."""
    flags: dict[str, list[str]] = {}
    tokens = args.split()
    rest: list[str] = []
    for j, tok in enumerate(tokens):
        if tok.startswith("--") and not rest:
            name, _, value = tok[2:].partition("=")
            flags.setdefault(name.lower(), []).append(value)
        else:
            rest = tokens[j:]
            break
    joined = " ".join(rest)
    if joined.startswith("["):
        try:
            parsed = json.loads(joined)
            if isinstance(parsed, list):
                return flags, [str(x) for x in parsed]
        except json.JSONDecodeError:
            pass
    return flags, rest


def _kv_pairs(args: str) -> list[tuple[str, str | None]]:
    """ARG/ENV `a=1 b="x y"`, or legacy `ENV name value`."""
    if "=" not in args.split(" ", 1)[0]:
        name, _, value = args.partition(" ")
        return [(name, value.strip() or None)] if " " in args or args else []
    pairs: list[tuple[str, str | None]] = []
    for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_.\-]*)(?:=(\"(?:[^\"\\]|\\.)*\"|'[^']*'|\S*))?", args):
        value = m.group(2)
        if value is not None and len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        pairs.append((m.group(1), value))
    return pairs


def _substitute(value: str, env: dict[str, str | None]) -> tuple[str, list[str]]:
    missing: list[str] = []

    def repl(m: re.Match[str]) -> str:
        name = m.group("b") or m.group("n")
        v = env.get(name)
        if v is None:
            missing.append(name)
            return m.group(0)
        return v

    return _VAR.sub(repl, value), missing


def is_credential_name(name: str) -> bool:
    return bool(CREDENTIAL_NAME.search(name)) and not _POINTER_SUFFIX.search(name)


def _looks_secret_value(value: str) -> bool:
    return redact_text(value) != value


def _is_weights(src: str) -> bool:
    s = src.rstrip("/")
    base = s.rsplit("/", 1)[-1]
    if any(fnmatch.fnmatch(base.lower(), g) for g in WEIGHT_GLOBS):
        return True
    return any(seg.lower() in MODEL_DIRS for seg in s.split("/"))


def _is_secret_file(src: str) -> bool:
    base = src.rstrip("/").rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(base.lower(), g) for g in SECRET_FILE_GLOBS)


def check_dockerfile(path: str | Path, *, build_args: dict[str, str] | None = None, text: str | None = None) -> list[Violation]:
    p = Path(path)
    if text is None:
        try:
            raw = read_regular(p, what="Dockerfile", limit=1 << 20, not_found="Dockerfile not found")
        except BadInput as exc:  # a directory, a device, unreadable
            raise BadInput(exc.message if exc.message.endswith("not found") else
                           f"cannot read the Dockerfile: {exc.message}", where=str(p)) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"not UTF-8 text: byte {exc.start} cannot be decoded", where=str(p)) from exc
    build_args = build_args or {}
    name = str(p)
    out: list[Violation] = []

    def v(line: int, rule: Rule, message: str) -> None:
        out.append(Violation(file=name, line=line, rule=rule, message=message))

    insts = parse_dockerfile(text)
    if not any(i.keyword == "FROM" for i in insts):
        v(1, "parse", "no FROM instruction")
        return out
    global_args: dict[str, str | None] = {}
    stage_args: dict[str, str | None] = {}
    stages: set[str] = set()
    credential_vars: set[str] = set()
    seen_from = False
    final_from_line = 0
    final_user: tuple[int, str] | None = None

    for inst in insts:
        kw, args = inst.keyword, inst.args
        if kw == "FROM":
            seen_from = True
            final_from_line = inst.line
            final_user = None
            stage_args = {}
            flags, rest = _flags_and_rest(args)
            if not rest:
                v(inst.line, "parse", "FROM without an image")
                continue
            image = rest[0]
            if len(rest) >= 3 and rest[1].lower() == "as":
                stages.add(rest[2].lower())
            env = {**global_args, **{k: val for k, val in build_args.items()}}
            resolved, missing = _substitute(image, env)
            if missing:
                v(inst.line, "from-digest",
                  f"FROM {image}: ARG {', '.join(missing)} has no default or build-arg value, so the base is not pinned")
                continue
            if resolved.lower() in stages - ({rest[2].lower()} if len(rest) >= 3 and rest[1].lower() == "as" else set()):
                continue  # an earlier stage of this file
            if resolved.lower() == "scratch":
                continue
            if not DIGEST_REF.match(resolved):
                via = f" (from {image})" if resolved != image else ""
                v(inst.line, "from-digest", f"FROM {resolved}{via} is not pinned by digest (use name@sha256:...)")
        elif kw == "ARG":
            for k, val in _kv_pairs(args):
                if seen_from:
                    # A stage's `ARG NAME` redeclares a global so it can be used inside the stage.
                    stage_args[k] = val if val is not None else global_args.get(k)
                else:
                    global_args[k] = val
                if is_credential_name(k) or (val and _looks_secret_value(val)):
                    credential_vars.add(k)
                    v(inst.line, "credential-arg-env",
                      f"ARG {k} looks like a credential; build args are kept in the image history "
                      "(pass it with RUN --mount=type=secret)")
        elif kw == "ENV":
            for k, val in _kv_pairs(args):
                if is_credential_name(k) or (val and _looks_secret_value(val)):
                    credential_vars.add(k)
                    v(inst.line, "credential-arg-env",
                      f"ENV {k} looks like a credential; ENV is stored in the image config")
        elif kw == "USER":
            user = args.split()[0] if args.split() else ""
            final_user = (inst.line, user)
        elif kw in ("COPY", "ADD"):
            flags, rest = _flags_and_rest(args)
            srcs = rest[:-1] if len(rest) > 1 else rest
            for src in srcs:
                if _is_weights(src):
                    v(inst.line, "no-weights",
                      f"{kw} {src}: model weights must not be copied into the image; mount them at run time")
                elif _is_secret_file(src):
                    v(inst.line, "secret-mount",
                      f"{kw} {src}: a credential file lands in a layer; use RUN --mount=type=secret")
        elif kw == "RUN":
            flags, rest = _flags_and_rest(args)
            for mount in flags.get("mount", []):
                opts = dict(part.partition("=")[::2] for part in mount.split(","))
                mtype = opts.get("type", "bind")
                src = opts.get("source") or opts.get("src") or ""
                if mtype == "bind" and src and _is_secret_file(src):
                    v(inst.line, "secret-mount",
                      f"RUN --mount={mount}: a credential file is bind-mounted; use --mount=type=secret")
            body = " ".join(rest)
            for m in _VAR.finditer(body):
                var = m.group("b") or m.group("n")
                if var in credential_vars or (is_credential_name(var) and var not in ("BUILDKIT_INLINE_CACHE",)):
                    v(inst.line, "secret-mount",
                      f"RUN expands ${var}: a credential must come from --mount=type=secret, not ARG/ENV")
                    break
            if re.search(r"(?i)https?://[^/\s:@]+:[^@/\s]+@", body):
                v(inst.line, "secret-mount", "RUN has credentials in a URL; use --mount=type=secret")

    if final_user is None:
        v(final_from_line, "non-root-user", "the final stage sets no USER, so the container runs as root")
    else:
        line, user = final_user
        base_user = user.split(":", 1)[0]
        if base_user.lower() in ROOT_USERS or base_user.startswith("$"):
            v(line, "non-root-user", f"the final stage runs as USER {user}; use a non-root user")
    return sorted(out, key=lambda x: (x.line, x.rule))


def run_hadolint(path: Path, *, binary: str | None = None, linter: Hadolint | None = None,
                 ) -> tuple[list[Violation], str | None]:
    """hadolint's findings as violations (only its `error` level blocks); (findings, not-run reason)."""
    found, why = (linter or HadolintCli(binary)).lint(path)
    return [Violation(file=str(path), line=f.line, rule=f"hadolint:{f.code}", message=f"{f.level}: {f.message}",
                      blocking=f.level == "error") for f in found], why


class LintResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    files: list[str]
    violations: list[Violation]
    hadolint: str | None = None  # why hadolint did not run, if it did not

    @property
    def blocking(self) -> list[Violation]:
        return [x for x in self.violations if x.blocking]


def lint_dockerfiles(paths: list[Path], *, build_args: dict[str, str] | None = None, hadolint: bool = True) -> LintResult:
    violations: list[Violation] = []
    why: str | None = None
    for p in paths:
        violations += check_dockerfile(p, build_args=build_args)
        if hadolint:
            extra, why = run_hadolint(p)
            violations += extra
    return LintResult(files=[str(p) for p in paths], violations=violations, hadolint=why if hadolint else "disabled")


def default_dockerfiles(root: Path = Path(".")) -> list[Path]:
    return sorted((root / "dockerfiles").glob("*.Dockerfile"))

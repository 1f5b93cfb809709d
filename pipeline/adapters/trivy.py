"""The trivy binary: image / filesystem scans to JSON, conversion to SARIF and cosign-vuln.

Offline behaviour is explicit. The secret and misconfiguration scanners need nothing from the
network (misconfig falls back to the checks embedded in the binary). The vulnerability scanner
needs trivy's DB: when it is absent from the cache and cannot be downloaded, the scan is repeated
without `vuln` and the result says the vulnerability scanner did not run and why; it is never
reported as zero vulnerabilities.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.adapters.tools import find_tool
from pipeline.errors import BadInput, InfraError
from pipeline.redact import redact_text

# What trivy prints when its vulnerability DB is missing or cannot be fetched.
_DB_ERRORS = re.compile(
    r"DB error|failed to download vulnerability DB|first run cannot skip downloading DB|"
    r"--skip-db-update cannot be specified|java DB|failed to download artifact",
    re.IGNORECASE,
)
LOCAL_REGISTRIES = ("127.0.0.1", "localhost", "[::1]")


def is_local_registry(ref: str) -> bool:
    host = ref.split("/", 1)[0]
    return host.rsplit(":", 1)[0] in LOCAL_REGISTRIES if "/" in ref else False


@dataclass
class TrivyScan:
    """What one scan produced: the JSON report, the scanners that ran, and those that did not (why)."""

    report: Path
    scanners: list[str]
    not_run: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class TrivyOptions:
    cache_dir: Path = Path(".llmgate/cache/trivy")
    skip_db_update: bool = False
    offline_scan: bool = True
    db_repository: list[str] = field(default_factory=list)
    java_db_repository: list[str] = field(default_factory=list)
    timeout_s: float = 900


class Scanner(Protocol):
    """An image scanner writing trivy's JSON report (`Trivy`, the trivy CLI)."""

    def version(self) -> str: ...

    def scan_image(self, out: Path, *, ref: str | None = None, tarball: Path | None = None,
                   scanners: list[str] | None = None, insecure: bool | None = None) -> TrivyScan: ...

    def sbom_image(self, ref: str, out: Path, *, insecure: bool | None = None) -> Path: ...

    def convert(self, report: Path, fmt: str, out: Path) -> Path: ...


class Trivy:
    def __init__(self, binary: str | Path, options: TrivyOptions | None = None) -> None:
        self.binary = str(binary)
        self.options = options or TrivyOptions()

    @classmethod
    def discover(cls, options: TrivyOptions | None = None) -> Trivy | None:
        """The trivy on PATH, or None (the caller reports "not run: trivy not found")."""
        found = find_tool("trivy")
        return cls(found, options) if found else None

    # -- helpers ------------------------------------------------------------------------------
    def version(self) -> str:
        out = self._run([self.binary, "--version"], timeout=60)
        first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
        return first.removeprefix("Version:").strip()

    def db_available(self) -> bool:
        db = self.options.cache_dir / "db"
        return (db / "trivy.db").is_file() and (db / "metadata.json").is_file()

    def _run(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(), check=False)
        except FileNotFoundError as exc:
            raise InfraError("trivy binary vanished", where=self.binary) from exc
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"trivy did not finish within {timeout:.0f}s", where=" ".join(argv[:2])) from exc

    def _common(self) -> list[str]:
        o = self.options
        args = [
            "--format", "json",
            "--cache-dir", str(o.cache_dir),
            "--timeout", f"{int(o.timeout_s)}s",
            "--no-progress",
            "--skip-version-check",
            "--disable-telemetry",
            "--skip-check-update",  # the misconfig checks embedded in the binary: reproducible, offline
            # Our own ignore file and policy decide; a stray .trivyignore in the cwd must not hide findings.
            "--ignorefile=",
        ]
        if o.offline_scan:
            args.append("--offline-scan")
        if o.skip_db_update:
            args += ["--skip-db-update", "--skip-java-db-update"]
        if o.db_repository:
            args += ["--db-repository", ",".join(o.db_repository)]
        if o.java_db_repository:
            args += ["--java-db-repository", ",".join(o.java_db_repository)]
        return args

    def _scan(self, head: list[str], target_args: list[str], scanners: list[str], out: Path) -> TrivyScan:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.options.cache_dir.mkdir(parents=True, exist_ok=True)
        not_run: dict[str, str] = {}
        wanted = list(scanners)
        if "vuln" in wanted and self.options.skip_db_update and not self.db_available():
            wanted.remove("vuln")
            not_run["vuln"] = (
                f"vulnerability DB not in cache {self.options.cache_dir / 'db'} and skip_db_update is set"
            )

        def attempt(sc: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
            scan_flags = ["--scanners", ",".join(sc)] if sc else []
            argv = [self.binary, *head, *self._common(), *scan_flags, "--output", str(out), *target_args]
            return argv, self._run(argv, timeout=self.options.timeout_s + 60)

        if not wanted and not head[0] == "image":
            raise BadInput("no scanner left to run", where="scan.scanners")
        argv, proc = attempt(wanted)
        if proc.returncode != 0 and "vuln" in wanted and _DB_ERRORS.search(proc.stderr):
            reason = _last_error(proc.stderr)
            wanted.remove("vuln")
            not_run["vuln"] = f"vulnerability DB unavailable: {reason}"
            argv, proc = attempt(wanted)
        if proc.returncode != 0:
            raise InfraError(f"trivy failed (exit {proc.returncode}): {redact_text(_last_error(proc.stderr))}",
                             where=" ".join(argv[:2]))
        if not out.is_file():
            raise InfraError("trivy exited 0 but wrote no report", where=str(out))
        return TrivyScan(report=out, scanners=wanted, not_run=not_run, argv=argv,
                         warnings=[redact_text(ln) for ln in proc.stderr.splitlines() if "\tWARN\t" in ln][:20])

    # -- scans --------------------------------------------------------------------------------
    def scan_image(
        self,
        out: Path,
        *,
        ref: str | None = None,
        tarball: Path | None = None,
        scanners: list[str] | None = None,
        insecure: bool | None = None,
    ) -> TrivyScan:
        """Scan a pushed image by digest reference, or an image tarball (`docker save` / OCI layout)."""
        if (ref is None) == (tarball is None):
            raise BadInput("give exactly one of an image reference or a tarball", where="scan")
        scanners = list(scanners or ["vuln", "secret", "misconfig"])
        # misconfig/secret on the image config catch credentials in ENV/history and root USER.
        config_scanners = [s for s in ("misconfig", "secret") if s in scanners]
        head = ["image"] + (["--image-config-scanners", ",".join(config_scanners)] if config_scanners else [])
        if tarball is not None:
            if not tarball.exists():
                raise BadInput("image tarball not found", where=str(tarball))
            target = ["--input", str(tarball)]
        else:
            assert ref is not None
            if "@sha256:" not in ref:
                raise BadInput("scan an image by digest, not by tag", where=ref)
            target = ["--image-src", "remote", ref]
            if insecure if insecure is not None else is_local_registry(ref):
                head.append("--insecure")  # the local registry speaks plain HTTP
        return self._scan(head, target, scanners, out)

    def scan_fs(self, path: Path, out: Path, *, scanners: list[str] | None = None) -> TrivyScan:
        if not path.exists():
            raise BadInput("path to scan not found", where=str(path))
        return self._scan(["fs"], [str(path)], list(scanners or ["vuln", "secret", "misconfig"]), out)

    def sbom_image(self, ref: str, out: Path, *, insecure: bool | None = None) -> Path:
        """CycloneDX SBOM (JSON) of a pushed image by digest. `--format cyclonedx` turns every
        security scanner off, so no vulnerability DB is needed: it lists packages only."""
        if "@sha256:" not in ref:
            raise BadInput("make an SBOM of an image by digest, not by tag", where=ref)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.options.cache_dir.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "image", "--format", "cyclonedx", "--output", str(out),
                "--cache-dir", str(self.options.cache_dir), "--timeout", f"{int(self.options.timeout_s)}s",
                "--no-progress", "--skip-version-check", "--disable-telemetry", "--offline-scan",
                "--skip-db-update", "--skip-java-db-update", "--image-src", "remote"]
        if insecure if insecure is not None else is_local_registry(ref):
            argv.append("--insecure")
        proc = self._run([*argv, ref], timeout=self.options.timeout_s + 60)
        if proc.returncode != 0 or not out.is_file():
            raise InfraError(f"trivy SBOM failed (exit {proc.returncode}): {redact_text(_last_error(proc.stderr))}",
                             where=ref)
        return out

    def convert(self, report: Path, fmt: str, out: Path) -> Path:
        """Render a JSON report in another format (`sarif`, `cosign-vuln`) without rescanning."""
        source = report
        if fmt == "sarif":
            source = _sarif_input(report, out.with_name(f".{out.name}.input.json"))
        try:
            argv = [self.binary, "convert", "--format", fmt, "--output", str(out), str(source)]
            proc = self._run(argv, timeout=120)
        finally:
            if source != report:
                source.unlink(missing_ok=True)
        if proc.returncode != 0 or not out.is_file():
            raise InfraError(f"trivy convert to {fmt} failed: {redact_text(_last_error(proc.stderr))}", where=str(report))
        return out


def sarif_target(target: str) -> str:
    """`target` as a result location trivy's SARIF writer can parse as a URI reference.

    trivy 0.76 parses every result's Target with Go's url.Parse and dereferences the result, so a
    target whose first segment holds a colon (an image on a registry with a port,
    `127.0.0.1:5000/llmgate/server@sha256:…`) makes `trivy convert --format sarif` panic. Such a target
    is named as trivy names an OS-package target: by its repository path (`llmgate/server@sha256:…`)."""
    if "://" in target:
        return target
    head, sep, rest = target.partition("/")
    return rest if sep and ":" in head and rest else target


def _sarif_input(report: Path, dest: Path) -> Path:
    """A copy of `report` whose result targets `sarif_target` accepts; the report itself when none
    needs a change (or it is not a trivy JSON report, for trivy to refuse in its own words)."""
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return report
    results = data.get("Results") if isinstance(data, dict) else None
    changed = False
    for res in results if isinstance(results, list) else []:
        target = res.get("Target") if isinstance(res, dict) else None
        if isinstance(target, str) and sarif_target(target) != target:
            res["Target"], changed = sarif_target(target), True
    if not changed:
        return report
    dest.write_text(json.dumps(data), encoding="utf-8")
    return dest


def _last_error(stderr: str) -> str:
    """The last FATAL/ERROR message of trivy's log (`time<TAB>LEVEL<TAB>message<TAB>detail`)."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        parts = ln.split("\t")
        if len(parts) >= 3 and parts[1] in ("FATAL", "ERROR"):
            return " ".join(p.strip() for p in parts[2:])[:400]
    return (lines[-1] if lines else "no output")[:400]

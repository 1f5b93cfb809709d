"""kubectl, behind a Protocol: `kubectl kustomize DIR` renders a kustomization offline.

kubectl bundles kustomize, so rendering needs no cluster and no network; the output is the YAML
stream the API server would receive.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from pipeline.errors import BadInput, InfraError

KUBECTL_TIMEOUT_S = 120


class KubectlNotFound(InfraError):
    """`kubectl` is not on PATH: the manifest stage reports itself as not run, never as a pass."""


class Kustomize(Protocol):
    def render(self, directory: Path) -> str:
        """The YAML stream of `directory`'s kustomization; BadInput naming the directory on a
        kustomize error, KubectlNotFound when there is no kubectl."""
        ...


class KubectlCli:
    """`Kustomize` through `kubectl kustomize`."""

    def __init__(self, executable: str | None = None) -> None:
        self._exe = executable

    @property
    def exe(self) -> str:
        if self._exe is None:
            found = shutil.which("kubectl")
            if found is None:
                raise KubectlNotFound("kubectl not found", where="kubectl",
                                      hint="install kubectl (it bundles kustomize: `kubectl kustomize` runs offline)")
            self._exe = found
        return self._exe

    def render(self, directory: Path) -> str:
        directory = Path(directory)
        try:
            proc = subprocess.run([self.exe, "kustomize", str(directory)], capture_output=True, text=True,
                                  timeout=KUBECTL_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise InfraError(f"kubectl kustomize did not finish in {KUBECTL_TIMEOUT_S} s", where=str(directory)) from exc
        except OSError as exc:
            raise InfraError(f"cannot run kubectl: {exc}", where=self.exe) from exc
        if proc.returncode != 0:
            # kustomize's own message names the file and field; keep it whole, minus the log prefix.
            msg = _kustomize_error(proc.stderr) or f"exit status {proc.returncode}"
            raise BadInput(f"kubectl kustomize failed: {msg}", where=str(directory))
        return proc.stdout


def _kustomize_error(stderr: str) -> str:
    text = stderr.strip()
    # kubectl >= 1.30 logs `E1201 … run.go:72] "command failed" err="…"`; older ones print `error: …`.
    marker = 'err="'
    if marker in text:
        text = text[text.index(marker) + len(marker):].rstrip('"')
        text = text.replace('\\"', '"')
    return text.removeprefix("error: ")

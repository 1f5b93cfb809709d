"""The adapters a stage may use, one per outside system, built lazily with the real implementations.

Tests pass an `Adapters` with doubles in place of the real ones (each double named as one and never
more lenient than the system it stands for). Building lazily keeps `llmgate --help` and stages that
need no engine free of the docker SDK and friends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from pipeline.adapters.docker_build import ImageBuilder
    from pipeline.adapters.docker_run import ContainerRuntime
    from pipeline.adapters.model_server import ModelServer
    from pipeline.adapters.registry import OciRegistry
    from pipeline.adapters.signer import Signer
    from pipeline.adapters.trivy import Scanner


@dataclass
class Adapters:
    builder: ImageBuilder | None = None  # None: pipeline.adapters.docker_build.DockerBuilder
    runtime: ContainerRuntime | None = None  # None: pipeline.adapters.docker_run.DockerRunner
    trivy: Scanner | None = None  # None: trivy found on PATH when the scan runs
    model_transport: httpx.BaseTransport | None = None  # transport to the model server; None: the network
    # The scorers' own clients (ragas/langchain types of the optional `eval` extra): None means the
    # bundled MiniLM embeddings and the configured judge.
    embeddings: Any = None
    judge_llm: Any = None
    model_server: ModelServer | None = None  # None: pipeline.adapters.model_server.HttpModelServer
    signer: Signer | None = None  # None: the cosign CLI when on PATH, else the Python signer
    registries: dict[str, OciRegistry] = field(default_factory=dict)  # by host; absent: a RegistryClient

    def signing(self, timeout_s: float | None = None) -> Signer:
        """The one signer of this invocation: the cosign CLI when it is on PATH (CI, the tool image), else
        the Python signer (over this bundle's registry clients). `timeout_s` (`sign.timeout_s`) bounds each
        cosign call."""
        if self.signer is None:
            from pipeline.adapters.cosign import CosignCliSigner, CosignOptions
            from pipeline.adapters.signer import PythonSigner

            options = CosignOptions() if timeout_s is None else CosignOptions(timeout_s=timeout_s)
            self.signer = CosignCliSigner.discover(options) or PythonSigner(self.registries)
        return self.signer

    def server(self) -> ModelServer:
        if self.model_server is None:
            from pipeline.adapters.model_server import HttpModelServer

            self.model_server = HttpModelServer()
        return self.model_server

    def image_builder(self) -> ImageBuilder:
        if self.builder is None:
            from pipeline.adapters.docker_build import DockerBuilder

            self.builder = DockerBuilder()
        return self.builder

    def container_runtime(self) -> ContainerRuntime:
        if self.runtime is None:
            from pipeline.adapters.docker_run import DockerRunner

            self.runtime = DockerRunner()
        return self.runtime

    def registry(self, host: str, *, timeout: float = 120.0) -> OciRegistry:
        """One client per registry host for the whole invocation; closed with `close()`."""
        if host not in self.registries:
            from pipeline.adapters.registry import RegistryClient

            self.registries[host] = RegistryClient(host, timeout=timeout)
        return self.registries[host]

    def close(self) -> None:
        for client in self.registries.values():
            client.close()
        self.registries.clear()

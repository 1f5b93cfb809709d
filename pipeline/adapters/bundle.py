"""The adapters a stage may use, one per outside system, built lazily with the real implementations.

Tests pass an `Adapters` with doubles in place of the real ones (each double named as one and never
more lenient than the system it stands for). Building lazily keeps `llmgate --help` and stages that
need no engine free of the docker SDK and friends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.adapters.registry import RegistryClient


@dataclass
class Adapters:
    builder: Any = None  # pipeline.adapters.docker_build.DockerBuilder
    runtime: Any = None  # pipeline.adapters.docker_run.DockerRunner
    trivy: Any = None  # pipeline.adapters.trivy.Trivy; None: found on PATH when the scan runs
    model_transport: Any = None  # httpx transport to the model server; None: the network
    embeddings: Any = None  # embeddings for semantic scores; None: the bundled MiniLM
    judge_llm: Any = None  # LLM judge client; None: the configured judge
    model_server: Any = None  # pipeline.adapters.model_server.ModelServer
    registries: dict[str, RegistryClient] = field(default_factory=dict)

    def server(self) -> Any:
        if self.model_server is None:
            from pipeline.adapters.model_server import HttpModelServer

            self.model_server = HttpModelServer()
        return self.model_server

    def image_builder(self) -> Any:
        if self.builder is None:
            from pipeline.adapters.docker_build import DockerBuilder

            self.builder = DockerBuilder()
        return self.builder

    def container_runtime(self) -> Any:
        if self.runtime is None:
            from pipeline.adapters.docker_run import DockerRunner

            self.runtime = DockerRunner()
        return self.runtime

    def registry(self, host: str, *, timeout: float = 120.0) -> RegistryClient:
        """One client per registry host for the whole invocation; closed with `close()`."""
        if host not in self.registries:
            self.registries[host] = RegistryClient(host, timeout=timeout)
        return self.registries[host]

    def close(self) -> None:
        for client in self.registries.values():
            client.close()
        self.registries.clear()

"""Shared fixtures. Docker-backed tests skip locally without an engine but fail in CI,
where `.ci/run` sets LLMGATE_REQUIRE_DOCKER=1 after starting dockerd and the registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def _unavailable(reason: str) -> None:
    if os.environ.get("LLMGATE_REQUIRE_DOCKER") == "1":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"shared fixtures missing at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def docker_engine():  # type: ignore[no-untyped-def]
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine here"
        _unavailable(f"Docker Engine not reachable: {exc}")
    return client

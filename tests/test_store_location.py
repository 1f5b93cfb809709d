"""Which store a command opens, and every bad store a user can name: `--store` takes a SQLite path
only (a URL's password would show in `ps`), a server URL comes from LLMGATE_STORE_URL or a secret file,
and a bad path or an unreachable server is exit 2 or 3 naming it, password hidden, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import BadInput, ExitCode, InfraError
from pipeline.redact import redact_text
from pipeline.store import Store, resolve_store

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
PASSWORD = "s3cr3t-Pa55word-for-the-store"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: connecting is refused


# -- resolution ------------------------------------------------------------------------------------
def test_default_is_the_work_dirs_results_db(tmp_path: Path) -> None:
    loc = resolve_store(None, tmp_path, env={})
    assert loc.path == tmp_path / "results.db" and loc.source == "default" and loc.shown == str(tmp_path / "results.db")


def test_store_option_is_a_sqlite_path(tmp_path: Path) -> None:
    loc = resolve_store(str(tmp_path / "x.db"), tmp_path, env={})
    assert loc.dialect == "sqlite" and loc.path == tmp_path / "x.db"


@pytest.mark.parametrize("var", ["LLMGATE_STORE_URL", "LLMGATE_STORE_URL_FILE"])
def test_store_option_and_a_store_from_the_environment_is_ambiguous(tmp_path: Path, var: str) -> None:
    """Neither silently wins: a run written to the local file would be missing from the shared store."""
    with pytest.raises(BadInput, match=f"so does {var}; give one") as exc:
        resolve_store(str(tmp_path / "x.db"), tmp_path, env={var: "postgresql://h/db"})
    assert exc.value.where == "--store"


@pytest.mark.parametrize("url", [f"postgresql://llmgate:{PASSWORD}@db.example:5432/llmgate",
                                 f"postgresql://llmgate:{PASSWORD}@/llmgate?host=/run/pg",
                                 f"not a url://llmgate:{PASSWORD}@x"])
def test_store_option_refuses_a_url_with_credentials(url: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput) as exc:
        resolve_store(url, tmp_path, env={})
    assert exc.value.where == "--store"
    assert "credentials" in exc.value.message and "ps" in exc.value.message
    assert "LLMGATE_STORE_URL" in (exc.value.hint or "") and "LLMGATE_STORE_URL_FILE" in (exc.value.hint or "")
    assert PASSWORD not in exc.value.render()


def test_store_option_refuses_any_url(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="takes a SQLite file path, not a URL") as exc:
        resolve_store("postgresql://db.example/llmgate", tmp_path, env={})
    assert exc.value.where == "--store"


def test_url_from_the_environment_has_its_password_hidden(tmp_path: Path) -> None:
    loc = resolve_store(None, tmp_path, env={"LLMGATE_STORE_URL": f"postgres://u:{PASSWORD}@db.example:6543/gate"})
    assert loc.dialect == "postgresql" and loc.url.drivername == "postgresql+psycopg"
    assert loc.url.password == PASSWORD  # what the driver gets
    for shown in (loc.shown, str(loc), repr(loc), loc.host):
        assert PASSWORD not in shown
    assert loc.shown == "postgresql+psycopg://u:***@db.example:6543/gate" and loc.host == "db.example:6543"
    assert redact_text(f"oops {PASSWORD}") == "oops [REDACTED]"  # registered with the redactor


def test_password_given_as_a_query_parameter_is_hidden_too(tmp_path: Path) -> None:
    pw = "query-Pa55word-xyz"
    loc = resolve_store(None, tmp_path, env={"LLMGATE_STORE_URL": f"postgresql://u@db.example/gate?password={pw}"})
    assert pw not in loc.shown and pw not in repr(loc) and redact_text(pw) == "[REDACTED]"


def test_url_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "store-url"
    secret.write_text(f"  postgresql://u:{PASSWORD}@db.example/gate\n")
    loc = resolve_store(None, tmp_path, env={"LLMGATE_STORE_URL_FILE": str(secret)})
    assert loc.url.host == "db.example" and loc.url.password == PASSWORD
    assert loc.source == f"LLMGATE_STORE_URL_FILE ({secret})"


@pytest.mark.parametrize(("content", "message"), [(None, "cannot read the store URL file"), ("dir", "is a directory"),
                                                  ("", "is empty"), (b"\xff\xfe", "not UTF-8")])
def test_bad_secret_file_is_bad_input_naming_it(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "store-url"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(BadInput, match=message) as exc:
        resolve_store(None, tmp_path, env={"LLMGATE_STORE_URL_FILE": str(path)})
    assert exc.value.where == f"LLMGATE_STORE_URL_FILE ({path})"


def test_both_environment_sources_is_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="both"):
        resolve_store(None, tmp_path, env={"LLMGATE_STORE_URL": "sqlite:///a.db", "LLMGATE_STORE_URL_FILE": "/x"})


@pytest.mark.parametrize("url", ["mysql://u:p@h/db", "postgresql+psycopg2://h/db", "nosuchdialect://x"])
def test_unsupported_databases_are_bad_input(url: str, tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="unsupported store") as exc:
        resolve_store(None, tmp_path, env={"LLMGATE_STORE_URL": url})
    assert exc.value.where == "LLMGATE_STORE_URL"


# -- bad stores ------------------------------------------------------------------------------------
def _bad_sqlite_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    (tmp / "adir").mkdir()
    (tmp / "text.db").write_text("name,value\nnot,sqlite\n")
    truncated = DATA.joinpath("store-pre-alembic.db").read_bytes()[:100]
    (tmp / "truncated.db").write_bytes(truncated)
    mangled = bytearray(DATA.joinpath("store-pre-alembic.db").read_bytes())
    mangled[4096:4096 + 8192] = b"\xff" * 8192  # the header is fine, the schema page is not
    (tmp / "mangled.db").write_bytes(bytes(mangled))
    return {
        "directory": (tmp / "adir", "is a directory"),
        "not sqlite": (tmp / "text.db", "is not a SQLite database"),
        "truncated": (tmp / "truncated.db", "unusable SQLite store"),
        "corrupt": (tmp / "mangled.db", "unusable SQLite store"),
        "under a file": (tmp / "text.db" / "results.db", "is not a directory"),
        "under /dev/null": (Path("/dev/null/results.db"), "is not a directory"),
        "unwritable": (Path("/proc/llmgate-results.db"), "unusable SQLite store"),
    }


@pytest.mark.parametrize("case", ["directory", "not sqlite", "truncated", "corrupt", "under a file", "under /dev/null",
                                  "unwritable"])
def test_bad_sqlite_store_is_bad_input_naming_the_path(case: str, tmp_path: Path) -> None:
    path, message = _bad_sqlite_files(tmp_path)[case]
    with pytest.raises(BadInput, match=message) as exc:
        Store(str(path))
    assert exc.value.where == str(path)


def test_unreachable_postgres_is_infra_naming_the_host_without_the_password() -> None:
    port = _closed_port()
    with pytest.raises(InfraError) as exc:
        Store(f"postgresql://llmgate:{PASSWORD}@127.0.0.1:{port}/llmgate")
    text = exc.value.render()
    assert f"127.0.0.1:{port}" in text and "***" in text and PASSWORD not in text


def test_wrong_postgres_password_is_bad_input_without_the_password() -> None:
    from sqlalchemy.engine import make_url

    from tests.conftest import postgres_test_url

    url = make_url(postgres_test_url()).set(password=PASSWORD)
    with pytest.raises(BadInput, match="refused this login") as exc:
        Store(url.render_as_string(hide_password=False))
    assert PASSWORD not in exc.value.render() and f"{url.host}:{url.port}" in exc.value.render()


# -- through the CLI: the exit code, the name, no traceback, no password -----------------------------
def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMGATE_STORE_URL")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pipeline", "--workdir", str(tmp_path / "wd"), *args, "summary"],
                          capture_output=True, text=True, cwd=REPO, env=full_env, timeout=120, check=False)


def test_cli_refuses_a_store_url_with_credentials_on_the_command_line(tmp_path: Path) -> None:
    res = _cli(tmp_path, "--store", f"postgresql://llmgate:{PASSWORD}@db.example/llmgate")
    out = res.stdout + res.stderr
    assert res.returncode == ExitCode.BAD_INPUT, out
    assert "--store" in out and "LLMGATE_STORE_URL" in out and "LLMGATE_STORE_URL_FILE" in out
    assert PASSWORD not in out and "Traceback" not in out


@pytest.mark.parametrize("case", ["directory", "not sqlite", "corrupt", "under /dev/null"])
def test_cli_bad_store_file_exits_2_naming_it(case: str, tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    path, message = _bad_sqlite_files(tmp_path / "files")[case]
    res = _cli(tmp_path, "--store", str(path))
    out = " ".join((res.stdout + res.stderr).split())  # the console may wrap long paths
    assert res.returncode == ExitCode.BAD_INPUT, out
    assert str(path) in out and message in out and "Traceback" not in out


def test_cli_unreachable_postgres_from_a_secret_file_exits_3(tmp_path: Path) -> None:
    secret = tmp_path / "store-url"
    port = _closed_port()
    secret.write_text(f"postgresql://llmgate:{PASSWORD}@127.0.0.1:{port}/llmgate\n")
    res = _cli(tmp_path, env={"LLMGATE_STORE_URL_FILE": str(secret)})
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == ExitCode.INFRA, out
    assert f"127.0.0.1:{port}" in out and PASSWORD not in out and "Traceback" not in out


def test_cli_reads_the_store_named_by_the_environment(store_url: str, tmp_path: Path) -> None:
    from pipeline.models import Decision, ImageRef, RunRecord

    run = RunRecord(image=ImageRef(repository="127.0.0.1:5000/llmgate/server", tag="env-store"), decision=Decision.PASS)
    Store(store_url).save(run)
    res = _cli(tmp_path, env={"LLMGATE_STORE_URL": store_url})
    assert res.returncode == 0, res.stderr
    assert run.run_id in res.stdout or "env-store" in res.stdout
    assert not (tmp_path / "wd" / "results.db").exists()

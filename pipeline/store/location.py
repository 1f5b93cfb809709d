"""Which store to open: a SQLite file named by `--store`, a database URL from the environment or a
mounted secret file, or the work dir's `results.db`.

A server URL carries a password, so it never comes from an argument (anyone on the machine can read
argv in `ps`): `--store` takes a SQLite path only. Wherever a location is shown (errors, logs, the
store itself), its password is hidden.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from pipeline.errors import BadInput
from pipeline.redact import register_secret
from pipeline.regular_files import read_regular

ENV_URL = "LLMGATE_STORE_URL"
ENV_URL_FILE = "LLMGATE_STORE_URL_FILE"
STORE_OPTION = "--store"
DEFAULT_NAME = "results.db"
MAX_URL_FILE_BYTES = 64 * 1024  # one URL; a mounted secret, never a large file
_HINT = f"give a server URL through {ENV_URL} or a secret file named by {ENV_URL_FILE}"


@dataclass(frozen=True, repr=False)
class StoreLocation:
    """A resolved store: its SQLAlchemy URL (secret), and `source` (where it came from, for errors)."""

    url: URL
    source: str

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    @property
    def path(self) -> Path | None:
        """The SQLite file (None for a server or an in-memory database)."""
        db = self.url.database
        return Path(db) if self.dialect == "sqlite" and db and db != ":memory:" else None

    @property
    def shown(self) -> str:
        """How to name this store to people: the path, or the URL with its password hidden."""
        if self.path is not None:
            return str(self.path)
        return hide_password(self.url)

    @property
    def host(self) -> str:
        """The server part of a URL (for errors about connecting), or the SQLite path."""
        if self.path is not None:
            return str(self.path)
        host = self.url.host or str(self.url.query.get("host") or "local socket")
        return f"{host}:{self.url.port}" if self.url.port else host

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"StoreLocation({self.shown!r}, source={self.source!r})"


def hide_password(url: URL) -> str:
    """The URL as text with its password (in the authority or as a `password=` parameter) hidden."""
    if "password" in url.query:
        url = url.update_query_dict({"password": "***"})
    return url.render_as_string(hide_password=True)


def _sqlite(path: str | Path, source: str) -> StoreLocation:
    return StoreLocation(URL.create("sqlite", database=str(Path(path).expanduser())), source)


def parse_url(text: str, *, source: str) -> StoreLocation:
    """A database URL (PostgreSQL through psycopg 3, or SQLite), its password registered as a secret."""
    text = text.strip()
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number, an unclosed [IPv6 host
        # make_url's message quotes the whole URL, password included: say only what is wrong.
        raise BadInput("not a database URL (expected postgresql://user@host/db or sqlite:///path)",
                       where=source) from None
    if url.port is not None and not 1 <= url.port <= 65535:
        raise BadInput(f"port {url.port} is out of range (1-65535)", where=source)
    register_secret(url.password if isinstance(url.password, str) else None)
    register_secret(url.query.get("password") if isinstance(url.query.get("password"), str) else None)
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres") and url.drivername in ("postgresql", "postgres", "postgresql+psycopg"):
        return StoreLocation(url.set(drivername="postgresql+psycopg"), source)
    if backend == "sqlite" and url.drivername in ("sqlite", "sqlite+pysqlite"):
        return _sqlite(url.database, source) if url.database else StoreLocation(url, source)
    raise BadInput(f"unsupported store {url.drivername!r}: the store runs on SQLite or on PostgreSQL through "
                   "psycopg 3 (postgresql://...)", where=source)


def location_of(store: str | Path | StoreLocation) -> StoreLocation:
    """A location from what a caller holds: a resolved location, a SQLite path, or a URL."""
    if isinstance(store, StoreLocation):
        return store
    text = str(store)
    return parse_url(text, source="store URL") if "://" in text else _sqlite(text, STORE_OPTION)


def _read_url_file(path_text: str) -> str:
    where = f"{ENV_URL_FILE} ({path_text})"
    try:
        raw = read_regular(Path(path_text).expanduser(), what="file holding the store URL", limit=MAX_URL_FILE_BYTES,
                           where=where)
    except BadInput as exc:
        raise BadInput(f"cannot read the store URL file: {exc.message}", where=where) from None
    try:
        text = raw.decode().strip()
    except UnicodeDecodeError:
        raise BadInput("the store URL file is not UTF-8 text", where=where) from None
    if not text:
        raise BadInput("the store URL file is empty", where=where)
    return text


def resolve_store(store_option: str | None, workdir: Path | str, env: Mapping[str, str] | None = None) -> StoreLocation:
    """The store a command opens.

    1. `--store PATH` (a SQLite file; a URL there is refused: its password would show in `ps`; given
       while LLMGATE_STORE_URL(_FILE) is set, refused as ambiguous);
    2. `LLMGATE_STORE_URL`, or `LLMGATE_STORE_URL_FILE` naming a file that holds the URL (a mounted
       secret); setting both is ambiguous and refused;
    3. `WORKDIR/results.db`.
    """
    env = os.environ if env is None else env
    url, url_file = env.get(ENV_URL, "").strip(), env.get(ENV_URL_FILE, "").strip()
    if store_option is not None and (url or url_file):
        # Either could be the one meant; a run recorded in the other store would be missing from the
        # shared one (its baselines, its promotion audit), so neither silently wins.
        raise BadInput(f"names a store, and so does {ENV_URL if url else ENV_URL_FILE}; give one",
                       where=STORE_OPTION, hint=f"unset {ENV_URL if url else ENV_URL_FILE} to use a local SQLite "
                       "file, or drop --store to use the shared store")
    if store_option is not None:
        if not store_option.strip():
            raise BadInput("empty store path", where=STORE_OPTION)
        if "://" in store_option:
            try:
                has_password = make_url(store_option).password is not None
            except ArgumentError:
                has_password = "@" in store_option
            what = "a URL with credentials (visible to anyone who can run `ps`)" if has_password else "a URL"
            raise BadInput(f"takes a SQLite file path, not {what}", where=STORE_OPTION, hint=_HINT)
        return _sqlite(store_option, STORE_OPTION)
    if url and url_file:
        raise BadInput(f"both {ENV_URL} and {ENV_URL_FILE} are set; set one", where=ENV_URL)
    if url:
        return parse_url(url, source=ENV_URL)
    if url_file:
        return parse_url(_read_url_file(url_file), source=f"{ENV_URL_FILE} ({url_file})")
    return _sqlite(Path(workdir) / DEFAULT_NAME, "default")

"""The SQLAlchemy engine of a store location, and what its failures mean to a user.

SQLite: WAL (the dashboard reads while a run writes), a busy timeout, foreign keys, and transactions
that SQLAlchemy begins itself, so that DDL is transactional too (pysqlite would commit it at once)
and a migration can take the write lock up front (`BEGIN IMMEDIATE`).
PostgreSQL: psycopg 3, a connect timeout (an unreachable host fails instead of hanging), and
connections checked before use (a long promotion outlives a server restart).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, NoSuchModuleError, OperationalError

from pipeline.errors import BadInput, InfraError, LlmgateError
from pipeline.redact import redact_text
from pipeline.regular_files import check_output
from pipeline.store.location import StoreLocation

SQLITE_MAGIC = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 10
BEGIN_IMMEDIATE = "llmgate_begin_immediate"  # execution option: take SQLite's write lock at BEGIN
# How long a SQLite writer waits for another (a run saving, a migration filling new columns of a large
# store) before the command fails with exit 3.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def check_sqlite_file(loc: StoreLocation) -> None:
    """Refuse a path that cannot be a SQLite store before SQLite turns it into an obscure error."""
    path = loc.path
    if path is None:
        return
    where = str(path)
    if path.is_dir():
        raise BadInput("is a directory, not a SQLite store file", where=where, hint="name a file, e.g. DIR/results.db")
    try:
        exists = check_output(path, what="SQLite store file").exists()  # /dev/null, a FIFO: SQLite's "locked"
    except BadInput as exc:
        raise BadInput(exc.message, where=where, hint="name a file, e.g. DIR/results.db") from None
    if exists:
        try:
            with path.open("rb") as fh:
                head = fh.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise BadInput(f"cannot read the store file: {exc.strerror}", where=where) from None
        if head and head != SQLITE_MAGIC:
            raise BadInput("is not a SQLite database (another kind of file?)", where=where,
                           hint="point --store at a results.db made by llmgate, or at a new path")
        return
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise BadInput(f"{blocker} is not a directory, so no store can be created under it", where=where)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"cannot create the store's directory: {exc.strerror}", where=where) from None


def make_engine(loc: StoreLocation) -> Engine:
    kwargs: dict[str, Any] = {}
    if loc.dialect == "postgresql":
        kwargs["pool_pre_ping"] = True
        if "connect_timeout" not in loc.url.query:
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(loc.url, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise BadInput(f"cannot use this store: {type(exc).__name__}", where=loc.source) from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (see _sqlite_begin)
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(BEGIN_IMMEDIATE) else "BEGIN")


# What libpq says when the URL itself is wrong (retrying will not help). A failed connection carries no
# SQLSTATE in psycopg, so the server's message is all there is to go by.
_PG_BAD_INPUT = (
    (re.compile(r"password authentication failed|no password supplied|role \"[^\"]*\" does not exist|pg_hba\.conf"),
     "the server refused this login"),
    (re.compile(r"database \"[^\"]*\" does not exist"), "no such database on the server"),
)
_SQLITE_BAD_FILE = ("not a database", "malformed", "unable to open", "readonly", "read-only", "disk i/o error")


def translate(exc: BaseException, loc: StoreLocation) -> LlmgateError:
    """A database error as the user's error: exit 2 when the store they named is wrong, 3 when it is down.

    Messages name the path or host; a URL appears only with its password hidden, and the driver's text
    passes the redactor (libpq may echo connection parameters)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = redact_text(" ".join(str(orig).split()))[:400]
    if loc.dialect == "sqlite":
        lower = text.lower()
        if any(s in lower for s in _SQLITE_BAD_FILE):
            return BadInput(f"unusable SQLite store: {text}", where=loc.shown,
                            hint="is the path writable, and is the file a results.db made by llmgate?")
        return InfraError(f"SQLite store error: {text}", where=loc.shown)
    for pattern, what in _PG_BAD_INPUT:
        if pattern.search(text):
            return BadInput(f"{what}: {text}", where=loc.shown, hint=f"check the URL in {loc.source}")
    if isinstance(exc, OperationalError | InterfaceError):
        return InfraError(f"store unreachable at {loc.host}: {text}", where=loc.shown)
    return InfraError(f"the store refused the operation: {text}", where=loc.shown)

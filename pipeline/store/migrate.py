"""Bring a store's schema to the version this code expects (Alembic, the same scripts for SQLite and
PostgreSQL). Opening a store does this, so a store made by an older llmgate upgrades in place, that
store made before migrations existed included (see migrations/versions/0001_baseline.py).

Runners sharing one store may open it at the same moment: the upgrade runs in one transaction
holding a lock (PostgreSQL: a transaction-level advisory lock; SQLite: `BEGIN IMMEDIATE`), and the
version is read again under it, so exactly one of them migrates.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from pipeline.errors import BadInput
from pipeline.store.engine import BEGIN_IMMEDIATE

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Every revision in migrations/versions, oldest first (a test checks this against the scripts). Known
# here so that opening an up-to-date store, which every command does, needs no Alembic import.
REVISIONS = ("0001", "0002", "0003", "0004")
HEAD = REVISIONS[-1]
VERSION_TABLE = "alembic_version"
_PG_LOCK_KEY = 0x6C6C6D67617465  # "llmgate": the advisory lock key migrations serialise on


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def alembic_config(connection: Connection | None = None):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _check_known(rev: str | None, where: str) -> None:
    if rev is not None and rev not in REVISIONS:
        raise BadInput(f"the store's schema is at revision {rev!r}, newer than this llmgate knows ({HEAD})",
                       where=where, hint="use the llmgate version that upgraded this store, or a newer one")


def upgrade_to_head(engine: Engine, *, where: str) -> bool:
    """Upgrade the schema to HEAD; True when anything was migrated."""
    with engine.connect() as conn:
        rev = current_revision(conn)
    _check_known(rev, where)
    if rev == HEAD:
        return False
    from alembic import command

    with engine.connect().execution_options(**{BEGIN_IMMEDIATE: True}) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        rev = current_revision(conn)
        _check_known(rev, where)
        if rev == HEAD:
            return False
        command.upgrade(alembic_config(conn), "head")
    return True


def main(argv: list[str]) -> int:
    """`python -m pipeline.store.migrate revision -m MESSAGE`: a new, empty revision script."""
    import argparse

    from alembic import command

    parser = argparse.ArgumentParser(prog="python -m pipeline.store.migrate")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rev = sub.add_parser("revision", help="write a new revision script under migrations/versions")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument("--rev-id", default=f"{int(HEAD) + 1:04d}")
    args = parser.parse_args(argv)
    command.revision(alembic_config(), message=args.message, rev_id=args.rev_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

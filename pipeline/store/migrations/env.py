"""Alembic environment of the store. Run only through `pipeline.store.migrate`, which passes the
connection (inside its transaction, holding the migration lock) as `config.attributes["connection"]`.

A new revision: `.venv/bin/python -m pipeline.store.migrate revision -m "what changes"`, add its id to
`REVISIONS` in pipeline/store/migrate.py and write its `upgrade()` by hand. It must run the same on SQLite
and PostgreSQL; `tests/test_store_migrations.py` checks that the result matches `schema.py`.
"""

from __future__ import annotations

from alembic import context

from pipeline.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the store's migrations run through pipeline.store.migrate, with a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most column properties; batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()

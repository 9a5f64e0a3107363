"""Alembic environment: runs against the engine handed over by caretally.store.db."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from caretally.store.schema import metadata

config = context.config
engine = config.attributes.get("engine")
if engine is None:  # invoked by the alembic CLI: take the URL from the ini/-x option
    from caretally.store.db import resolve_url

    engine = create_engine(resolve_url(config.get_main_option("sqlalchemy.url") or None))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()

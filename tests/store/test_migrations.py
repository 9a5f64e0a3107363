"""The migrations and the schema module must describe the same database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from caretally.store import db, schema


def test_migrations_reach_head_and_match_schema(db_url: str) -> None:
    engine = db.open_database(db_url)
    assert db.current_revision(engine) == db.head_revision(engine)
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), schema.metadata
        )
    assert diff == [], f"schema.py and migrations disagree: {diff}"
    assert set(schema.metadata.tables) <= set(inspect(engine).get_table_names())


def test_open_twice_is_a_no_op(db_url: str) -> None:
    first = db.open_database(db_url)
    before = db.current_revision(first)
    second = db.open_database(db_url)
    assert db.current_revision(second) == before


def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    engine = db.open_database(sqlite_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

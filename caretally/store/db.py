"""Opening a database: URL resolution, SQLite tuning, and migrations on first use.

Every entry point (CLI, API, tests) goes through ``open_database`` so the schema is
always at head before anything reads or writes, and SQLite always runs in WAL mode with
foreign keys on.
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, insert, select

from caretally.store import schema

DEFAULT_URL = "sqlite:///caretally.db"
DEFAULT_ORG = "default"
MIGRATIONS = Path(__file__).parent / "migrations"


def resolve_url(url: str | None = None) -> str:
    """``--db`` wins over ``CARETALLY_DATABASE_URL``, which wins over ./caretally.db.

    A bare ``postgresql://`` URL is steered to psycopg 3, the driver we ship.
    """
    chosen = url or os.environ.get("CARETALLY_DATABASE_URL") or DEFAULT_URL
    if chosen.startswith("postgresql://") or chosen.startswith("postgres://"):
        chosen = "postgresql+psycopg://" + chosen.split("://", 1)[1]
    return chosen


def make_engine(url: str | None = None) -> Engine:
    resolved = resolve_url(url)
    if resolved.startswith("sqlite"):
        engine = create_engine(resolved, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.execute("PRAGMA cache_size=-200000")
            cur.close()

        return engine
    return create_engine(resolved, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the schema to head; returns (before, after) revisions."""
    before = current_revision(engine)
    command.upgrade(alembic_config(engine), "head")
    return before, current_revision(engine)


def ensure_org(engine: Engine, org_id: str, name: str | None = None) -> None:
    with engine.begin() as conn:
        found = conn.execute(
            select(schema.organizations.c.org_id).where(schema.organizations.c.org_id == org_id)
        ).first()
        if found is None:
            conn.execute(insert(schema.organizations).values(org_id=org_id, name=name or org_id))


def open_database(url: str | None = None, org_id: str = DEFAULT_ORG) -> Engine:
    """An engine whose schema is at head and whose organization row exists."""
    engine = make_engine(url)
    if current_revision(engine) != head_revision(engine):
        upgrade(engine)
    ensure_org(engine, org_id)
    return engine

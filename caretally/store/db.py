"""Opening a database: URL resolution, SQLite tuning, and migrations on first use.

Every entry point (CLI, API, tests) goes through ``open_database`` so the schema is
always at head before anything reads or writes, and SQLite always runs in WAL mode with
foreign keys on. A URL that cannot be used, a server that cannot be reached and a locked
file all come out as ``DatabaseUnavailable``: one line a person can act on, with the
password never shown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from caretally.store import schema

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_URL = "sqlite:///caretally.db"
DEFAULT_ORG = "default"
MIGRATIONS = Path(__file__).parent / "migrations"
#: Seconds a command waits for another process's SQLite write lock before giving up.
LOCK_TIMEOUT_ENV = "CARETALLY_LOCK_TIMEOUT"
DEFAULT_LOCK_TIMEOUT = 30.0


@dataclass
class DatabaseUnavailable(Exception):
    """The database cannot be used as given; ``message`` is one line, ``hint`` says what to do."""

    message: str
    hint: str | None = None

    def __str__(self) -> str:
        return self.message


def shown_url(url: str | None) -> str:
    """The URL with any password masked, for messages."""
    chosen = resolve_url(url)
    try:
        return make_url(chosen).render_as_string(hide_password=True)
    except ArgumentError:
        return chosen if "@" not in chosen else "<the --db URL>"


def describe_database_error(exc: BaseException, url: str | None = None) -> DatabaseUnavailable | None:
    """The one-line account of a driver or URL error, or ``None`` if ``exc`` is not one."""
    where = f" {shown_url(url)}" if url is not None else ""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if isinstance(exc, ArgumentError):
        return DatabaseUnavailable(
            f"cannot use database URL{where}: {_first_line(exc)}",
            "write --db as sqlite:///path/to/file.db or postgresql://user@host:5432/dbname",
        )
    if isinstance(exc, OperationalError | DBAPIError):
        detail = _first_line(exc.orig if exc.orig is not None else exc)
        lowered = detail.lower()
        if "locked" in lowered or "busy" in lowered:
            return DatabaseUnavailable(
                f"database{where} is locked by another process: {detail}",
                f"wait for the other caretally command to finish (or raise ${LOCK_TIMEOUT_ENV}, in seconds)",
            )
        if isinstance(exc, OperationalError):
            return DatabaseUnavailable(
                f"cannot open database{where}: {detail}",
                "check that the server is running and the URL, user and database name are right",
            )
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # SQLAlchemy appends "(Background on this error at: …)" and the SQL on later lines.
    return text.splitlines()[0].strip() if text else type(exc).__name__


def lock_timeout() -> float:
    raw = os.environ.get(LOCK_TIMEOUT_ENV)
    if not raw:
        return DEFAULT_LOCK_TIMEOUT
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise DatabaseUnavailable(
            f"${LOCK_TIMEOUT_ENV} must be a number of seconds, got {raw!r}", None
        ) from None


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
        engine = create_engine(resolved, connect_args={"timeout": lock_timeout()})

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
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(engine: Engine) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def upgrade(engine: Engine) -> tuple[str | None, str | None]:
    """Bring the schema to head; returns (before, after) revisions."""
    from alembic import command

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
    """An engine whose schema is at head and whose organization row exists.

    Raises ``DatabaseUnavailable`` when the URL is unusable, the server unreachable or
    the file locked, so callers never see a driver's traceback for a setting.
    """
    try:
        engine = make_engine(url)
        if current_revision(engine) != head_revision(engine):
            upgrade(engine)
        ensure_org(engine, org_id)
    except (ArgumentError, DBAPIError) as exc:
        described = describe_database_error(exc, url)
        if described is None:
            raise
        raise described from None
    return engine

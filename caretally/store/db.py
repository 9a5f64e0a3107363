"""Opening a database: URL resolution, SQLite tuning, and migrations on first use.

Every entry point (CLI, API, tests) goes through ``open_database`` so the schema is
always at head before anything reads or writes, and SQLite always runs in WAL mode with
foreign keys on. A URL that cannot be used, a server that cannot be reached and a locked
file all come out as ``DatabaseUnavailable``: one line a person can act on, with the
password never shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, event, func, insert, select, text
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


class JsonText(str):
    """A JSON document serialized already: a JSON column stores this text exactly as it is.

    The month run serializes each patient's decisions once, digests that text and stores
    it, so ``db verify`` can digest the stored bytes without serializing them again.
    """


def dump_json(value: object) -> str:
    """The JSON serializer of every engine: ``json.dumps``, except that ``JsonText`` is kept."""
    return str(value) if isinstance(value, JsonText) else json.dumps(value)


def require_json_text(engine: Engine) -> None:
    """Refuse an engine that would store a ``JsonText`` as a JSON string instead of as itself.

    Every engine from :func:`make_engine` (and so :func:`open_database`) keeps it; one made
    with a bare ``create_engine`` would quietly write each document as one quoted string.
    """
    if getattr(engine.dialect, "_json_serializer", None) is not dump_json:
        raise TypeError(
            "this engine does not store JsonText as is: open it with caretally.store.db.open_database"
        )


def make_engine(url: str | None = None, *, snapshot: str | None = None) -> Engine:
    """An engine for ``url``; with ``snapshot`` (PostgreSQL), every transaction reads that snapshot.

    ``snapshot`` is an id from ``pg_export_snapshot()`` in a transaction that is still
    open (:func:`serial_transaction`): each transaction of the engine starts REPEATABLE READ
    and imports it, so a month run's readers — in this process or in forked workers — see
    exactly what its writer saw, whatever commits meanwhile.
    """
    resolved = resolve_url(url)
    if snapshot is not None and not resolved.startswith("sqlite"):
        return _snapshot_engine(resolved, snapshot)
    if resolved.startswith("sqlite"):
        engine = create_engine(resolved, connect_args={"timeout": lock_timeout()}, json_serializer=dump_json)

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
    return create_engine(resolved, pool_pre_ping=True, json_serializer=dump_json)


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


def open_database(url: str | None = None, org_id: str | None = DEFAULT_ORG) -> Engine:
    """An engine whose schema is at head and whose organization row exists (``None``: no row).

    Raises ``DatabaseUnavailable`` when the URL is unusable, the server unreachable or
    the file locked, so callers never see a driver's traceback for a setting.
    """
    try:
        engine = make_engine(url)
        if current_revision(engine) != head_revision(engine):
            upgrade(engine)
        if org_id is not None:
            ensure_org(engine, org_id)
    except (ArgumentError, DBAPIError) as exc:
        described = describe_database_error(exc, url)
        if described is None:
            raise
        raise described from None
    return engine


# ----------------------------------------------------------------------------------------
# One writer per month, reading one snapshot
# ----------------------------------------------------------------------------------------

_SNAPSHOT_ID = re.compile(r"[0-9A-Fa-f]+(-[0-9A-Fa-f]+)+")


def _snapshot_engine(url: str, snapshot: str) -> Engine:
    if not _SNAPSHOT_ID.fullmatch(snapshot):  # it is inlined below: SET takes no parameters
        raise ValueError(f"not a PostgreSQL snapshot id: {snapshot!r}")
    engine = create_engine(url, isolation_level="REPEATABLE READ")

    @event.listens_for(engine, "begin")
    def _import_snapshot(conn: Connection) -> None:
        # The driver opens the transaction (REPEATABLE READ) with this, its first statement.
        conn.connection.driver_connection.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")

    return engine


class LockTimeout(DatabaseUnavailable):
    """Another writer held what we waited for during the whole wait; nothing was done.

    A ``DatabaseUnavailable``, so a command that does not say more (an import) prints
    the locked-database line; the month run turns it into its own refusal.
    """

    def __init__(self, waited: float, dialect: str):
        super().__init__(
            f"database is locked by another process (waited {waited:g} s)",
            f"wait for the other caretally command to finish (or raise ${LOCK_TIMEOUT_ENV}, in seconds)",
        )
        self.waited = waited
        self.dialect = dialect


@dataclass(frozen=True)
class SerialTransaction:
    """An open write transaction that holds its lock and reads one consistent snapshot.

    ``conn`` writes (and may read); ``reader()`` gives an engine whose reads see the same
    snapshot, for code that opens its own connections (the facts queries, forked workers);
    ``snapshot`` is what a worker passes to :func:`make_engine` to do the same.
    """

    conn: Connection
    engine: Engine
    snapshot: str | None

    def reader(self) -> Engine:
        """On PostgreSQL a new engine importing the snapshot (dispose it); on SQLite the same engine.

        SQLite has one writer at a time and this transaction is it (``BEGIN IMMEDIATE``), so no
        other connection can commit until it ends: every connection reads the same data.
        """
        if self.snapshot is None:
            return self.engine
        return make_engine(self.engine.url.render_as_string(hide_password=False), snapshot=self.snapshot)


def lock_key(name: str) -> int:
    """A PostgreSQL advisory-lock key (signed 64 bits) for a name such as ``month/default/2026-03``."""
    digest = hashlib.blake2b(f"caretally:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def serial_transaction(
    engine: Engine,
    name: str,
    *,
    on_wait: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Iterator[SerialTransaction]:
    """A write transaction that only one process at a time may hold for ``name``.

    PostgreSQL: a session advisory lock on ``lock_key(name)`` is taken first, then a
    REPEATABLE READ transaction begins and exports its snapshot — after the lock, so a run
    that waited sees what the run before it stored. SQLite: ``BEGIN IMMEDIATE`` takes the
    database's one write lock (every name shares it), before anything is read.

    When another holds the lock, ``on_wait`` gets one line saying so, and the wait lasts
    ``timeout`` seconds (default ``$CARETALLY_LOCK_TIMEOUT``; 0 = do not wait) before
    ``LockTimeout``. The transaction commits when the block ends, unless the block rolled
    it back; an exception rolls it back. The lock ends with it.
    """
    wait = lock_timeout() if timeout is None else max(0.0, timeout)
    conn = engine.connect()
    try:
        if engine.dialect.name == "sqlite":
            begin_write(conn, on_wait=on_wait, timeout=wait)
            yield SerialTransaction(conn, engine, None)
            if conn.in_transaction():
                conn.commit()
            return
        key = lock_key(name)
        _advisory_lock(conn, key, wait, on_wait)
        try:
            conn.execution_options(isolation_level="REPEATABLE READ")
            conn.begin()
            snapshot = conn.execute(select(func.pg_export_snapshot())).scalar_one()
            yield SerialTransaction(conn, engine, snapshot)
            if conn.in_transaction():
                conn.commit()
        finally:
            _advisory_unlock(conn, key)
    finally:
        conn.close()


def begin_write(
    conn: Connection,
    *,
    on_wait: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> None:
    """Take SQLite's one write lock now (``BEGIN IMMEDIATE``), waiting for another writer.

    SQLite's driver otherwise begins lazily and takes the lock at the first write; a
    transaction that read first and finds another writer committed meanwhile cannot write
    at all ("database is locked", whatever the timeout). Taking the lock before the first
    read waits for the other writer instead: ``on_wait`` gets one line when that happens,
    and after ``timeout`` seconds (default ``$CARETALLY_LOCK_TIMEOUT``) ``LockTimeout``.
    ``conn`` must not be in a transaction yet; it is in one afterwards. Other databases:
    only the transaction is begun.
    """
    if conn.dialect.name != "sqlite":
        conn.begin()
        return
    import sqlite3

    wait = lock_timeout() if timeout is None else max(0.0, timeout)
    driver = conn.connection.driver_connection
    conn.begin()  # SQLAlchemy's side; the driver's BEGIN is ours, so it can be IMMEDIATE

    def busy(exc: sqlite3.OperationalError) -> bool:
        return "locked" in str(exc) or "busy" in str(exc)

    try:
        driver.execute("PRAGMA busy_timeout = 0")
        try:
            driver.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not busy(exc):
                raise
        if wait <= 0:
            raise LockTimeout(0.0, "sqlite")
        if on_wait is not None:
            on_wait(
                f"another caretally command is writing to this database; waiting up to {wait:g} s "
                f"(${LOCK_TIMEOUT_ENV})"
            )
        driver.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            driver.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if busy(exc):
                raise LockTimeout(wait, "sqlite") from None
            raise
    except BaseException:
        conn.rollback()
        raise
    finally:
        driver.execute(f"PRAGMA busy_timeout = {int(lock_timeout() * 1000)}")


def _advisory_lock(conn: Connection, key: int, wait: float, on_wait: Callable[[str], None] | None) -> None:
    got = conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one()
    conn.commit()  # a session lock outlives this short transaction
    if got:
        return
    if wait <= 0:
        raise LockTimeout(0.0, "postgresql")
    if on_wait is not None:
        on_wait(f"another caretally run holds this month; waiting up to {wait:g} s (${LOCK_TIMEOUT_ENV})")
    try:
        conn.execute(text(f"SET LOCAL lock_timeout = {max(1, int(wait * 1000))}"))
        conn.execute(select(func.pg_advisory_lock(key)))
    except OperationalError as exc:
        conn.rollback()
        if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
            raise LockTimeout(wait, "postgresql") from None
        raise
    conn.commit()


def _advisory_unlock(conn: Connection, key: int) -> None:
    """Release the session lock; a connection that cannot is discarded, which releases it too."""
    try:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(select(func.pg_advisory_unlock(key)))
        conn.commit()
    except DBAPIError:
        conn.invalidate()


def integrity_check(engine: Engine) -> tuple[str, list[str]]:
    """(what was checked, findings: empty when sound) of the database file or server.

    SQLite: ``PRAGMA integrity_check`` over every page, index and constraint. PostgreSQL
    keeps no such whole-database check in SQL; this reports whether the server verifies
    page checksums (``data_checksums``) and that the tables caretally needs answer, and
    leaves index structure to ``pg_amcheck``.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = [str(r[0]) for r in conn.exec_driver_sql("PRAGMA integrity_check")]
            return "SQLite PRAGMA integrity_check", [] if rows == ["ok"] else rows
        checksums = conn.exec_driver_sql("SHOW data_checksums").scalar()
        for table in (schema.billing_runs, schema.run_decisions, schema.claim_lines):
            conn.execute(select(func.count()).select_from(table)).scalar()
    return (
        f"PostgreSQL: the run tables answer; data_checksums={checksums} "
        "(page checksums verified by the server on read when on); index structure: run pg_amcheck",
        [],
    )

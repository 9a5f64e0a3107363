"""Bulk writing through a staging table: load, de-duplicate, then merge in set-based SQL.

Validated rows go first into a temporary table shaped like the target (plus the source
line). Duplicates inside the bundle are found there with one GROUP BY; the merge then
finds changed records with one join (``IS DISTINCT FROM`` on every column), updates
them with an audit row each, and inserts the new ones with ``INSERT … SELECT … WHERE
NOT EXISTS``. Readings take a faster road into staging: raw ``executemany`` on SQLite
and ``COPY`` on PostgreSQL, because they are the one file that runs to millions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)

from caretally.ingest.rows import FileSpec, json_safe
from caretally.store import schema
from caretally.store.schema import UtcDateTime

LINE = "_line"
STAGE_PREFIX = "ct_stage_"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A later row whose key repeats an earlier one; ``differs`` empty = identical copy."""

    line: int
    first_line: int
    key: str
    values: dict[str, Any]
    differs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One record inserted (``old`` is ``None``), updated, or retracted (``new`` is ``None``)."""

    key: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class MergeResult:
    inserted: int
    updated: int
    unchanged: int
    #: Filled when the merge is asked to ``track``: source line → ``inserted``, ``updated``
    #: or ``unchanged``, and every record inserted or updated (live ingest reports both).
    outcomes: dict[int, str] | None = None
    changes: tuple[Change, ...] = ()


class ConcurrentWrite(Exception):
    """Another transaction stored one of this merge's new keys first; run the import again.

    Only raised by a tracked merge, whose per-record outcomes would otherwise be wrong. The
    caller's transaction is rolled back, and a second run finds the record stored.
    """


@cache
def _stage_table(spec: FileSpec) -> Table:
    """One ``Table`` object per file, shared by every import.

    SQLAlchemy caches compiled statements by their structure, table objects included; a
    new ``Table`` per import made every statement of every import compile again, which
    cost a small live request more than its database work.
    """
    target = spec.table
    return Table(
        STAGE_PREFIX + spec.stem,
        MetaData(),
        *(Column(name, target.c[name].type) for name in spec.stored),
        Column(LINE, Integer, nullable=False),
        prefixes=["TEMPORARY"],
    )


class Stage:
    """The temporary table for one file, living inside the import's transaction."""

    def __init__(self, conn: Connection, spec: FileSpec):
        self.conn = conn
        self.spec = spec
        self.columns = spec.stored
        self.count = 0
        self.table = _stage_table(spec)
        self.dialect = conn.dialect.name
        conn.execute(text(f"DROP TABLE IF EXISTS {self.table.name}"))
        self.table.create(conn)

    # -- loading ------------------------------------------------------------------------

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Stage validated rows given as values (``check_row`` output plus ``_line``)."""
        if not rows:
            return
        names = [*self.columns, LINE]
        if self.dialect not in ("sqlite", "postgresql"):
            self.conn.execute(insert(self.table), list(rows))
        else:
            write_rows(self.conn, self.table.name, names, _driver_rows(self.table, names, rows, self.dialect))
        self.count += len(rows)

    def add_stored(self, rows: Sequence[Sequence[Any]], lines: Sequence[int]) -> None:
        """Stage rows already in stored form, in column order (the readings fast path)."""
        if rows:
            write_rows(
                self.conn,
                self.table.name,
                [*self.columns, LINE],
                [(*row, line) for row, line in zip(rows, lines, strict=True)],
            )
            self.count += len(rows)

    def add_arrow(self, table: Any, lines: Any) -> None:
        """Stage an Arrow table of stored-form rows (``bulk.Clean``) with their lines."""
        if table.num_rows:
            write_arrow(self.conn, self.table.name, [*self.columns, LINE], table.append_column(LINE, lines))
            self.count += table.num_rows

    def finish(self) -> None:
        """Index the key once loading is done (cheaper than maintaining it per insert).

        Plain DDL: an ``Index`` object would attach itself to the shared table definition.
        """
        name = self.table.name
        self.conn.execute(text(f"CREATE INDEX ix_{name}_key ON {name} ({self.spec.key})"))

    # -- duplicates inside the bundle ------------------------------------------------------

    def remove_duplicates(self) -> list[Duplicate]:
        """Keep the first row of each key; drop later copies and report how they differ."""
        s = self.table
        key = s.c[self.spec.key]
        repeated = select(key).group_by(key).having(func.count() > 1)
        rows = self.conn.execute(select(s).where(key.in_(repeated)).order_by(key, s.c[LINE])).mappings()
        found: list[Duplicate] = []
        first: dict[str, Any] | None = None
        for row in rows:
            if first is None or row[self.spec.key] != first[self.spec.key]:
                first = dict(row)
                continue
            differs = tuple(
                name for name in self.columns if name != self.spec.key and row[name] != first[name]
            )
            found.append(Duplicate(row[LINE], first[LINE], row[self.spec.key], dict(row), differs))
        lines = [d.line for d in found]
        for chunk in _chunks(lines, 500):
            self.conn.execute(delete(s).where(s.c[LINE].in_(chunk)))
        self.count -= len(lines)
        return found

    # -- merge into the real table --------------------------------------------------------

    def merge(
        self, org_id: str, batch_id: str, now: datetime, *, track: bool = False, actor: str | None = None
    ) -> MergeResult:
        """Update changed records (one audit row each, naming ``actor``) and insert new ones.

        With ``track`` the outcome of every staged line and the inserted and updated
        records come back too; that costs two more queries, so bulk imports skip it.
        """
        t, s = self.spec.table, self.table
        key = self.spec.key
        content = [name for name in self.columns if name != key]
        staged_key: Any = s.c[key]
        if self.conn.dialect.name == "sqlite":
            # Without statistics SQLite may drive the join from the organization's stored
            # rows (all of them, by the org_id prefix of the key index) and probe the stage
            # by its index: about a second per request at a few million readings. An
            # expression on the staged key keeps that index out of the join, so the
            # stage is scanned and each staged key looked up in the stored table.
            staged_key = s.c[key].concat("")
        match = and_(t.c.org_id == org_id, t.c[key] == staged_key)

        def distinct(name: str) -> Any:
            new, old = s.c[name], t.c[name]
            if isinstance(old.type, JSON):
                return cast(old, Text).is_distinct_from(cast(new, Text))
            return old.is_distinct_from(new)

        changed_query = (
            select(s.c[LINE], *(s.c[n] for n in self.columns), *(t.c[n].label(f"old_{n}") for n in content))
            .select_from(s.join(t, match))
            .where(or_(*(distinct(n) for n in content)))
        )
        updates: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
        outcomes: dict[int, str] = {}
        changes: list[Change] = []
        for row in self.conn.execute(changed_query).mappings():
            differs = [n for n in content if row[n] != row[f"old_{n}"]]
            if not differs:  # same value, different spelling (e.g. JSON key order)
                continue
            updates.append({"_k": row[key], **{f"_v_{n}": row[n] for n in content}})
            audits.append(
                {
                    "org_id": org_id,
                    "batch_id": batch_id,
                    "table_name": t.name,
                    "record_key": row[key],
                    "old_values": {n: json_safe(row[f"old_{n}"]) for n in differs},
                    "new_values": {n: json_safe(row[n]) for n in differs},
                    "changed_at": now,
                    "actor": actor,
                }
            )
            if track:
                outcomes[row[LINE]] = "updated"
                old = {key: row[key], **{n: row[f"old_{n}"] for n in content}}
                changes.append(Change(row[key], old, {n: row[n] for n in self.columns}))
        if updates:
            statement = (
                update(t)
                .where(t.c.org_id == org_id, t.c[key] == bindparam("_k", type_=t.c[key].type))
                .values({t.c[n]: bindparam(f"_v_{n}", type_=t.c[n].type) for n in content})
            )
            self.conn.execute(statement, updates)
            self.conn.execute(insert(schema.audit_changes), audits)

        new_rows: list[Any] = []
        if track:
            query = select(s.c[LINE], *(s.c[n] for n in self.columns)).where(~exists().where(match))
            new_rows = list(self.conn.execute(query).mappings())
        fresh = (
            select(cast(literal(org_id), String(64)).label("org_id"), *(s.c[n] for n in self.columns))
            .where(~exists().where(match))
            .order_by(s.c[key])
        )  # key order: sequential index inserts
        statement = insert(t).from_select(["org_id", *self.columns], fresh)
        result = self.conn.execute(statement.execution_options(preserve_rowcount=True))
        inserted = max(result.rowcount, 0)
        unchanged = self.count - inserted - len(updates)
        if not track:
            return MergeResult(inserted, len(updates), unchanged)
        if inserted != len(new_rows):
            raise ConcurrentWrite(f"{len(new_rows) - inserted} new {t.name} rows were stored meanwhile")
        for row in new_rows:
            outcomes[row[LINE]] = "inserted"
            changes.append(Change(row[key], None, {n: row[n] for n in self.columns}))
        for (line,) in self.conn.execute(select(s.c[LINE])):
            outcomes.setdefault(line, "unchanged")
        return MergeResult(inserted, len(updates), unchanged, outcomes, tuple(changes))

    def reject_lines(self, lines: Sequence[int]) -> None:
        """Take staged rows out again (a check that needs the staged values refused them)."""
        for chunk in _chunks(sorted(set(lines)), 500):
            self.conn.execute(delete(self.table).where(self.table.c[LINE].in_(chunk)))
        self.count -= len(set(lines))

    def drop(self) -> None:
        self.conn.execute(text(f"DROP TABLE IF EXISTS {self.table.name}"))


class DirectLoad:
    """Readings or time entries of an organization that has none yet, written straight to the table.

    With nothing stored to compare against, the staging table's only job would be to
    find keys repeated inside the bundle, and the table's unique index finds those
    anyway: a repeat raises ``IntegrityError``, the caller rolls its savepoint back and
    reloads the file through ``Stage``, which reports each repeat. The common case (no
    repeats) thus writes every row once instead of twice.

    When the whole table is empty (a first bulk load) its indexes (on PostgreSQL its
    primary key too) are dropped for the load and built again by ``complete`` (still
    inside the caller's savepoint): one sort per index costs less than keeping both up to
    date row by row. On PostgreSQL that holds an exclusive lock on the table until the
    import commits, which only a first load can afford. Same interface as ``Stage`` so
    the pipeline treats both alike.
    """

    def __init__(self, conn: Connection, spec: FileSpec, org_id: str, *, rebuild_indexes: bool):
        self.conn = conn
        self.spec = spec
        self.org_id = org_id
        self.count = 0
        self.indexes = sorted(spec.table.indexes, key=lambda ix: str(ix.name)) if rebuild_indexes else []
        for index in self.indexes:
            index.drop(conn)
        # PostgreSQL keeps the primary key's index up to date row by row during the COPY
        # too; dropped with the others and added back after, the load's COPY took ~0.85×
        # as long (readings, 10,000 patients). SQLite's key is the rowid (or an index it
        # will not drop), so it keeps it.
        key = spec.table.primary_key
        self.primary_key = key if rebuild_indexes and conn.dialect.name == "postgresql" and key.name else None
        if self.primary_key is not None:
            conn.exec_driver_sql(f"ALTER TABLE {spec.table.name} DROP CONSTRAINT {self.primary_key.name}")
        self._copy: _OpenCopy | None = None

    @classmethod
    def open(cls, conn: Connection, spec: FileSpec, org_id: str) -> DirectLoad | None:
        """A direct load when the organization has no rows in the table yet, else ``None``."""
        t = spec.table
        if conn.execute(select(literal(1)).where(t.c.org_id == org_id).limit(1)).first() is not None:
            return None
        empty = conn.execute(select(literal(1)).select_from(t).limit(1)).first() is None
        return cls(conn, spec, org_id, rebuild_indexes=empty)

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rows given as values (``check_row`` output), as ``Stage.add`` takes them."""
        if rows:
            self._close_copy()
            names = list(self.spec.stored)
            dialect = self.conn.dialect.name
            org = self.org_id
            cells = [(org, *row) for row in _driver_rows(self.spec.table, names, rows, dialect)]
            write_rows(self.conn, self.spec.table.name, ["org_id", *names], cells)
            self.count += len(rows)

    def add_stored(self, rows: Sequence[Sequence[Any]], lines: Sequence[int]) -> None:
        if rows:
            self._close_copy()
            org = self.org_id
            write_rows(
                self.conn, self.spec.table.name, ["org_id", *self.spec.stored], [(org, *row) for row in rows]
            )
            self.count += len(rows)

    def add_arrow(self, table: Any, lines: Any) -> None:
        if table.num_rows:
            import pyarrow as pa

            org = pa.repeat(self.org_id, table.num_rows)
            if self.conn.dialect.name == "postgresql":
                if self._copy is None:
                    self._copy = _OpenCopy(self.conn, self.spec.table.name, ["org_id", *self.spec.stored])
                self._copy.write(table.add_column(0, "org_id", org))
                self.count += table.num_rows
                return
            write_arrow(
                self.conn,
                self.spec.table.name,
                ["org_id", *self.spec.stored],
                table.add_column(0, "org_id", org),
            )
            self.count += table.num_rows

    def _close_copy(self) -> None:
        if self._copy is not None:
            copy, self._copy = self._copy, None
            copy.close()

    def abort(self) -> None:
        """End an open COPY after a failure, so the caller's savepoint can be rolled back."""
        if self._copy is not None:
            copy, self._copy = self._copy, None
            copy.abort()

    def complete(self) -> None:
        """Build the dropped key and indexes again; a repeated key fails here with ``IntegrityError``."""
        self._close_copy()
        if self.indexes and self.conn.dialect.name == "postgresql":
            self.conn.execute(text(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'"))
        threads = self.indexes and self.conn.dialect.name == "sqlite"
        if threads:
            # SQLite's sorter may use helper threads for an index build (off by default):
            # readings' three builds at 20,000 patients took 1.37 s instead of 1.76 s of
            # wall on two cores, for the same CPU. Back to 0 after: other statements gain nothing.
            self.conn.exec_driver_sql(f"PRAGMA threads = {SORT_THREADS}")
        try:
            if self.primary_key is not None:
                columns = ", ".join(c.name for c in self.primary_key.columns)
                self.conn.exec_driver_sql(
                    f"ALTER TABLE {self.spec.table.name} ADD CONSTRAINT {self.primary_key.name}"
                    f" PRIMARY KEY ({columns})"
                )
            for index in self.indexes:
                index.create(self.conn)
        finally:
            if threads:
                self.conn.exec_driver_sql("PRAGMA threads = 0")

    def finish(self) -> None:
        return None

    def remove_duplicates(self) -> list[Duplicate]:
        return []

    def merge(
        self, org_id: str, batch_id: str, now: datetime, *, track: bool = False, actor: str | None = None
    ) -> MergeResult:
        if track:
            raise TypeError("a direct load cannot track outcomes; live imports stage every file")
        return MergeResult(self.count, 0, 0)

    def drop(self) -> None:
        return None


class _OpenCopy:
    """One ``COPY … FROM STDIN (FORMAT csv)`` kept open over every block of a direct load.

    A COPY per block made the client wait for the server to finish each block before it
    parsed and checked the next; with one COPY fed by psycopg's queued writer (a thread
    that sends while this one works) the server stores block N while the client checks
    block N+1, so on two cores the two overlap. Nothing else may use the connection while
    the COPY is open: a direct load of readings issues no other statement until ``close``.
    """

    def __init__(self, conn: Connection, table: str, names: Sequence[str]):
        from psycopg.copy import QueuedLibpqWriter

        driver = conn.connection.driver_connection
        assert driver is not None
        self._stack = ExitStack()
        cursor = self._stack.enter_context(driver.cursor())  # type: ignore[attr-defined]
        statement = f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT csv)"
        self._copy = self._stack.enter_context(cursor.copy(statement, writer=QueuedLibpqWriter(cursor)))

    def write(self, data: Any) -> None:
        self._copy.write(memoryview(_arrow_csv(data)))

    def close(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        # The failure being handled is the one to report, not a second one from ending the COPY.
        with suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("direct load failed"), None)


def _arrow_csv(data: Any) -> Any:
    """An Arrow table as headerless CSV that ``COPY … (FORMAT csv)`` reads back exactly."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    sink = pa.BufferOutputStream()
    pcsv.write_csv(data, sink, pcsv.WriteOptions(include_header=False, quoting_style="needed"))
    return sink.getvalue()


#: Helper threads SQLite's sorter may use for the index builds after a first load.
SORT_THREADS = 2

#: Sort memory for PostgreSQL index builds after a first load (the default 64MB spills).
INDEX_BUILD_MEMORY = "256MB"


def _driver_rows(
    table: Table, names: Sequence[str], rows: Sequence[dict[str, Any]], dialect: str
) -> list[Sequence[Any]]:
    """Value rows as tuples in the raw driver's terms (``_converter``), columns in ``names`` order."""
    convert = [(i, c) for i, n in enumerate(names) if (c := _converter(table.c[n].type, dialect))]
    get = itemgetter(*names)
    tuples: list[Sequence[Any]] = []
    for row in rows:
        cells = list(get(row))
        for i, c in convert:
            cells[i] = c(cells[i])
        tuples.append(cells)
    return tuples


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_instant(value: datetime | None) -> str | None:
    """SQLAlchemy's SQLite DATETIME text for the UTC instant, e.g. ``2026-03-01 05:30:00.000000``."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]


def _pg_instant(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None)


def _converter(kind: Any, dialect: str) -> Callable[[Any], Any] | None:
    """How a value of column type ``kind`` is handed to the raw driver (``None`` = as is).

    The spellings are the ones SQLAlchemy itself writes, so rows loaded in bulk and rows
    written through the schema read back alike: naive-UTC text (SQLite) or naive UTC
    (PostgreSQL) for instants, ISO text for dates on SQLite, ``json.dumps`` text for JSON
    (``None`` included, which SQLAlchemy stores as JSON ``null``, not SQL NULL).
    """
    if isinstance(kind, UtcDateTime):
        return _sqlite_instant if dialect == "sqlite" else _pg_instant
    if isinstance(kind, JSON):
        return _json_text
    if isinstance(kind, Date) and dialect == "sqlite":
        return _iso_date
    return None


def _json_text(value: Any) -> str:
    return "null" if value is None else json.dumps(value)


def _iso_date(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


#: SQLite binds at most 32,766 parameters per statement (999 before 3.32).
_SQLITE_PARAMS = 32_766 if sqlite3.sqlite_version_info >= (3, 32) else 999
_ROWS_PER_STATEMENT = 200


def write_rows(conn: Connection, table: str, names: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Append rows to ``table`` through the raw driver: multi-row INSERTs or COPY.

    Going around SQLAlchemy's per-row parameter processing is what makes bulk loads
    fast; the values must already be in the driver's terms (see ``_converter``).
    SQLite gets many rows per statement (one statement per row costs a third more);
    PostgreSQL gets ``COPY``.
    """
    if not rows:
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    columns = ", ".join(names)
    if conn.dialect.name == "postgresql":
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy,  # type: ignore[attr-defined]
        ):
            for row in rows:
                copy.write_row(row)
        return
    width = len(names)
    per = max(1, min(_ROWS_PER_STATEMENT, _SQLITE_PARAMS // width))
    marks = "(" + ", ".join("?" * width) + ")"
    full = len(rows) - len(rows) % per
    if full:
        many = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([marks] * per)
        for start in range(0, full, per):
            driver.execute(many, [cell for row in rows[start : start + per] for cell in row])
    if full < len(rows):
        driver.executemany(f"INSERT INTO {table} ({columns}) VALUES {marks}", rows[full:])


def write_arrow(conn: Connection, table: str, names: Sequence[str], data: Any) -> None:
    """Append an Arrow table (columns in ``names`` order, values in stored form) to ``table``.

    PostgreSQL gets the table as CSV written by Arrow itself and sent with ``COPY … (FORMAT
    csv)``: no Python object per value. Arrow quotes every string and leaves nulls bare, so
    an empty string stays empty and a null stays NULL. SQLite needs Python values to bind,
    taken a column at a time (``to_pylist``) and zipped into rows as the driver asks.
    """
    if not data.num_rows:
        return
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY {table} ({', '.join(names)}) FROM STDIN (FORMAT csv)") as copy,  # type: ignore[attr-defined]
        ):
            copy.write(memoryview(_arrow_csv(data)))
        return
    driver = conn.connection.driver_connection
    assert driver is not None
    marks, bound = _sqlite_values(data)
    # One statement per row straight from the zipped columns: with no row tuples to flatten,
    # this costs what ``write_rows``' multi-row statements do (measured), with less memory.
    driver.executemany(
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(marks)})",
        zip(*(data.column(i).to_pylist() for i in bound), strict=True) if bound else [()] * data.num_rows,
    )


def _sqlite_values(data: Any) -> tuple[list[str], list[int]]:
    """The VALUES terms for an Arrow block, and which columns are bound per row.

    A text column holding one value in every row (the organization, ``extra``'s JSON
    ``null``, often the transmission) is written once as an SQL literal, and a column
    equal to an earlier one in every row (``reading_key`` is the ``reading_id`` when the
    source sends one) reuses that column's parameter: per row, SQLite then binds and
    Python makes objects for only the columns that vary (a fifth of the insert's time).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    marks: list[str] = []
    bound: list[int] = []
    for i, column in enumerate(data.columns):
        if pa.types.is_string(column.type) and column.null_count == 0:
            first = column[0].as_py()
            if "\x00" not in first and pc.all(pc.equal(column, first)).as_py():
                marks.append("'" + first.replace("'", "''") + "'")
                continue
            same = next(
                (
                    k
                    for k, j in enumerate(bound)
                    if data.column(j).type == column.type
                    and data.column(j).null_count == 0
                    and pc.all(pc.equal(data.column(j), column)).as_py()
                ),
                None,
            )
            if same is not None:
                marks.append(f"?{same + 1}")
                continue
        bound.append(i)
        marks.append(f"?{len(bound)}")
    return marks, bound

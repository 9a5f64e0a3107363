"""Bulk writing through a staging table: load, de-duplicate, then merge in set-based SQL.

Validated rows go first into a temporary table shaped like the target (plus the source
line). Duplicates inside the bundle are found there with one GROUP BY; the merge then
finds changed records with one join (``IS DISTINCT FROM`` on every column), updates
them with an audit row each, and inserts the new ones with ``INSERT … SELECT … WHERE
NOT EXISTS``. Readings take a faster road into staging: raw ``executemany`` on SQLite
and ``COPY`` on PostgreSQL, because they are the one file that runs to millions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    Index,
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
class MergeResult:
    inserted: int
    updated: int
    unchanged: int


class Stage:
    """The temporary table for one file, living inside the import's transaction."""

    def __init__(self, conn: Connection, spec: FileSpec):
        self.conn = conn
        self.spec = spec
        self.columns = spec.stored
        self.count = 0
        meta = MetaData()
        target = spec.table
        self.table = Table(
            STAGE_PREFIX + spec.stem,
            meta,
            *(Column(name, target.c[name].type) for name in self.columns),
            Column(LINE, Integer, nullable=False),
            prefixes=["TEMPORARY"],
        )
        self.dialect = conn.dialect.name
        conn.execute(text(f"DROP TABLE IF EXISTS {self.table.name}"))
        self.table.create(conn)

    # -- loading ------------------------------------------------------------------------

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.spec.stem == "readings" and self.dialect in ("sqlite", "postgresql"):
            self._add_raw(rows)
        else:
            self.conn.execute(insert(self.table), list(rows))
        self.count += len(rows)

    def _add_raw(self, rows: Sequence[dict[str, Any]]) -> None:
        names = [*self.columns, LINE]
        driver = self.conn.connection.driver_connection
        assert driver is not None
        if self.dialect == "sqlite":
            # Same text SQLAlchemy writes for DateTime/Date on SQLite, so the merge and
            # later reads through the schema see one representation.
            get = itemgetter(*names)
            stamps = [i for i, n in enumerate(names) if isinstance(self.table.c[n].type, UtcDateTime)]
            days = [i for i, n in enumerate(names) if isinstance(self.table.c[n].type, Date)]
            tuples = []
            for row in rows:
                cells = list(get(row))
                for i in stamps:
                    cells[i] = _sqlite_instant(cells[i])
                for i in days:
                    if cells[i] is not None:
                        cells[i] = cells[i].isoformat()
                tuples.append(cells)
            marks = ", ".join("?" for _ in names)
            driver.executemany(f"INSERT INTO {self.table.name} ({', '.join(names)}) VALUES ({marks})", tuples)
            return
        with (
            driver.cursor() as cursor,
            cursor.copy(  # type: ignore[attr-defined]
                f"COPY {self.table.name} ({', '.join(names)}) FROM STDIN"
            ) as copy,
        ):
            for row in rows:
                copy.write_row([_pg_value(row[name]) for name in names])

    def finish(self) -> None:
        """Index the key once loading is done (cheaper than maintaining it per insert)."""
        Index(f"ix_{self.table.name}_key", self.table.c[self.spec.key]).create(self.conn)

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

    def merge(self, org_id: str, batch_id: str, now: datetime) -> MergeResult:
        t, s = self.spec.table, self.table
        key = self.spec.key
        content = [name for name in self.columns if name != key]
        match = and_(t.c.org_id == org_id, t.c[key] == s.c[key])

        def distinct(name: str) -> Any:
            new, old = s.c[name], t.c[name]
            if isinstance(old.type, JSON):
                return cast(old, Text).is_distinct_from(cast(new, Text))
            return old.is_distinct_from(new)

        changed_query = (
            select(*(s.c[n] for n in self.columns), *(t.c[n].label(f"old_{n}") for n in content))
            .select_from(s.join(t, match))
            .where(or_(*(distinct(n) for n in content)))
        )
        updates: list[dict[str, Any]] = []
        audits: list[dict[str, Any]] = []
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
                }
            )
        if updates:
            statement = (
                update(t)
                .where(t.c.org_id == org_id, t.c[key] == bindparam("_k", type_=t.c[key].type))
                .values({t.c[n]: bindparam(f"_v_{n}", type_=t.c[n].type) for n in content})
            )
            self.conn.execute(statement, updates)
            self.conn.execute(insert(schema.audit_changes), audits)

        fresh = (
            select(cast(literal(org_id), String(64)).label("org_id"), *(s.c[n] for n in self.columns))
            .where(~exists().where(match))
            .order_by(s.c[key])
        )  # key order: sequential index inserts
        statement = insert(t).from_select(["org_id", *self.columns], fresh)
        result = self.conn.execute(statement.execution_options(preserve_rowcount=True))
        inserted = max(result.rowcount, 0)
        return MergeResult(inserted, len(updates), self.count - inserted - len(updates))

    def drop(self) -> None:
        self.conn.execute(text(f"DROP TABLE IF EXISTS {self.table.name}"))


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


def _pg_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value

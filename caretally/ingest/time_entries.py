"""Time entries logged and corrected through the service.

A new entry is a ``time_entries.csv`` row sent as JSON and goes through the bundle
pipeline. A correction (``amend_time_entry``) changes a stored entry field by field: the
merged entry is checked by the same row check, the changed columns are written with one
``audit_changes`` row naming who made the change, and nothing else is touched.

A month that a **locked** run billed is the record of what was claimed; time logged or
changed in it afterwards could not be billed without amending that claim. So both are
refused with ``locked_month`` (the service answers 409), naming the run. An unchanged
re-send of an entry already stored is not a change and is accepted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, select, update

from caretally.errors import Problem
from caretally.ingest.live import (
    ItemOutcome,
    LiveResult,
    Locator,
    pointer,
    problem,
    run_records,
    with_retries,
)
from caretally.ingest.pipeline import DEFAULT_CLOCK_SKEW
from caretally.ingest.plausibility import Entry, stored_entries_near, time_warnings
from caretally.ingest.references import Scope, load_from_database
from caretally.ingest.rows import FILES, check_row, json_safe
from caretally.ingest.staging import Change, Stage
from caretally.ingest.touches import record_changes
from caretally.store import schema
from caretally.store.db import begin_write

KIND = "time_entries"
LOCKED = "locked"
SPEC = FILES["time_entries"]


def locked_runs(conn: Connection, org_id: str, months: Iterable[str]) -> dict[str, str]:
    """Month → the latest locked run of it, for the months among ``months`` that have one."""
    wanted = sorted(set(months))
    if not wanted:
        return {}
    runs = schema.billing_runs
    query = (
        select(runs.c.month, runs.c.run_id)
        .where(runs.c.org_id == org_id, runs.c.status == LOCKED, runs.c.month.in_(wanted))
        .order_by(runs.c.month, runs.c.locked_at, runs.c.run_id)
    )
    return {month: run_id for month, run_id in conn.execute(query)}


def _month(day: date) -> str:
    return day.strftime("%Y-%m")


def _locked_message(entry_id: str, month: str, run_id: str, verb: str) -> str:
    return (
        f"time entry {entry_id} cannot be {verb}: {month} was billed by locked run {run_id}; "
        "a locked month takes no new or changed time"
    )


def locked_guard(conn: Connection, org_id: str, stages: Mapping[str, Stage]) -> list[tuple[str, Problem]]:
    """Refuse staged time entries that are new or changed in a locked month (before or after)."""
    stage = stages.get(KIND)
    if stage is None:
        return []
    s, t = stage.table, schema.time_entries
    content = [n for n in SPEC.stored if n != "entry_id"]
    query = select(
        s, *(t.c[n].label(f"old_{n}") for n in content), t.c.entry_id.label("old_entry_id")
    ).select_from(s.outerjoin(t, and_(t.c.org_id == org_id, t.c.entry_id == s.c.entry_id)))
    wanted: list[tuple[int, str, list[str], str]] = []
    for row in conn.execute(query).mappings():
        new_month = _month(row["local_date"])
        if row["old_entry_id"] is None:
            wanted.append((row["_line"], row["entry_id"], [new_month], "added"))
            continue
        if all(row[n] == row[f"old_{n}"] for n in content):
            continue  # the same entry sent again
        months = sorted({_month(row["old_local_date"]), new_month})
        wanted.append((row["_line"], row["entry_id"], months, "changed"))
    runs = locked_runs(conn, org_id, (m for _, _, months, _ in wanted for m in months))
    refused: list[tuple[str, Problem]] = []
    for line, entry_id, months, verb in wanted:
        hit = next((m for m in months if m in runs), None)
        if hit is not None:
            message = _locked_message(entry_id, hit, runs[hit], verb)
            label = f"<guard>:{KIND}[{line}]"
            refused.append((KIND, Problem(label, line, "started_at", "locked_month", message)))
    return refused


def create_time_entries(
    engine: Engine,
    org_id: str,
    items: Any,
    *,
    partial: bool = False,
    now: datetime,
    actor: str | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LiveResult:
    """Store a JSON array of time entries (the ``time_entries.csv`` fields).

    All-or-nothing unless ``partial``; an entry new or changed in a locked month is
    refused with ``locked_month``. A stored ``entry_id`` sent with other content is an
    audited update, as in a bundle (use ``amend_time_entry`` for a field-by-field fix).
    """
    if not isinstance(items, list):
        return LiveResult(
            KIND, False, None, problems=[problem(KIND, "", "bad_json", "the body must be a JSON array")]
        )
    if not items:
        return LiveResult(KIND, True, None)
    locators = [
        Locator(
            pointer(i),
            key=item.get("entry_id").strip() or None
            if isinstance(item, Mapping) and isinstance(item.get("entry_id"), str)
            else None,
        )
        for i, item in enumerate(items)
    ]
    return run_records(
        engine,
        org_id,
        KIND,
        KIND,
        items,
        locators,
        partial=partial,
        now=now,
        guard=locked_guard,
        actor=actor,
        max_clock_skew=max_clock_skew,
    )


def _as_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored entry in the shape a request sends, extra columns included."""
    record = {n: row[n] for n in SPEC.stored if n not in ("local_date", "extra")}
    record.update(row["extra"] or {})
    return record


def amend_time_entry(
    engine: Engine,
    org_id: str,
    entry_id: str,
    changes: Any,
    *,
    actor: str,
    now: datetime,
) -> LiveResult:
    """Correct one stored time entry: ``changes`` maps ``time_entries.csv`` fields to new values.

    ``minutes`` replaces a stored ``seconds`` (and the other way round). Problems point
    into ``changes`` (``/seconds``). An entry that is not stored gives ``unknown_entry``;
    one whose month before or after the change a locked run billed gives
    ``locked_month``. The change is written with one audit row (old and new values of
    the changed columns, ``actor``); sending the values already stored changes nothing.
    """

    def attempt() -> LiveResult:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            begin_write(conn)
            transaction = conn.get_transaction()
            assert transaction is not None
            with transaction:
                return _amend(conn, org_id, entry_id, changes, actor=actor, now=now)

    return with_retries(attempt)


def _amend(
    conn: Connection, org_id: str, entry_id: str, changes: Any, *, actor: str, now: datetime
) -> LiveResult:
    def refuse(*found: Problem) -> LiveResult:
        return LiveResult(KIND, False, None, [ItemOutcome("", "rejected", entry_id)], list(found))

    if not isinstance(changes, Mapping) or not changes:
        return refuse(
            problem(KIND, "", "bad_json", "the changes must be a JSON object with at least one field")
        )
    t = schema.time_entries
    stored = conn.execute(select(t).where(t.c.org_id == org_id, t.c.entry_id == entry_id)).mappings().first()
    if stored is None:
        return refuse(problem(KIND, "", "unknown_entry", f"time entry {entry_id} is not stored"))
    faults: list[Problem] = []
    extra = stored["extra"] or {}
    for name, value in changes.items():
        if name == "entry_id" and value != entry_id:
            faults.append(problem(KIND, pointer(name), "immutable_field", "entry_id cannot be changed", name))
        elif name not in SPEC.columns and name not in extra:
            known = ", ".join(SPEC.columns)
            faults.append(
                problem(KIND, pointer(name), "unknown_column", f"unknown field {name!r}; use {known}", name)
            )
    if faults:
        return refuse(*faults)
    record = _as_record(stored)
    if "minutes" in changes and "seconds" not in changes:
        record.pop("seconds", None)
    record.update(changes)

    def ids(*values: Any) -> frozenset[str]:
        return frozenset(v.strip() for v in values if isinstance(v, str) and v.strip())

    scope = Scope(ids(record.get("patient_id"), stored["patient_id"]), ids(record.get("practitioner_id")))
    index = load_from_database(conn, org_id, {KIND}, scope)
    row = check_row(SPEC, record, index, now.date(), keyed=True)
    if row.faults:
        return refuse(
            *(
                problem(KIND, pointer(f.field) if f.field else "", f.code, f.message, f.field)
                for f in row.faults
            )
        )
    new = {n: row.values.get(n) for n in SPEC.stored}
    months = sorted({_month(stored["local_date"]), _month(new["local_date"])})
    runs = locked_runs(conn, org_id, months)
    hit = next((m for m in months if m in runs), None)
    if hit is not None:
        message = _locked_message(entry_id, hit, runs[hit], "changed")
        return refuse(problem(KIND, "", "locked_month", message))
    differs = [n for n in SPEC.stored if n != "entry_id" and new[n] != stored[n]]
    touched = frozenset(
        {(stored["patient_id"], _month(stored["local_date"])), (new["patient_id"], _month(new["local_date"]))}
    )
    entry = Entry(
        entry_id, new["practitioner_id"], new["started_at"], new["seconds"], new["local_date"], ("", 1)
    )
    notes = [
        problem(KIND, "/started_at", w.code, w.message, w.field)
        for w in time_warnings([entry], stored_entries_near(conn, org_id, [entry]))
    ]
    if not differs:
        return LiveResult(KIND, True, None, [ItemOutcome("", "unchanged", entry_id)], warnings=notes)
    conn.execute(
        update(t).where(t.c.org_id == org_id, t.c.entry_id == entry_id).values({n: new[n] for n in differs})
    )
    record_changes(conn, org_id, {"time_entries": [Change(entry_id, dict(stored), new)]}, now)
    conn.execute(
        insert(schema.audit_changes).values(
            org_id=org_id,
            batch_id=None,
            table_name=t.name,
            record_key=entry_id,
            old_values={n: json_safe(stored[n]) for n in differs},
            new_values={n: json_safe(new[n]) for n in differs},
            changed_at=now,
            actor=actor,
        )
    )
    return LiveResult(
        KIND, True, None, [ItemOutcome("", "updated", entry_id)], warnings=notes, touched=touched
    )

"""Record which patient-months an ingest changed, for the incremental month run.

Every ingest writes its touches in its own transaction, so a month run's snapshot holds a
change and its touch together or neither. A month is touched when a changed record's
local date falls in it, and so is the next month, where a 30-day device period that began
with the record can end (periods are judged in the month they end). Changes that cannot
be pinned to a patient-month are recorded as wildcards, and the incremental run answers
them with a full run: a patient row (``month`` "*"), a practitioner or an unknown file,
the organization's first reading day, a bulk load whose rows were not tracked
(``patient_id`` "*").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select

from caretally.dates import add_months
from caretally.ingest.staging import Change
from caretally.store import schema

EVERY = "*"
#: Files whose changes ``touched_months`` pins to patient-months (or patients).
_PINNED = frozenset({"readings", "time_entries", "visits", "enrollments", "devices", "patients"})


def next_month(month: str) -> str:
    return add_months(date.fromisoformat(month + "-01"), 1).strftime("%Y-%m")


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def touches_of(
    conn: Connection, org_id: str, changes: Mapping[str, Sequence[Change]], now: datetime
) -> set[tuple[str, str]]:
    """``(patient, month)`` pairs (wildcards included) for tracked ``changes``.

    Runs inside the ingest's transaction, after the merge: the neighbours of a changed
    time entry (the same practitioner's entries for other patients a day around it, whose
    overlap warnings it can add or remove) and a new or retracted first reading of the
    organization are read from the merged state.
    """
    from caretally.ingest.live import touched_months  # live imports the pipeline, which imports this

    pinned, patients = touched_months(changes, now)
    out: set[tuple[str, str]] = set()
    for patient, month in pinned:
        out.add((patient, month))
        out.add((patient, next_month(month)))
    out.update((p, EVERY) for p in patients)
    if any(stem not in _PINNED and found for stem, found in changes.items()):
        out.add((EVERY, EVERY))
    out.update(_time_neighbours(conn, org_id, changes.get("time_entries", ())))
    reading_days = [
        d
        for c in changes.get("readings", ())
        for values in (c.old, c.new)
        if values is not None and (d := _day(values.get("local_date"))) is not None
    ]
    if reading_days:
        r = schema.readings
        first = conn.execute(select(func.min(r.c.local_date)).where(r.c.org_id == org_id)).scalar()
        if first is None or min(reading_days) <= first:
            out.add((EVERY, EVERY))  # where the organization's data begins moved
    return out


def _time_neighbours(conn: Connection, org_id: str, changes: Iterable[Change]) -> set[tuple[str, str]]:
    keys = {
        (values.get("practitioner_id"), d)
        for c in changes
        for values in (c.old, c.new)
        if values is not None and (d := _day(values.get("local_date"))) is not None
    }
    if not keys:
        return set()
    t = schema.time_entries
    day = timedelta(days=1)
    near = or_(*((t.c.practitioner_id == who) & t.c.local_date.between(d - day, d + day) for who, d in keys))
    rows = conn.execute(select(t.c.patient_id, t.c.local_date).where(t.c.org_id == org_id, near).distinct())
    out: set[tuple[str, str]] = set()
    for patient, day in rows:
        month = _day(day).strftime("%Y-%m")  # type: ignore[union-attr]
        out.update({(patient, month), (patient, next_month(month))})
    return out


def record_touches(conn: Connection, org_id: str, touches: Iterable[tuple[str, str]]) -> int:
    """Insert one ``month_touches`` row per pair, in the caller's transaction."""
    rows = [{"org_id": org_id, "patient_id": p, "month": m} for p, m in sorted(set(touches))]
    if rows:
        conn.execute(insert(schema.month_touches), rows)
    return len(rows)


def record_changes(
    conn: Connection, org_id: str, changes: Mapping[str, Sequence[Change]] | None, now: datetime
) -> int:
    """Record the touches of an ingest; ``None`` (untracked bulk load) touches everything."""
    if changes is None:
        return record_touches(conn, org_id, [(EVERY, EVERY)])
    return record_touches(conn, org_id, touches_of(conn, org_id, changes, now))

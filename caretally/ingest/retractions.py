"""``retractions.csv``: records a practice sent by mistake, deleted with an audit trail.

Imports never delete on their own (a record missing from a later bundle stays), so a
wrong reading or time entry needs an explicit retraction: ``file, id, reason``. Each is
checked like any row and refused when a locked run may have used the record, because a
locked run is the record of what was billed and must stay reproducible from the data.
"Used" is judged conservatively from the patient, not the line: the patient has
decisions in a locked run of a month the record could count in. A reading or time
entry counts in its local month and, through 30-day device periods that end in the next
month, that month too; an enrollment counts in every month from its start to its end
(or onwards, when open).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select

from caretally.dates import add_months
from caretally.ingest import values as v
from caretally.ingest.cleaning import TEXT_MAX, clean_record
from caretally.ingest.rows import json_safe
from caretally.store import schema

STEM = "retractions"
COLUMNS = ("file", "id", "reason")
LOCKED = "locked"


@dataclass(frozen=True, slots=True)
class Target:
    stem: str
    table: Table
    key: str
    #: Month span of a stored row: (first month, last month or ``None`` = open-ended).
    months: Any


def _dated(row: Any) -> tuple[str, str | None]:
    day: date = row.local_date
    return day.strftime("%Y-%m"), add_months(day, 1).strftime("%Y-%m")


def _visited(row: Any) -> tuple[str, str | None]:
    day: date = row.visit_date
    return day.strftime("%Y-%m"), add_months(day, 1).strftime("%Y-%m")


def _enrolled(row: Any) -> tuple[str, str | None]:
    end: date | None = row.end_date
    return row.start_date.strftime("%Y-%m"), end.strftime("%Y-%m") if end is not None else None


TARGETS: dict[str, Target] = {
    "readings": Target("readings", schema.readings, "reading_key", _dated),
    "time_entries": Target("time_entries", schema.time_entries, "entry_id", _dated),
    "enrollments": Target("enrollments", schema.enrollments, "enrollment_id", _enrolled),
    "visits": Target("visits", schema.visits, "visit_id", _visited),
}


@dataclass(frozen=True, slots=True)
class Retraction:
    target: Target
    key: str
    reason: str
    old: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refusal:
    field: str | None
    code: str
    message: str


def check_header(header: list[str]) -> list[Refusal]:
    out = [Refusal(name, "missing_column", f"required column {name!r} is missing") for name in COLUMNS]
    out = [r for r in out if r.field not in header]
    for name in header:
        if name not in COLUMNS:
            out.append(
                Refusal(
                    name,
                    "unknown_column",
                    f"unknown column {name!r}; retractions accepts only file, id, reason",
                )
            )
    return out


def _target(name: str) -> Target | None:
    stem = name.strip().lower()
    for ext in (".csv", ".jsonl"):
        stem = stem.removesuffix(ext)
    return TARGETS.get(stem)


def check(conn: Connection, org_id: str, raw: Mapping[str, Any]) -> Retraction | list[Refusal]:
    """The retraction to apply, or why it is refused."""
    raw, cleaned = clean_record(raw)
    faults: list[Refusal] = [
        Refusal(c.field, "nul_byte", f"{c.field} holds a NUL byte") for c in cleaned if c.nul
    ]
    values: dict[str, str] = {}
    for name in COLUMNS:
        value = raw.get(name)
        if v.is_blank(value):
            faults.append(Refusal(name, "required", f"{name} is required"))
            continue
        try:
            values[name] = v.text(value, max_len=TEXT_MAX if name == "reason" else 200)
        except v.FieldError as exc:
            faults.append(Refusal(name, exc.code, exc.message))
    if faults:
        return faults
    target = _target(values["file"])
    if target is None:
        return [
            Refusal(
                "file", "bad_enum", f"{values['file']!r} cannot be retracted; use one of {', '.join(TARGETS)}"
            )
        ]
    t = target.table
    row = conn.execute(select(t).where(t.c.org_id == org_id, t.c[target.key] == values["id"])).first()
    if row is None:
        message = f"{target.stem} {values['id']} is not stored, so it cannot be retracted"
        return [Refusal("id", "unknown_retraction", message)]
    first, last = target.months(row)
    runs, decisions = schema.billing_runs, schema.run_decisions
    used = (
        select(runs.c.run_id, runs.c.month)
        .join(decisions, decisions.c.run_id == runs.c.run_id)
        .where(
            runs.c.org_id == org_id,
            runs.c.status == LOCKED,
            decisions.c.org_id == org_id,
            decisions.c.patient_id == row.patient_id,
            runs.c.month >= first,
        )
        .order_by(runs.c.month, runs.c.run_id)
        .limit(1)
    )
    if last is not None:
        used = used.where(runs.c.month <= last)
    locked = conn.execute(used).first()
    if locked is not None:
        message = (
            f"{target.stem} {values['id']} may have been used by locked run {locked.run_id} "
            f"({locked.month}); send a corrected record instead and bill the month again to amend it"
        )
        return [Refusal("id", "retraction_locked", message)]
    old = {name: json_safe(value) for name, value in row._mapping.items() if name not in ("org_id", "id")}
    return Retraction(target, values["id"], values["reason"], old)


def apply(conn: Connection, org_id: str, batch_id: str, now: datetime, retractions: list[Retraction]) -> int:
    """Delete each record once and write its ``audit_changes`` row; returns rows deleted."""
    done: set[tuple[str, str]] = set()
    audits: list[dict[str, Any]] = []
    for item in retractions:
        mark = (item.target.stem, item.key)
        if mark in done:
            continue
        done.add(mark)
        t = item.target.table
        conn.execute(delete(t).where(t.c.org_id == org_id, t.c[item.target.key] == item.key))
        audits.append(
            {
                "org_id": org_id,
                "batch_id": batch_id,
                "table_name": t.name,
                "record_key": item.key,
                "old_values": item.old,
                "new_values": {"retraction_reason": item.reason},
                "changed_at": now,
            }
        )
    if audits:
        conn.execute(insert(schema.audit_changes), audits)
    return len(audits)

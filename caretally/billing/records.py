"""Reading and managing the stored records of work done: billing runs and import batches.

The month run writes runs and the import writes batches; this module only reads them,
plus the one change a person may make by hand: voiding a draft run that should never
be exported. Locked and superseded runs are history and are never changed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, update

from caretally.errors import Problem, Refusal
from caretally.store import schema

DRAFT, LOCKED, SUPERSEDED, VOID = "draft", "locked", "superseded", "void"


class RecordError(Refusal):
    """A request about a stored record that cannot be honoured; ``problem`` says why."""


def _record_error(
    code: str, message: str, hint: str, *, run_id: str, month: str | None = None
) -> RecordError:
    return RecordError(Problem("<runs>", None, None, code, message, hint=hint, run_id=run_id, month=month))


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    month: str
    status: str
    created_at: datetime
    locked_at: datetime | None
    amends_run_id: str | None
    lines: int
    patients: int

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "month": self.month,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "locked_at": self.locked_at.isoformat() if self.locked_at else None,
            "amends_run_id": self.amends_run_id,
            "lines": self.lines,
            "patients": self.patients,
        }


@dataclass(frozen=True, slots=True)
class ImportRecord:
    batch_id: str
    source: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, dict[str, int]]

    def total(self, outcome: str) -> int:
        return sum(int(c.get(outcome, 0)) for c in self.counts.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "source": self.source,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "counts": self.counts,
        }


def list_runs(engine: Engine, org_id: str, month: str | None = None) -> list[RunRecord]:
    """Every run of the organization (or of one month), oldest first, with its size."""
    r, lines, decisions = schema.billing_runs, schema.claim_lines, schema.run_decisions
    line_count = select(func.count()).select_from(lines).where(lines.c.run_id == r.c.run_id).scalar_subquery()
    patient_count = (
        select(func.count()).select_from(decisions).where(decisions.c.run_id == r.c.run_id).scalar_subquery()
    )
    query = select(
        r.c.run_id,
        r.c.month,
        r.c.status,
        r.c.created_at,
        r.c.locked_at,
        r.c.amends_run_id,
        line_count.label("lines"),
        patient_count.label("patients"),
    ).where(r.c.org_id == org_id)
    if month is not None:
        query = query.where(r.c.month == month)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(r.c.month, r.c.created_at, r.c.run_id)).all()
    return [RunRecord(*row) for row in rows]


def void_run(engine: Engine, org_id: str, run_id: str) -> RunRecord:
    """Mark a draft run ``void``; anything else is refused with a ``RecordError``.

    It holds the month as a run or a lock does (``billing.run.hold_month``), and the
    update is conditional on the status still being ``draft``, so a run locked by
    another process between the check and the write is never voided.
    """
    from caretally.billing.run import hold_month

    r = schema.billing_runs
    with engine.connect() as conn:
        found = conn.execute(select(r.c.month).where(r.c.org_id == org_id, r.c.run_id == run_id)).scalar()
    if found is None:
        raise _record_error(
            "unknown_run",
            f"run {run_id} does not exist in organization {org_id}",
            "list the stored runs with: caretally runs list",
            run_id=run_id,
        )
    # The month's lock: a run being billed or locked right now is never voided under it.
    with hold_month(engine, org_id, found) as held:
        conn = held.conn
        row = conn.execute(
            select(r.c.status, r.c.month).where(r.c.org_id == org_id, r.c.run_id == run_id)
        ).one()
        if row.status != DRAFT:
            why = {
                LOCKED: "it is locked: a locked run is the record of what was billed",
                SUPERSEDED: "it is superseded: it is history already",
                VOID: "it is void already",
            }.get(row.status, f"its status is {row.status}")
            raise _record_error(
                "not_a_draft",
                f"run {run_id} ({row.month}) cannot be voided: {why}",
                "only a draft run can be voided",
                run_id=run_id,
                month=row.month,
            )
        done = conn.execute(
            update(r)
            .where(r.c.org_id == org_id, r.c.run_id == run_id, r.c.status == DRAFT)
            .values(status=VOID)
        )
        if done.rowcount != 1:
            raise _record_error(
                "changed_meanwhile",
                f"run {run_id} changed while it was being voided",
                "list the runs and try again",
                run_id=run_id,
                month=row.month,
            )
    return next(run for run in list_runs(engine, org_id, row.month) if run.run_id == run_id)


def list_imports(engine: Engine, org_id: str, limit: int | None = None) -> list[ImportRecord]:
    """Import batches, newest first."""
    b = schema.import_batches
    query = (
        select(b.c.batch_id, b.c.source, b.c.started_at, b.c.finished_at, b.c.counts)
        .where(b.c.org_id == org_id)
        .order_by(b.c.started_at.desc(), b.c.batch_id)
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        ImportRecord(row.batch_id, row.source, row.started_at, row.finished_at, dict(row.counts))
        for row in rows
    ]

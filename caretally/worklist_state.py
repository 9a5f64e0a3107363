"""The worklist kept as state: its first page is a query, not an evaluation of the practice.

``build_worklist`` evaluates every patient for the day it is asked about. Here the same
rows (``worklist.rows_by_patient``) are stored a patient at a time with their rank keys in
indexed columns, for one organization, ``as_of`` day and rule book (a *state*). A refresh
re-evaluates only the patients ``month_touches`` names after the state's watermark, so
its cost follows the patients that changed, not the practice; anything it cannot pin to
patients (a wildcard touch, another engine, a changed billing history of earlier months,
no state yet) rebuilds the state in full. Readers call :func:`ensure` before they query,
so an answer is never older than the data: the task queue's refresh after each ingest only
makes that call find nothing to do.

The rows come back as the same ``WorklistRow`` values: each is stored as its typed JSON
(:func:`row_body`) and the ranked order is ``build_worklist``'s (``r_*`` columns; ``seq``
keeps the order of one patient's rows that tie). PHI stays in the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, text, true, update

from caretally.billing.payers import PayerRules
from caretally.billing.run import engine_version
from caretally.billing.touchmarks import history_key
from caretally.dates import add_months
from caretally.ingest.touches import EVERY
from caretally.model import Period, PeriodKind, Program
from caretally.store import schema
from caretally.store.db import begin_write
from caretally.worklist import Step, WorklistRow, rows_by_patient

#: States kept per organization (days and rule books asked about); the least recently
#: refreshed beyond this are dropped when a new one is built.
MAX_STATES = 4
#: Rows written per insert statement.
CHUNK = 1000
#: Attempts when another process refreshed the same state between our read and write.
ATTEMPTS = 3

_states = schema.worklist_states
_rows = schema.worklist_rows
_RANK = (
    _rows.c.r_vpm,
    _rows.c.r_end,
    _rows.c.r_value,
    _rows.c.patient_id,
    _rows.c.enrollment_id,
    _rows.c.seq,
)


# --------------------------------------------------------------------------------------
# A row as stored
# --------------------------------------------------------------------------------------


def row_body(row: WorklistRow) -> dict[str, Any]:
    """Every field of the row, typed values as text, so :func:`row_from_body` gives it back."""
    return {
        "patient_id": row.patient_id,
        "program": row.program.value,
        "enrollment_id": row.enrollment_id,
        "period": [row.period.kind.value, row.period.start.isoformat(), row.period.end.isoformat()],
        "days_so_far": row.days_so_far,
        "days_left": row.days_left,
        "minutes_so_far": row.minutes_so_far,
        "interactive_done": row.interactive_done,
        "secured": list(row.secured),
        "steps": [
            [s.code, str(s.value), s.days_needed, s.minutes_needed, s.call_needed, s.days_left, s.other]
            for s in row.steps
        ],
        "blocked": list(row.blocked),
        "base_of": dict(row.base_of),
        "counts_from": None if row.counts_from is None else row.counts_from.isoformat(),
    }


def row_from_body(body: Mapping[str, Any]) -> WorklistRow:
    kind, start, end = body["period"]
    return WorklistRow(
        patient_id=body["patient_id"],
        program=Program(body["program"]),
        enrollment_id=body["enrollment_id"],
        period=Period(PeriodKind(kind), date.fromisoformat(start), date.fromisoformat(end)),
        days_so_far=body["days_so_far"],
        days_left=body["days_left"],
        minutes_so_far=body["minutes_so_far"],
        interactive_done=body["interactive_done"],
        secured=list(body["secured"]),
        steps=[
            Step(
                code=code,
                value=Decimal(value),
                days_needed=days,
                minutes_needed=minutes,
                call_needed=call,
                days_left=left,
                other=other,
            )
            for code, value, days, minutes, call, left, other in body["steps"]
        ],
        blocked=list(body["blocked"]),
        base_of=dict(body["base_of"]),
        counts_from=None if body["counts_from"] is None else date.fromisoformat(body["counts_from"]),
    )


def _cents(value: Decimal) -> int:
    """Money as whole cents for a sortable column; refuses what cents cannot hold exactly."""
    cents = value * 100
    if cents != cents.to_integral_value():
        raise ValueError(f"worklist value {value} has fractions of a cent")
    return int(cents)


def _rank(row: WorklistRow) -> tuple[int, date, int]:
    return (-_cents(row.value_per_minute), row.period.end, -_cents(row.value_at_stake))


def patient_records(
    org_id: str,
    state_id: str,
    patient_id: str,
    rows: Sequence[WorklistRow],
    practitioner_of: Mapping[str, str | None],
) -> list[dict[str, Any]]:
    """The stored rows of one patient: rank columns, the patient's best open row (``g_*``)
    and its best open row of each billing practitioner (``s_*``), and the body."""
    ranks = [_rank(r) for r in rows]
    opened = [i for i, r in enumerate(rows) if r.next_step is not None]
    best = min((ranks[i] for i in opened), default=None)
    by_staff: dict[str | None, tuple[int, date, int]] = {}
    for i in opened:
        who = practitioner_of.get(rows[i].enrollment_id)
        by_staff[who] = min(by_staff.get(who, ranks[i]), ranks[i])
    out = []
    for seq, (row, rank) in enumerate(zip(rows, ranks, strict=True)):
        who = practitioner_of.get(row.enrollment_id)
        is_open = row.next_step is not None
        group = best if is_open else None
        staff = by_staff.get(who) if is_open else None
        out.append(
            {
                "org_id": org_id,
                "state_id": state_id,
                "patient_id": patient_id,
                "seq": seq,
                "enrollment_id": row.enrollment_id,
                "program": row.program.value,
                "practitioner_id": who,
                "is_open": is_open,
                "r_vpm": rank[0],
                "r_end": rank[1],
                "r_value": rank[2],
                "g_vpm": None if group is None else group[0],
                "g_end": None if group is None else group[1],
                "g_value": None if group is None else group[2],
                "s_vpm": None if staff is None else staff[0],
                "s_end": None if staff is None else staff[1],
                "s_value": None if staff is None else staff[2],
                "body": row_body(row),
            }
        )
    return out


# --------------------------------------------------------------------------------------
# Refresh
# --------------------------------------------------------------------------------------


def state_id(as_of: date, rules_hash: str) -> str:
    return hashlib.sha256(f"{as_of.isoformat()}|{rules_hash}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Refreshed:
    """What a refresh did: ``fresh`` (nothing to do), ``incremental`` or ``full``, and why."""

    state_id: str
    mode: str
    reason: str
    evaluated: int  # patients evaluated (0 when fresh)
    touches_through: int


def touches_mark(engine: Engine, org_id: str) -> int:
    """The highest ``month_touches`` id of the organization whose every lower id is committed.

    On PostgreSQL a sequence hands out ids before their transactions commit, so a lower id
    can become visible after a higher one was read; a SHARE lock on the table waits for
    the ingests writing touches now (and holds new ones back for this one read).
    """
    t = schema.month_touches
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE month_touches IN SHARE MODE"))
        found = conn.execute(select(func.max(t.c.id)).where(t.c.org_id == org_id)).scalar()
    return int(found or 0)


def _relevant(month: str, as_of: date) -> bool:
    """A touch of this month can change the worklist of ``as_of``: this month, the next
    (device periods open today close there) or an earlier one (carried into this one)."""
    return month == EVERY or month <= f"{add_months(as_of, 1):%Y-%m}"


def touched_since(conn: Connection, org_id: str, as_of: date, after: int, through: int) -> set[str] | None:
    """Patients touched with ids in ``(after, through]``; ``None`` for an organization-wide touch."""
    t = schema.month_touches
    found = conn.execute(
        select(t.c.patient_id, t.c.month)
        .where(t.c.org_id == org_id, t.c.id > after, t.c.id <= through)
        .distinct()
    ).all()
    out: set[str] = set()
    for patient, month in found:
        if patient == EVERY:
            return None
        if _relevant(month, as_of):
            out.add(patient)
    return out


def _history(conn: Connection, org_id: str, as_of: date) -> str:
    # The next month's evaluation reads the runs of every month before it.
    return history_key(conn, org_id, f"{add_months(as_of, 1):%Y-%m}")


def _practitioners(conn: Connection, org_id: str, enrollments: Iterable[str]) -> dict[str, str | None]:
    e = schema.enrollments
    ids = sorted(set(enrollments))
    out: dict[str, str | None] = {}
    for i in range(0, len(ids), CHUNK):
        part = ids[i : i + CHUNK]
        out.update(
            conn.execute(
                select(e.c.enrollment_id, e.c.billing_practitioner_id).where(
                    e.c.org_id == org_id, e.c.enrollment_id.in_(part)
                )
            ).all()
        )
    return out


def refresh(
    engine: Engine,
    org_id: str,
    as_of: date,
    rules: PayerRules,
    overlays: Mapping[str, str] | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Refreshed:
    """Bring the state of ``(org_id, as_of, rules)`` up to the committed data.

    The watermark is read before the evaluation, so every change at or below it is in
    what the evaluation reads; a change after it is re-evaluated by the next refresh. The
    write is conditional on the state being what this refresh started from: a refresh of
    another process that won the race makes this one start again.
    """
    sid = state_id(as_of, rules.content_hash)
    for _ in range(ATTEMPTS):
        done = _refresh_once(engine, org_id, as_of, rules, dict(overlays or {}), sid, now)
        if done is not None:
            return done
    raise RuntimeError("the worklist state kept changing under this refresh")  # pragma: no cover


def _refresh_once(
    engine: Engine,
    org_id: str,
    as_of: date,
    rules: PayerRules,
    overlays: dict[str, str],
    sid: str,
    now: Callable[[], datetime],
) -> Refreshed | None:
    mark = touches_mark(engine, org_id)
    version = engine_version()
    with engine.connect() as conn:
        state = conn.execute(
            select(_states).where(_states.c.org_id == org_id, _states.c.state_id == sid)
        ).first()
        history = _history(conn, org_id, as_of)
        patients: set[str] | None = None
        if state is None:
            reason = "no kept worklist for this day and rule book"
        elif state.engine_version != version:
            reason = "the engine changed"
        elif state.history_key != history:
            reason = "the billing history of earlier months changed"
        else:
            if state.touches_through >= mark:
                return Refreshed(sid, "fresh", "nothing touched since", 0, state.touches_through)
            patients = touched_since(conn, org_id, as_of, state.touches_through, mark)
            reason = (
                "a change touched the whole organization"
                if patients is None
                else f"{len(patients)} patient(s) touched since the last refresh"
            )
    found = rows_by_patient(engine, org_id, as_of, rules, patients=patients) if patients != set() else {}
    with engine.connect() as conn:
        begin_write(conn)
        current = conn.execute(
            select(_states.c.touches_through, _states.c.engine_version, _states.c.history_key)
            .where(_states.c.org_id == org_id, _states.c.state_id == sid)
            .with_for_update()
        ).first()
        seen = None if state is None else (state.touches_through, state.engine_version, state.history_key)
        if (None if current is None else tuple(current)) != seen:
            conn.rollback()
            return None
        practitioner_of = _practitioners(conn, org_id, (r.enrollment_id for rs in found.values() for r in rs))
        mine = and_(_rows.c.org_id == org_id, _rows.c.state_id == sid)
        if patients is None:
            conn.execute(delete(_rows).where(mine))
        else:
            gone = sorted(patients)
            for i in range(0, len(gone), CHUNK):
                conn.execute(delete(_rows).where(mine, _rows.c.patient_id.in_(gone[i : i + CHUNK])))
        records = [
            record
            for patient_id in sorted(found)
            for record in patient_records(org_id, sid, patient_id, found[patient_id], practitioner_of)
        ]
        for i in range(0, len(records), CHUNK):
            conn.execute(insert(_rows), records[i : i + CHUNK])
        values = {
            "as_of": as_of,
            "rules_key": rules.content_hash,
            "overlays": overlays,
            "engine_version": version,
            "history_key": history,
            "touches_through": mark,
            "refreshed_at": now(),
        }
        if state is None:
            conn.execute(insert(_states).values(org_id=org_id, state_id=sid, **values))
            _drop_old_states(conn, org_id)
        else:
            conn.execute(
                update(_states).where(_states.c.org_id == org_id, _states.c.state_id == sid).values(**values)
            )
        conn.commit()
    if patients is None and engine.dialect.name == "postgresql":
        # A rebuilt state is a bulk load: without fresh statistics PostgreSQL plans the
        # first page as a sort of every row (40 ms at 10,000 patients instead of 0.2 ms).
        with engine.begin() as conn:
            conn.execute(text("ANALYZE worklist_rows"))
    mode = "full" if patients is None else "incremental"
    return Refreshed(sid, mode, reason, len(found) if patients is None else len(patients), mark)


def _drop_old_states(conn: Connection, org_id: str) -> None:
    kept = conn.execute(
        select(_states.c.state_id)
        .where(_states.c.org_id == org_id)
        .order_by(_states.c.refreshed_at.desc(), _states.c.state_id)
    ).scalars()
    for old in list(kept)[MAX_STATES:]:
        conn.execute(delete(_rows).where(_rows.c.org_id == org_id, _rows.c.state_id == old))
        conn.execute(delete(_states).where(_states.c.org_id == org_id, _states.c.state_id == old))


def kept_states(engine: Engine, org_id: str) -> list[tuple[date, dict[str, str], str]]:
    """``(as_of, overlays, rules_key)`` of each state the organization keeps."""
    with engine.connect() as conn:
        found = conn.execute(
            select(_states.c.as_of, _states.c.overlays, _states.c.rules_key).where(_states.c.org_id == org_id)
        ).all()
    return [(a, {str(k): str(v) for k, v in (o or {}).items()}, key) for a, o, key in found]


def forget_state(engine: Engine, org_id: str, sid: str) -> None:
    with engine.begin() as conn:
        conn.execute(delete(_rows).where(_rows.c.org_id == org_id, _rows.c.state_id == sid))
        conn.execute(delete(_states).where(_states.c.org_id == org_id, _states.c.state_id == sid))


def refresh_kept(
    engine: Engine, org_id: str, load: Callable[[Mapping[str, str]], PayerRules]
) -> list[Refreshed]:
    """Refresh every state the organization keeps (the task queue's job after an ingest).

    A state whose rule book no longer loads to the same content (rule files changed) is
    dropped: the next reader builds the state of the rules in force.
    """
    out = []
    for as_of, overlays, key in kept_states(engine, org_id):
        rules = load(overlays)
        if rules.content_hash != key:
            forget_state(engine, org_id, state_id(as_of, key))
            continue
        out.append(refresh(engine, org_id, as_of, rules, overlays))
    return out


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


def _where(
    org_id: str, sid: str, program: Program | None, *, open_only: bool, staff: str | None = None
) -> Any:
    parts = [_rows.c.org_id == org_id, _rows.c.state_id == sid]
    if open_only:
        parts.append(_rows.c.is_open == true())
    if program is not None:
        parts.append(_rows.c.program == program.value)
    if staff is not None:
        parts.append(_rows.c.practitioner_id == staff)
    return and_(*parts)


def ranked(
    conn: Connection,
    org_id: str,
    sid: str,
    *,
    program: Program | None = None,
    include_done: bool = False,
    offset: int = 0,
    limit: int | None = None,
) -> list[WorklistRow]:
    """Rows in ``build_worklist``'s order (open ones only unless ``include_done``)."""
    query = (
        select(_rows.c.body)
        .where(_where(org_id, sid, program, open_only=not include_done))
        .order_by(*_RANK)
        .offset(offset)
    )
    if limit is not None:
        query = query.limit(limit)
    return [row_from_body(b) for b in conn.execute(query).scalars()]


def together(
    conn: Connection,
    org_id: str,
    sid: str,
    *,
    program: Program | None = None,
    staff: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[WorklistRow]:
    """Open rows in ``services.care.patients_together`` order: patients by their best row,
    each patient's rows in rank order.

    Without a program the patient's best row is a stored column (an indexed order); with
    one it is found by a window over the program's open rows.
    """
    where = _where(org_id, sid, program, open_only=True, staff=staff)
    if program is None:
        group = (
            (_rows.c.s_vpm, _rows.c.s_end, _rows.c.s_value)
            if staff is not None
            else (_rows.c.g_vpm, _rows.c.g_end, _rows.c.g_value)
        )
        query = select(_rows.c.body).where(where).order_by(*group, _rows.c.patient_id, *_RANK)
    else:
        numbered = (
            select(_rows.c.body, _rows.c.patient_id, func.row_number().over(order_by=_RANK).label("n"))
            .where(where)
            .subquery()
        )
        grouped = select(
            numbered.c.body,
            numbered.c.n,
            func.min(numbered.c.n).over(partition_by=numbered.c.patient_id).label("g"),
        ).subquery()
        query = select(grouped.c.body).order_by(grouped.c.g, grouped.c.n)
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return [row_from_body(b) for b in conn.execute(query).scalars()]


def totals(
    conn: Connection, org_id: str, sid: str, *, program: Program | None = None, staff: str | None = None
) -> tuple[int, Decimal]:
    """Open rows and the value within reach over every page (the web's totals)."""
    count, value = conn.execute(
        select(func.count(), func.sum(_rows.c.r_value)).where(
            _where(org_id, sid, program, open_only=True, staff=staff)
        )
    ).one()
    if not count:
        return 0, Decimal("0")
    return int(count), (Decimal(-int(value)) / 100).quantize(Decimal("0.01"))


def practitioners_in_use(
    conn: Connection, org_id: str, sid: str, *, program: Program | None = None
) -> set[str | None]:
    """Billing practitioners of any row (open or not) — the web's staff choices."""
    return set(
        conn.execute(
            select(_rows.c.practitioner_id).where(_where(org_id, sid, program, open_only=False)).distinct()
        ).scalars()
    )

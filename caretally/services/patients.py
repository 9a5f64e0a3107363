"""Reading a patient's record: the list, one patient with programs and devices, readings, time.

Every function reads in one transaction that also appends its audit event (the patients
it disclosed), so no PHI leaves without a trace. Another organization's patient is
``NotFound`` exactly like a missing one: the query is always scoped by the actor's
organization, never checked afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select

from caretally.services import audit, paging
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput, NotFound
from caretally.services.paging import Page
from caretally.store import schema

MAX_RANGE_DAYS = 366


@dataclass(frozen=True)
class PatientSummary:
    patient_id: str
    family_name: str
    given_name: str
    birth_date: date
    sex: str
    payer: str
    timezone: str


@dataclass(frozen=True)
class EnrollmentView:
    enrollment_id: str
    program: str
    start_date: date
    end_date: date | None
    consent_date: date | None
    billing_practitioner_id: str
    diagnoses: tuple[str, ...]
    complexity: str | None
    order_date: date | None
    established_patient: bool | None
    initiating_visit_date: date | None

    @property
    def consent(self) -> str:
        """``recorded`` or ``missing``: what a nurse needs to know before billing anything."""
        return "recorded" if self.consent_date is not None else "missing"


@dataclass(frozen=True)
class DeviceView:
    device_id: str
    program: str
    kind: str
    medical_device: bool
    setup_date: date | None
    assigned_date: date
    returned_date: date | None
    hardware_id: str | None


@dataclass(frozen=True)
class PatientDetail:
    summary: PatientSummary
    member_id: str | None
    address_line: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    enrollments: list[EnrollmentView]
    devices: list[DeviceView]


@dataclass(frozen=True)
class ReadingView:
    reading_id: str | None
    reading_key: str
    device_id: str
    measured_at: datetime
    local_date: date
    type: str
    value: str
    unit: str
    transmission: str


@dataclass(frozen=True)
class TimeEntryView:
    entry_id: str
    practitioner_id: str
    program: str | None
    started_at: datetime
    local_date: date
    seconds: int
    activity: str | None
    interactive: bool
    modality: str | None
    note: str | None


_p = schema.patients


def _summary(row: Any) -> PatientSummary:
    return PatientSummary(
        row.patient_id, row.family_name, row.given_name, row.birth_date, row.sex, row.payer, row.timezone
    )


def require_patient(conn: Connection, org_id: str, patient_id: str) -> Any:
    row = conn.execute(select(_p).where(_p.c.org_id == org_id, _p.c.patient_id == patient_id)).first()
    if row is None:
        raise NotFound("no such patient", code="no_such_patient")
    return row


def patient_exists(engine: Engine, org_id: str, patient_id: str) -> bool:
    with engine.connect() as conn:
        found = conn.execute(
            select(_p.c.patient_id).where(_p.c.org_id == org_id, _p.c.patient_id == patient_id)
        ).first()
    return found is not None


def list_patients(
    engine: Engine, actor: Actor, *, limit: int | None = None, cursor: str | None = None
) -> Page[PatientSummary]:
    """Patients in id order, a page at a time."""
    size = paging.clamp(limit)
    after = paging.decode(cursor, "patients", 1)
    query = select(_p).where(_p.c.org_id == actor.org_id)
    if after is not None:
        query = query.where(_p.c.patient_id > str(after[0]))
    with audit.audited(engine, actor, "patients.list", "patients") as (conn, note):
        rows = conn.execute(query.order_by(_p.c.patient_id).limit(size + 1)).all()
        items = [_summary(r) for r in rows[:size]]
        note.touch(p.patient_id for p in items)
        note.detail = {"count": len(items)}
    following = paging.encode("patients", items[-1].patient_id) if len(rows) > size else None
    return Page(items, following)


def get_patient(engine: Engine, actor: Actor, patient_id: str) -> PatientDetail:
    e, d = schema.enrollments, schema.devices
    with audit.audited(engine, actor, "patient.read", f"patients/{patient_id}") as (conn, note):
        row = require_patient(conn, actor.org_id, patient_id)
        enrollments = conn.execute(
            select(e)
            .where(e.c.org_id == actor.org_id, e.c.patient_id == patient_id)
            .order_by(e.c.start_date, e.c.enrollment_id)
        ).all()
        devices = conn.execute(
            select(d)
            .where(d.c.org_id == actor.org_id, d.c.patient_id == patient_id)
            .order_by(d.c.assigned_date, d.c.device_id)
        ).all()
        note.touch([patient_id])
    return PatientDetail(
        summary=_summary(row),
        member_id=row.member_id,
        address_line=row.address_line,
        city=row.city,
        state=row.state,
        postal_code=row.postal_code,
        enrollments=[
            EnrollmentView(
                r.enrollment_id,
                r.program,
                r.start_date,
                r.end_date,
                r.consent_date,
                r.billing_practitioner_id,
                tuple(x for x in r.diagnoses.split(";") if x),
                r.complexity,
                r.order_date,
                r.established_patient,
                r.initiating_visit_date,
            )
            for r in enrollments
        ],
        devices=[
            DeviceView(
                r.device_id,
                r.program,
                r.kind,
                bool(r.medical_device),
                r.setup_date,
                r.assigned_date,
                r.returned_date,
                r.hardware_id,
            )
            for r in devices
        ],
    )


def check_range(start: date, end: date) -> None:
    if end < start:
        raise InvalidInput("the range ends before it starts", code="invalid_range")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise InvalidInput(
            f"the range is longer than {MAX_RANGE_DAYS} days",
            hint="ask for a year at most",
            code="range_too_long",
        )


def list_readings(
    engine: Engine,
    actor: Actor,
    patient_id: str,
    start: date,
    end: date,
    *,
    limit: int | None = None,
    cursor: str | None = None,
) -> Page[ReadingView]:
    """Readings whose patient-local date lies in [start, end], oldest first."""
    check_range(start, end)
    size = paging.clamp(limit)
    after = paging.decode(cursor, "readings", 2)
    r = schema.readings
    query = select(r).where(
        r.c.org_id == actor.org_id, r.c.patient_id == patient_id, r.c.local_date.between(start, end)
    )
    if after is not None:
        instant, row_id = _instant(after[0]), _int(after[1])
        query = query.where(or_(r.c.measured_at > instant, and_(r.c.measured_at == instant, r.c.id > row_id)))
    resource = f"patients/{patient_id}/readings"
    with audit.audited(engine, actor, "readings.read", resource) as (conn, note):
        require_patient(conn, actor.org_id, patient_id)
        rows = conn.execute(query.order_by(r.c.measured_at, r.c.id).limit(size + 1)).all()
        note.touch([patient_id])
        note.detail = {"from": start.isoformat(), "to": end.isoformat(), "count": min(len(rows), size)}
    page = rows[:size]
    items = [
        ReadingView(
            x.reading_id,
            x.reading_key,
            x.device_id,
            x.measured_at,
            x.local_date,
            x.type,
            x.value,
            x.unit,
            x.transmission,
        )
        for x in page
    ]
    following = (
        paging.encode("readings", page[-1].measured_at.isoformat(), page[-1].id) if len(rows) > size else None
    )
    return Page(items, following)


def list_time_entries(
    engine: Engine,
    actor: Actor,
    patient_id: str,
    start: date,
    end: date,
    *,
    limit: int | None = None,
    cursor: str | None = None,
) -> Page[TimeEntryView]:
    """Time entries whose patient-local date lies in [start, end], oldest first."""
    check_range(start, end)
    size = paging.clamp(limit)
    after = paging.decode(cursor, "time", 2)
    t = schema.time_entries
    query = select(t).where(
        t.c.org_id == actor.org_id, t.c.patient_id == patient_id, t.c.local_date.between(start, end)
    )
    if after is not None:
        instant, entry = _instant(after[0]), str(after[1])
        query = query.where(
            or_(t.c.started_at > instant, and_(t.c.started_at == instant, t.c.entry_id > entry))
        )
    resource = f"patients/{patient_id}/time-entries"
    with audit.audited(engine, actor, "time_entries.read", resource) as (conn, note):
        require_patient(conn, actor.org_id, patient_id)
        rows = conn.execute(query.order_by(t.c.started_at, t.c.entry_id).limit(size + 1)).all()
        note.touch([patient_id])
        note.detail = {"from": start.isoformat(), "to": end.isoformat(), "count": min(len(rows), size)}
    page = rows[:size]
    items = [
        TimeEntryView(
            x.entry_id,
            x.practitioner_id,
            x.program,
            x.started_at,
            x.local_date,
            x.seconds,
            x.activity,
            bool(x.interactive),
            x.modality,
            x.note,
        )
        for x in page
    ]
    following = (
        paging.encode("time", page[-1].started_at.isoformat(), page[-1].entry_id)
        if len(rows) > size
        else None
    )
    return Page(items, following)


def _instant(text: Any) -> datetime:
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise InvalidInput("the cursor is not one this server gave for this list", code="invalid_cursor")
    return value


def _int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise InvalidInput("the cursor is not one this server gave for this list", code="invalid_cursor")

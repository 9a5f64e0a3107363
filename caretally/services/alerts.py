"""Alerts: readings outside the practice's thresholds, until a nurse acknowledges them.

Thresholds are configuration the practice sets per program and measure (a reading type,
or one part of a compound reading: ``blood_pressure.systolic``), optionally for one
patient — a patient's own threshold for a measure replaces the practice's for that
patient. They are not medical advice and caretally ships none.

An alert is not stored when a reading arrives: it *is* a recent reading outside a
threshold in force, open until an acknowledgement (with a note, and optionally the time
entry the follow-up became) is recorded for that reading and threshold. So a threshold
added today raises alerts for the recent readings it catches, and removing one closes
them, with nothing to keep in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, insert, select, update

from caretally.model import Program
from caretally.services import audit
from caretally.services.care import (
    PatientRecord,
    ReadingRecord,
    Threshold,
    _programs,
    _record,
    thresholds_for,
)
from caretally.services.context import Actor
from caretally.services.errors import Conflict, InvalidInput, NotFound
from caretally.store import schema

#: How far back readings raise alerts (local days up to today).
WINDOW_DAYS = 14
#: Readings whose value holds several numbers, and the names of the parts.
COMPOUND: dict[str, tuple[str, ...]] = {"blood_pressure": ("systolic", "diastolic")}

_th, _ack = schema.alert_thresholds, schema.alert_acknowledgements


@dataclass(frozen=True)
class Alert:
    alert_id: str  # "<reading row id>-<threshold id>"
    patient: PatientRecord
    reading: ReadingRecord
    threshold: Threshold
    value: Decimal  # the number that crossed (one part of a compound reading)
    raised_at: datetime  # when the reading was measured (UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def measure_values(kind: str, value: str) -> dict[str, Decimal]:
    """``{"blood_pressure.systolic": 182, …}`` or ``{"glucose": 250}``; nothing for non-numbers."""
    names = COMPOUND.get(kind)
    parts = value.split("/") if names else [value]
    keys = [f"{kind}.{n}" for n in names] if names else [kind]
    if len(parts) != len(keys):
        return {}
    out = {}
    for key, part in zip(keys, parts, strict=True):
        try:
            out[key] = Decimal(part.strip())
        except InvalidOperation:
            continue
    return out


def crosses(t: Threshold, value: Decimal) -> bool:
    return (t.at_or_above is not None and value >= t.at_or_above) or (
        t.at_or_below is not None and value <= t.at_or_below
    )


def _in_force(thresholds: list[Threshold], patient_id: str, programs: tuple[str, ...]) -> list[Threshold]:
    own = {(t.program, t.measure) for t in thresholds if t.patient_id == patient_id}
    return [
        t
        for t in thresholds
        if t.program in programs
        and (t.patient_id == patient_id or (t.patient_id is None and (t.program, t.measure) not in own))
    ]


def open_alerts(engine: Engine, actor: Actor, *, as_of: date | None = None, limit: int = 200) -> list[Alert]:
    """Unacknowledged alerts from readings of the ``WINDOW_DAYS`` days up to ``as_of``
    (default today), newest first."""
    last = as_of or _now().date()
    r, p = schema.readings, schema.patients

    def work(note: audit.AuditNote) -> list[Alert]:
        found: list[Alert] = []
        with engine.connect() as conn:
            thresholds = thresholds_for(conn, actor.org_id)
            if not thresholds:
                return []
            done = {
                (k, t)
                for k, t in conn.execute(
                    select(_ack.c.reading_key, _ack.c.threshold_id).where(_ack.c.org_id == actor.org_id)
                )
            }
            since = last - timedelta(days=WINDOW_DAYS)
            rows = conn.execute(
                select(
                    r.c.id, r.c.reading_key, r.c.patient_id, r.c.measured_at, r.c.type, r.c.value, r.c.unit
                )
                .add_columns(r.c.transmission, r.c.device_id)
                .where(r.c.org_id == actor.org_id, r.c.local_date >= since, r.c.local_date <= last)
                .order_by(r.c.measured_at.desc(), r.c.id.desc())
            ).all()
            ids = sorted({row.patient_id for row in rows})
            people = {
                row.patient_id: row
                for row in conn.execute(select(p).where(p.c.org_id == actor.org_id, p.c.patient_id.in_(ids)))
            }
            programs = _programs(conn, actor.org_id, ids)
        for row in rows:
            person = people.get(row.patient_id)
            if person is None:
                continue
            zone = ZoneInfo(person.timezone)
            values = measure_values(row.type, str(row.value))
            for t in _in_force(thresholds, row.patient_id, programs.get(row.patient_id, ())):
                value = values.get(t.measure)
                if value is None or not crosses(t, value) or (row.reading_key, t.threshold_id) in done:
                    continue
                reading = ReadingRecord(
                    row.reading_key,
                    row.measured_at.astimezone(zone).replace(tzinfo=None),
                    row.type,
                    str(row.value),
                    row.unit,
                    row.transmission == "manual",
                    row.device_id or "",
                )
                found.append(
                    Alert(
                        f"{row.id}-{t.threshold_id}",
                        _record(person, programs.get(row.patient_id, ())),
                        reading,
                        t,
                        value,
                        row.measured_at.astimezone(UTC),
                    )
                )
            if len(found) >= limit:
                break
        note.touch(a.patient.patient_id for a in found)
        note.detail = {"open": len(found)}
        return found

    return audit.audited_call(engine, actor, "alerts.read", "alerts", work)


def list_thresholds(engine: Engine, actor: Actor) -> list[Threshold]:
    with engine.connect() as conn:
        return thresholds_for(conn, actor.org_id)


def _bound(text: str | None, what: str) -> Decimal | None:
    if text is None or not str(text).strip():
        return None
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InvalidInput(f"{what} {text!r} is not a number", code="invalid_threshold") from None
    if not value.is_finite() or abs(value) >= Decimal("1e9"):
        raise InvalidInput(f"{what} {text!r} is not a usable number", code="invalid_threshold")
    return value


def add_threshold(
    engine: Engine,
    actor: Actor,
    *,
    program: str,
    measure: str,
    at_or_above: str | None = None,
    at_or_below: str | None = None,
    patient_id: str | None = None,
    now: datetime | None = None,
) -> int:
    """A new threshold (at least one bound); answers its id."""
    try:
        chosen = Program(program.strip().upper())
    except ValueError:
        known = ", ".join(x.value for x in Program)
        raise InvalidInput(f"program {program!r} is not one of {known}", code="invalid_program") from None
    kind = measure.strip().lower()
    if not kind or len(kind) > 64 or not all(c.isalnum() or c in "._" for c in kind):
        raise InvalidInput(
            f"measure {measure!r} is not a reading type (e.g. glucose, blood_pressure.systolic)",
            code="invalid_measure",
        )
    high, low = _bound(at_or_above, "At or above"), _bound(at_or_below, "At or below")
    if high is None and low is None:
        raise InvalidInput("give at least one bound: at or above, or at or below", code="no_bound")
    if high is not None and low is not None and low >= high:
        raise InvalidInput("'at or below' must be lower than 'at or above'", code="bounds_overlap")
    who = (patient_id or "").strip() or None
    with audit.audited(engine, actor, "alerts.threshold.add", "alert-thresholds") as (conn, note):
        if who is not None:
            from caretally.services.patients import require_patient

            require_patient(conn, actor.org_id, who)
            note.touch([who])
        threshold_id = conn.execute(
            insert(_th)
            .values(
                org_id=actor.org_id,
                program=chosen.value,
                measure=kind,
                at_or_above=high,
                at_or_below=low,
                patient_id=who,
                created_by=actor.actor,
                created_at=now or _now(),
            )
            .returning(_th.c.threshold_id)
        ).scalar_one()
        note.detail = {"threshold_id": threshold_id, "program": chosen.value, "measure": kind}
    return int(threshold_id)


def remove_threshold(engine: Engine, actor: Actor, threshold_id: int, *, now: datetime | None = None) -> None:
    with audit.audited(engine, actor, "alerts.threshold.remove", f"alert-thresholds/{threshold_id}") as (
        conn,
        note,
    ):
        done = conn.execute(
            update(_th)
            .where(
                _th.c.org_id == actor.org_id, _th.c.threshold_id == threshold_id, _th.c.removed_at.is_(None)
            )
            .values(removed_at=now or _now())
        )
        if done.rowcount == 0:
            raise NotFound("no such threshold in force", code="no_such_threshold")
        note.detail = {"threshold_id": threshold_id}


def acknowledge(
    engine: Engine, actor: Actor, alert_id: str, *, note_text: str = "", now: datetime | None = None
) -> tuple[int, str, str]:
    """Close an alert with a note; answers (acknowledgement id, patient id, words for a time entry)."""
    reading_id, _, threshold_id = alert_id.partition("-")
    if not (reading_id.isdigit() and threshold_id.isdigit()):
        raise NotFound("no such alert", code="no_such_alert")
    r = schema.readings
    with audit.audited(engine, actor, "alert.acknowledge", f"alerts/{alert_id}") as (conn, note):
        row = conn.execute(
            select(r.c.reading_key, r.c.patient_id, r.c.type, r.c.value, r.c.unit).where(
                r.c.org_id == actor.org_id, r.c.id == int(reading_id)
            )
        ).first()
        threshold = conn.execute(
            select(_th).where(and_(_th.c.org_id == actor.org_id, _th.c.threshold_id == int(threshold_id)))
        ).first()
        if row is None or threshold is None:
            raise NotFound("no such alert", code="no_such_alert")
        taken = conn.execute(
            select(_ack.c.ack_id).where(
                _ack.c.org_id == actor.org_id,
                _ack.c.reading_key == row.reading_key,
                _ack.c.threshold_id == int(threshold_id),
            )
        ).first()
        if taken is not None:
            raise Conflict("this alert was acknowledged already", code="acknowledged")
        ack_id = conn.execute(
            insert(_ack)
            .values(
                org_id=actor.org_id,
                reading_key=row.reading_key,
                threshold_id=int(threshold_id),
                patient_id=row.patient_id,
                acknowledged_by=actor.actor,
                acknowledged_at=now or _now(),
                note=note_text.strip()[:2000] or None,
            )
            .returning(_ack.c.ack_id)
        ).scalar_one()
        note.touch([row.patient_id])
        note.detail = {"ack_id": ack_id}
    words = f"Reviewed alert: {row.type.replace('_', ' ')} {row.value} {row.unit}".strip()
    return int(ack_id), str(row.patient_id), words


def attach_entry(engine: Engine, actor: Actor, ack_id: int, patient_id: str, entry_id: str) -> None:
    """Record the time entry an acknowledged alert became (the nurse logged the follow-up)."""
    with audit.audited(engine, actor, "alert.time", f"alerts/acknowledgements/{ack_id}") as (conn, note):
        done = conn.execute(
            update(_ack)
            .where(_ack.c.org_id == actor.org_id, _ack.c.ack_id == ack_id, _ack.c.patient_id == patient_id)
            .values(entry_id=entry_id)
        )
        if done.rowcount == 0:
            raise NotFound("no such acknowledged alert for this patient", code="no_such_alert")
        note.touch([patient_id])
        note.detail = {"ack_id": ack_id, "entry_id": entry_id}

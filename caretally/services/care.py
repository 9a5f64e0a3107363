"""What care staff read and do: the worklist, finding a patient, a patient's month, logging time.

Each function is one service call: it reads (or writes) for the actor's organization only
and records one audit event naming the patients it disclosed. The web pages and any
other caller get engine values (``WorklistRow``, ``PatientMonthFacts``, ``Decision``) and
plain records; nothing here formats a page.

Time is logged as the practitioner the signed-in user is linked to
(``user_practitioners``; an admin sets the link), through the same checks as a bundle
(``caretally.ingest.time_entries``): a locked month refuses new or corrected time and
names its run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update

from caretally.dates import add_months, parse_month
from caretally.errors import Problem
from caretally.model import Decision, PatientMonthFacts, Program
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import Conflict, InvalidInput, NotFound
from caretally.services.ingest import Touched, after_commit
from caretally.services.months import (
    _engine_errors,
    _judging_errors,
    _latest_overlays,
    check_day,
    payer_rules,
)
from caretally.services.patients import require_patient
from caretally.store import schema
from caretally.worklist import WorklistRow

PAGE_SIZE = 50
MAX_PAGE = 200


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    family_name: str
    given_name: str
    birth_date: date
    payer: str
    member_id: str | None
    timezone: str
    programs: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.family_name}, {self.given_name}"


@dataclass(frozen=True)
class ReadingRecord:
    reading_key: str
    measured_local: datetime  # naive, in the patient's zone
    kind: str
    value: str
    unit: str
    manual: bool
    device_id: str


@dataclass(frozen=True)
class TimeRecord:
    entry_id: str
    patient_id: str
    started_at: datetime
    seconds: int
    practitioner_id: str
    performer: str
    credential: str
    program: str | None
    activity: str | None
    interactive: bool
    modality: str | None
    note: str | None


@dataclass(frozen=True)
class WorklistView:
    rows: list[WorklistRow]  # this page, ranked
    total: int  # open periods matching the filters, every page
    value: Decimal  # value still within reach, every page
    names: dict[str, str]  # patient id → "Family, Given" for the rows shown
    staff: list[tuple[str, str]]  # (practitioner id, "Name (credential)") to filter by
    offset: int
    next_offset: int | None


@dataclass(frozen=True)
class PatientList:
    patients: list[PatientRecord]
    total: int
    offset: int
    next_offset: int | None


@dataclass(frozen=True)
class Threshold:
    threshold_id: int
    program: str
    measure: str
    at_or_above: Decimal | None
    at_or_below: Decimal | None
    patient_id: str | None


@dataclass(frozen=True)
class PatientMonthView:
    patient: PatientRecord
    facts: PatientMonthFacts
    decisions: list[Decision]  # live, for the charts
    decision_json: list[dict[str, Any]]  # what the decisions list shows: the run's, or live
    source: str  # words: which run, or live as of a day
    year_for: Callable[[date], Any]
    readings: list[ReadingRecord]
    thresholds: list[Threshold]
    entries: list[TimeRecord]
    later: list[tuple[PatientMonthFacts, list[Decision]]] = field(default_factory=list)
    run_id: str | None = None  # the run whose decisions are shown (None: live)


@dataclass(frozen=True)
class TimerState:
    state: str  # idle | running | paused
    elapsed_seconds: int = 0
    running_since: datetime | None = None
    first_started_at: datetime | None = None


@dataclass(frozen=True)
class StoppedTimer:
    """What a stopped timer hands to the entry form: when it began and how long it ran."""

    started_at: datetime
    seconds: int

    @property
    def minutes(self) -> int:
        """Whole minutes, rounded down: logged time is never more than the time spent."""
        return self.seconds // 60


@dataclass(frozen=True)
class LogTimeView:
    patient: PatientRecord
    programs: list[str]
    timer: TimerState
    entries: list[TimeRecord]
    practitioner_id: str | None  # who the user logs time as; None: not linked
    locked_run: str | None  # this month's locked run, when there is one


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

_pt, _en = schema.patients, schema.enrollments


def _now() -> datetime:
    return datetime.now(UTC)


def _programs(conn: Any, org_id: str, patient_ids: list[str] | None = None) -> dict[str, tuple[str, ...]]:
    query = select(_en.c.patient_id, _en.c.program).where(_en.c.org_id == org_id)
    if patient_ids is not None:
        query = query.where(_en.c.patient_id.in_(patient_ids))
    found: dict[str, set[str]] = {}
    for pid, program in conn.execute(query):
        found.setdefault(pid, set()).add(program)
    return {k: tuple(sorted(v)) for k, v in found.items()}


def _record(row: Any, programs: tuple[str, ...] = ()) -> PatientRecord:
    return PatientRecord(
        row.patient_id,
        row.family_name,
        row.given_name,
        row.birth_date,
        row.payer,
        row.member_id,
        row.timezone,
        programs,
    )


def _practitioners(conn: Any, org_id: str) -> dict[str, tuple[str, str]]:
    t = schema.practitioners
    rows = conn.execute(select(t.c.practitioner_id, t.c.name, t.c.credential).where(t.c.org_id == org_id))
    return {pid: (name, cred) for pid, name, cred in rows}


def _clamp(limit: int | None) -> int:
    return max(1, min(limit or PAGE_SIZE, MAX_PAGE))


def _entries(conn: Any, org_id: str, patient_id: str, start: date, end: date) -> list[TimeRecord]:
    t = schema.time_entries
    names = _practitioners(conn, org_id)
    rows = conn.execute(
        select(t)
        .where(
            t.c.org_id == org_id, t.c.patient_id == patient_id, t.c.local_date >= start, t.c.local_date <= end
        )
        .order_by(t.c.started_at, t.c.entry_id)
    ).all()
    return [
        TimeRecord(
            r.entry_id,
            r.patient_id,
            r.started_at.astimezone(UTC),
            int(r.seconds),
            r.practitioner_id,
            *names.get(r.practitioner_id, (r.practitioner_id, "?")),
            r.program,
            r.activity,
            bool(r.interactive),
            r.modality,
            r.note,
        )
        for r in rows
    ]


def _readings(
    conn: Any, org_id: str, patient_id: str, tz: str, start: date, end: date
) -> list[ReadingRecord]:
    r = schema.readings
    zone = ZoneInfo(tz)
    rows = conn.execute(
        select(
            r.c.reading_key, r.c.measured_at, r.c.type, r.c.value, r.c.unit, r.c.transmission, r.c.device_id
        )
        .where(
            r.c.org_id == org_id, r.c.patient_id == patient_id, r.c.local_date >= start, r.c.local_date <= end
        )
        .order_by(r.c.measured_at)
    ).all()
    return [
        ReadingRecord(
            key, at.astimezone(zone).replace(tzinfo=None), kind, value, unit, how == "manual", device or ""
        )
        for key, at, kind, value, unit, how, device in rows
    ]


def thresholds_for(conn: Any, org_id: str, patient_id: str | None = None) -> list[Threshold]:
    """Thresholds in force: the practice's, and (with ``patient_id``) that patient's own."""
    t = schema.alert_thresholds
    query = select(t).where(t.c.org_id == org_id, t.c.removed_at.is_(None))
    if patient_id is not None:
        query = query.where(or_(t.c.patient_id.is_(None), t.c.patient_id == patient_id))
    rows = conn.execute(query.order_by(t.c.program, t.c.measure, t.c.threshold_id)).all()
    return [
        Threshold(
            r.threshold_id,
            r.program,
            r.measure,
            None if r.at_or_above is None else Decimal(r.at_or_above),
            None if r.at_or_below is None else Decimal(r.at_or_below),
            r.patient_id,
        )
        for r in rows
    ]


# --------------------------------------------------------------------------------------
# Worklist
# --------------------------------------------------------------------------------------


def patients_together(rows: Sequence[Any]) -> list[Any]:
    """The ranked rows with each patient's rows moved up beside their best-ranked one.

    A patient in RPM has a 30-day device period and a calendar month open at once (99454
    on one, 99457 on the other), and they rank far apart: the nurse who logs the month's
    call from the device row then finds that row unchanged (its minutes and call state are
    the period's) while the row that did change is pages away. Kept together, the rows
    of one patient read as one piece of work; patients keep the order of their best row.
    """
    first: dict[str, int] = {}
    for i, r in enumerate(rows):
        first.setdefault(r.patient_id, i)
    return sorted(rows, key=lambda r: first[r.patient_id])


def worklist_view(
    engine: Engine,
    actor: Actor,
    *,
    as_of: date,
    program: str | None = None,
    staff: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> WorklistView:
    """The open periods on ``as_of``, ranked as ``caretally worklist`` ranks them.

    ``staff`` keeps the periods of enrollments whose billing practitioner it is (the
    clinician a patient's program is assigned to). Rows with nothing left to gain are left
    out; the totals cover every page.
    """
    chosen = None
    if program:
        try:
            chosen = Program(program.upper())
        except ValueError:
            known = ", ".join(p.value for p in Program)
            raise InvalidInput(f"program {program!r} is not one of {known}", code="invalid_program") from None
    check_day(as_of)
    size = _clamp(limit)
    offset = max(0, offset)

    def work(note: audit.AuditNote) -> WorklistView:
        from caretally import worklist_state

        month = f"{as_of:%Y-%m}"
        overlays = _latest_overlays(engine, actor.org_id, month)
        try:
            kept = worklist_state.refresh(engine, actor.org_id, as_of, payer_rules(overlays), overlays)
        except _judging_errors() as exc:
            raise _engine_errors(exc) from None
        sid, who = kept.state_id, staff or None
        with engine.connect() as conn:
            people = _practitioners(conn, actor.org_id)
            page = worklist_state.together(
                conn, actor.org_id, sid, program=chosen, staff=who, offset=offset, limit=size
            )
            total, value = worklist_state.totals(conn, actor.org_id, sid, program=chosen, staff=who)
            in_use = worklist_state.practitioners_in_use(conn, actor.org_id, sid, program=chosen)
            ids = sorted({r.patient_id for r in page})
            names = {
                row.patient_id: f"{row.family_name}, {row.given_name}"
                for row in conn.execute(
                    select(_pt.c.patient_id, _pt.c.family_name, _pt.c.given_name).where(
                        _pt.c.org_id == actor.org_id, _pt.c.patient_id.in_(ids)
                    )
                )
            }
        choices = sorted(
            ((pid, f"{name} ({cred})") for pid, (name, cred) in people.items() if pid in in_use),
            key=lambda x: x[1],
        )
        note.touch(ids)
        note.detail = {"as_of": as_of.isoformat(), "rows": len(page), "offset": offset}
        following = offset + size if offset + size < total else None
        return WorklistView(page, total, value, names, choices, offset, following)

    return audit.audited_call(engine, actor, "worklist.read", "worklist", work)


# --------------------------------------------------------------------------------------
# Patients
# --------------------------------------------------------------------------------------


def find_patients(
    engine: Engine, actor: Actor, *, query: str = "", offset: int = 0, limit: int | None = None
) -> PatientList:
    """Patients by family name, optionally those whose name or id contains ``query``."""
    size = _clamp(limit)
    offset = max(0, offset)
    text = query.strip()[:100]
    where = [_pt.c.org_id == actor.org_id]
    if text:
        like = f"%{text.lower().replace('%', '').replace('_', '')}%"
        where.append(
            or_(
                func.lower(_pt.c.patient_id).like(like),
                func.lower(_pt.c.family_name).like(like),
                func.lower(_pt.c.given_name).like(like),
                func.lower(_pt.c.family_name + ", " + _pt.c.given_name).like(like),
            )
        )
    with audit.audited(engine, actor, "patients.list", "patients") as (conn, note):
        total = conn.execute(select(func.count()).select_from(_pt).where(*where)).scalar_one()
        rows = conn.execute(
            select(_pt)
            .where(*where)
            .order_by(_pt.c.family_name, _pt.c.given_name, _pt.c.patient_id)
            .offset(offset)
            .limit(size)
        ).all()
        programs = _programs(conn, actor.org_id, [r.patient_id for r in rows])
        found = [_record(r, programs.get(r.patient_id, ())) for r in rows]
        note.touch(p.patient_id for p in found)
        note.detail = {"count": len(found), "searched": bool(text)}
    following = offset + size if offset + size < total else None
    return PatientList(found, int(total), offset, following)


def patient_month_view(engine: Engine, actor: Actor, patient_id: str, *, as_of: date) -> PatientMonthView:
    """A patient's month as of ``as_of``: live evaluation (and next month's, for a period
    that ends then), readings since the earliest period shown, time logged this month, the
    thresholds in force, and the decisions of the month's run when there is one."""
    from caretally.billing.evaluate import evaluate_month
    from caretally.billing.run import current_run, stored_decisions
    from caretally.billing.serialize import decision_to_json

    check_day(as_of)
    month = parse_month(f"{as_of:%Y-%m}")

    def work(note: audit.AuditNote) -> PatientMonthView:
        with engine.connect() as conn:
            row = require_patient(conn, actor.org_id, patient_id)
            patient = _record(row, _programs(conn, actor.org_id, [patient_id]).get(patient_id, ()))
        rules = payer_rules(_latest_overlays(engine, actor.org_id, f"{as_of:%Y-%m}"))

        def evaluate(period: Any) -> tuple[PatientMonthFacts, list[Decision]] | None:
            try:
                for facts, decisions in evaluate_month(
                    engine, actor.org_id, period, rules, as_of=as_of, patients={patient_id}
                ):
                    return facts, decisions
            except _judging_errors() as exc:
                raise _engine_errors(exc) from None
            return None

        found = evaluate(month)
        if found is None:
            raise NotFound(
                f"{patient_id} has nothing to show in {month.start:%B %Y}",
                hint="the patient has no enrollment this month",
                code="nothing_this_month",
            )
        facts, decisions = found
        later_found = evaluate(parse_month(f"{add_months(as_of, 1):%Y-%m}"))
        later = [later_found] if later_found else []
        starts = [
            p.start for f in (facts, *(x[0] for x in later)) for pf in f.programs for p in pf.device_periods
        ]
        start = min([facts.month.start, *starts])
        run = current_run(engine, actor.org_id, f"{as_of:%Y-%m}")
        if run is not None:
            shown = stored_decisions(engine, run.run_id, patient_id)
            source = f"From the {run.status} run {run.run_id} of {month.start:%B %Y}."
        else:
            shown = [decision_to_json(d) for d in decisions]
            source = f"Live, as of {as_of:%b} {as_of.day}: no run of {month.start:%B %Y} yet."
        with engine.connect() as conn:
            readings = _readings(conn, actor.org_id, patient_id, patient.timezone, start, as_of)
            entries = _entries(conn, actor.org_id, patient_id, facts.month.start, as_of)
            thresholds = thresholds_for(conn, actor.org_id, patient_id)
        note.touch([patient_id])
        note.detail = {"month": f"{as_of:%Y-%m}", "source": "run" if run else "live"}
        book = rules.for_payer(facts.payer)
        return PatientMonthView(
            patient,
            facts,
            decisions,
            shown,
            source,
            book.for_date,
            readings,
            thresholds,
            entries,
            later,
            run_id=run.run_id if run is not None else None,
        )

    return audit.audited_call(engine, actor, "patient.view", f"patients/{patient_id}", work)


# --------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------

TIMER_ACTIONS = ("start", "pause", "resume", "stop")
_tm = schema.staff_timers


def _timer_state(row: Any, now: datetime) -> TimerState:
    if row is None:
        return TimerState("idle")
    elapsed = int(row.elapsed_seconds)
    if row.state == "running" and row.running_since is not None:
        elapsed += max(0, int((now - row.running_since).total_seconds()))
    return TimerState(row.state, elapsed, row.running_since, row.first_started_at)


def _user(actor: Actor) -> int:
    if actor.user_id is None:
        raise InvalidInput("timers belong to a signed-in user", code="no_user")
    return actor.user_id


def timer_action(
    engine: Engine, actor: Actor, patient_id: str, action: str, *, now: datetime | None = None
) -> TimerState | StoppedTimer:
    """Start, pause, resume or stop the actor's timer for a patient.

    One timer per user and patient, kept in the database, so every tab and every reload
    reads the same clock. Stopping answers when it began and how long it ran (pauses left
    out) and removes it; the time is saved as an entry by ``log_time``. An action that
    does not fit the timer's state (pause an idle timer …) is a ``Conflict``.
    """
    if action not in TIMER_ACTIONS:
        raise InvalidInput(f"unknown timer action {action!r}", code="invalid_timer_action")
    when = now or _now()
    user = _user(actor)
    key = (_tm.c.org_id == actor.org_id, _tm.c.user_id == user, _tm.c.patient_id == patient_id)
    with audit.audited(engine, actor, f"timer.{action}", f"patients/{patient_id}/timer") as (conn, note):
        require_patient(conn, actor.org_id, patient_id)
        note.touch([patient_id])
        row = conn.execute(select(_tm).where(*key)).first()
        state = _timer_state(row, when)

        def wrong() -> Conflict:
            return Conflict(f"the timer is {state.state}: it cannot {action}", code="timer_state")

        if action == "start":
            if row is not None:
                raise wrong()
            conn.execute(
                insert(_tm).values(
                    org_id=actor.org_id,
                    user_id=user,
                    patient_id=patient_id,
                    state="running",
                    elapsed_seconds=0,
                    running_since=when,
                    first_started_at=when,
                    updated_at=when,
                )
            )
            return TimerState("running", 0, when, when)
        if row is None:
            raise wrong()
        if action == "pause":
            if row.state != "running":
                raise wrong()
            conn.execute(
                update(_tm)
                .where(*key)
                .values(
                    state="paused", elapsed_seconds=state.elapsed_seconds, running_since=None, updated_at=when
                )
            )
            return TimerState("paused", state.elapsed_seconds, None, row.first_started_at)
        if action == "resume":
            if row.state != "paused":
                raise wrong()
            conn.execute(update(_tm).where(*key).values(state="running", running_since=when, updated_at=when))
            return TimerState("running", state.elapsed_seconds, when, row.first_started_at)
        conn.execute(delete(_tm).where(*key))
        note.detail = {"seconds": state.elapsed_seconds}
        return StoppedTimer(row.first_started_at, state.elapsed_seconds)


# --------------------------------------------------------------------------------------
# Logging and correcting time
# --------------------------------------------------------------------------------------


#: Why time is refused to an account without a practitioner, and exactly how to fix it:
#: a user made at the command line has no link until someone makes one, and the words
#: must say who can (an admin) and where (the Admin page's form, or the CLI at creation).
NO_PRACTITIONER = "your account is not linked to a practitioner, so time cannot be saved as anyone"
NO_PRACTITIONER_HINT = (
    "ask an admin to link it: in the web app, Admin page, form “Who logs time as which"
    " practitioner”, choose your email and your practitioner, then Link practitioner"
    " (at the terminal, a new account gets its link with caretally users add --practitioner ID)"
)


def _linked_practitioner(conn: Any, actor: Actor) -> str | None:
    if actor.user_id is None:
        return None
    t = schema.user_practitioners
    return conn.execute(
        select(t.c.practitioner_id).where(t.c.org_id == actor.org_id, t.c.user_id == actor.user_id)
    ).scalar()


def log_time_view(
    engine: Engine, actor: Actor, patient_id: str, *, now: datetime | None = None
) -> LogTimeView:
    """The log-time page's data: the patient, their programs, the timer, this month's time."""
    when = now or _now()
    with audit.audited(engine, actor, "time.view", f"patients/{patient_id}/time") as (conn, note):
        row = require_patient(conn, actor.org_id, patient_id)
        programs = _programs(conn, actor.org_id, [patient_id]).get(patient_id, ())
        patient = _record(row, programs)
        today = when.astimezone(ZoneInfo(patient.timezone)).date()
        start = today.replace(day=1)
        entries = _entries(conn, actor.org_id, patient_id, start, today)
        timer = (
            _timer_state(
                conn.execute(
                    select(_tm).where(
                        _tm.c.org_id == actor.org_id,
                        _tm.c.user_id == actor.user_id,
                        _tm.c.patient_id == patient_id,
                    )
                ).first(),
                when,
            )
            if actor.user_id is not None
            else TimerState("idle")
        )
        practitioner = _linked_practitioner(conn, actor)
        from caretally.ingest.time_entries import locked_runs

        locked = locked_runs(conn, actor.org_id, [f"{today:%Y-%m}"]).get(f"{today:%Y-%m}")
        note.touch([patient_id])
    return LogTimeView(patient, list(programs), timer, entries, practitioner, locked)


@dataclass(frozen=True)
class TimeInput:
    """A time entry as a person types it; ``started_local`` is in the patient's zone."""

    program: str  # "" = unassigned (allocated at billing)
    activity: str
    started_local: str  # YYYY-MM-DDTHH:MM
    minutes: str
    interactive: bool
    modality: str
    note: str


class TimeRefused(InvalidInput):
    """The entry was not stored; ``fields`` maps a form field to what is wrong with it."""

    def __init__(self, message: str, fields: Mapping[str, str], *, code: str = "invalid_time_entry") -> None:
        super().__init__(message, code=code)
        self.fields = dict(fields)


class TimeLocked(Conflict):
    """The month was billed by a locked run: no new or corrected time (the run is named)."""

    code = "locked_month"


_FIELD_OF = {"started_at": "started_at", "minutes": "minutes", "seconds": "minutes", "program": "program"}


def _record_for(patient: Any, practitioner: str, given: TimeInput, entry_id: str) -> dict[str, Any]:
    fields: dict[str, str] = {}
    try:
        local = datetime.fromisoformat(given.started_local.strip())
    except ValueError:
        fields["started_at"] = "Give the date and time the work started."
        local = None
    if local is not None and local.tzinfo is None:
        local = local.replace(tzinfo=ZoneInfo(patient.timezone))
    text = given.minutes.strip()
    if not text.isdigit() or int(text) < 1:
        fields["minutes"] = "Give the whole minutes spent, 1 or more."
    if given.interactive and not given.modality:
        fields["modality"] = "Say how the live call took place."
    if fields:
        raise TimeRefused("the time entry has problems; see the fields", fields)
    record: dict[str, Any] = {
        "entry_id": entry_id,
        "patient_id": patient.patient_id,
        "practitioner_id": practitioner,
        "program": given.program.strip().upper(),
        "started_at": local.isoformat() if local else "",
        "minutes": int(text),
        "activity": given.activity.strip() or "care management",
        "interactive": given.interactive,
        "modality": given.modality.strip(),
        "note": given.note.strip(),
    }
    return record


def _refusal(problems: list[Problem]) -> InvalidInput:
    locked = [p for p in problems if p.code == "locked_month"]
    if locked:
        return TimeLocked(locked[0].message, hint="time in a locked month needs an amendment of its claims")
    fields: dict[str, str] = {}
    for p in problems:
        name = (p.field or "").strip("/")
        fields.setdefault(_FIELD_OF.get(name, "note" if name == "note" else "activity"), p.message)
    return TimeRefused("the time entry was not saved: " + "; ".join(p.message for p in problems[:3]), fields)


def log_time(
    engine: Engine,
    actor: Actor,
    patient_id: str,
    given: TimeInput,
    *,
    now: datetime | None = None,
    touched: Touched | None = None,
) -> str:
    """Store one time entry as the user's linked practitioner; answers its entry id."""
    from caretally.ingest.time_entries import create_time_entries

    when = now or _now()
    with engine.connect() as conn:
        patient = require_patient(conn, actor.org_id, patient_id)
        practitioner = _linked_practitioner(conn, actor)
    if practitioner is None:
        raise Conflict(NO_PRACTITIONER, hint=NO_PRACTITIONER_HINT, code="no_practitioner")
    entry_id = f"web-{uuid.uuid4().hex[:20]}"
    record = _record_for(patient, practitioner, given, entry_id)

    def work(note: audit.AuditNote) -> str:
        result = create_time_entries(engine, actor.org_id, [record], now=when, actor=actor.actor)
        if not result.ok():
            raise _refusal(result.problems)
        note.touch([patient_id])
        note.detail = {"entry_id": entry_id, "minutes": record["minutes"]}
        return entry_id

    done = audit.audited_call(engine, actor, "time.create", f"patients/{patient_id}/time", work)
    after_commit(touched, actor.org_id)
    return done


def time_entry(engine: Engine, actor: Actor, entry_id: str) -> TimeRecord:
    t = schema.time_entries
    with audit.audited(engine, actor, "time.read", f"time-entries/{entry_id}") as (conn, note):
        row = conn.execute(select(t).where(t.c.org_id == actor.org_id, t.c.entry_id == entry_id)).first()
        if row is None:
            raise NotFound("no such time entry", code="no_such_entry")
        found = _entries(conn, actor.org_id, row.patient_id, row.local_date, row.local_date)
        note.touch([row.patient_id])
    return next(e for e in found if e.entry_id == entry_id)


def amend_time(
    engine: Engine,
    actor: Actor,
    entry_id: str,
    given: TimeInput,
    *,
    now: datetime | None = None,
    touched: Touched | None = None,
) -> str:
    """Correct a stored entry: an audited amendment (old and new values, who); a locked
    month — before or after the change — refuses it, naming the run. Answers the patient id."""
    from caretally.ingest.time_entries import amend_time_entry

    when = now or _now()
    t = schema.time_entries
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.org_id == actor.org_id, t.c.entry_id == entry_id)).first()
        if row is None:
            raise NotFound("no such time entry", code="no_such_entry")
        patient = require_patient(conn, actor.org_id, row.patient_id)
    record = _record_for(patient, row.practitioner_id, given, entry_id)
    changes = {k: v for k, v in record.items() if k not in ("entry_id", "patient_id", "practitioner_id")}

    def work(note: audit.AuditNote) -> str:
        result = amend_time_entry(engine, actor.org_id, entry_id, changes, actor=actor.actor, now=when)
        if not result.ok():
            raise _refusal(result.problems)
        note.touch([row.patient_id])
        note.detail = {"entry_id": entry_id, "outcome": result.items[0].status if result.items else ""}
        return str(row.patient_id)

    done = audit.audited_call(engine, actor, "time.amend", f"time-entries/{entry_id}", work)
    after_commit(touched, actor.org_id)
    return done


# --------------------------------------------------------------------------------------
# Linking users to practitioners (admin)
# --------------------------------------------------------------------------------------


def link_practitioner(engine: Engine, actor: Actor, user_id: int, practitioner_id: str | None) -> None:
    """Set (or clear, with ``None``) the practitioner a user logs time as."""
    t, p, u = schema.user_practitioners, schema.practitioners, schema.users
    with audit.audited(engine, actor, "user.practitioner", f"users/{user_id}") as (conn, note):
        if (
            conn.execute(
                select(u.c.user_id).where(u.c.org_id == actor.org_id, u.c.user_id == user_id)
            ).first()
            is None
        ):
            raise NotFound("no such user", code="no_such_user")
        conn.execute(delete(t).where(t.c.org_id == actor.org_id, t.c.user_id == user_id))
        if practitioner_id:
            known = conn.execute(
                select(p.c.practitioner_id).where(
                    and_(p.c.org_id == actor.org_id, p.c.practitioner_id == practitioner_id)
                )
            ).first()
            if known is None:
                raise InvalidInput(f"there is no practitioner {practitioner_id}", code="no_such_practitioner")
            conn.execute(
                insert(t).values(org_id=actor.org_id, user_id=user_id, practitioner_id=practitioner_id)
            )
        note.detail = {"user_id": user_id, "practitioner_id": practitioner_id}


def linked_practitioners(engine: Engine, org_id: str) -> dict[int, str]:
    t = schema.user_practitioners
    with engine.connect() as conn:
        return dict(conn.execute(select(t.c.user_id, t.c.practitioner_id).where(t.c.org_id == org_id)).all())


def practitioner_choices(engine: Engine, org_id: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        people = _practitioners(conn, org_id)
    return sorted(((k, f"{n} ({c})") for k, (n, c) in people.items()), key=lambda x: x[1])


def today_in(tz: str, now: datetime | None = None) -> date:
    return (now or _now()).astimezone(ZoneInfo(tz)).date()


def local_input(instant: datetime, tz: str) -> str:
    """An instant as the ``datetime-local`` value of the patient's zone (``YYYY-MM-DDTHH:MM``)."""
    return instant.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%dT%H:%M")

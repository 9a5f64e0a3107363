"""Per-patient, per-month facts, aggregated inside the database.

The expensive part — turning millions of readings into "which local dates had a
qualifying reading" — is one GROUP BY in SQL that returns one row per patient, program
and qualification category with the distinct ``date|device`` pairs concatenated. Python
then only slices those small day sets into 30-day periods. Time entries are few (a
handful per patient-month) and come back as rows, because every entry id is evidence.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, TypeVar

from sqlalchemy import (
    Engine,
    String,
    and_,
    bindparam,
    case,
    cast,
    false,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from caretally.dates import periods_ending_in, thirty_day_period
from caretally.ingest.values import MAX_SECONDS
from caretally.model import (
    BilledCode,
    DeviceFact,
    EnrollmentFact,
    Modality,
    PatientMonthFacts,
    Payer,
    PerformerClass,
    Period,
    Program,
    ProgramFacts,
    TimeFact,
    VisitFact,
)
from caretally.store import schema

T = TypeVar("T")

#: Which patients a query covers: all (None), a set of ids, or an inclusive id range.
Scope = set[str] | tuple[str, str] | None
#: Patients per batch: facts for a batch are built, used and dropped before the next, so
#: memory stays flat however large the practice is.
BATCH = 2000
#: Up to this many patients named by a caller (explain, a patient page, scenarios, the
#: patients an incremental run or the kept worklist re-evaluates) are asked for by id; more
#: are read with the organization and filtered, which is cheaper then. It was 500: 1% of a
#: 100,000-patient practice (683 touched) then read the whole organization's facts.
FEW_PATIENTS = 5000


#: Ids bound per statement when a large named set of patients is asked for in slices.
ID_SLICE = 10_000


def _few(patients: set[str] | None) -> bool:
    """Whether the caller named few enough patients to ask the store for them by id."""
    return patients is not None and len(patients) <= FEW_PATIENTS


#: Up to this many of those patients' entries, their overlaps are looked up by time (one
#: index range per entry); more, and their performers' entries over the window are
#: read at once. An incremental run's 1% of 10,000 patients has about 400 entries, and the
#: performers' whole month (all of the organization's entries, 42,000) cost it 0.4 s.
FEW_ENTRIES = 5000

#: Device-supply windows ending in a month can start up to 29 days before it.
LOOKBACK = timedelta(days=29)
DEVICE_PROGRAMS = (Program.RPM, Program.RTM)
#: Programs whose episode has an initial month (the first month of care-manager activity).
EPISODE_PROGRAMS = (Program.COCM,)
QUALIFYING = "qualifying"


@dataclass(frozen=True, slots=True)
class FactsOptions:
    """The rule-year options that change what the facts are (read by the caller).

    ``anchor`` decides where 30-day device periods start (``enrollment_start`` or
    ``first_reading``); ``manual_programs`` are the programs whose patient-reported
    (manual) readings count as data — the rule-year's global ``manual_readings_count``.
    """

    anchor: str = "enrollment_start"
    manual_programs: frozenset[str] = frozenset()
    setup_codes: frozenset[str] = frozenset()  # once billed, earlier periods' days are not needed
    period_days: int = 30  # the rule-year's device_period_days

    @property
    def lookback(self) -> timedelta:
        """A device period ending in a month can start this long before the month."""
        return timedelta(days=self.period_days - 1)


def _in_scope(column: Any, scope: set[str] | tuple[str, str]) -> ColumnElement[bool]:
    if isinstance(scope, tuple):
        return column.between(scope[0], scope[1])
    return column.in_(sorted(scope))


def _group_concat(dialect: str, expr: ColumnElement[str]) -> ColumnElement[str]:
    if dialect == "postgresql":
        return func.string_agg(expr.distinct(), literal(","))
    return func.group_concat(expr.distinct())


def _enrollment_rows(
    engine: Engine,
    org_id: str,
    window_start: date,
    month: Period,
    id_range: tuple[str, str] | None = None,
    patients: set[str] | None = None,
) -> list[EnrollmentFact]:
    e, p = schema.enrollments, schema.practitioners
    stmt = (
        select(e, p.c.npi, p.c.credential)
        .join(p, and_(p.c.org_id == e.c.org_id, p.c.practitioner_id == e.c.billing_practitioner_id))
        .where(
            e.c.org_id == org_id,
            e.c.start_date <= month.end,
            or_(e.c.end_date.is_(None), e.c.end_date >= window_start),
        )
        .order_by(e.c.patient_id, e.c.start_date, e.c.enrollment_id)
    )
    if id_range is not None:
        stmt = stmt.where(e.c.patient_id.between(*id_range))
    if _few(patients):
        # One patient's page or explain must not read the whole organization's enrollments.
        stmt = stmt.where(e.c.patient_id.in_(sorted(patients)))
    with engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    return [
        EnrollmentFact(
            enrollment_id=r["enrollment_id"],
            patient_id=r["patient_id"],
            program=Program(r["program"]),
            start_date=r["start_date"],
            end_date=r["end_date"],
            consent_date=r["consent_date"],
            billing_practitioner_id=r["billing_practitioner_id"],
            billing_npi=r["npi"],
            billing_credential=r["credential"],
            diagnoses=tuple(d for d in r["diagnoses"].split(";") if d),
            complexity=r["complexity"],
            order_date=r["order_date"],
            established_patient=None if r["established_patient"] is None else bool(r["established_patient"]),
            initiating_visit_date=r["initiating_visit_date"],
            qmb=None if r["qmb"] is None else bool(r["qmb"]),
            authorization_id=r["authorization_id"],
            authorization_start=r["authorization_start"],
            authorization_end=r["authorization_end"],
        )
        for r in rows
    ]


def _day_sets(
    engine: Engine, org_id: str, start: date, end: date, options: FactsOptions, patients: Scope
) -> dict[tuple[str, Program, str], dict[date, set[str]]]:
    """(patient, program, category) → local date → device ids, for readings in [start, end].

    Category is ``qualifying`` or the reason a day's readings do not count, so negative
    decisions can name the days that were excluded and why.
    """
    r, d = schema.readings, schema.devices
    manual_counts = _manual_counts(d, options)
    category = case(
        (d.c.medical_device.is_(False), literal("non_medical_device")),
        (_outside_assignment(r, d), literal("device_not_with_patient")),
        (and_(r.c.transmission == "manual", ~manual_counts), literal("manual")),
        else_=literal(QUALIFYING),
    ).label("category")
    dialect = engine.dialect.name
    pair = cast(r.c.local_date, String) + literal("|") + r.c.device_id
    inner = (
        select(r.c.patient_id, d.c.program, category, pair.label("pair"))
        .join(d, and_(d.c.org_id == r.c.org_id, d.c.device_id == r.c.device_id))
        .where(r.c.org_id == org_id, r.c.local_date >= start, r.c.local_date <= end)
    )
    if patients is not None:
        inner = inner.where(_in_scope(r.c.patient_id, patients))
    sub = inner.subquery()
    stmt = select(
        sub.c.patient_id, sub.c.program, sub.c.category, _group_concat(dialect, sub.c.pair)
    ).group_by(sub.c.patient_id, sub.c.program, sub.c.category)
    out: dict[tuple[str, Program, str], dict[date, set[str]]] = {}
    with engine.connect() as conn:
        for patient_id, program, cat, pairs in conn.execute(stmt):
            days: dict[date, set[str]] = defaultdict(set)
            for item in (pairs or "").split(","):
                if not item:
                    continue
                day_text, device_id = item.split("|", 1)
                days[date.fromisoformat(day_text[:10])].add(device_id)
            out[(patient_id, Program(program), cat)] = days
    return out


def _manual_counts(d: Any, options: FactsOptions) -> ColumnElement[bool]:
    """Whether a device's program lets its patient-reported readings count."""
    if not options.manual_programs:
        return false()
    return d.c.program.in_(sorted(options.manual_programs))


def _outside_assignment(r: Any, d: Any) -> ColumnElement[bool]:
    """A reading dated before the device was assigned or after it was returned.

    Device supply pays for a device the patient has; data from before delivery or after
    return is not this patient's monitoring, whatever the device reported.
    """
    return or_(
        r.c.local_date < d.c.assigned_date,
        and_(d.c.returned_date.is_not(None), r.c.local_date > d.c.returned_date),
    )


def _first_reading_days(
    engine: Engine, org_id: str, options: FactsOptions, patients: set[str] | None = None
) -> dict[str, date]:
    """First qualifying local date on or after each enrollment's start, per enrollment.

    Feeds the ``first_reading`` anchor: some payers count 30-day periods from the first
    day of data rather than from enrollment. A few named patients are asked for by id
    (each enrollment's answer depends on its own patient's readings only).
    """
    r, d, e = schema.readings, schema.devices, schema.enrollments
    manual_ok = or_(r.c.transmission == "auto", _manual_counts(d, options))
    stmt = (
        select(e.c.enrollment_id, func.min(r.c.local_date))
        .join(d, and_(d.c.org_id == r.c.org_id, d.c.device_id == r.c.device_id))
        .join(
            e,
            and_(
                e.c.org_id == r.c.org_id,
                e.c.patient_id == r.c.patient_id,
                e.c.program == d.c.program,
                r.c.local_date >= e.c.start_date,
                or_(e.c.end_date.is_(None), r.c.local_date <= e.c.end_date),
            ),
        )
        .where(r.c.org_id == org_id, d.c.medical_device.is_(True), manual_ok, ~_outside_assignment(r, d))
        .group_by(e.c.enrollment_id)
    )
    if _few(patients):
        stmt = stmt.where(r.c.patient_id.in_(sorted(patients)))
    with engine.connect() as conn:
        return {eid: day for eid, day in conn.execute(stmt)}


def _first_activity(engine: Engine, org_id: str, enrollments: list[EnrollmentFact]) -> dict[str, date]:
    """First local date of a time entry naming the enrollment's program inside the episode.

    Only episode programs (CoCM) need it: their first calendar month of care-manager
    activity bills the initial-month code, whatever month is billed now. Entries without a
    program are not looked at: which program they went to is each month's allocation.
    """
    wanted = [e for e in enrollments if e.program in EPISODE_PROGRAMS]
    if not wanted:
        return {}
    t, e = schema.time_entries, schema.enrollments
    stmt = (
        select(e.c.enrollment_id, func.min(t.c.local_date))
        .join(
            t,
            and_(
                t.c.org_id == e.c.org_id,
                t.c.patient_id == e.c.patient_id,
                t.c.program == e.c.program,
                t.c.local_date >= e.c.start_date,
                or_(e.c.end_date.is_(None), t.c.local_date <= e.c.end_date),
            ),
        )
        .where(e.c.org_id == org_id, e.c.enrollment_id.in_(sorted({w.enrollment_id for w in wanted})))
        .group_by(e.c.enrollment_id)
    )
    with engine.connect() as conn:
        return {eid: day for eid, day in conn.execute(stmt)}


def _devices(engine: Engine, org_id: str, patients: Scope) -> dict[str, list[DeviceFact]]:
    d = schema.devices
    # Ordered by patient only, each patient's devices sorted here: asked for ``patient_id,
    # device_id``, SQLite (no statistics) walks the organization's whole primary key
    # (org_id, device_id) to skip a sort, instead of the patient's index entries.
    stmt = select(d).where(d.c.org_id == org_id).order_by(d.c.patient_id)
    if patients is not None:
        stmt = stmt.where(_in_scope(d.c.patient_id, patients))
    out: dict[str, list[DeviceFact]] = defaultdict(list)
    with engine.connect() as conn:
        rows = sorted(conn.execute(stmt).mappings(), key=lambda row: (row["patient_id"], row["device_id"]))
        for row in rows:
            out[row["patient_id"]].append(
                DeviceFact(
                    device_id=row["device_id"],
                    program=Program(row["program"]),
                    kind=row["kind"],
                    medical_device=bool(row["medical_device"]),
                    setup_date=row["setup_date"],
                    assigned_date=row["assigned_date"],
                    returned_date=row["returned_date"],
                )
            )
    return out


def _time(
    engine: Engine,
    org_id: str,
    start: date,
    end: date,
    patients: Scope,
    clashes: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, list[TimeFact]]:
    t, p = schema.time_entries, schema.practitioners
    stmt = (
        select(
            t.c.entry_id,
            t.c.patient_id,
            t.c.local_date,
            t.c.seconds,
            t.c.practitioner_id,
            p.c.performer_class,
            p.c.credential,
            t.c.program,
            t.c.interactive,
            t.c.modality,
            t.c.started_at,
            p.c.employment,
        )
        .join(p, and_(p.c.org_id == t.c.org_id, p.c.practitioner_id == t.c.practitioner_id))
        .where(t.c.org_id == org_id, t.c.local_date >= start, t.c.local_date <= end)
        .order_by(t.c.patient_id, t.c.started_at, t.c.entry_id)
    )
    if patients is not None:
        stmt = stmt.where(_in_scope(t.c.patient_id, patients))
    out: dict[str, list[TimeFact]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            out[row.patient_id].append(
                TimeFact(
                    entry_id=row.entry_id,
                    local_date=row.local_date,
                    seconds=int(row.seconds),
                    practitioner_id=row.practitioner_id,
                    performer=PerformerClass(row.performer_class),
                    credential=row.credential,
                    program=Program(row.program) if row.program else None,
                    interactive=bool(row.interactive),
                    modality=Modality(row.modality) if row.modality else None,
                    started_at=row.started_at,
                    other_patient_overlaps=(clashes or {}).get(row.entry_id, ()),
                    employment=row.employment or "employee",
                )
            )
    return out


def _cross_patient_overlaps(
    engine: Engine, org_id: str, start: date, end: date, patients: set[str] | None
) -> dict[str, tuple[str, ...]]:
    """Entry id → entries of *other* patients by the same performer whose intervals overlap.

    One performer cannot be with two patients at once, so such pairs are a compliance
    warning. A month run sweeps every entry of the organization once. For a few patients
    (explain, a patient page) only the entries that can overlap theirs are read: a busy
    performer's whole month would otherwise cost seconds for one patient's read.
    """
    t = schema.time_entries
    stmt = select(t.c.entry_id, t.c.patient_id, t.c.practitioner_id, t.c.started_at, t.c.seconds).where(
        t.c.org_id == org_id,
        t.c.local_date >= start - timedelta(days=1),
        t.c.local_date <= end + timedelta(days=1),
        t.c.started_at.is_not(None),
    )
    if _few(patients):
        return _few_patient_overlaps(engine, org_id, start, end, patients, stmt)
    if patients is not None:
        # The performers first, then their entries: as one ``IN (subquery)`` PostgreSQL
        # planned it at 38 s for 69 patients of 10,000 (the incremental month run). The ids
        # go in slices: a worklist's next-month pass names every device patient, and one
        # statement may bind at most 65,535 values on PostgreSQL (32,766 on SQLite).
        ids = sorted(patients)
        found: set[str] = set()
        with engine.connect() as conn:
            for i in range(0, len(ids), ID_SLICE):
                theirs = (
                    select(t.c.practitioner_id)
                    .where(t.c.org_id == org_id, t.c.patient_id.in_(ids[i : i + ID_SLICE]))
                    .where(t.c.local_date >= start, t.c.local_date <= end)
                    .distinct()
                )
                found.update(p for (p,) in conn.execute(theirs) if p is not None)
        performers = sorted(found)
        if not performers:
            return {}
        stmt = stmt.where(t.c.practitioner_id.in_(performers))
    with engine.connect() as conn:
        return _overlap_sweep(conn.execute(stmt))


def _few_patient_overlaps(
    engine: Engine, org_id: str, start: date, end: date, patients: set[str], window: Any
) -> dict[str, tuple[str, ...]]:
    """The overlaps of a few patients' entries (dated ``start``..``end``), read by interval.

    An entry of another patient overlaps one of theirs only if it starts before that entry
    ends and at most ``MAX_SECONDS`` (the longest entry the store accepts) before it
    starts, so those ranges of the performer's entries (``ix_time_performer_start``) are
    all the sweep needs. Pairs are judged by the same sweep as the whole-month build, whose
    verdict on a pair depends only on the two entries, so the answers are the same.
    """
    t = schema.time_entries
    own = window.where(t.c.patient_id.in_(sorted(patients)), t.c.local_date >= start, t.c.local_date <= end)
    with engine.connect() as conn:
        mine = conn.execute(own).all()
        if len(mine) > FEW_ENTRIES:  # many entries: one pass over their performers is cheaper
            theirs = sorted({row.practitioner_id for row in mine})
            return _overlap_sweep(conn.execute(window.where(t.c.practitioner_id.in_(theirs))))
        rows = {row.entry_id: row for row in mine}
        windows = _entry_windows(mine)
        if windows:
            slots = min(len(windows), _RANGES_PER_QUERY)
            query = _windows_query(engine.dialect.name, window, slots)
            for at in range(0, len(windows), slots):
                part = windows[at : at + slots]
                part += [part[-1]] * (slots - len(part))  # a repeated window reads nothing new
                params: dict[str, Any] = {}
                for i, (performer, low, high, after) in enumerate(part):
                    params.update({f"wp{i}": performer, f"wl{i}": low, f"wh{i}": high, f"wa{i}": after})
                rows.update((other.entry_id, other) for other in conn.execute(query, params))
    return _overlap_sweep(rows.values())


#: Range selects joined by UNION ALL in one statement (SQLite allows 500 compound terms).
_RANGES_PER_QUERY = 100


def _entry_windows(entries: Any) -> list[tuple[str, Any, Any, Any]]:
    """(performer, low, high, ends after) for each entry: where its overlaps can be.

    An entry of another patient overlaps one starting at ``s`` and lasting ``n`` seconds
    only if it starts in ``[s - MAX_SECONDS, s + n]`` and ends after ``s``. One window per
    entry, not merged: a merged window can only ask "ends after" its earliest start, and
    at 100,000 patients the touched 1%'s merged windows spanned days of each performer's
    entries (104,000 rows read back and swept to find 2,400 entries' overlaps). The
    sweep judges every pair exactly, so the windows only need to cover, not to be tight.
    """
    reach = timedelta(seconds=MAX_SECONDS)
    return [
        (
            row.practitioner_id,
            row.started_at - reach,
            row.started_at + timedelta(seconds=int(row.seconds)),
            row.started_at - _SLACK,
        )
        for row in sorted(entries, key=lambda r: (r.practitioner_id, r.started_at))
    ]


def _windows_query(dialect: str, window: Any, slots: int) -> Any:
    """``slots`` index ranges of ``window`` as one UNION ALL, the ranges as bound parameters.

    Built once per lookup and executed per chunk of windows: building a select per
    window cost more than reading them (1.2 s for 2,400 windows at 100,000 patients).
    """
    t = schema.time_entries
    at = t.c.started_at.type
    ranges = [
        window.where(
            t.c.practitioner_id == bindparam(f"wp{i}", type_=t.c.practitioner_id.type),
            t.c.started_at >= bindparam(f"wl{i}", type_=at),
            t.c.started_at <= bindparam(f"wh{i}", type_=at),
            _ends_after(dialect, t, bindparam(f"wa{i}", type_=at)),
        )
        for i in range(slots)
    ]
    return ranges[0] if slots == 1 else union_all(*ranges)


#: Margin on the SQL "ends after" test: it only thins the candidates (the sweep judges
#: every pair exactly), so float rounding in it must never drop an entry that overlaps.
_SLACK = timedelta(seconds=1)


def _ends_after(dialect: str, t: Any, bound: ColumnElement[Any]) -> ColumnElement[bool]:
    """Whether an entry ends after ``bound`` (start plus its seconds), in SQL."""
    if dialect == "postgresql":
        return t.c.started_at + func.make_interval(0, 0, 0, 0, 0, 0, t.c.seconds) > bound
    return func.julianday(t.c.started_at) + t.c.seconds / 86400.0 > func.julianday(bound)


def _overlap_sweep(rows: Any) -> dict[str, tuple[str, ...]]:
    """Sweep each performer's entries in start order: every pair of patients that overlaps."""
    by_performer: dict[str, list[tuple[Any, Any, str, str]]] = defaultdict(list)
    for entry_id, patient_id, practitioner_id, started, seconds in rows:
        ended = started + timedelta(seconds=int(seconds))
        by_performer[practitioner_id].append((started, ended, entry_id, patient_id))
    found: dict[str, set[str]] = defaultdict(set)
    for entries in by_performer.values():
        entries.sort()
        active: list[tuple[Any, Any, str, str]] = []
        for item in entries:
            started, _, entry_id, patient_id = item
            active = [a for a in active if a[1] > started]
            for a in active:
                if a[3] != patient_id:
                    found[entry_id].add(a[2])
                    found[a[2]].add(entry_id)
            active.append(item)
    return {k: tuple(sorted(v)) for k, v in found.items()}


def _patients(
    engine: Engine, org_id: str, ids: set[str], memo: dict[Any, Any] | None = None
) -> dict[str, tuple[Payer, str]]:
    pt = schema.patients
    stmt = select(pt.c.patient_id, pt.c.payer, pt.c.timezone).where(pt.c.org_id == org_id)

    def read() -> dict[str, tuple[Payer, str]]:
        with engine.connect() as conn:
            return {pid: (Payer(payer), tz) for pid, payer, tz in conn.execute(stmt)}

    if memo is None and _few(ids):  # a few patients, once: ask for them only
        stmt = stmt.where(pt.c.patient_id.in_(sorted(ids)))
        return read()
    known = _shared(memo, ("patients", org_id), read)
    return {pid: person for pid, person in known.items() if pid in ids}


def _deaths(
    engine: Engine, org_id: str, memo: dict[Any, Any] | None = None, patients: set[str] | None = None
) -> dict[str, date]:
    """Patient id → date of death, for the patients who have one (few; read once per run).

    A few named patients read once (no ``memo``) are asked for by id: a patient's read must
    not scan the organization's patients.
    """
    pt = schema.patients
    stmt = select(pt.c.patient_id, pt.c.death_date).where(pt.c.org_id == org_id, pt.c.death_date.is_not(None))

    def read() -> dict[str, date]:
        with engine.connect() as conn:
            return {pid: day for pid, day in conn.execute(stmt)}

    if memo is None and _few(patients):
        stmt = stmt.where(pt.c.patient_id.in_(sorted(patients)))
        return read()
    return _shared(memo, ("deaths", org_id), read)


def _visits(engine: Engine, org_id: str, end: date, patients: Scope) -> dict[str, list[VisitFact]]:
    """Every visit of the patients up to ``end``: an initiating visit may be years old."""
    v = schema.visits
    stmt = (
        select(
            v.c.patient_id,
            v.c.visit_id,
            v.c.visit_date,
            v.c.practitioner_id,
            v.c.code,
            v.c.place_of_service,
            v.c.telehealth,
        )
        .where(v.c.org_id == org_id, v.c.visit_date <= end)
        .order_by(v.c.patient_id, v.c.visit_date, v.c.visit_id)
    )
    if patients is not None:
        stmt = stmt.where(_in_scope(v.c.patient_id, patients))
    out: dict[str, list[VisitFact]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            out[row.patient_id].append(
                VisitFact(
                    row.visit_id,
                    row.visit_date,
                    row.practitioner_id,
                    row.code,
                    row.place_of_service,
                    bool(row.telehealth),
                )
            )
    return out


def _shared(memo: dict[Any, Any] | None, key: Any, make: Callable[[], T]) -> T:
    """``make()``, once per ``memo`` (a month run's calls share one); every time without one."""
    if memo is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]  # type: ignore[no-any-return]


def _billed_history(
    engine: Engine, org_id: str, before: date, patients: Scope
) -> dict[str, list[BilledCode]]:
    """Lines of the current run of each earlier month: what has already been billed.

    Once-per-episode rules and the one-practitioner rule across months read it;
    superseded and voided runs are skipped and a month never billed contributes nothing.
    """
    runs, lines = schema.billing_runs, schema.claim_lines
    live = runs.c.status.not_in(("superseded", "void"))
    newest = (
        select(runs.c.month, func.max(runs.c.created_at).label("created_at"))
        .where(runs.c.org_id == org_id, runs.c.month < before.strftime("%Y-%m"), live)
        .group_by(runs.c.month)
        .subquery()
    )
    stmt = (
        select(
            lines.c.patient_id,
            lines.c.code,
            lines.c.date_of_service,
            lines.c.enrollment_id,
            lines.c.run_id,
            lines.c.period_start,
            lines.c.period_end,
            runs.c.month,
            lines.c.line_key,
            lines.c.units,
        )
        .join(runs, runs.c.run_id == lines.c.run_id)
        .join(newest, and_(newest.c.month == runs.c.month, newest.c.created_at == runs.c.created_at))
        .where(runs.c.org_id == org_id, live)
    )
    if patients is not None:
        stmt = stmt.where(_in_scope(lines.c.patient_id, patients))
    out: dict[str, list[BilledCode]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            out[row.patient_id].append(
                BilledCode(
                    row.code,
                    row.date_of_service,
                    row.enrollment_id,
                    row.run_id,
                    row.period_start,
                    row.period_end,
                    row.month,
                    row.line_key,
                    int(row.units),
                )
            )
    return out


def _setup_day(enrollment: EnrollmentFact, devices: list[DeviceFact]) -> date | None:
    """The first set-up date of a device of the enrollment's program inside the enrollment."""
    days = [
        d.setup_date
        for d in devices
        if d.program == enrollment.program
        and d.setup_date is not None
        and d.setup_date >= enrollment.start_date
        and (enrollment.end_date is None or d.setup_date <= enrollment.end_date)
    ]
    return min(days) if days else None


def _prior_periods(
    enrollment: EnrollmentFact, anchor: date | None, month: Period, setup: date | None, length: int
) -> tuple[Period, ...]:
    """The episode's 30-day periods that end before this month's and on or after the set-up."""
    if anchor is None or setup is None or enrollment.program not in DEVICE_PROGRAMS:
        return ()
    out: list[Period] = []
    # Periods ending before the set-up are skipped: start at the first one that reaches it
    # (a years-long episode would otherwise walk every period since its start).
    index = max(0, -(-((setup - anchor).days - (length - 1)) // length))
    while True:
        p = thirty_day_period(anchor, index, length)
        if p.end >= month.start:
            return tuple(out)
        if p.end >= setup:
            out.append(p)
        index += 1


def _program_facts(
    enrollment: EnrollmentFact,
    month: Period,
    anchor: date | None,
    day_sets: dict[tuple[str, Program, str], dict[date, set[str]]],
    devices: list[DeviceFact],
    prior: tuple[tuple[Period, ...], tuple[date, ...]] = ((), ()),
    data_from: date | None = None,
    length: int = 30,
    first_activity: date | None = None,
) -> ProgramFacts:
    program = enrollment.program
    own_devices = tuple(d for d in devices if d.program == program)
    if program not in DEVICE_PROGRAMS or anchor is None:
        return ProgramFacts(enrollment, (), {}, own_devices, first_activity=first_activity)
    periods = tuple(p for p in periods_ending_in(anchor, month, length) if p.end >= enrollment.start_date)
    if not periods:
        return ProgramFacts(enrollment, (), {}, own_devices, data_from=data_from)
    lo, hi = periods[0].start, periods[-1].end
    end = enrollment.end_date

    def inside(day: date) -> bool:
        return lo <= day <= hi

    def enrolled(day: date) -> bool:
        return day >= enrollment.start_date and (end is None or day <= end)

    qualifying = day_sets.get((enrollment.patient_id, program, QUALIFYING), {})
    data_days = {
        day: tuple(sorted(devs)) for day, devs in sorted(qualifying.items()) if inside(day) and enrolled(day)
    }
    excluded: dict[str, tuple[date, ...]] = {}
    outside = sorted(day for day in qualifying if inside(day) and not enrolled(day))
    if outside:
        excluded["outside_enrollment"] = tuple(outside)
    for reason in ("manual", "non_medical_device", "device_not_with_patient"):
        days = day_sets.get((enrollment.patient_id, program, reason), {})
        hits = sorted(day for day in days if inside(day) and day not in data_days)
        if hits:
            excluded[reason] = tuple(hits)
    return ProgramFacts(enrollment, periods, data_days, own_devices, excluded, prior[0], prior[1], data_from)


def _data_from(engine: Engine, org_id: str) -> date | None:
    """The first local date of any reading the organization holds: where its data begins."""
    r = schema.readings
    with engine.connect() as conn:
        return conn.execute(select(func.min(r.c.local_date)).where(r.c.org_id == org_id)).scalar()


def _prior_days(
    engine: Engine,
    org_id: str,
    wanted: dict[str, tuple[EnrollmentFact, tuple[Period, ...]]],
    options: FactsOptions,
) -> dict[str, tuple[date, ...]]:
    """Qualifying days in the earlier periods of the episodes whose set-up period is in question."""
    if not wanted:
        return {}
    start = min(periods[0].start for _, periods in wanted.values())
    end = max(periods[-1].end for _, periods in wanted.values())
    patients = {e.patient_id for e, _ in wanted.values()}
    sets = _day_sets(engine, org_id, start, end, options, patients)
    out: dict[str, tuple[date, ...]] = {}
    for eid, (e, periods) in wanted.items():
        days = sets.get((e.patient_id, e.program, QUALIFYING), {})
        lo, hi = periods[0].start, periods[-1].end
        out[eid] = tuple(
            sorted(
                d
                for d in days
                if lo <= d <= hi and d >= e.start_date and (e.end_date is None or d <= e.end_date)
            )
        )
    return out


def _touches(enrollment: EnrollmentFact, month: Period, lookback: timedelta = LOOKBACK) -> bool:
    """Whether the enrollment can have anything billed in ``month``.

    Calendar-month programs need a day of the month inside the enrollment; device
    programs also count when a 30-day period that closes in the month began while the
    enrollment was active (it may have ended days before the month started).
    """
    end = enrollment.end_date
    if end is None or end >= month.start:
        return True
    return enrollment.program in DEVICE_PROGRAMS and end >= month.start - lookback


def patients_in_month(
    engine: Engine,
    org_id: str,
    month: Period,
    lookback: timedelta = LOOKBACK,
    patients: set[str] | None = None,
) -> list[str]:
    """Sorted ids of the patients with an enrollment that can bill something in ``month``.

    The conditions of :func:`_enrollment_rows` and :func:`_touches` in one query that
    returns ids only (an incremental run asks this for a whole practice every time); a few
    named ``patients`` are asked for by id.
    """
    e, p = schema.enrollments, schema.practitioners
    stmt = (
        select(e.c.patient_id)
        .distinct()
        .join(p, and_(p.c.org_id == e.c.org_id, p.c.practitioner_id == e.c.billing_practitioner_id))
        .where(
            e.c.org_id == org_id,
            e.c.start_date <= month.end,
            or_(
                e.c.end_date.is_(None),
                e.c.end_date >= month.start,
                and_(
                    e.c.program.in_(sorted(x.value for x in DEVICE_PROGRAMS)),
                    e.c.end_date >= month.start - lookback,
                ),
            ),
        )
    )
    if _few(patients):
        assert patients is not None
        stmt = stmt.where(e.c.patient_id.in_(sorted(patients)))
    with engine.connect() as conn:
        return sorted(conn.execute(stmt).scalars())


def build_month_facts(
    engine: Engine,
    org_id: str,
    month: Period,
    *,
    as_of: date | None = None,
    options: FactsOptions | None = None,
    patients: set[str] | None = None,
    id_range: tuple[str, str] | None = None,
    payers: set[Payer] | None = None,
    memo: dict[Any, Any] | None = None,
) -> Iterator[PatientMonthFacts]:
    """Facts for every patient with an enrollment touching ``month``, in patient order.

    ``as_of`` defaults to the month's last day (a closed month); a worklist passes an
    earlier date so open periods come out as still reachable. ``patients`` narrows the
    run to some patients (explain, scenarios); ``id_range`` to an inclusive range of
    patient ids (one worker's share of a month run); ``payers`` to the patients of some
    payers (whose rule-year options are the ``options`` given).

    ``memo`` lets the calls of one month run share what does not depend on the patient
    range — the organization's cross-patient overlaps, where its data begins, who its
    patients are — so each range does not ask the whole organization again. Give a fresh
    dict per run: nothing in it is ever refreshed.
    """
    options = options or FactsOptions()
    as_of = as_of or month.end
    window_start = month.start - options.lookback
    enrollments = [
        e
        for e in _enrollment_rows(engine, org_id, window_start, month, id_range, patients)
        if (patients is None or e.patient_id in patients) and _touches(e, month, options.lookback)
    ]
    if not enrollments:
        return
    firsts = (
        _first_reading_days(engine, org_id, options, patients) if options.anchor == "first_reading" else {}
    )
    anchors: dict[str, date | None] = {}
    for e in enrollments:
        if options.anchor == "first_reading":
            anchors[e.enrollment_id] = firsts.get(e.enrollment_id)
        else:
            anchors[e.enrollment_id] = e.start_date
    by_patient: dict[str, list[EnrollmentFact]] = defaultdict(list)
    for e in enrollments:
        by_patient[e.patient_id].append(e)
    # A few named patients (an incremental run's touched ones) are asked for by id even
    # inside a month run's memo: the answer for them is the same, the read is O(them).
    people = _patients(engine, org_id, set(by_patient), None if _few(patients) else memo)
    if payers is not None:  # this pass covers only some payers (their options shape the facts)
        by_patient = defaultdict(list, {p: es for p, es in by_patient.items() if people[p][0] in payers})
        if not by_patient:
            return
    # Data dated after ``as_of`` is not known yet: a worklist "as of the 20th" must not see
    # readings or minutes logged on the 25th, even when they are already in the store.
    known_to = min(month.end, as_of)
    needs_history = any(e.program in DEVICE_PROGRAMS for es in by_patient.values() for e in es)
    data_from = None
    if needs_history:
        data_from = _shared(memo, ("data_from", org_id), lambda: _data_from(engine, org_id))
    clashes = _shared(
        memo,
        ("overlaps", org_id, window_start, known_to, None if patients is None else frozenset(patients)),
        lambda: _cross_patient_overlaps(engine, org_id, window_start, known_to, patients),
    )
    deaths = _deaths(engine, org_id, None if _few(patients) else memo, patients)
    ordered = sorted(by_patient)
    for start in range(0, len(ordered), BATCH):
        batch = ordered[start : start + BATCH]
        scope: set[str] | tuple[str, str] = set(batch) if patients is not None else (batch[0], batch[-1])
        day_sets = _day_sets(engine, org_id, window_start, known_to, options, scope)
        devices = _devices(engine, org_id, scope)
        time = _time(engine, org_id, window_start, known_to, scope, clashes)
        history = _billed_history(engine, org_id, month.start, scope)
        firsts_of = _first_activity(engine, org_id, [e for pid in batch for e in by_patient[pid]])
        visits = _visits(engine, org_id, known_to, scope)
        priors = _priors(
            engine, org_id, batch, by_patient, month, anchors, devices, history, data_from, options
        )
        for pid in batch:
            facts = _patient_facts(
                pid,
                people[pid],
                by_patient[pid],
                month,
                as_of,
                anchors,
                day_sets,
                devices,
                time,
                history,
                priors,
                data_from,
                options.period_days,
                firsts_of,
            )
            yield replace(facts, death_date=deaths.get(pid), visits=tuple(visits.get(pid, ())))


def _priors(
    engine: Engine,
    org_id: str,
    batch: list[str],
    by_patient: dict[str, list[EnrollmentFact]],
    month: Period,
    anchors: dict[str, date | None],
    devices: dict[str, list[DeviceFact]],
    history: dict[str, list[BilledCode]],
    data_from: date | None,
    options: FactsOptions,
) -> dict[str, tuple[tuple[Period, ...], tuple[date, ...]]]:
    """Earlier periods of each device episode, with their days where the set-up may lie there.

    Days are read only for episodes whose set-up is not yet billed and whose earlier periods
    end inside the data the organization holds: a long-running patient whose set-up lies
    before that costs no query.
    """
    out: dict[str, tuple[tuple[Period, ...], tuple[date, ...]]] = {}
    wanted: dict[str, tuple[EnrollmentFact, tuple[Period, ...]]] = {}
    for pid in batch:
        billed = {b.enrollment_id for b in history.get(pid, ()) if b.code in options.setup_codes}
        for e in by_patient[pid]:
            setup = _setup_day(e, devices.get(pid, []))
            periods = _prior_periods(e, anchors[e.enrollment_id], month, setup, options.period_days)
            if not periods:
                continue
            out[e.enrollment_id] = (periods, ())
            judged = [p for p in periods if data_from is not None and p.end >= data_from]
            if judged and e.enrollment_id not in billed:
                wanted[e.enrollment_id] = (e, tuple(judged))
    for eid, days in _prior_days(engine, org_id, wanted, options).items():
        out[eid] = (out[eid][0], days)
    return out


def _patient_facts(
    pid: str,
    person: tuple[Payer, str],
    enrollments: list[EnrollmentFact],
    month: Period,
    as_of: date,
    anchors: dict[str, date | None],
    day_sets: dict[tuple[str, Program, str], dict[date, set[str]]],
    devices: dict[str, list[DeviceFact]],
    time: dict[str, list[TimeFact]],
    history: dict[str, list[BilledCode]],
    priors: dict[str, tuple[tuple[Period, ...], tuple[date, ...]]],
    data_from: date | None,
    length: int,
    firsts: dict[str, date] | None = None,
) -> PatientMonthFacts:
    payer, tz = person
    programs = tuple(
        _program_facts(
            e,
            month,
            anchors[e.enrollment_id],
            day_sets,
            devices.get(pid, []),
            priors.get(e.enrollment_id, ((), ())),
            data_from,
            length,
            (firsts or {}).get(e.enrollment_id),
        )
        for e in enrollments
    )
    return PatientMonthFacts(
        patient_id=pid,
        payer=payer,
        timezone=tz,
        month=month,
        as_of=as_of,
        programs=programs,
        time=tuple(time.get(pid, ())),
        billed_history=tuple(history.get(pid, ())),
    )

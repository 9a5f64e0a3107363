"""Page records from what the service layer returns. Pure: no database, no request.

A route calls a service, then one function here, then renders ``pages/<name>.html`` with
``layout`` and ``page``. Keeping the assembly here (not in routes or templates) means a
page can be built and checked from real engine output in a test, with no server.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup, escape

from caretally.billing.run import LineChange, StoredRun
from caretally.leakage import BUCKETS, LeakageReport
from caretally.model import ClaimLine, Decision, Modality, PatientMonthFacts, Program, Status
from caretally.rules.params import RuleBook, RuleYear
from caretally.services.permissions import Permission, Role, allowed
from caretally.web import views
from caretally.web.charts import day_calendar, leakage_trend, minutes_bar, readings_chart
from caretally.web.nav import ROLE_LABELS
from caretally.web.phrasing import count, day_and_time, money, short_date
from caretally.web.templating import long_date, when
from caretally.web.viewmodels import (
    AdminPage,
    AlertRow,
    AlertsPage,
    AuditPage,
    Badge,
    Band,
    Cell,
    ChartPanel,
    Column,
    CompliancePage,
    DataTable,
    ErrorPage,
    Field,
    Form,
    JobProgress,
    LeakagePage,
    Link,
    LogTimePage,
    MeasureView,
    MonthClosePage,
    Option,
    PacketPage,
    Pager,
    PatientPage,
    PatientsPage,
    PracticeSettingsPage,
    SignInPage,
    Stat,
    Timer,
    TokenRow,
    Tone,
    UserRow,
    WorklistPage,
)
from caretally.web.views import ReadingRow, TimeLogRow
from caretally.worklist import WorklistRow

#: Where pages live; a route module can use the same names for its paths.
PATIENT_HREF = "/patients/{patient_id}"


def patient_href(patient_id: str) -> str:
    return PATIENT_HREF.format(patient_id=patient_id)


# --------------------------------------------------------------------------------------
# Records the service hands over for tables without an engine type
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientRow:
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
class AlertThreshold:
    """A practice's alert threshold (configuration, not medical advice).

    ``measure`` is a reading kind or one part of it (``blood_pressure.systolic``).
    """

    program: str
    measure: str
    band: Band
    patient_id: str | None = None  # a threshold for one patient overrides the practice's


@dataclass(frozen=True)
class OpenAlert:
    alert_id: str
    patient: PatientRow
    reading: ReadingRow
    threshold: AlertThreshold
    raised_at: datetime


@dataclass(frozen=True)
class AuditRow:
    at: datetime
    actor: str
    action: str
    resource: str
    patient_ids: tuple[str, ...]
    outcome: str
    client: str | None = None


@dataclass(frozen=True)
class UserRecord:
    user_id: str
    email: str
    display_name: str
    role: str
    active: bool


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None


def _options(pairs: Iterable[tuple[str, str]], selected: str | None) -> tuple[Option, ...]:
    return tuple(Option(v, label, v == (selected or "")) for v, label in pairs)


def _month_picker(action: str, month: str) -> Form:
    return Form(
        action=action,
        submit="Show month",
        method="get",
        fields=(Field("month", "Month", kind="month", value=month, hint="Year and month, e.g. 2026-09"),),
    )


# --------------------------------------------------------------------------------------
# Sign-in, errors
# --------------------------------------------------------------------------------------


def sign_in_page(
    *, email: str = "", error: str | None = None, expired: bool = False, next_url: str = ""
) -> SignInPage:
    return SignInPage(
        email=Field("email", "Email", kind="email", value=email, required=True, autocomplete="username"),
        password=Field(
            "password", "Password", kind="password", required=True, autocomplete="current-password"
        ),
        error=error,
        expired=expired,
        next_url=next_url,
    )


def error_page(status: int, message: str, hint: str | None = None, back: Link | None = None) -> ErrorPage:
    return ErrorPage(status, message, hint, back)


# --------------------------------------------------------------------------------------
# Worklist and patients
# --------------------------------------------------------------------------------------

PROGRAM_CHOICES = tuple((p.value, p.value) for p in Program)


def worklist_page(
    rows: Sequence[WorklistRow],
    *,
    as_of: date,
    program: str | None = None,
    staff: str | None = None,
    staff_choices: Sequence[tuple[str, str]] = (),
    names: Mapping[str, str] | None = None,
    pager: Pager | None = None,
    totals: tuple[int, Decimal] | None = None,
    action: str = "/worklist",
) -> WorklistPage:
    """One page of the worklist; ``totals`` (open periods, value within reach) covers every
    page when the rows are only one of them."""
    filters = Form(
        action=action,
        submit="Show",
        method="get",
        fields=(
            Field(
                "program",
                "Program",
                kind="select",
                options=_options((("", "All programs"), *PROGRAM_CHOICES), program),
            ),
            Field(
                "staff",
                "Assigned staff",
                kind="select",
                options=_options((("", "Anyone"), *staff_choices), staff),
            ),
            Field("as_of", "As of", kind="date", value=as_of.isoformat()),
        ),
    )
    open_rows = [r for r in rows if r.next_step is not None]
    n, total = totals or (len(open_rows), sum((r.value_at_stake for r in open_rows), Decimal("0")))
    table = views.worklist_table(open_rows, today=as_of, patient_href=patient_href, names=names)
    summary = f"{count(n, 'open period')}, {money(total)} still within reach"
    return WorklistPage(filters, table, as_of, summary, pager)


def patients_page(
    patients: Sequence[PatientRow], *, query: str = "", pager: Pager | None = None, action: str = "/patients"
) -> PatientsPage:
    search = Form(
        action=action,
        submit="Search",
        method="get",
        fields=(Field("q", "Name or patient id", kind="search", value=query),),
    )
    table = DataTable(
        caption="Patients",
        caption_hidden=True,
        columns=(Column("Patient"), Column("Id"), Column("Born"), Column("Payer"), Column("Programs")),
        rows=tuple(
            (
                Link(p.name, patient_href(p.patient_id)),
                p.patient_id,
                long_date(p.birth_date),
                views.payer_words(p.payer),
                ", ".join(p.programs) or "—",
            )
            for p in patients
        ),
        empty="No patient matches.",
    )
    return PatientsPage(search, table, pager)


# --------------------------------------------------------------------------------------
# Patient
# --------------------------------------------------------------------------------------


def _programs_table(facts: PatientMonthFacts, today: date) -> DataTable:
    rows: list[tuple[Cell, ...]] = []

    def day(d: date) -> str:
        return short_date(d, today)

    for p in facts.programs:
        e = p.enrollment
        consent = (
            Badge(f"Signed {day(e.consent_date)}", Tone.GOOD)
            if e.consent_date
            else Badge("Missing", Tone.BAD)
        )
        order = Badge(day(e.order_date), Tone.GOOD) if e.order_date else Badge("Not on file", Tone.WARN)
        enrolled = f"since {day(e.start_date)}" + (f", until {day(e.end_date)}" if e.end_date else "")
        rows.append(
            (e.program.value, e.enrollment_id, enrolled, consent, order, views.yes_no(e.established_patient))
        )
    return DataTable(
        caption="Programs, consent, order and established-patient state",
        caption_hidden=True,
        columns=(
            Column("Program"),
            Column("Enrollment"),
            Column("Enrolled", nowrap=True),
            Column("Consent", nowrap=True),
            Column("Order", nowrap=True),
            Column("Established patient"),
        ),
        rows=tuple(rows),
        empty="Not enrolled in any program.",
    )


def patient_page(
    *,
    patient: PatientRow,
    facts: PatientMonthFacts,
    decisions: Sequence[Decision],
    decision_json: Sequence[Mapping[str, Any]],
    decisions_source: str,
    year_for: Callable[[date], RuleYear],
    readings: Sequence[ReadingRow],
    bands: Mapping[str, Sequence[Band]],
    entries: Sequence[TimeLogRow],
    today: date,
    log_time_href: str | None,
    later: Sequence[tuple[PatientMonthFacts, Sequence[Decision]]] = (),
    correct_href: Callable[[str], str] | None = None,
) -> PatientPage:
    """The patient's month: programs, the open device period, minutes, readings, decisions.

    ``decisions`` are the live ones (they carry the measures the charts draw);
    ``decision_json`` is what the decisions list shows — the stored run's when one
    exists, else the live ones serialised — and ``decisions_source`` says which.
    ``bands`` maps a measure (``glucose``, ``blood_pressure.systolic``, see
    ``views.measure_key``) to the practice's alert bands for it. A 30-day period open
    today may end next month: ``later`` holds that month's evaluation (as the worklist
    makes it), so the calendar shows the period the team is working on.
    """
    calendars: list[ChartPanel] = []
    minutes: list[ChartPanel] = []
    shown_periods = []
    for p, period, period_decisions in _device_periods(facts, decisions, later, today):
        e = p.enrollment
        shown_periods.append(period)
        days = views.calendar_days(p, period.start, period.end, today)
        span = f"{short_date(period.start)} – {short_date(period.end)}"
        chart = day_calendar(
            days,
            today=today,
            thresholds=views.day_thresholds(period_decisions, e.enrollment_id, period.end),
            chart_id=f"cal-{e.enrollment_id}-{period.start:%Y%m%d}",
            title=f"{e.program.value} days of readings, {span}",
        )
        calendars.append(ChartPanel(f"{e.program.value} 30-day period: {span}", chart))
    for p in facts.programs:
        e = p.enrollment
        codes = views.ladder_codes(decisions, e.enrollment_id)
        if codes:
            timed = [d for d in decisions if d.enrollment_id == e.enrollment_id and d.code in codes]
            spent = max((d.measures.minutes or 0 for d in timed), default=0)
            calls = [d.measures.interactive for d in timed if d.measures.interactive is not None]
            needs_call = [d.code for d in timed if d.measures.interactive is False]
            year = year_for(facts.month.end)
            chart = minutes_bar(
                spent,
                views.minute_tiers(year, codes, spent),
                interactive=(any(calls) if calls else None),
                chart_id=f"min-{e.enrollment_id}",
                title=f"{e.program.value} minutes in {facts.month.start:%B %Y}",
                call_for=min(needs_call) if needs_call else None,
            )
            minutes.append(ChartPanel(f"{e.program.value} minutes this month", chart))

    reading_panels: list[ChartPanel] = []
    points = views.reading_points(readings)
    # Readings span the month and the periods on the calendars: recent history and what is due.
    start = min([facts.month.start, *(x.start for x in shown_periods)])
    end = max([facts.month.end, *(x.end for x in shown_periods)])
    for key, pts in points.items():
        kind = key.partition(".")[0]
        unit = next((r.unit for r in readings if r.kind == kind), "")
        words = views.measure_words(key)
        chart = readings_chart(
            [p for p in pts if start <= p.at.date() <= end],
            bands.get(key, ()),
            start=start,
            end=end,
            unit=unit,
            chart_id=f"rd-{key.replace('_', '-').replace('.', '-')}",
            title=f"{words} readings",
            today=today,
        )
        reading_panels.append(ChartPanel(words, chart))

    born = f"{long_date(patient.birth_date)}"
    info: tuple[tuple[str, Cell], ...] = (
        ("Name", patient.name),
        ("Patient id", patient.patient_id),
        ("Born", born),
        ("Payer", views.payer_words(patient.payer)),
        ("Member id", patient.member_id or "—"),
        ("Time zone", patient.timezone),
    )
    return PatientPage(
        patient_id=patient.patient_id,
        facts=info,
        programs=_programs_table(facts, today),
        calendars=tuple(calendars),
        minutes=tuple(minutes),
        readings=tuple(reading_panels),
        time_log=views.time_log_table(entries, correct_href=correct_href, tz=patient.timezone),
        decisions=views.decision_views(decision_json),
        decisions_source=decisions_source,
        month=f"{facts.month.start:%B %Y}",
        log_time_href=log_time_href,
    )


def _device_periods(
    facts: PatientMonthFacts,
    decisions: Sequence[Decision],
    later: Sequence[tuple[PatientMonthFacts, Sequence[Decision]]],
    today: date,
) -> list[tuple[Any, Any, Sequence[Decision]]]:
    """(program facts, period, its decisions) for each device enrollment's period to show.

    The period containing ``today`` if any evaluation has one, else the latest period
    that ended by today.
    """
    by_enrollment: dict[str, list[tuple[Any, Any, Sequence[Decision]]]] = {}
    for f, ds in ((facts, decisions), *later):
        for p in f.programs:
            for period in p.device_periods:
                found = by_enrollment.setdefault(p.enrollment.enrollment_id, [])
                if all(period != x[1] for x in found):
                    found.append((p, period, ds))
    out = []
    for found in by_enrollment.values():
        current = [x for x in found if x[1].start <= today <= x[1].end]
        past = sorted((x for x in found if x[1].end < today), key=lambda x: x[1].end)
        out.extend(current or past[-1:])
    return out


# --------------------------------------------------------------------------------------
# Log time
# --------------------------------------------------------------------------------------

MODALITY_WORDS = {
    Modality.PHONE.value: "Phone",
    Modality.VIDEO.value: "Video",
    Modality.IN_PERSON.value: "In person",
    Modality.TEXT.value: "Text message",
    Modality.PORTAL.value: "Patient portal",
    Modality.OTHER.value: "Other",
}


def log_time_page(
    *,
    patient: PatientRow,
    programs: Sequence[str],
    timer: Timer,
    entries: Sequence[TimeLogRow],
    values: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
    locked_note: str | None = None,
    action: str = "/time-entries",
    correct_href: Callable[[str], str] | None = None,
    hidden: Sequence[tuple[str, str]] = (),
    submit: str = "Save time",
    now_local: str = "",
) -> LogTimePage:
    """The timer and the entry form. After a stop, ``values`` carries the timer's minutes.

    "Started at" is typed in the patient's zone (the service reads it so), and its hint
    names that zone; a manual entry starts on ``now_local`` (now, in that zone) so the
    nurse only corrects it rather than guessing the format from an empty box.
    """
    values = dict(values or {})
    if "started_at" not in values and now_local:
        values["started_at"] = now_local
    errors = errors or {}

    def f(name: str, label: str, **kw: Any) -> Field:
        return Field(name, label, value=values.get(name, kw.pop("value", "")), error=errors.get(name), **kw)

    entry = Form(
        action=action,
        submit=submit,
        hidden=(("patient_id", patient.patient_id), *hidden),
        fields=(
            f(
                "program",
                "Program",
                kind="select",
                options=_options(
                    (("", "Unassigned (allocated at billing)"), *((p, p) for p in programs)),
                    values.get("program"),
                ),
            ),
            f("activity", "Activity", hint="What was done, e.g. reviewed readings, medication adjustment."),
            f(
                "started_at",
                "Started at",
                kind="datetime-local",
                required=True,
                hint=f"In the patient's time zone, {patient.timezone}.",
            ),
            f("minutes", "Minutes", kind="number", required=True, min="1", max="960", inputmode="numeric"),
            Field(
                "interactive",
                "Live call with the patient (real-time, interactive)",
                kind="checkbox",
                checked=values.get("interactive") == "true",
            ),
            f(
                "modality",
                "How",
                kind="select",
                options=_options((("", "Not a call"), *MODALITY_WORDS.items()), values.get("modality")),
            ),
            f("note", "Note", kind="textarea"),
        ),
    )
    return LogTimePage(
        patient_id=patient.patient_id,
        patient_label=f"{patient.name} ({patient.patient_id})",
        timer=timer,
        entry=entry,
        recent=views.time_log_table(entries, correct_href=correct_href, tz=patient.timezone),
        locked_note=locked_note,
        running_since=(
            f"{day_and_time(timer.started_at.astimezone(ZoneInfo(patient.timezone)))}"
            f" ({views.zone_words(patient.timezone)})"
            if timer.started_at is not None
            else ""
        ),
    )


# --------------------------------------------------------------------------------------
# Alerts
# --------------------------------------------------------------------------------------


def _reading_words(r: ReadingRow) -> str:
    kind = views.KIND_WORDS.get(r.kind, r.kind)
    unit = r.unit if r.unit == "%" else f" {r.unit}"
    return f"{kind} {r.value}{unit}" + (" (manual)" if r.manual else "")


def threshold_form(errors: Mapping[str, str] | None = None, values: Mapping[str, str] | None = None) -> Form:
    """Adding an alert threshold: practice configuration, never medical advice."""
    errors, values = errors or {}, values or {}
    return Form(
        action="/alerts/thresholds",
        submit="Add threshold",
        legend="Add a threshold",
        fields=(
            Field(
                "program",
                "Threshold program",
                kind="select",
                options=_options(PROGRAM_CHOICES, values.get("program") or "RPM"),
                id="f-threshold-program",
            ),
            Field(
                "measure",
                "Measure",
                value=values.get("measure", ""),
                hint="A reading type: glucose, weight, spo2, blood_pressure.systolic …",
                error=errors.get("measure"),
                required=True,
            ),
            Field("at_or_above", "At or above", value=values.get("at_or_above", ""), inputmode="decimal"),
            Field(
                "at_or_below",
                "At or below",
                value=values.get("at_or_below", ""),
                inputmode="decimal",
                error=errors.get("bounds"),
            ),
            Field(
                "patient_id",
                "For one patient (id)",
                value=values.get("patient_id", ""),
                hint="Empty: every patient in the program.",
                id="f-threshold-patient",
            ),
        ),
    )


def alerts_page(
    alerts: Sequence[OpenAlert],
    thresholds: Sequence[AlertThreshold],
    *,
    add_threshold: Form | None = None,
    may_acknowledge: bool = True,
    as_of: date | None = None,
    window: tuple[date, date] | None = None,
    remove: Sequence[Link] = (),
) -> AlertsPage:
    """``as_of`` is kept in the acknowledgement links; ``window`` (first, last day) is said."""
    rows = tuple(
        AlertRow(
            alert_id=a.alert_id,
            patient=Link(a.patient.name, patient_href(a.patient.patient_id), a.patient.patient_id),
            reading=_reading_words(a.reading),
            threshold=a.threshold.band.label,
            when=day_and_time(a.reading.measured_local),
            acknowledge_url=f"/alerts/{a.alert_id}/acknowledge" + (f"?as_of={as_of}" if as_of else ""),
        )
        for a in alerts
    )
    table = DataTable(
        caption="Alert thresholds in force",
        caption_hidden=True,
        columns=(Column("Program"), Column("Measure"), Column("Applies to"), Column("Alert when")),
        rows=tuple(
            (t.program, views.measure_words(t.measure), t.patient_id or "Every patient", t.band.label)
            for t in thresholds
        ),
        empty="No thresholds set: no alerts are raised.",
    )
    patients = len({a.patient.patient_id for a in alerts})
    summary = f"{count(len(alerts), 'open alert')} for {count(patients, 'patient')}"
    if window is not None:
        summary += f", from readings of {short_date(window[0])} – {short_date(window[1])}"
    return AlertsPage(rows, table, summary + ".", add_threshold, may_acknowledge, tuple(remove))


# --------------------------------------------------------------------------------------
# Month close
# --------------------------------------------------------------------------------------


def not_billable_summary(
    decisions: Iterable[Mapping[str, Any]], book_for: Callable[[str], RuleBook]
) -> tuple[Counter[str], dict[str, list[str]], dict[str, str]]:
    """Why codes were not billed, read from stored decisions the way the month run counts it.

    The same selection as the run summary (``billing.run._lost``, which works on live
    ``Decision`` objects): add-ons are skipped; per enrollment and either/or group that
    billed nothing, the decision with the fewest blocking checks (then the cheapest code)
    is the one the team came closest to, and its first blocking check is the reason. A
    code for another device kind does not apply at all. ``book_for`` gives a patient's
    payer rule book. Returns counts and up to three example patients per rule id, and
    one of its sentences (the engine's words, shown as they are).
    """
    groups: dict[tuple[str, frozenset[str]], list[Mapping[str, Any]]] = defaultdict(list)
    years: dict[int, RuleYear] = {}
    for d in decisions:
        year = book_for(d["patient_id"]).for_date(date.fromisoformat(d["period"]["end"]))
        rule = year.codes.get(d["code"])
        if rule is None or rule.get("add_on_to"):
            continue
        key = (d["enrollment_id"], year.either_or_group(d["code"]))
        groups[key].append(d)
        years[id(d)] = year

    def blocking(d: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        return [r for r in d["reasons"] if r["verdict"] != "passed" and r.get("kind") != "advisory"]

    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    words: dict[str, str] = {}
    for ds in groups.values():
        if any(d["status"] != Status.NOT_BILLABLE.value for d in ds):
            continue
        candidates = [
            d for d in ds if blocking(d) and not any(r["rule_id"].endswith(".kind") for r in blocking(d))
        ]
        if not candidates:
            continue

        def closeness(d: Mapping[str, Any]) -> tuple[int, Decimal, str]:
            amount = years[id(d)].codes[d["code"]].amount
            return (len(blocking(d)), Decimal("1e9") if amount is None else amount, d["code"])

        lost = min(candidates, key=closeness)
        first = blocking(lost)[0]
        counts[first["rule_id"]] += 1
        people = examples.setdefault(first["rule_id"], [])
        if lost["patient_id"] not in people and len(people) < 3:
            people.append(lost["patient_id"])
        words.setdefault(first["rule_id"], first["message"])
    return counts, examples, words


#: The month's files (link text, ``format`` of the claims endpoint).
DOWNLOADS = (("Claims CSV", "csv"), ("837P (X12)", "x12"), ("FHIR claims", "fhir"), ("Claims JSON", "json"))


def month_close_page(
    *,
    month: str,
    run: StoredRun | None,
    lines: Sequence[ClaimLine],
    decisions: Sequence[Mapping[str, Any]],
    book_for: Callable[[str], RuleBook],
    changes: Sequence[LineChange] = (),
    job: JobProgress | None = None,
    may_run: bool = False,
    may_lock: bool = False,
    action_base: str = "/month-close",
    download_base: str = "/month-close",
) -> MonthClosePage:
    """The biller's month: the run, its lines, why codes were not billed, and its files."""
    picker = _month_picker(action_base, month)
    counts, examples, words = not_billable_summary(decisions, book_for)
    reasons = views.not_billable_table(counts, examples, words, patient_href=patient_href)
    expected = sum((line.expected_payment for line in lines), Decimal("0"))
    stats: tuple[Stat, ...] = ()
    facts: tuple[tuple[str, Cell], ...] = ()
    problems: tuple[str, ...] = ()
    downloads: tuple[Link, ...] = ()
    if run is not None:
        stats = (
            Stat("Expected revenue", money(expected)),
            Stat("Claim lines", f"{len(lines):,}"),
            Stat("Patients billed", f"{len({line.patient_id for line in lines}):,}"),
            Stat("Codes not billed", f"{sum(counts.values()):,}"),
        )
        facts = (
            ("Run", run.run_id),
            ("Created", when(run.created_at)),
            ("Locked", when(run.locked_at) if run.locked_at else "Not locked"),
            ("Amends", run.amends_run_id or "—"),
            ("Engine", run.engine_version),
        )
        problems = tuple(f"{p.get('where', '')}: {p.get('message', '')}".strip(": ") for p in run.problems)
        downloads = (
            *(Link(text, f"{download_base}/{month}/claims?format={fmt}") for text, fmt in DOWNLOADS),
            Link("Explanations (JSON Lines)", f"{download_base}/{month}/explanations"),
        )
    amendments = None
    if changes:
        amendments = DataTable(
            caption=f"{count(len(changes), 'change')} against the locked run",
            columns=(Column("Line"), Column("Change"), Column("Before"), Column("After")),
            rows=tuple(
                (
                    c.key,
                    c.kind,
                    _line_words(c.before),
                    _line_words(c.after),
                )
                for c in changes
            ),
        )
    running = job is not None and job.state in ("queued", "running")
    start = (
        Form(f"{action_base}/{month}/runs", "Run the month" if run is None else "Run the month again")
        if may_run and not running
        else None
    )
    lock = (
        Form(f"{action_base}/{month}/lock", f"Lock {month}", danger=True)
        if may_lock and run is not None and run.status == "draft" and not run.problems and not running
        else None
    )
    return MonthClosePage(
        month=month,
        picker=picker,
        status=views.status_badge(run.status) if run is not None else None,
        run_facts=facts,
        stats=stats,
        lines=views.lines_by_code_and_payer(lines),
        reasons=reasons,
        amendments=amendments,
        downloads=downloads,
        problems=problems,
        job=job,
        start=start,
        lock=lock,
    )


def _line_words(content: Mapping[str, Any] | None) -> str:
    if not content:
        return "—"
    parts = [
        str(content.get(k))
        for k in ("code", "units", "date_of_service", "expected_payment")
        if content.get(k)
    ]
    return " · ".join(parts)


# --------------------------------------------------------------------------------------
# Leakage
# --------------------------------------------------------------------------------------


def leakage_page(*, month: str, reports: Sequence[LeakageReport], action: str = "/leakage") -> LeakagePage:
    """``reports`` covers the trend's months (oldest first or not); ``month`` is the one in focus."""
    by_month = {r.month: r for r in reports}
    focus = by_month.get(month) or LeakageReport(month)
    trend = leakage_trend(views.leak_months(reports), BUCKETS, chart_id="leakage-trend")
    stats = (
        Stat(f"Missed in {views.month_words(month)}", money(focus.total)),
        Stat("Billed (expected)", money(focus.billed)),
        Stat("Patients with a near miss", f"{len({m.patient_id for m in focus.misses}):,}"),
    )
    return LeakagePage(
        month=month,
        picker=_month_picker(action, month),
        stats=stats,
        trend=trend,
        by_reason=views.leakage_reason_table(focus),
        misses=views.near_miss_table(focus, patient_href=patient_href),
    )


# --------------------------------------------------------------------------------------
# Auditor's packet and access log
# --------------------------------------------------------------------------------------


def packet_page(
    *,
    line: ClaimLine,
    run: StoredRun,
    decision: Mapping[str, Any],
    patient: PatientRow,
    facts: PatientMonthFacts | None,
    readings: Sequence[ReadingRow],
    entries: Sequence[TimeLogRow],
    json_href: str,
    practitioners: Mapping[str, str] | None = None,
) -> PacketPage:
    """One claim line and everything behind it, printable section by section."""
    practitioners = practitioners or {}
    enrollment = next(
        (
            p.enrollment
            for p in (facts.programs if facts else ())
            if p.enrollment.enrollment_id == line.enrollment_id
        ),
        None,
    )
    line_facts: tuple[tuple[str, Cell], ...] = (
        (
            "Code",
            f"{line.code} × {line.units}" + (f" ({', '.join(line.modifiers)})" if line.modifiers else ""),
        ),
        ("Date of service", long_date(line.date_of_service)),
        ("Period", f"{long_date(line.period_start)} – {long_date(line.period_end)}"),
        ("Program", line.program.value),
        ("Payer", views.payer_words(line.payer.value)),
        ("Billing NPI", line.billing_npi or "—"),
        ("Rendering NPI", line.rendering_npi or "—"),
        ("Diagnoses", ", ".join(line.diagnosis_codes)),
        ("Place of service", line.place_of_service),
        ("Charge", money(line.charge)),
        ("Expected payment", money(line.expected_payment)),
        ("Status in the run", views.status_badge(decision["status"])),
    )
    patient_facts = (
        ("Name", patient.name),
        ("Patient id", patient.patient_id),
        ("Born", long_date(patient.birth_date)),
        ("Payer", views.payer_words(patient.payer)),
        ("Member id", patient.member_id or "—"),
    )
    enrollment_facts: tuple[tuple[str, Cell], ...]
    if enrollment is None:
        enrollment_facts = (("Enrollment", line.enrollment_id),)
    else:
        enrollment_facts = (
            ("Enrollment", enrollment.enrollment_id),
            ("Program", enrollment.program.value),
            (
                "Enrolled",
                long_date(enrollment.start_date)
                + (f" – {long_date(enrollment.end_date)}" if enrollment.end_date else ""),
            ),
            (
                "Consent",
                long_date(enrollment.consent_date) if enrollment.consent_date else Badge("Missing", Tone.BAD),
            ),
            (
                "Order",
                long_date(enrollment.order_date)
                if enrollment.order_date
                else Badge("Not on file", Tone.WARN),
            ),
            ("Established patient", views.yes_no(enrollment.established_patient)),
            (
                "Billing practitioner",
                f"{practitioners.get(enrollment.billing_practitioner_id, enrollment.billing_practitioner_id)}"
                f" ({enrollment.billing_credential})",
            ),
            ("Diagnoses", ", ".join(enrollment.diagnoses)),
        )
    run_facts = (
        ("Run", run.run_id),
        ("Month", run.month),
        ("Status", views.status_badge(run.status)),
        ("Created", when(run.created_at)),
        ("Locked", when(run.locked_at) if run.locked_at else "Not locked"),
        ("Engine version", run.engine_version),
        ("Rules digest", run.ruleset_hash),
        ("Input digest", run.input_digest),
        ("Lines digest", run.lines_digest),
    )
    sections = views.packet_sections(
        line=line,
        decision=decision,
        run_facts=run_facts,
        patient_facts=patient_facts,
        enrollment_facts=enrollment_facts,
        readings=readings,
        entries=entries,
    )
    title = f"Claim line {line.code} for {patient.patient_id}, {long_date(line.date_of_service)}"
    return PacketPage(title, line_facts, sections, json_href)


def packet_json(
    *, line: ClaimLine, run: StoredRun, decision: Mapping[str, Any], patient: PatientRow
) -> dict[str, Any]:
    """The packet as JSON for download: the same facts, machine-readable."""
    from caretally.billing.run import line_content

    return {
        "run": {
            "run_id": run.run_id,
            "month": run.month,
            "status": run.status,
            "created_at": run.created_at.isoformat(),
            "locked_at": run.locked_at.isoformat() if run.locked_at else None,
            "engine_version": run.engine_version,
            "ruleset_hash": run.ruleset_hash,
            "input_digest": run.input_digest,
            "lines_digest": run.lines_digest,
        },
        "line": line_content(line),
        "patient": {"patient_id": patient.patient_id, "payer": patient.payer, "member_id": patient.member_id},
        "decision": dict(decision),
    }


def audit_page(
    events: Sequence[AuditRow],
    *,
    patient: str = "",
    user: str = "",
    date_from: date | None = None,
    date_to: date | None = None,
    pager: Pager | None = None,
    action: str = "/audit",
) -> AuditPage:
    search = Form(
        action=action,
        submit="Search",
        method="get",
        fields=(
            Field("patient", "Patient id", value=patient),
            Field("user", "User", value=user, hint="Email or token name"),
            Field(
                "from",
                "From",
                kind="date",
                value=date_from.isoformat() if date_from else "",
                id="f-date-from",
            ),
            Field("to", "To", kind="date", value=date_to.isoformat() if date_to else "", id="f-date-to"),
        ),
    )
    table = DataTable(
        caption="Access log, newest first",
        columns=(
            Column("When", nowrap=True),
            Column("Who"),
            Column("Action"),
            Column("What"),
            Column("Patients"),
            Column("Outcome"),
        ),
        rows=tuple(
            (
                when(e.at),
                e.actor,
                e.action,
                e.resource,
                ", ".join(e.patient_ids) or "—",
                Badge(e.outcome, Tone.GOOD if e.outcome in ("ok", "allowed", "success") else Tone.BAD),
            )
            for e in events
        ),
        empty="No events match.",
    )
    return AuditPage(search, table, pager)


# --------------------------------------------------------------------------------------
# Compliance: the OIG measure scan (caretally.services.compliance.scan's report)
# --------------------------------------------------------------------------------------

#: A scan status in words and a shape (docs/compliance.md, "Status").
SCAN_STATUS: dict[str, Badge] = {
    "flagged": Badge("Flagged", Tone.BAD),
    "findings": Badge("Findings to review", Tone.WARN),
    "clear": Badge("Clear", Tone.GOOD),
    "not_judged": Badge("Not judged", Tone.NEUTRAL),
    "not_computable": Badge("Not computable", Tone.NEUTRAL),
}
SEVERITY = {"high": Badge("High", Tone.WARN), "info": Badge("Info", Tone.NEUTRAL)}
MONTH_NAMES = tuple((f"{m:02d}", date(2000, m, 1).strftime("%B")) for m in range(1, 13))
#: Rows shown per table of a measure; the JSON download always has them all.
SCAN_ROWS = 100
_URL = re.compile(r"https?://[^\s;]+")


def _cited(text: str) -> Markup:
    """A citation with its web addresses as links (the rest escaped)."""
    out, at = Markup(""), 0
    for found in _URL.finditer(text):
        url = found.group(0)
        out += escape(text[at : found.start()]) + Markup('<a href="{0}">{0}</a>').format(url)
        at = found.end()
    return out + escape(text[at:])


def _scan_status(status: str) -> Badge:
    return SCAN_STATUS.get(status, Badge(status.replace("_", " ").capitalize(), Tone.NEUTRAL))


def _scan_picker(action: str, year: int, month: str | None, first: int, last: int) -> Form:
    chosen = month[5:7] if month else ""
    return Form(
        action=action,
        submit="Scan",
        method="get",
        fields=(
            Field(
                "year",
                "Year",
                kind="number",
                value=str(year),
                required=True,
                inputmode="numeric",
                min=str(first),
                max=str(last),
            ),
            Field(
                "month",
                "Month",
                kind="select",
                options=_options((("", "Whole year"), *MONTH_NAMES), chosen),
                hint="Optional: scan one month of the year",
            ),
        ),
    )


def _patient_cell(patient_id: str | None, links: bool, *, none: str = "Practice") -> Cell:
    if patient_id is None:
        return none
    return Link(patient_id, patient_href(patient_id)) if links else patient_id


def _measure_view(m: Mapping[str, Any], links: bool, rows: int) -> MeasureView:
    mid = m["id"]
    findings = list(m["findings"])
    seen: set[tuple[str, int]] = set()
    lines: list[tuple[str, Mapping[str, Any]]] = []
    for f in findings:
        # A practice-level finding (B1's spike month) names its patients in the line order.
        named = f["values"].get("patients", []) if f["patient_id"] is None else []
        for i, line in enumerate(f["lines"]):
            key = (line["run_id"], line["line_id"])
            if key not in seen:
                seen.add(key)
                lines.append((f["patient_id"] or (named[i] if i < len(named) else None), line))
    facts: list[tuple[str, Cell]] = [
        ("This practice", m["practice"]),
        ("National (OIG)", m["national"]),
        ("How it is judged", m["explanation"]),
        ("Counted per", m["unit"]),
    ]
    facts += [(f"Option {name}", str(value)) for name, value in m["options"].items()]
    facts += [("What the measure counts", m["doc"]), ("Source", _cited(m["citation"]))]
    thresholds = DataTable(
        caption=f"{mid} thresholds (source: see Source above)",
        columns=(Column("Threshold"), Column("Value", numeric=True), Column("Meaning", wide=True)),
        rows=tuple((name, str(t["value"]), t["doc"]) for name, t in m["thresholds"].items()),
        empty="No threshold was published for this measure; the national figure is beside the practice's.",
    )
    finding_table = DataTable(
        caption=f"{mid}: {count(len(findings), 'finding')}",
        columns=(
            Column("Patient"),
            Column("Severity", nowrap=True),
            Column("Evidence", wide=True),
            Column("Claim lines", numeric=True),
        ),
        rows=tuple(
            (
                _patient_cell(f["patient_id"], links),
                SEVERITY.get(f["severity"], Badge(f["severity"], Tone.NEUTRAL)),
                f["evidence"],
                len(f["lines"]),
            )
            for f in findings[:rows]
        ),
        empty="No findings.",
    )
    line_table = DataTable(
        caption=f"{mid}: {count(len(lines), 'claim line')} behind the findings",
        columns=(
            Column("Patient"),
            Column("Code"),
            Column("Units", numeric=True),
            Column("Date of service", nowrap=True),
            Column("Billing NPI"),
            Column("Diagnoses"),
            Column("Expected payment", numeric=True),
            Column("Run"),
            Column("Line", numeric=True),
        ),
        rows=tuple(
            (
                _patient_cell(patient, links, none="—"),
                line["code"],
                line["units"],
                long_date(date.fromisoformat(line["date_of_service"])),
                line["billing_npi"] or "—",
                ", ".join(line["diagnoses"]) or "—",
                money(Decimal(line["expected_payment"])),
                f"{line['run_id'][:8]} ({line['run_status']})",
                line["line_id"],
            )
            for patient, line in lines[:rows]
        ),
        empty="No claim lines.",
    )
    cut = [
        f"the first {rows} of {n} {what}"
        for n, what in ((len(findings), "findings"), (len(lines), "claim lines"))
        if n > rows
    ]
    note = f"Showing {' and '.join(cut)}; the JSON download has them all." if cut else None
    return MeasureView(
        measure_id=mid,
        title=m["title"],
        anchor=f"measure-{mid.lower()}",
        status=_scan_status(m["status"]),
        facts=tuple(facts),
        thresholds=thresholds,
        findings=finding_table,
        lines=line_table,
        note=note,
    )


def compliance_page(
    report: Mapping[str, Any],
    *,
    patient_links: bool,
    json_href: str,
    action: str = "/compliance",
    years: tuple[int, int] = (1900, 2200),
    rows: int = SCAN_ROWS,
) -> CompliancePage:
    """The scan report (``services.compliance.scan``) as a page, every figure from it.

    ``patient_links`` is whether the viewer may open patient pages (a biller may not:
    the ids are shown as text rather than as links that would refuse).
    """
    measures = tuple(_measure_view(m, patient_links, rows) for m in report["measures"])
    by_id = {m["id"]: m for m in report["measures"]}
    overview = DataTable(
        caption="OIG measures: this practice beside the national figure",
        columns=(
            Column("Measure", wide=True),
            Column("Status", nowrap=True),
            Column("This practice", wide=True),
            Column("National (OIG)", wide=True),
            Column("Findings", numeric=True),
        ),
        rows=tuple(
            (
                Link(f"{v.measure_id} {v.title}", f"#{v.anchor}"),
                v.status,
                by_id[v.measure_id]["practice"],
                by_id[v.measure_id]["national"],
                len(by_id[v.measure_id]["findings"]),
            )
            for v in measures
        ),
    )
    flagged = list(report["flagged"])
    with_findings = [m["id"] for m in report["measures"] if m["status"] == "findings"]
    window = report["window"]
    span = views.month_words(report["month"]) if report["month"] else str(report["year"])
    summary = (
        f"{span}: "
        + (f"flagged on {', '.join(flagged)}" if flagged else "no measure flagged")
        + (f"; findings to review on {', '.join(with_findings)}" if with_findings else "")
        + "."
    )
    population = report["population"]
    sources = report["sources"]
    stats = (
        Stat("Measures flagged", f"{len(flagged)} of {len(measures)}"),
        Stat("RPM enrollees", f"{population['rpm_enrollees']:,}"),
        Stat("RPM services", f"{population['rpm_services']:,}"),
        Stat("CCM lines", f"{population['ccm_lines']:,}"),
    )
    classification = report["classification"]
    source_facts: tuple[tuple[str, Cell], ...] = (
        (
            "Dates scanned",
            f"{long_date(date.fromisoformat(window['start']))} – "
            f"{long_date(date.fromisoformat(window['end']))}",
        ),
        ("What was read", sources["what"]),
        ("Claim lines read", f"{sources['claim_lines']:,}"),
        ("Visits read", f"{sources['visits']:,}"),
        (
            "In the OIG's 2025 population",
            "Yes" if population["routine_rpm_biller"] else "No",
        ),
        ("Population means", population["routine_definition"]),
        (
            "Chronic conditions judged by",
            f"{classification['name']}, table {classification['table']} "
            f"({classification['package']} {classification['version']})",
        ),
    )
    runs = DataTable(
        caption="Runs read (the current run of each month)",
        columns=(Column("Month"), Column("Run"), Column("Status")),
        rows=tuple(
            (views.month_words(r["month"]), r["run_id"], views.status_badge(r["status"]))
            for r in sources["runs"]
        ),
        empty="No run in these dates: bill a month first.",
    )
    return CompliancePage(
        picker=_scan_picker(action, report["year"], report["month"], *years),
        summary=summary,
        stats=stats,
        overview=overview,
        measures=measures,
        sources=source_facts,
        runs=runs,
        json_href=json_href,
    )


# --------------------------------------------------------------------------------------
# Admin
# --------------------------------------------------------------------------------------


#: What the add-user and create-token forms start on: the least privilege of each.
DEFAULT_USER_ROLE = "care_staff"
DEFAULT_TOKEN_ROLE = "integration"


def admin_page(
    *,
    users: Sequence[UserRecord],
    tokens: Sequence[TokenRecord],
    settings: Sequence[tuple[str, Cell]],
    new_token: str | None = None,
    roles: Sequence[str] = tuple(ROLE_LABELS),
    add_user_errors: Mapping[str, str] | None = None,
    practitioners: Sequence[tuple[str, str]] = (),
    links: Mapping[str, str] | None = None,
    self_user_id: str | None = None,
    add_user_role: str | None = None,
) -> AdminPage:
    """``practitioners`` (id, words) and ``links`` (user id → practitioner id) add the form
    that says which practitioner a user logs time as, and a column that shows it.

    The add-user and token forms start on the least privilege (care staff, integration):
    a hurried admin who leaves the choice alone must not hand out the admin role. The
    signed-in admin gets no Deactivate button on their own row (the service refuses it).
    """
    errors = add_user_errors or {}
    role_options = tuple(Option(r, ROLE_LABELS.get(r, r)) for r in roles)
    picked = add_user_role if add_user_role in {o.value for o in role_options} else DEFAULT_USER_ROLE
    user_roles = tuple(Option(o.value, o.label, o.value == picked) for o in role_options)
    token_roles = tuple(Option(o.value, o.label, o.value == DEFAULT_TOKEN_ROLE) for o in role_options)
    people = dict(practitioners)
    linked = links or {}

    def practitioner_words(user_id: str, role: str) -> str:
        pid = linked.get(user_id)
        if pid is None:
            known = role in {r.value for r in Role}
            return (
                "Not linked (cannot log time)"
                if known and allowed(Role(role), Permission.TIME_WRITE)
                else "—"
            )
        return f"{people.get(pid, pid)}, {pid}" if pid in people else pid

    add_user = Form(
        action="/admin/users",
        submit="Add user",
        legend="Add a user",
        fields=(
            Field(
                "email", "Email", kind="email", required=True, error=errors.get("email"), autocomplete="off"
            ),
            Field("display_name", "Display name", required=True, error=errors.get("display_name")),
            Field("role", "Role", kind="select", options=user_roles, error=errors.get("role")),
            Field(
                "password",
                "Initial password",
                kind="password",
                required=True,
                autocomplete="new-password",
                error=errors.get("password"),
                hint="At least 15 characters; give it to the user privately.",
            ),
        ),
    )
    create_token = Form(
        action="/admin/tokens",
        submit="Create token",
        legend="Create an API token",
        fields=(
            Field("name", "Token name", required=True, hint="Who or what uses it, e.g. Tenovi webhook."),
            Field("role", "Token role", kind="select", options=token_roles, id="f-token-role"),
        ),
    )
    return AdminPage(
        users=tuple(
            UserRow(
                u.user_id,
                u.email,
                u.display_name,
                u.role,
                ROLE_LABELS.get(u.role, u.role),
                u.active,
                f"/admin/users/{u.user_id}/role",
                f"/admin/users/{u.user_id}/deactivate",
                is_self=u.user_id == self_user_id,
                practitioner=practitioner_words(u.user_id, u.role),
            )
            for u in users
        ),
        roles=role_options,
        add_user=add_user,
        tokens=tuple(
            TokenRow(
                t.token_id,
                t.name,
                ROLE_LABELS.get(t.role, t.role),
                when(t.created_at),
                when(t.last_used_at) if t.last_used_at else "Never",
                f"/admin/tokens/{t.token_id}/revoke",
            )
            for t in tokens
        ),
        create_token=create_token,
        settings=tuple(settings),
        new_token=new_token,
        link_practitioner=_link_form(users, practitioners, links or {}) if practitioners else None,
    )


def _link_form(
    users: Sequence[UserRecord], practitioners: Sequence[tuple[str, str]], links: Mapping[str, str]
) -> Form:
    def words(u: UserRecord) -> str:
        linked = links.get(u.user_id)
        return f"{u.email}" + (f" (now {linked})" if linked else "")

    return Form(
        action="/admin/practitioner-links",
        submit="Link practitioner",
        legend="Who logs time as which practitioner",
        fields=(
            Field(
                "user_id",
                "User to link",
                kind="select",
                options=tuple(Option(u.user_id, words(u)) for u in users if u.active),
            ),
            Field(
                "practitioner_id",
                "Practitioner",
                kind="select",
                options=(Option("", "None (cannot log time)"), *(Option(k, v) for k, v in practitioners)),
            ),
        ),
    )


# --------------------------------------------------------------------------------------
# Practice settings (admin)
# --------------------------------------------------------------------------------------


def practice_settings_page(
    *,
    identity_toml: str,
    locality: str,
    payer_overlays: str,
    identity_name: str | None,
    source: str,
    updated: str | None,
    errors: Mapping[str, str] | None = None,
    action: str = "/admin/practice",
    thresholds_href: str = "/alerts",
) -> PracticeSettingsPage:
    """The stored practice settings and a form to change them (the 837P uses the identity)."""

    errors = errors or {}
    current: tuple[tuple[str, Cell], ...] = (
        ("837P identity", identity_name or Badge("None yet", Tone.WARN)),
        ("Identity comes from", source),
        ("Locality", locality or "National amounts (no locality)"),
        ("Payer overlays", payer_overlays.replace("\n", ", ") or "None (Medicare rules for every payer)"),
        ("Last changed", updated or "Never"),
    )
    form = Form(
        action=action,
        submit="Save practice settings",
        fields=(
            Field(
                "identity_toml",
                "Practice identity (TOML)",
                kind="textarea",
                value=identity_toml,
                hint="the keys of a practice file (docs/exports.md): [practice], [submitter], "
                "[receiver], [payers.…], [fees]; empty uses the server's file",
                error=errors.get("identity_toml"),
            ),
            Field(
                "locality",
                "Locality",
                value=locality,
                hint="Medicare locality as ST-NN (e.g. CO-01); empty for national amounts",
                error=errors.get("locality"),
            ),
            Field(
                "payer_overlays",
                "Payer overlays",
                kind="textarea",
                value=payer_overlays,
                hint="payer=overlay, one a line (e.g. commercial=commercial-generic)",
                error=errors.get("payer_overlays"),
            ),
        ),
    )
    return PracticeSettingsPage(current, form, Link("Alert thresholds", thresholds_href))

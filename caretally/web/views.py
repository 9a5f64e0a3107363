"""Builders: engine and store values in, view-model records out. Pure — no I/O.

A route asks the service layer for facts, decisions, runs and rows, then calls these to
get what a template shows. Every number comes from a typed field (``Measures``, ``Step``,
``ClaimLine``, a rule-year parameter); sentences of the engine are shown as they are,
never parsed. Rows that come from tables without an engine type (readings, time entries,
audit events) arrive as the small records defined here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from caretally.leakage import BUCKETS, LeakageReport
from caretally.model import (
    ClaimLine,
    Decision,
    PeriodKind,
    ProgramFacts,
    ReasonKind,
    Verdict,
)
from caretally.rules.params import RuleYear
from caretally.web.nav import ROLE_LABELS, RoleCheck, navigation
from caretally.web.phrasing import count, day_and_time, money, row_phrase, short_date
from caretally.web.viewmodels import (
    Badge,
    CalendarDay,
    Cell,
    Column,
    DataTable,
    DayMark,
    DayThreshold,
    DecisionView,
    Flash,
    Layout,
    LeakMonth,
    Link,
    NavLink,
    ReadingPoint,
    ReasonView,
    Section,
    SignedIn,
    Tier,
    Tone,
)
from caretally.worklist import WorklistRow

# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------


def signed_in(display_name: str, email: str, role: str) -> SignedIn:
    return SignedIn(display_name, email, role, ROLE_LABELS.get(role, role))


def page_layout(
    title: str,
    *,
    user: SignedIn | None,
    org_name: str | None,
    allowed: RoleCheck | None = None,
    current: str | None = None,
    csrf_token: str = "",
    flashes: Sequence[Flash] = (),
    idle_minutes: int = 15,
    breadcrumbs: Sequence[tuple[str, str | None]] = (),
) -> Layout:
    """The frame of a page; the navigation follows the user's role (none when signed out).

    ``allowed`` is the service's role check (``caretally.services.permissions.allowed``);
    a signed-in page needs it to know which links to show.
    """
    if user is not None and allowed is None:
        raise ValueError("a signed-in page needs the role check to build its navigation")
    crumbs = tuple(NavLink(label, href or "", href is None) for label, href in breadcrumbs)
    return Layout(
        title=title,
        org_name=org_name,
        user=user,
        nav=navigation(user.role, allowed, current) if user is not None and allowed is not None else (),
        csrf_token=csrf_token,
        flashes=tuple(flashes),
        idle_minutes=idle_minutes,
        breadcrumbs=crumbs,
    )


# --------------------------------------------------------------------------------------
# Status words and badges
# --------------------------------------------------------------------------------------

STATUS_BADGES: dict[str, Badge] = {
    "billable": Badge("Billable", Tone.GOOD),
    "not_billable": Badge("Not billable", Tone.BAD),
    "reachable": Badge("Within reach", Tone.PENDING),
    "draft": Badge("Draft", Tone.PENDING),
    "locked": Badge("Locked", Tone.GOOD),
    "superseded": Badge("Superseded", Tone.NEUTRAL),
    "void": Badge("Void", Tone.NEUTRAL),
}
VERDICT_BADGES: dict[str, Badge] = {
    Verdict.PASS.value: Badge("Passed", Tone.GOOD),
    Verdict.FAIL.value: Badge("Failed", Tone.BAD),
    Verdict.PENDING.value: Badge("Pending", Tone.PENDING),
}


def payer_words(payer: str) -> str:
    """``medicare_advantage`` → ``Medicare advantage``."""
    return payer.replace("_", " ").capitalize()


def month_words(month: str) -> str:
    """``2026-08`` → ``August 2026``."""
    return datetime.strptime(month, "%Y-%m").strftime("%B %Y")


def status_badge(status: str) -> Badge:
    return STATUS_BADGES.get(status, Badge(status.replace("_", " ").capitalize(), Tone.NEUTRAL))


def yes_no(value: bool | None, *, yes: str = "Yes", no: str = "No", unknown: str = "Not recorded") -> Badge:
    if value is None:
        return Badge(unknown, Tone.WARN)
    return Badge(yes, Tone.GOOD) if value else Badge(no, Tone.BAD)


# --------------------------------------------------------------------------------------
# Worklist
# --------------------------------------------------------------------------------------


def worklist_table(
    rows: Sequence[WorklistRow],
    *,
    today: date,
    patient_href: Callable[[str], str],
    names: Mapping[str, str] | None = None,
    caption: str = "Open periods, most valuable step per staff minute first, each patient's periods together",
) -> DataTable:
    """The worklist as a table: who, which period, how far along, and the next step in words."""
    names = names or {}
    out: list[tuple[Cell, ...]] = []
    for r in rows:
        name = names.get(r.patient_id)
        patient = (
            Link(name, patient_href(r.patient_id), r.patient_id)
            if name
            else Link(r.patient_id, patient_href(r.patient_id))
        )
        days = "—" if r.days_so_far is None else f"{r.days_so_far} ({r.days_left} left)"
        minutes = "—" if r.minutes_so_far is None else str(r.minutes_so_far)
        call: Cell = (
            None if r.interactive_done is None else yes_no(r.interactive_done, yes="Done", no="Not yet")
        )
        out.append(
            (
                patient,
                r.program.value,
                short_date(r.period.end, today),
                days,
                minutes,
                call,
                row_phrase(r, today=today),
                money(r.value_per_minute),
            )
        )
    return DataTable(
        caption=caption,
        columns=(
            Column("Patient", nowrap=True),
            Column("Program"),
            Column("Deadline", nowrap=True),
            Column("Days", numeric=True),
            Column("Minutes", numeric=True),
            Column("Live call"),
            Column("Next step", wide=True),
            Column("Per staff minute", numeric=True),
        ),
        rows=tuple(out),
        empty="Nobody needs anything before their period ends.",
    )


# --------------------------------------------------------------------------------------
# Patient: calendar, minutes, readings, time log, decisions
# --------------------------------------------------------------------------------------

#: ``ProgramFacts.excluded_days`` reasons → the calendar's marks.
EXCLUDED_MARK: dict[str, DayMark] = {
    "manual": DayMark.MANUAL,
    "non_medical_device": DayMark.NON_MEDICAL,
    "device_not_with_patient": DayMark.OUTSIDE_ASSIGNMENT,
    "outside_enrollment": DayMark.OUTSIDE_ENROLLMENT,
}


def calendar_days(
    program: ProgramFacts, period_start: date, period_end: date, today: date
) -> list[CalendarDay]:
    """Each day of a 30-day period with why it did or did not count.

    A day with qualifying data counts unless it falls before the consent or outside the
    enrollment (the rules' window). Other days are marked with the first reason the facts
    recorded for them (manual reading, non-medical device, outside the device's
    assignment); days outside the enrollment cannot count whatever comes; the rest are
    "no data" — or "still to come" after ``today``.
    """
    e = program.enrollment
    excluded: dict[date, DayMark] = {}
    for reason, days in program.excluded_days.items():
        mark = EXCLUDED_MARK.get(reason)
        for day in days:
            if mark is not None and day not in excluded:
                excluded[day] = mark
    out = []
    day = period_start
    while day <= period_end:
        devices = program.data_days.get(day, ())
        if devices:
            if e.consent_date is not None and day < e.consent_date:
                mark = DayMark.BEFORE_CONSENT
            elif day < e.start_date or (e.end_date is not None and day > e.end_date):
                mark = DayMark.OUTSIDE_ENROLLMENT
            else:
                mark = DayMark.COUNTED
        elif day in excluded:
            mark = excluded[day]
        elif day < e.start_date or (e.end_date is not None and day > e.end_date):
            mark = DayMark.OUTSIDE_ENROLLMENT  # nothing can count here, now or later
        elif day > today:
            mark = DayMark.TO_COME
        else:
            mark = DayMark.NO_DATA
        out.append(CalendarDay(day, mark, tuple(devices)))
        day += timedelta(days=1)
    return out


def day_thresholds(decisions: Iterable[Decision], enrollment_id: str, period_end: date) -> list[DayThreshold]:
    """The day minimums the rule-year applied to this period (2 → 99445, 16 → 99454 …).

    Codes with the same minimum share one threshold (99445 and set-up 99453 at 2 days).
    """
    found: dict[int, set[str]] = defaultdict(set)
    for d in decisions:
        if (
            d.enrollment_id == enrollment_id
            and d.period.end == period_end
            and d.period.kind is PeriodKind.THIRTY_DAY
            and d.measures.min_days is not None
        ):
            found[d.measures.min_days].add(d.code)
    return [DayThreshold(days, tuple(sorted(codes))) for days, codes in sorted(found.items())]


def ladder_codes(decisions: Iterable[Decision], enrollment_id: str) -> list[str]:
    """The time codes of the month for an enrollment, without lanes another lane beat.

    CCM's lanes (staff, practitioner, complex) compete; a decision that lost a conflict is
    not the ladder the team is climbing, so its tiers are left off the bar.
    """
    timed = [
        d
        for d in decisions
        if d.enrollment_id == enrollment_id
        and d.period.kind is PeriodKind.CALENDAR_MONTH
        and d.measures.min_minutes is not None
    ]
    kept = [
        d
        for d in timed
        if not any(r.kind is ReasonKind.CONFLICT and r.verdict is not Verdict.PASS for r in d.reasons)
    ]
    return sorted({d.code for d in (kept or timed)})


def minute_tiers(year: RuleYear, codes: Iterable[str], minutes: int = 0) -> list[Tier]:
    """Tiers from the rule-year: each base code at its minimum, each add-on unit after it.

    An add-on without a unit cap is shown for two units or up to the next unit past
    ``minutes``, whichever is more, so the bar always shows what comes next.
    """
    tiers: list[Tier] = []
    for code in codes:
        rule = year.codes.get(code)
        if rule is None or rule.get("min_minutes") is None:
            continue
        first = int(rule.get("min_minutes"))
        step = rule.get("step_minutes")
        if rule.get("add_on_to") is None or not step:
            tiers.append(Tier(first, code))
            continue
        cap = rule.get("max_units")
        units = int(cap) if cap else max(2, (max(minutes, first) - first) // int(step) + 2)
        for unit in range(units):
            tiers.append(Tier(first + unit * int(step), code if unit == 0 else f"{code} ×{unit + 1}"))
    return sorted(tiers, key=lambda t: (t.minutes, t.code))


@dataclass(frozen=True)
class ReadingRow:
    """A stored reading as the patient page needs it (``measured_local`` in the patient's zone)."""

    reading_id: str
    measured_local: datetime
    kind: str  # readings.type: blood_pressure, glucose, weight …
    value: str  # as stored: "142/88" for blood pressure
    unit: str
    manual: bool
    device_id: str = ""


#: Readings whose value holds two numbers, and the names of the parts.
COMPOUND_SERIES: dict[str, tuple[str, ...]] = {"blood_pressure": ("systolic", "diastolic")}
KIND_WORDS: dict[str, str] = {
    "blood_pressure": "Blood pressure",
    "glucose": "Glucose",
    "weight": "Weight",
    "spo2": "Oxygen saturation",
    "heart_rate": "Heart rate",
    "pain_score": "Pain score",
    "exercise_minutes": "Exercise minutes",
}


def measure_key(kind: str, series: str | None = None) -> str:
    """``glucose``, or ``blood_pressure.systolic`` for one part of a compound reading."""
    return kind if series is None else f"{kind}.{series}"


def measure_words(key: str) -> str:
    """``Blood pressure, systolic`` for ``blood_pressure.systolic``."""
    kind, _, series = key.partition(".")
    words = KIND_WORDS.get(kind, kind.replace("_", " ").capitalize())
    return f"{words}, {series}" if series else words


def reading_points(rows: Iterable[ReadingRow]) -> dict[str, list[ReadingPoint]]:
    """Readings by measure: compound values are split (``blood_pressure.systolic`` …).

    Each part of a compound reading gets its own chart, so an alert band drawn across a
    chart always belongs to the one measure on it. A value that is not a number is left
    out of the chart (the table of readings still lists what was stored).
    """
    out: dict[str, list[ReadingPoint]] = defaultdict(list)
    for r in rows:
        names = COMPOUND_SERIES.get(r.kind)
        parts = r.value.split("/") if names else [r.value]
        if len(parts) != len(names or (r.kind,)):
            continue
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            continue
        keys = [measure_key(r.kind, n) for n in names] if names else [r.kind]
        for key, number in zip(keys, numbers, strict=True):
            series = key.partition(".")[2] or measure_words(key).lower()
            out[key].append(ReadingPoint(r.measured_local, number, series, r.manual))
    return dict(out)


@dataclass(frozen=True)
class TimeLogRow:
    entry_id: str
    started_at: datetime
    seconds: int
    performer: str
    credential: str
    program: str | None
    activity: str | None
    interactive: bool
    modality: str | None


def zone_words(tz: str) -> str:
    """The patient's zone as a page names it: ``patient's time, America/New_York``."""
    return f"patient's time, {tz}"


def time_log_table(
    entries: Iterable[TimeLogRow],
    *,
    caption: str = "Time logged this month",
    correct_href: Callable[[str], str] | None = None,
    tz: str | None = None,
) -> DataTable:
    """The time log; with ``correct_href`` each row links to its correction form.

    ``tz`` is the patient's zone: entries are typed in it ("Started at" on Log time), so
    the log shows them in it too and says so in its header — one clock on one page.
    Without it, instants are shown in UTC.
    """
    zone = ZoneInfo(tz) if tz else UTC
    rows = [
        (
            day_and_time(e.started_at.astimezone(zone)),
            f"{e.performer} ({e.credential})",
            e.program or "Unassigned",
            e.activity or "—",
            Badge(f"Live call ({e.modality or 'modality not recorded'})", Tone.GOOD)
            if e.interactive
            else "—",
            f"{e.seconds // 60}:{e.seconds % 60:02d}",
            *((Link("Correct", correct_href(e.entry_id), e.entry_id),) if correct_href else ()),
        )
        for e in sorted(entries, key=lambda e: e.started_at)
    ]
    total = sum(e.seconds for e in entries)
    return DataTable(
        caption=f"{caption} ({count(total // 60, 'minute')})",
        columns=(
            Column(f"When ({zone_words(tz)})" if tz else "When (UTC)"),
            Column("Who"),
            Column("Program"),
            Column("Activity"),
            Column("Interactive"),
            Column("Duration", numeric=True),
            *((Column("Correct", hidden_label=True),) if correct_href else ()),
        ),
        rows=tuple(rows),
        empty="No time logged yet this month.",
    )


def _evidence_lines(evidence: Mapping[str, Any]) -> tuple[str, ...]:
    lines = []
    if evidence.get("dates"):
        days = [date.fromisoformat(d) for d in evidence["dates"]]
        shown = ", ".join(short_date(d) for d in days[:20]) + (" …" if len(days) > 20 else "")
        lines.append(f"{count(len(days), 'day')}: {shown}")
    if evidence.get("time_entry_ids"):
        lines.append(f"time entries: {', '.join(evidence['time_entry_ids'])}")
    if evidence.get("interactive_entry_ids"):
        lines.append(f"live call: {', '.join(evidence['interactive_entry_ids'])}")
    if evidence.get("device_ids"):
        lines.append(f"devices: {', '.join(evidence['device_ids'])}")
    return tuple(lines)


STATUS_ORDER = {"billable": 0, "reachable": 1, "not_billable": 2}


def decision_views(decisions: Iterable[Mapping[str, Any]]) -> tuple[DecisionView, ...]:
    """Decisions in their stored JSON shape (``billing.serialize.decision_to_json``).

    Stored runs and live evaluation share that shape, so the page shows either the same way.
    """
    out = []
    for d in sorted(
        decisions,
        key=lambda d: (d["program"], STATUS_ORDER.get(d["status"], 3), d["code"], d["period"]["start"]),
    ):
        start, end = date.fromisoformat(d["period"]["start"]), date.fromisoformat(d["period"]["end"])
        reasons = tuple(
            ReasonView(
                verdict=VERDICT_BADGES.get(r["verdict"], Badge(r["verdict"], Tone.NEUTRAL))
                if r.get("kind") != ReasonKind.ADVISORY.value
                else Badge("Note", Tone.NEUTRAL),
                message=r["message"],
                rule_id=r["rule_id"],
                citation=r["citation"],
                evidence=_evidence_lines(r.get("evidence") or {}),
            )
            for r in d["reasons"]
        )
        dos = d.get("date_of_service")
        out.append(
            DecisionView(
                code=d["code"],
                program=d["program"],
                status=status_badge(d["status"]),
                units=int(d["units"]),
                date_of_service=short_date(date.fromisoformat(dos)) if dos else "—",
                period=f"{short_date(start)} – {short_date(end)}",
                payment=money(Decimal(d["expected_payment"])) if d.get("expected_payment") else "—",
                reasons=reasons,
                parameters=tuple(
                    (p["name"], p["value"], p["layer"], p["citation"]) for p in d.get("parameters", ())
                ),
                gaps=tuple(d.get("documentation_gaps") or ()),
                rule_year=d.get("rule_year", ""),
                anchor=f"d-{d['enrollment_id']}-{d['code']}-{d['period']['start']}",
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------------------
# Month close
# --------------------------------------------------------------------------------------


def lines_by_code_and_payer(
    lines: Iterable[ClaimLine], *, caption: str = "Claim lines by code and payer"
) -> DataTable:
    groups: dict[tuple[str, str], list[ClaimLine]] = defaultdict(list)
    for line in lines:
        groups[(line.code, line.payer.value)].append(line)
    rows = []
    for (code, payer), group in sorted(groups.items()):
        rows.append(
            (
                code,
                payer_words(payer),
                len(group),
                sum(line.units for line in group),
                len({line.patient_id for line in group}),
                money(sum((line.expected_payment for line in group), Decimal("0"))),
            )
        )
    return DataTable(
        caption=caption,
        columns=(
            Column("Code"),
            Column("Payer"),
            Column("Lines", numeric=True),
            Column("Units", numeric=True),
            Column("Patients", numeric=True),
            Column("Expected payment", numeric=True),
        ),
        rows=tuple(rows),
        empty="No claim lines in this run.",
    )


def not_billable_table(
    counts: Mapping[str, int],
    examples: Mapping[str, Sequence[str]],
    words: Mapping[str, str],
    *,
    patient_href: Callable[[str], str],
) -> DataTable:
    """Why codes were not billed: the rule that failed, how often, and patients to look at.

    ``counts`` and ``examples`` are keyed by rule id; ``words`` is the sentence of one
    example decision (the engine's, shown as it is).
    """
    rows = []
    for rule_id, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        people = examples.get(rule_id, ())[:3]
        links = [Link(p, patient_href(p)) for p in people]
        rows.append(
            (
                rule_id,
                n,
                words.get(rule_id, "—"),
                links[0] if len(links) == 1 else (_join_links(links) if links else None),
            )
        )
    return DataTable(
        caption="Codes not billed, by the rule that stopped them",
        columns=(
            Column("Rule"),
            Column("Decisions", numeric=True),
            Column("For example"),
            Column("Patients"),
        ),
        rows=tuple(rows),
        empty="Every code that was considered was billed.",
    )


def _join_links(links: Sequence[Link]) -> Cell:
    from markupsafe import Markup, escape

    return Markup(", ").join(
        Markup(f'<a href="{escape(link.href)}">{escape(link.text)}</a>') for link in links
    )


# --------------------------------------------------------------------------------------
# Leakage
# --------------------------------------------------------------------------------------


def leak_months(reports: Iterable[LeakageReport]) -> list[LeakMonth]:
    return [
        LeakMonth(r.month, {b: value for b, (_, _, value) in r.by_bucket().items()}, r.billed)
        for r in sorted(reports, key=lambda r: r.month)
    ]


def leakage_reason_table(report: LeakageReport) -> DataTable:
    rows = [(BUCKETS[b], n, p, money(v)) for b, (n, p, v) in report.by_bucket().items()]
    return DataTable(
        caption=f"Money missed in {month_words(report.month)}, by reason",
        columns=(
            Column("Reason"),
            Column("Near misses", numeric=True),
            Column("Patients", numeric=True),
            Column("Value", numeric=True),
        ),
        rows=tuple(rows),
        empty="No near misses this month.",
    )


def near_miss_table(
    report: LeakageReport, *, patient_href: Callable[[str], str], limit: int = 50
) -> DataTable:
    misses = sorted(report.misses, key=lambda m: (-m.value, m.patient_id, m.code))[:limit]
    shown = f"{len(misses)} of {len(report.misses)}" if len(report.misses) > limit else f"{len(misses)}"
    return DataTable(
        caption=f"Near misses in {month_words(report.month)}, largest first ({shown})",
        columns=(
            Column("Patient"),
            Column("Code"),
            Column("Period", nowrap=True),
            Column("Reason"),
            Column("What happened", wide=True),
            Column("Value", numeric=True),
        ),
        rows=tuple(
            (
                Link(m.patient_id, patient_href(m.patient_id)),
                m.code,
                f"{short_date(m.period.start)} – {short_date(m.period.end)}",
                BUCKETS.get(m.bucket, m.bucket),
                m.detail,
                money(m.value),
            )
            for m in misses
        ),
        empty="No near misses this month.",
    )


# --------------------------------------------------------------------------------------
# The auditor's packet
# --------------------------------------------------------------------------------------


def packet_sections(
    *,
    line: ClaimLine,
    decision: Mapping[str, Any],
    run_facts: Sequence[tuple[str, Cell]],
    patient_facts: Sequence[tuple[str, Cell]],
    enrollment_facts: Sequence[tuple[str, Cell]],
    readings: Sequence[ReadingRow],
    entries: Sequence[TimeLogRow],
) -> tuple[Section, ...]:
    """Everything behind one claim line, in the order an auditor retraces it."""
    counted: set[date] = set()
    entry_ids: set[str] = set()
    call_ids: set[str] = set()
    for r in decision["reasons"]:
        e = r.get("evidence") or {}
        # A day count's evidence carries its minimum: its dates are the counted days (other
        # checks cite dates too — the consent's, the order's — which are not days of data).
        if "min_days" in (e.get("values") or {}):
            counted.update(date.fromisoformat(d) for d in e.get("dates", ()))
        entry_ids.update(e.get("time_entry_ids", ()))
        call_ids.update(e.get("interactive_entry_ids", ()))
    sections = [
        Section("Patient", facts=tuple(patient_facts), anchor="patient"),
        Section("Enrollment, consent and order", facts=tuple(enrollment_facts), anchor="enrollment"),
    ]
    if counted:
        by_day: dict[date, list[ReadingRow]] = defaultdict(list)
        for r in readings:
            if r.measured_local.date() in counted:
                by_day[r.measured_local.date()].append(r)
        rows = tuple(
            (
                f"{day:%a %b} {day.day}",
                len(by_day[day]),
                "; ".join(
                    f"{r.measured_local:%H:%M} {r.value} {r.unit} ({r.device_id})" for r in by_day[day][:4]
                )
                + (" …" if len(by_day[day]) > 4 else ""),
            )
            for day in sorted(counted)
        )
        sections.append(
            Section(
                "Counted days and their readings",
                tables=(
                    DataTable(
                        caption=f"{count(len(counted), 'day')} counted",
                        columns=(
                            Column("Day"),
                            Column("Readings", numeric=True),
                            Column("Readings that day"),
                        ),
                        rows=rows,
                    ),
                ),
                anchor="days",
            )
        )
    if entry_ids or call_ids:
        mine = [e for e in entries if e.entry_id in entry_ids | call_ids]
        logged = sum(e.seconds for e in mine)
        rows2 = tuple(
            (
                e.entry_id,
                f"{e.started_at:%Y-%m-%d %H:%M} UTC",
                f"{e.performer}",
                e.credential,
                f"{e.seconds // 60}:{e.seconds % 60:02d}",
                e.modality or "—",
                yes_no(e.entry_id in call_ids, yes="Live call", no="No"),
            )
            for e in sorted(mine, key=lambda e: e.started_at)
        )
        sections.append(
            Section(
                "Minutes and the live call",
                tables=(
                    DataTable(
                        caption=f"Time entries counted ({count(logged // 60, 'minute')})",
                        columns=(
                            Column("Entry"),
                            Column("When"),
                            Column("Who"),
                            Column("Credential"),
                            Column("Duration", numeric=True),
                            Column("Modality"),
                            Column("Interactive"),
                        ),
                        rows=rows2,
                    ),
                ),
                anchor="minutes",
            )
        )
    checks = tuple(
        (
            VERDICT_BADGES.get(r["verdict"], Badge(r["verdict"], Tone.NEUTRAL))
            if r.get("kind") != ReasonKind.ADVISORY.value
            else Badge("Note", Tone.NEUTRAL),
            r["message"],
            r["rule_id"],
            r["citation"],
        )
        for r in decision["reasons"]
    )
    params = tuple((p["name"], p["value"], p["layer"], p["citation"]) for p in decision.get("parameters", ()))
    year_words = decision.get("rule_year") or "rule-year not recorded"
    sections.append(
        Section(
            "Rule checks, values and citations",
            tables=(
                DataTable(
                    caption=f"Checks for {line.code} ({year_words})",
                    columns=(Column("Outcome"), Column("Check", wide=True), Column("Rule"), Column("Source")),
                    rows=checks,
                    row_headers=False,
                ),
                DataTable(
                    caption="Rule-year values used",
                    columns=(
                        Column("Value"),
                        Column("Setting"),
                        Column("Layer", nowrap=True),
                        Column("Source"),
                    ),
                    rows=params,
                    empty="No rule-year values recorded.",
                ),
            ),
            anchor="rules",
        )
    )
    sections.append(Section("Run and digests", facts=tuple(run_facts), anchor="run"))
    return tuple(sections)

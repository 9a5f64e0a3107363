"""A synthetic practice, billed and evaluated, and every page built from it.

This stands in for the service layer until routes are wired: it synthesizes a practice
(``caretally synth``'s generator), imports it into a fresh SQLite file, bills and locks
closed months, builds the worklist mid-month and evaluates one patient live — then builds
each page's records with ``caretally.web.pages``. Nothing on a page is written here by
hand; the only fixed values are the example alert thresholds (practice configuration)
and the review's own date, both marked below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, and_, select

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import (
    RunResult,
    bill_month,
    current_run,
    lock_month,
    stored_decisions,
    stored_lines,
)
from caretally.billing.serialize import decision_to_json
from caretally.dates import add_months, parse_month
from caretally.ingest import import_bundle
from caretally.leakage import leakage_report
from caretally.model import Decision, PatientMonthFacts, Payer, Program
from caretally.services import compliance
from caretally.services.context import cli_actor
from caretally.store import schema
from caretally.store.db import DEFAULT_ORG, open_database
from caretally.synth import SynthConfig, synthesize
from caretally.web import pages, views
from caretally.web.nav import ROLE_LABELS
from caretally.web.templating import environment, render
from caretally.web.viewmodels import Band, Flash, JobProgress, Layout, Pager, Timer
from caretally.worklist import WorklistRow, build_worklist
from tests.web.roles import allowed

#: The practice's first month, how many months it spans, and "today" for the worklist:
#: the 20th of the last month, so periods are open and steps still within reach.
FIRST_MONTH = date(2026, 6, 1)
MONTHS = 4
TODAY = date(2026, 9, 20)
CLOSED_MONTHS = ("2026-06", "2026-07", "2026-08")
ORG_NAME = "Riverside Family Medicine (synthetic)"

#: An example alert configuration for the review pages. Alert thresholds are set by each
#: practice (configuration, not medical advice); these only give the bands something to draw.
EXAMPLE_THRESHOLDS: tuple[pages.AlertThreshold, ...] = (
    pages.AlertThreshold("RPM", "blood_pressure.systolic", Band("systolic at or above 160", 160, None)),
    pages.AlertThreshold("RPM", "blood_pressure.systolic", Band("systolic at or below 90", None, 90)),
    pages.AlertThreshold("RPM", "blood_pressure.diastolic", Band("diastolic at or above 100", 100, None)),
    pages.AlertThreshold("RPM", "glucose", Band("glucose at or above 250", 250, None)),
    pages.AlertThreshold("RPM", "glucose", Band("glucose at or below 70", None, 70)),
    pages.AlertThreshold("RPM", "spo2", Band("SpO2 at or below 90", None, 90)),
    pages.AlertThreshold("RPM", "heart_rate", Band("heart rate at or above 120", 120, None)),
    pages.AlertThreshold("RPM", "heart_rate", Band("heart rate at or below 50", None, 50)),
)


@dataclass
class Practice:
    engine: Engine
    url: str
    rules: PayerRules
    worklist: list[WorklistRow]
    patients: dict[str, pages.PatientRow]
    practitioners: dict[str, tuple[str, str]]  # id → (name, credential)
    runs: dict[str, RunResult]  # month → what its run reported
    audit: list[pages.AuditRow] = field(default_factory=list)


def build_practice(workdir: Path, *, patients: int = 40, seed: int = 11) -> Practice:
    bundle = workdir / "bundle"
    synthesize(
        SynthConfig(patients=patients, start=FIRST_MONTH, months=MONTHS, seed=seed, lead_in_days=29), bundle
    )
    url = f"sqlite:///{workdir / 'practice.db'}"
    engine = open_database(url, DEFAULT_ORG)
    report = import_bundle(engine, DEFAULT_ORG, bundle)
    if not report.ok():
        raise RuntimeError(f"synthetic bundle did not import: {report.problems[:3]}")
    rules = PayerRules.load()
    runs = {month: bill_month(engine, DEFAULT_ORG, parse_month(month), rules) for month in CLOSED_MONTHS}
    for month in CLOSED_MONTHS[:-1]:
        lock_month(engine, DEFAULT_ORG, month)
    worklist = build_worklist(engine, DEFAULT_ORG, TODAY, rules)
    return Practice(engine, url, rules, worklist, _patients(engine), _practitioners(engine), runs)


# --------------------------------------------------------------------------------------
# Reads the service layer will own
# --------------------------------------------------------------------------------------


def _patients(engine: Engine) -> dict[str, pages.PatientRow]:
    p, e = schema.patients, schema.enrollments
    with engine.connect() as conn:
        programs: dict[str, list[str]] = {}
        for pid, program in conn.execute(
            select(e.c.patient_id, e.c.program).where(e.c.org_id == DEFAULT_ORG)
        ):
            programs.setdefault(pid, []).append(program)
        rows = conn.execute(select(p).where(p.c.org_id == DEFAULT_ORG).order_by(p.c.family_name)).mappings()
        return {
            r["patient_id"]: pages.PatientRow(
                r["patient_id"],
                r["family_name"],
                r["given_name"],
                r["birth_date"],
                r["payer"],
                r["member_id"],
                r["timezone"],
                tuple(sorted(set(programs.get(r["patient_id"], ())))),
            )
            for r in rows
        }


def _practitioners(engine: Engine) -> dict[str, tuple[str, str]]:
    t = schema.practitioners
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.practitioner_id, t.c.name, t.c.credential).where(t.c.org_id == DEFAULT_ORG)
        )
        return {pid: (name, cred) for pid, name, cred in rows}


def readings_for(practice: Practice, patient_id: str, start: date, end: date) -> list[views.ReadingRow]:
    r, d = schema.readings, schema.devices
    tz = ZoneInfo(practice.patients[patient_id].timezone)
    stmt = (
        select(
            r.c.reading_key, r.c.measured_at, r.c.type, r.c.value, r.c.unit, r.c.transmission, r.c.device_id
        )
        .join(d, and_(d.c.org_id == r.c.org_id, d.c.device_id == r.c.device_id))
        .where(
            r.c.org_id == DEFAULT_ORG,
            r.c.patient_id == patient_id,
            r.c.local_date >= start,
            r.c.local_date <= end,
        )
        .order_by(r.c.measured_at)
    )
    with practice.engine.connect() as conn:
        return [
            views.ReadingRow(
                key, at.astimezone(tz).replace(tzinfo=None), kind, value, unit, how == "manual", device
            )
            for key, at, kind, value, unit, how, device in conn.execute(stmt)
        ]


def entries_for(practice: Practice, patient_id: str, start: date, end: date) -> list[views.TimeLogRow]:
    t = schema.time_entries
    stmt = (
        select(t)
        .where(
            t.c.org_id == DEFAULT_ORG,
            t.c.patient_id == patient_id,
            t.c.local_date >= start,
            t.c.local_date <= end,
        )
        .order_by(t.c.started_at)
    )
    with practice.engine.connect() as conn:
        rows = conn.execute(stmt).mappings().all()
    out = []
    for row in rows:
        name, credential = practice.practitioners.get(row["practitioner_id"], (row["practitioner_id"], "?"))
        out.append(
            views.TimeLogRow(
                row["entry_id"],
                row["started_at"].astimezone(UTC),
                int(row["seconds"]),
                name,
                credential,
                row["program"],
                row["activity"],
                bool(row["interactive"]),
                row["modality"],
            )
        )
    return out


def live_month(
    practice: Practice, patient_id: str, as_of: date, months_ahead: int = 0
) -> tuple[PatientMonthFacts, list[Decision]]:
    month = parse_month(f"{add_months(as_of, months_ahead):%Y-%m}")
    for facts, decisions in evaluate_month(
        practice.engine, DEFAULT_ORG, month, practice.rules, as_of=as_of, patients={patient_id}
    ):
        return facts, decisions
    raise LookupError(f"{patient_id} has nothing to evaluate in {month.start:%Y-%m}")


def book_for(practice: Practice) -> Any:
    return lambda patient_id: practice.rules.for_payer(Payer(practice.patients[patient_id].payer))


def _bands() -> dict[str, list[Band]]:
    out: dict[str, list[Band]] = {}
    for t in EXAMPLE_THRESHOLDS:
        out.setdefault(t.measure, []).append(t.band)
    return out


# --------------------------------------------------------------------------------------
# Every page, as (file name, template, layout, page)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rendered:
    name: str
    template: str
    layout: Layout
    page: Any

    def html(self, env: Any | None = None) -> str:
        return render(env or environment(), self.template, layout=self.layout, page=self.page)


def _layout(practice: Practice, title: str, role: str, current: str | None, **kw: Any) -> Layout:
    user = views.signed_in(f"Review {ROLE_LABELS[role]}", f"{role}@example.org", role)
    practice.audit.append(
        pages.AuditRow(
            datetime.now(UTC), user.email, "view", f"page {current or title}", (), "ok", "127.0.0.1"
        )
    )
    return views.page_layout(
        title, user=user, org_name=ORG_NAME, allowed=allowed, current=current, csrf_token="review-token", **kw
    )


def focus_patient(practice: Practice) -> str:
    """The worklist's first RPM row: a patient whose page has every chart."""
    for row in practice.worklist:
        if row.program is Program.RPM and row.next_step is not None:
            return row.patient_id
    raise LookupError("no RPM row on the worklist")


def all_pages(practice: Practice) -> Iterator[Rendered]:
    names = {pid: p.name for pid, p in practice.patients.items()}
    staff = sorted(
        ((pid, f"{name} ({cred})") for pid, (name, cred) in practice.practitioners.items()),
        key=lambda x: x[1],
    )

    yield Rendered(
        "signin",
        "pages/signin.html",
        views.page_layout("Sign in", user=None, org_name=None, csrf_token="review-token"),
        pages.sign_in_page(),
    )
    yield Rendered(
        "signin-expired",
        "pages/signin.html",
        views.page_layout("Sign in", user=None, org_name=None, csrf_token="review-token"),
        pages.sign_in_page(
            expired=True, email="nurse@example.org", error="That email and password do not match."
        ),
    )

    rows = [r for r in practice.worklist if r.next_step is not None]
    yield Rendered(
        "worklist",
        "pages/worklist.html",
        _layout(practice, "Worklist", "care_staff", "worklist"),
        pages.worklist_page(
            rows[:25],
            as_of=TODAY,
            staff_choices=staff,
            names=names,
            totals=(len(rows), sum((r.value_at_stake for r in rows), Decimal("0"))),
            pager=Pager(
                f"Rows 1–{min(25, len(rows))} of {len(rows)}",
                None,
                "/worklist?cursor=25" if len(rows) > 25 else None,
            ),
        ),
    )
    listed = sorted(practice.patients.values(), key=lambda p: p.name)
    yield Rendered(
        "patients",
        "pages/patients.html",
        _layout(practice, "Patients", "care_staff", "patients"),
        pages.patients_page(
            listed[:20], pager=Pager(f"Patients 1–20 of {len(listed)}", None, "/patients?cursor=20")
        ),
    )

    pid = focus_patient(practice)
    patient = practice.patients[pid]
    facts, decisions = live_month(practice, pid, TODAY)
    later = live_month(practice, pid, TODAY, months_ahead=1)
    period_starts = [p.start for f in (facts, later[0]) for pf in f.programs for p in pf.device_periods]
    start = min([facts.month.start, *period_starts])
    readings = readings_for(practice, pid, start, TODAY)
    entries = entries_for(practice, pid, facts.month.start, TODAY)
    yield Rendered(
        "patient",
        "pages/patient.html",
        _layout(
            practice,
            patient.name,
            "care_staff",
            "patients",
            breadcrumbs=(("Patients", "/patients"), (patient.name, None)),
        ),
        pages.patient_page(
            patient=patient,
            facts=facts,
            decisions=decisions,
            decision_json=[decision_to_json(d) for d in decisions],
            decisions_source=f"Live, as of {TODAY:%b} {TODAY.day}: the month is still open.",
            year_for=lambda day: practice.rules.for_payer(facts.payer).for_date(day),
            readings=readings,
            bands=_bands(),
            entries=entries,
            today=TODAY,
            log_time_href=f"/patients/{pid}/time",
            later=[later],
        ),
    )
    yield Rendered(
        "log-time",
        "pages/log_time.html",
        _layout(
            practice,
            "Log time",
            "care_staff",
            "patients",
            breadcrumbs=(("Patients", "/patients"), (patient.name, f"/patients/{pid}"), ("Log time", None)),
            flashes=(Flash("success", "Timer started."),),
        ),
        pages.log_time_page(
            patient=patient,
            programs=patient.programs,
            timer=Timer(
                "running", 754, datetime.combine(TODAY, datetime.min.time(), UTC) + timedelta(hours=14)
            ),
            entries=entries,
        ),
    )

    alerts = []
    bands = _bands()
    for p in list(practice.patients.values())[:40]:
        for r in readings_for(practice, p.patient_id, TODAY - timedelta(days=6), TODAY):
            for key, points in views.reading_points([r]).items():
                for t in EXAMPLE_THRESHOLDS:
                    if t.measure == key and any(
                        (t.band.low is None or pt.value >= t.band.low)
                        and (t.band.high is None or pt.value <= t.band.high)
                        for pt in points
                    ):
                        alerts.append(pages.OpenAlert(f"A{len(alerts) + 1}", p, r, t, r.measured_local))
    alerts.sort(key=lambda a: a.raised_at, reverse=True)
    assert bands  # every example threshold has a band
    yield Rendered(
        "alerts",
        "pages/alerts.html",
        _layout(practice, "Alerts", "care_staff", "alerts"),
        pages.alerts_page(alerts[:12], EXAMPLE_THRESHOLDS),
    )

    month = CLOSED_MONTHS[-1]
    run = current_run(practice.engine, DEFAULT_ORG, month)
    assert run is not None
    lines = stored_lines(practice.engine, run.run_id)
    stored = stored_decisions(practice.engine, run.run_id)
    yield Rendered(
        "month-close",
        "pages/month_close.html",
        _layout(practice, "Month close", "biller", "month_close"),
        pages.month_close_page(
            month=month,
            run=run,
            lines=lines,
            decisions=stored,
            book_for=book_for(practice),
            may_run=True,
            may_lock=True,
        ),
    )
    yield Rendered(
        "month-close-running",
        "pages/month_close.html",
        _layout(
            practice,
            "Month close",
            "biller",
            "month_close",
            flashes=(Flash("info", f"The {month} run started."),),
        ),
        pages.month_close_page(
            month=month,
            run=run,
            lines=lines,
            decisions=stored,
            book_for=book_for(practice),
            job=JobProgress(
                f"Billing {month}", len(practice.patients) // 3, len(practice.patients), "running"
            ),
            may_run=True,
            may_lock=True,
        ),
    )

    reports = [
        leakage_report(practice.engine, DEFAULT_ORG, parse_month(m), practice.rules) for m in CLOSED_MONTHS
    ]
    yield Rendered(
        "leakage",
        "pages/leakage.html",
        _layout(practice, "Leakage", "biller", "leakage"),
        pages.leakage_page(month=month, reports=reports),
    )

    locked = current_run(practice.engine, DEFAULT_ORG, CLOSED_MONTHS[0])
    assert locked is not None
    locked_lines = stored_lines(practice.engine, locked.run_id)
    line = next(
        (x for x in locked_lines if x.code == "99457"),
        next(x for x in locked_lines if x.program is Program.RPM),
    )
    decision = next(
        d
        for d in stored_decisions(practice.engine, locked.run_id, line.patient_id)
        if d["code"] == line.code and d["enrollment_id"] == line.enrollment_id and d["status"] == "billable"
    )
    packet_month = parse_month(locked.month)
    line_facts = next(
        f
        for f, _ in evaluate_month(
            practice.engine, DEFAULT_ORG, packet_month, practice.rules, patients={line.patient_id}
        )
    )
    yield Rendered(
        "packet",
        "pages/packet.html",
        _layout(
            practice,
            f"Claim line {line.code} for {line.patient_id}",
            "auditor",
            "month_close",
            breadcrumbs=(
                ("Month close", "/month-close"),
                (locked.month, f"/month-close?month={locked.month}"),
                (line.code, None),
            ),
        ),
        pages.packet_page(
            line=line,
            run=locked,
            decision=decision,
            patient=practice.patients[line.patient_id],
            facts=line_facts,
            readings=readings_for(practice, line.patient_id, line.period_start, line.period_end),
            entries=entries_for(practice, line.patient_id, line.period_start, line.period_end),
            json_href=f"/claims/{locked.run_id}/{line.patient_id}/{line.code}.json",
            practitioners={k: v[0] for k, v in practice.practitioners.items()},
        ),
    )

    # The OIG measure scan of the practice's year, through the service as /compliance runs it.
    report = compliance.scan(practice.engine, cli_actor(DEFAULT_ORG), FIRST_MONTH.year)
    yield Rendered(
        "compliance",
        "pages/compliance.html",
        _layout(practice, f"Compliance scan, {FIRST_MONTH.year}", "auditor", "compliance"),
        pages.compliance_page(
            report, patient_links=True, json_href=f"/compliance/scan.json?year={FIRST_MONTH.year}"
        ),
    )
    yield Rendered(
        "admin",
        "pages/admin.html",
        _layout(practice, "Admin", "admin", "admin"),
        pages.admin_page(
            users=[
                pages.UserRecord(
                    f"u{i}", f"{role}@example.org", f"Review {label}", role, role != "integration"
                )
                for i, (role, label) in enumerate(ROLE_LABELS.items(), start=1)
            ],
            tokens=[],
            settings=(
                ("Organization", ORG_NAME),
                ("Session ends after", "15 minutes without activity"),
                ("Alert thresholds", f"{len(EXAMPLE_THRESHOLDS)} (see Alerts)"),
            ),
        ),
    )
    # Last: the access log shows the page views this review made above.
    events = sorted(practice.audit, key=lambda e: e.at, reverse=True)
    yield Rendered(
        "audit",
        "pages/audit.html",
        _layout(practice, "Access log", "auditor", "audit"),
        pages.audit_page(events, pager=Pager(f"Events 1–{len(events)} of {len(events)}")),
    )
    yield Rendered(
        "forbidden",
        "pages/error.html",
        _layout(practice, "Not allowed", "care_staff", None),
        pages.error_page(
            403, "Your role cannot open Month close.", "Ask an administrator if you need it.", None
        ),
    )

"""The OIG measure scan of a practice's year (or month): ``caretally scan`` and the API.

Reads the current run of every month (draft or locked; superseded and void runs are not
what the practice bills) and the visits, then hands plain values to the pure measures in
``caretally.compliance``. The report names patients and their claim lines, so the call
is recorded in the audit trail with every patient it disclosed.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select

from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput
from caretally.services.months import FIRST_YEAR, LAST_YEAR, month_period
from caretally.store import schema


def _window(year: int, month: str | None) -> Any:
    from caretally.compliance.measures import Window

    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise InvalidInput(f"year {year} is outside {FIRST_YEAR}–{LAST_YEAR}", code="invalid_year")
    if month is None:
        return Window(year, None, date(year, 1, 1), date(year, 12, 31))
    period = month_period(month)
    if period.start.year != year:
        raise InvalidInput(
            f"month {month} is not in {year}",
            hint="give a month of the scanned year",
            code="month_outside_year",
        )
    return Window(year, period.start.strftime("%Y-%m"), period.start, period.end)


def _current_runs(conn: Any, org_id: str) -> dict[str, str]:
    """Run id → status of the newest run of each month that is neither superseded nor void."""
    from caretally.billing.run import SUPERSEDED, VOID

    r = schema.billing_runs
    rows = conn.execute(
        select(r.c.run_id, r.c.month, r.c.status)
        .where(r.c.org_id == org_id, r.c.status.not_in((SUPERSEDED, VOID)))
        .order_by(r.c.month, r.c.created_at, r.c.run_id)
    ).all()
    newest: dict[str, tuple[str, str]] = {}
    for run_id, month, status in rows:
        newest[month] = (run_id, status)
    return dict(newest.values())


def _lines(conn: Any, org_id: str, runs: dict[str, str], end: date) -> list[Any]:
    from caretally.compliance.measures import ScanLine

    if not runs:
        return []
    c = schema.claim_lines
    out: list[ScanLine] = []
    ids = sorted(runs)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        stmt = (
            select(
                c.c.id,
                c.c.run_id,
                c.c.line_key,
                c.c.patient_id,
                c.c.enrollment_id,
                c.c.program,
                c.c.code,
                c.c.units,
                c.c.date_of_service,
                c.c.billing_npi,
                c.c.diagnosis_codes,
                c.c.expected_payment,
            )
            .where(c.c.org_id == org_id, c.c.run_id.in_(chunk), c.c.date_of_service <= end)
            .order_by(c.c.id)
        )
        for row in conn.execute(stmt):
            out.append(
                ScanLine(
                    run_id=row.run_id,
                    run_status=runs[row.run_id],
                    line_id=int(row.id),
                    line_key=row.line_key,
                    patient_id=row.patient_id,
                    enrollment_id=row.enrollment_id,
                    program=row.program,
                    code=row.code,
                    units=int(row.units),
                    date_of_service=row.date_of_service,
                    billing_npi=row.billing_npi,
                    diagnoses=tuple(x for x in (row.diagnosis_codes or "").split(";") if x),
                    expected_payment=Decimal(str(row.expected_payment)).quantize(Decimal("0.01")),
                )
            )
    return out


def _visits(conn: Any, org_id: str, end: date) -> list[Any]:
    from caretally.compliance.measures import ScanVisit

    v = schema.visits
    stmt = select(
        v.c.visit_id, v.c.patient_id, v.c.practitioner_id, v.c.visit_date, v.c.code, v.c.telehealth
    ).where(v.c.org_id == org_id, v.c.visit_date <= end)
    return [
        ScanVisit(r.visit_id, r.patient_id, r.practitioner_id, r.visit_date, r.code, bool(r.telehealth))
        for r in conn.execute(stmt)
    ]


def scan(
    engine: Engine,
    actor: Actor,
    year: int,
    month: str | None = None,
    *,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The OIG measures for ``year`` (or one ``month`` of it) as the JSON report.

    ``options`` overrides the named options of ``oig_measures.yaml`` (the two unpublished
    cut-offs and the prior-relationship lookback).
    """
    from caretally.compliance import config
    from caretally.compliance.measures import scan as run_scan

    window = _window(year, month)
    try:
        book = config.load().with_options(**(options or {}))
    except config.ConfigError as exc:
        raise InvalidInput(str(exc), code="invalid_option") from None
    resource = f"compliance/scan/{window.month or year}"

    def work(note: audit.AuditNote) -> dict[str, Any]:
        with engine.connect() as conn:
            runs = _current_runs(conn, actor.org_id)
            lines = _lines(conn, actor.org_id, runs, window.end)
            visits = _visits(conn, actor.org_id, window.end)
        report = run_scan(book, window, lines, visits)
        note.touch(report.patient_ids)
        flagged = [r.measure.id for r in report.measures if r.status == "flagged"]
        note.detail = {"year": year, "month": window.month, "flagged": flagged, "lines": len(lines)}
        return report.to_json()

    return audit.audited_call(engine, actor, "compliance.scan", resource, work)

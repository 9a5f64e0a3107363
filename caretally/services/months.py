"""A month seen from the billing engine: one patient-month explained, the worklist, leakage.

These call the engine's own entry points (``billing.evaluate``, ``worklist``,
``leakage``) and so may run for a while on a large practice; each is recorded in the
audit trail after it finishes (``audit.audited_call``) with the patients it disclosed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine

from caretally.dates import parse_month
from caretally.errors import ProblemsError
from caretally.model import Period, Program
from caretally.services import audit, paging
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput, NotFound
from caretally.services.paging import Page
from caretally.services.patients import patient_exists

LIVE, RUN = "live", "run"
SOURCES = ("auto", RUN, LIVE)


@dataclass(frozen=True)
class PatientMonth:
    patient_id: str
    month: str
    source: str  # run | live
    run_id: str | None
    run_status: str | None
    as_of: date | None
    decisions: list[dict[str, Any]]


#: Years outside this range are refused before any date arithmetic can overflow.
FIRST_YEAR, LAST_YEAR = 1900, 2200


def month_period(text: str) -> Period:
    try:
        period = parse_month(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a month; write it as YYYY-MM", code="invalid_month") from None
    check_day(period.start)
    return period


def check_day(day: date) -> date:
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise InvalidInput(
            f"{day.isoformat()} is outside the years {FIRST_YEAR}–{LAST_YEAR}", code="date_out_of_range"
        )
    return day


def payer_rules(overlays: Mapping[str, str] | None = None) -> Any:
    """The Medicare rules with the given payer overlays (loading is cached by the loader)."""
    from caretally.billing.payers import PayerRules

    try:
        return PayerRules.load(dict(overlays or {}))
    except (ValueError, KeyError) as exc:
        raise InvalidInput(f"payer overlays cannot be loaded: {exc}", code="invalid_overlay") from None


def _engine_errors(exc: Exception) -> InvalidInput:
    """What the engine refuses (a month no rule-year covers …) as one user-facing error."""
    if isinstance(exc, ProblemsError):
        return InvalidInput(
            "the rules cannot judge this month: " + "; ".join(p.message for p in exc.problems[:3]),
            code="rules_unavailable",
            problems=exc.problems,
        )
    text = exc.args[0] if exc.args else str(exc)
    return InvalidInput(
        f"the rules cannot judge this date: {text}",
        hint="rule-years are data (caretally/rulesets/); the date may lie beyond the newest one",
        code="rules_unavailable",
    )


def _judging_errors() -> tuple[type[Exception], ...]:
    from caretally.rules.families.common import UnsupportedOption
    from caretally.rules.params import MissingParameter

    return (ProblemsError, MissingParameter, UnsupportedOption)


def patient_month(
    engine: Engine,
    actor: Actor,
    patient_id: str,
    month: str,
    *,
    source: str = "auto",
    as_of: date | None = None,
) -> PatientMonth:
    """The decisions ``caretally explain`` shows: the stored run's when the month has a
    current run (and ``source`` is not ``live``), the engine's on today's data otherwise.

    ``as_of`` judges the live data as of that day (a run is always as of the month's end).
    """
    if source not in SOURCES:
        raise InvalidInput(f"source must be one of {', '.join(SOURCES)}", code="invalid_source")
    period = month_period(month)
    if as_of is not None:
        check_day(as_of)
    resource = f"patients/{patient_id}/months/{month}"

    def work(note: audit.AuditNote) -> PatientMonth:
        from caretally.billing.evaluate import evaluate_month
        from caretally.billing.run import current_run, stored_decisions
        from caretally.billing.serialize import decision_to_json

        if not patient_exists(engine, actor.org_id, patient_id):
            raise NotFound("no such patient", code="no_such_patient")
        note.touch([patient_id])
        run = current_run(engine, actor.org_id, month) if source != LIVE and as_of is None else None
        if run is not None:
            note.detail = {"source": RUN, "run_id": run.run_id}
            decisions = stored_decisions(engine, run.run_id, patient_id)
            return PatientMonth(patient_id, month, RUN, run.run_id, run.status, None, decisions)
        if source == RUN:
            raise NotFound(f"{month} has no current run", code="no_run", hint="ask for source=live")
        runs_settings = _latest_overlays(engine, actor.org_id, month)
        try:
            results = list(
                evaluate_month(
                    engine,
                    actor.org_id,
                    period,
                    payer_rules(runs_settings),
                    as_of=as_of,
                    patients={patient_id},
                )
            )
        except _judging_errors() as exc:
            raise _engine_errors(exc) from None
        note.detail = {"source": LIVE}
        decisions = [decision_to_json(d) for _, ds in results for d in ds]
        return PatientMonth(patient_id, month, LIVE, None, None, as_of, decisions)

    return audit.audited_call(engine, actor, "patient_month.read", resource, work)


def _latest_overlays(engine: Engine, org_id: str, month: str) -> dict[str, str]:
    """Judge live data with the payer overlays the month's newest run used, if any."""
    from sqlalchemy import select

    from caretally.store import schema

    r = schema.billing_runs
    with engine.connect() as conn:
        settings = conn.execute(
            select(r.c.settings)
            .where(r.c.org_id == org_id, r.c.month == month)
            .order_by(r.c.created_at.desc(), r.c.run_id.desc())
            .limit(1)
        ).scalar()
    overlays = (settings or {}).get("payer_overlays") or {}
    return {str(k): str(v) for k, v in overlays.items()}


def worklist(
    engine: Engine,
    actor: Actor,
    *,
    as_of: date,
    program: str | None = None,
    include_done: bool = False,
    limit: int | None = None,
    cursor: str | None = None,
) -> Page[dict[str, Any]]:
    """Open periods ranked as ``caretally worklist`` ranks them, a page at a time.

    The page is read from the kept worklist (``caretally.worklist_state``), brought up to
    the committed data first: patients touched since its last refresh are evaluated again
    before the query, so the answer is the one ``build_worklist`` would give now.
    The cursor is tied to the query (date and program): it cannot be replayed on another.
    """
    chosen = None
    if program is not None:
        try:
            chosen = Program(program.upper())
        except ValueError:
            known = ", ".join(p.value for p in Program)
            raise InvalidInput(f"program {program!r} is not one of {known}", code="invalid_program") from None
    check_day(as_of)
    size = paging.clamp(limit)
    key = [as_of.isoformat(), chosen.value if chosen else None, include_done]
    position = paging.decode(cursor, "worklist", 4)
    if position is not None and (position[:3] != key or not isinstance(position[3], int) or position[3] < 0):
        raise InvalidInput("the cursor belongs to another worklist query", code="invalid_cursor")
    offset = 0 if position is None else int(position[3])

    def work(note: audit.AuditNote) -> Page[dict[str, Any]]:
        from caretally import worklist_state

        try:
            kept = worklist_state.refresh(engine, actor.org_id, as_of, payer_rules())
        except _judging_errors() as exc:
            raise _engine_errors(exc) from None
        with engine.connect() as conn:
            rows = worklist_state.ranked(
                conn,
                actor.org_id,
                kept.state_id,
                program=chosen,
                include_done=include_done,
                offset=offset,
                limit=size + 1,
            )
        page = rows[:size]
        note.touch(r.patient_id for r in page)
        note.detail = {"as_of": as_of.isoformat(), "rows": len(page), "offset": offset}
        following = paging.encode("worklist", *key, offset + size) if len(rows) > size else None
        return Page([r.to_json() for r in page], following)

    return audit.audited_call(engine, actor, "worklist.read", "worklist", work)


def refresh_kept_worklists(engine: Engine, org_id: str) -> None:
    """Bring every kept worklist of the organization up to the committed data (the task
    the queue runs after an ingest; PHI-free: nothing is returned or logged)."""
    from caretally import worklist_state

    worklist_state.refresh_kept(engine, org_id, payer_rules)


def leakage(engine: Engine, actor: Actor, month: str) -> dict[str, Any]:
    """``caretally leakage --json`` for the month: near misses valued, by reason."""
    period = month_period(month)

    def work(note: audit.AuditNote) -> dict[str, Any]:
        from caretally.leakage import leakage_report

        try:
            report = leakage_report(engine, actor.org_id, period, payer_rules())
        except _judging_errors() as exc:
            raise _engine_errors(exc) from None
        note.touch(m.patient_id for m in report.misses)
        note.detail = {"near_misses": len(report.misses)}
        return report.to_json()

    return audit.audited_call(engine, actor, "leakage.read", f"months/{month}/leakage", work)

"""The month as the biller's pages read it: the current run with its lines and decisions,
the amendments against a locked run, the explanations file, and leakage over months.

Starting, locking and downloading claims are ``services.jobs`` and ``services.closing``;
this module only reads. Every read here names patients (lines, decisions, near misses),
so each is one audited call with the patients it disclosed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from caretally.billing.run import LineChange, StoredRun
from caretally.dates import add_months
from caretally.model import ClaimLine, Payer
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import NotFound
from caretally.services.months import _engine_errors, _judging_errors, month_period, payer_rules
from caretally.store import schema

#: How many months the leakage trend shows, the month in focus last.
TREND_MONTHS = 6


@dataclass(frozen=True)
class MonthView:
    """The month's current run (``None`` before the first run) and what it stored."""

    month: str
    run: StoredRun | None
    lines: list[ClaimLine]
    decisions: list[dict[str, Any]]
    changes: list[LineChange]  # the current run against the locked run it amends
    payers: dict[str, Payer]  # each patient's payer, whose rule book judged them

    @property
    def needs_acceptance(self) -> bool:
        """A proposed rule-year judged the draft: locking must accept it explicitly."""
        return (
            self.run is not None
            and self.run.status == "draft"
            and self.run.provisional is not None
            and not self.run.provisional_accepted
        )


def month_view(engine: Engine, actor: Actor, month: str) -> MonthView:
    """The current run of ``month`` with its claim lines and stored decisions."""
    month_period(month)

    def work(note: audit.AuditNote) -> MonthView:
        from caretally.billing.run import (
            current_run,
            diff_lines,
            run_by_id,
            stored_decisions,
            stored_line_contents,
            stored_lines,
        )

        run = current_run(engine, actor.org_id, month)
        if run is None:
            note.detail = {"run_id": None}
            return MonthView(month, None, [], [], [], {})
        lines = stored_lines(engine, run.run_id)
        decisions = stored_decisions(engine, run.run_id)
        changes: list[LineChange] = []
        if run.amends_run_id is not None:
            amended = run_by_id(engine, actor.org_id, run.amends_run_id, month)
            if amended is not None:
                changes = diff_lines(
                    stored_line_contents(engine, amended.run_id), stored_line_contents(engine, run.run_id)
                )
        note.touch(d["patient_id"] for d in decisions)
        note.detail = {"run_id": run.run_id, "lines": len(lines)}
        return MonthView(month, run, lines, decisions, changes, _payers(engine, actor.org_id))

    return audit.audited_call(engine, actor, "month_close.read", f"months/{month}", work)


def _payers(engine: Engine, org_id: str) -> dict[str, Payer]:
    p = schema.patients
    with engine.connect() as conn:
        rows = conn.execute(select(p.c.patient_id, p.c.payer).where(p.c.org_id == org_id)).all()
    return {pid: Payer(payer) for pid, payer in rows}


def explanations(engine: Engine, actor: Actor, month: str) -> tuple[str, bytes]:
    """Every stored decision of the month's current run as JSON Lines: (run id, bytes)."""
    month_period(month)

    def work(note: audit.AuditNote) -> tuple[str, bytes]:
        from caretally.billing.run import current_run, stored_decisions

        run = current_run(engine, actor.org_id, month)
        if run is None:
            raise NotFound(f"{month} has no run yet", code="no_run", hint="run the month first")
        decisions = stored_decisions(engine, run.run_id)
        note.touch(d["patient_id"] for d in decisions)
        note.detail = {"run_id": run.run_id, "decisions": len(decisions)}
        body = "".join(json.dumps(d, sort_keys=True) + "\n" for d in decisions)
        return run.run_id, body.encode()

    return audit.audited_call(engine, actor, "explanations.export", f"months/{month}/explanations", work)


def trend_months(month: str, count: int = TREND_MONTHS) -> list[str]:
    """``count`` months ending with ``month``, oldest first."""
    start = month_period(month).start
    return [f"{add_months(start, k - count + 1):%Y-%m}" for k in range(count)]


def leakage_trend(engine: Engine, actor: Actor, month: str, count: int = TREND_MONTHS) -> list[Any]:
    """Leakage reports for the ``count`` months ending with ``month`` (one audited read).

    A month no rule-year covers (before the first, after the newest) is left out rather
    than failing the page: the trend shows the months the rules can judge, the focus
    month must be one of them.
    """
    months = trend_months(month, count)

    def work(note: audit.AuditNote) -> list[Any]:
        from caretally.leakage import leakage_report

        rules = payer_rules()
        reports = []
        for m in months:
            try:
                reports.append(leakage_report(engine, actor.org_id, month_period(m), rules))
            except _judging_errors() as exc:
                if m == month:
                    raise _engine_errors(exc) from None
        for report in reports:
            note.touch(miss.patient_id for miss in report.misses)
        note.detail = {"months": [r.month for r in reports]}
        return reports

    return audit.audited_call(engine, actor, "leakage.read", f"months/{month}/leakage?trend={count}", work)


def line_number(
    engine: Engine, actor: Actor, run_id: str, patient_id: str, code: str, enrollment_id: str = ""
) -> int:
    """The number (1-based, stored order, as packets count) of a patient's line for ``code``.

    How a decision (which knows its run, patient, enrollment and code) finds its packet.
    Recorded in the audit trail as a lookup of that patient; a decision that billed no
    line is ``NotFound``.
    """
    r, c = schema.billing_runs, schema.claim_lines
    resource = f"runs/{run_id}/lines?patient={patient_id}&code={code}"
    with audit.audited(engine, actor, "claim_line.find", resource) as (conn, note):
        if (
            conn.execute(select(r.c.run_id).where(r.c.org_id == actor.org_id, r.c.run_id == run_id)).first()
            is None
        ):
            raise NotFound("no such run", code="no_such_run")
        rows = conn.execute(
            select(c.c.patient_id, c.c.code, c.c.enrollment_id).where(c.c.run_id == run_id).order_by(c.c.id)
        ).all()
        note.touch([patient_id])
        for n, row in enumerate(rows, start=1):
            if (
                row.patient_id == patient_id
                and row.code == code
                and (not enrollment_id or row.enrollment_id == enrollment_id)
            ):
                note.detail = {"line": n}
                return n
        raise NotFound(
            f"run {run_id} has no {code} line for this patient",
            hint="the decision did not bill a claim line; its reasons say why",
            code="no_such_line",
        )

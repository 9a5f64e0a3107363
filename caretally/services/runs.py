"""Month runs as a reader sees them: the list, one run's summary, and its warnings page by page.

Starting and locking runs (jobs) arrive with the month-close step; the permissions for
them exist already (``runs:write``, ``runs:lock``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select

from caretally.billing.records import RunRecord
from caretally.billing.records import list_runs as _list_runs
from caretally.billing.run import stored_warnings
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput, NotFound
from caretally.services.months import month_period
from caretally.store import schema


@dataclass(frozen=True)
class CodeTotal:
    code: str
    lines: int
    units: int
    expected_payment: Decimal


@dataclass(frozen=True)
class RunDetail:
    record: RunRecord
    engine_version: str
    ruleset_hash: str
    input_digest: str
    lines_digest: str
    settings: dict[str, Any]
    problems: list[dict[str, Any]]
    #: The first :data:`DETAIL_WARNINGS` warnings; ``warnings_total`` counts them all.
    warnings: list[dict[str, Any]]
    decisions: int
    by_code: list[CodeTotal]
    warnings_total: int = 0

    @property
    def expected_revenue(self) -> Decimal:
        return sum((c.expected_payment for c in self.by_code), Decimal("0.00"))


#: Warnings a run's detail shows; the rest are read page by page (:func:`run_warnings`).
#: A run of 100,000 synthetic patients has 334,277: the detail once returned 145 MB.
DETAIL_WARNINGS = 100
#: The largest page of :func:`run_warnings`.
MAX_WARNINGS_PAGE = 1000


@dataclass(frozen=True)
class WarningsPage:
    run_id: str
    total: int
    offset: int
    limit: int
    warnings: list[dict[str, Any]]


def list_runs(engine: Engine, actor: Actor, month: str | None = None) -> list[RunRecord]:
    """Every run of the actor's organization (or of one month); no PHI, so not audited."""
    if month is not None:
        month_period(month)
    return _list_runs(engine, actor.org_id, month)


def run_detail(engine: Engine, actor: Actor, run_id: str) -> RunDetail:
    """One run's record, totals by code, its problems and its first warnings.

    Problems and warnings name patients, so reading them is audited with those patients
    (the ones shown, not the run's every patient with a warning).
    """
    r, c = schema.billing_runs, schema.claim_lines
    with audit.audited(engine, actor, "run.read", f"runs/{run_id}") as (conn, note):
        row = conn.execute(select(r).where(r.c.org_id == actor.org_id, r.c.run_id == run_id)).first()
        if row is None:
            raise NotFound("no such run", code="no_such_run")
        totals = conn.execute(
            select(c.c.code, func.count(), func.sum(c.c.units), func.sum(c.c.expected_payment))
            .where(c.c.run_id == run_id)
            .group_by(c.c.code)
            .order_by(c.c.code)
        ).all()
        summary = row.summary or {}
        page = stored_warnings(conn, run_id, 0, DETAIL_WARNINGS)
        warnings = [w.to_json() for w in page.items]
        problems = list(summary.get("problems") or [])
        note.touch(str(w.get("patient_id")) for w in warnings if w.get("patient_id"))
        note.touch(
            str(p["field"]).removeprefix("patient ")
            for p in problems
            if str(p.get("field") or "").startswith("patient ")
        )
    record = next(x for x in _list_runs(engine, actor.org_id, row.month) if x.run_id == run_id)
    return RunDetail(
        record=record,
        engine_version=row.engine_version,
        ruleset_hash=row.ruleset_hash,
        input_digest=row.input_digest,
        lines_digest=row.lines_digest,
        settings=dict(row.settings or {}),
        problems=problems,
        warnings=warnings,
        warnings_total=page.total,
        decisions=int(summary.get("decisions") or 0),
        by_code=[
            CodeTotal(code, int(n), int(units or 0), Decimal(str(pay or 0)).quantize(Decimal("0.01")))
            for code, n, units, pay in totals
        ],
    )


def run_warnings(
    engine: Engine, actor: Actor, run_id: str, offset: int = 0, limit: int = 100
) -> WarningsPage:
    """A page of a run's warnings in the run's patient order, audited with the patients it shows."""
    if not 0 < limit <= MAX_WARNINGS_PAGE or offset < 0:
        raise InvalidInput(f"limit must be 1–{MAX_WARNINGS_PAGE} and offset at least 0", code="invalid_page")
    r = schema.billing_runs
    with audit.audited(engine, actor, "run.warnings.read", f"runs/{run_id}/warnings") as (conn, note):
        found = conn.execute(
            select(r.c.run_id).where(r.c.org_id == actor.org_id, r.c.run_id == run_id)
        ).first()
        if found is None:
            raise NotFound("no such run", code="no_such_run")
        page = stored_warnings(conn, run_id, offset, limit)
        note.touch(w.patient_id for w in page.items)
        note.detail = {"offset": offset, "warnings": len(page.items)}
    return WarningsPage(run_id, page.total, offset, limit, [w.to_json() for w in page.items])

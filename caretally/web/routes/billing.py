"""The biller's pages: Month close (run, progress, lock, downloads) and Leakage.

Every route follows docs/web.md "Writing a page route": one access rule as a parameter
type, service calls (``services.jobs`` and ``services.closing`` for the actions,
``services.monthclose`` for what the page shows, each audited there), a page record
from ``caretally.web.pages``, and a render or a redirect.

The month run is a job (``services.jobs``). The page shows its progress bar; a small
script in ``app.js`` polls ``/month-close/jobs/{id}`` (JSON, no PHI) and reloads the page
when the job ends, and a meta refresh does the same without scripts.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from caretally.api.routes.params import MONTH_PATTERN
from caretally.dates import add_months
from caretally.model import ClaimLine, Payer
from caretally.services import closing, jobs, monthclose, practice
from caretally.services.errors import Unavailable
from caretally.services.months import payer_rules
from caretally.services.permissions import Permission
from caretally.web import pages, views
from caretally.web.phrasing import money
from caretally.web.routes.common import (
    ClaimsExporter,
    LeakageViewer,
    PostedForm,
    RunsLocker,
    RunsViewer,
    RunsWriter,
    ServiceDep,
    form_text,
    page_response,
    redirect,
)
from caretally.web.templating import long_date
from caretally.web.viewmodels import Column, DataTable, Field, JobProgress, Link

router = APIRouter(include_in_schema=False)

MonthPath = Annotated[str, Path(pattern=MONTH_PATTERN)]
MonthQuery = Annotated[str, Query(pattern=MONTH_PATTERN)]
JobPath = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
BASE = "/month-close"


def default_month(today: date | None = None) -> str:
    """Last month: the newest complete one, the month a biller closes."""
    return f"{add_months(today or date.today(), -1):%Y-%m}"


def packet_href(run_id: str, number: int) -> str:
    """The packet page of line ``number`` (1-based, stored order) of a run."""
    return f"/claims/{run_id}/lines/{number}"


def _queue(service: Any) -> Any:
    if service.queue is None:
        raise Unavailable("this server runs no job queue, so it cannot run a month", code="queue_unavailable")
    return service.queue


def _progress(job: jobs.Job) -> JobProgress:
    state = "finished" if job.state == jobs.SUCCEEDED else job.state
    total = job.total or 0
    return JobProgress(f"Billing {job.month}", job.done or 0, total, state)


def line_list(lines: list[ClaimLine], run_id: str) -> DataTable:
    """Each claim line with a link to its packet, in stored order (the packet's numbering)."""
    rows = tuple(
        (
            Link(f"Packet for line {n}", packet_href(run_id, n)),
            line.patient_id,
            f"{line.code} × {line.units}",
            views.payer_words(line.payer.value),
            long_date(line.date_of_service),
            money(line.expected_payment),
        )
        for n, line in enumerate(lines, start=1)
    )
    return DataTable(
        caption=f"Every claim line of run {run_id}, with its audit packet",
        columns=(
            Column("Line"),
            Column("Patient"),
            Column("Code"),
            Column("Payer"),
            Column("Date of service", nowrap=True),
            Column("Expected payment", numeric=True),
        ),
        rows=rows,
        empty="No claim lines in this run.",
    )


@router.get("/month-close")
def month_close(
    request: Request,
    viewer: RunsViewer,
    service: ServiceDep,
    month: Annotated[str, Query(pattern=f"^$|{MONTH_PATTERN}")] = "",
) -> HTMLResponse:
    month = month or default_month()
    job = None
    notes: list[str] = []
    if service.queue is not None:
        latest = jobs.list_jobs(service.engine, viewer.actor, service.queue, month=month, limit=1)
        if latest:
            job = latest[0]
            if job.state == jobs.FAILED:
                notes.append(f"The last run of {month} failed: {job.error or job.error_code}.")
    view = monthclose.month_view(service.engine, viewer.actor, month)
    rules = payer_rules()
    payers = {line.patient_id: line.payer for line in view.lines}
    payers.update(view.payers)

    def book_for(patient_id: str) -> Any:
        return rules.for_payer(payers.get(patient_id, Payer.MEDICARE))

    running = job is not None and job.state in jobs.ACTIVE
    page = pages.month_close_page(
        month=month,
        run=view.run,
        lines=view.lines,
        decisions=view.decisions,
        book_for=book_for,
        changes=view.changes,
        job=_progress(job) if running and job is not None else None,
        may_run=viewer.may(Permission.RUNS_WRITE) and service.queue is not None,
        may_lock=viewer.may(Permission.RUNS_LOCK),
        action_base=BASE,
        download_base=BASE,
    )
    if page.lock is not None and view.needs_acceptance:
        years = ", ".join(str(y) for y in (view.run.provisional or {}).get("rule_years", []))  # type: ignore[union-attr]
        notes.append(
            f"This run was judged by a proposed rule-year ({years}); locking it needs your acceptance."
        )
        page = replace(
            page,
            lock=replace(
                page.lock,
                fields=(
                    Field(
                        "accept_provisional",
                        "Accept the proposed rule-year (provisional)",
                        kind="checkbox",
                        hint="the final rule may change amounts; an amendment corrects them later",
                    ),
                ),
            ),
        )
    if not viewer.may(Permission.CLAIMS_EXPORT):
        page = replace(page, downloads=())
    if view.run is not None:
        page = replace(page, line_list=line_list(view.lines, view.run.run_id))
    if running and job is not None:
        page = replace(page, job_url=f"{BASE}/jobs/{job.job_id}")
    page = replace(page, notes=tuple(notes))
    layout = viewer.layout("Month close", current="month_close")
    return page_response(request, "month_close", layout, page)


@router.get("/month-close/jobs/{job_id}")
def job_progress(viewer: RunsViewer, service: ServiceDep, job_id: JobPath) -> JSONResponse:
    """A job's progress for the page's script: counts and state, nothing about patients."""
    job = jobs.get_job(service.engine, viewer.actor, _queue(service), job_id)
    progress = _progress(job)
    return JSONResponse(
        {
            "state": job.state,
            "done": progress.done,
            "total": progress.total,
            "percent": progress.percent,
            "finished": job.finished,
            "text": f"{progress.done} of {progress.total} patients ({progress.percent}%) — {progress.state}",
        },
        headers={"Cache-Control": "no-store"},
    )


@router.post("/month-close/{month}/runs")
def start_run(
    request: Request, month: MonthPath, viewer: RunsWriter, service: ServiceDep
) -> RedirectResponse:
    _job, new = jobs.start_month_run(service.engine, viewer.actor, _queue(service), month)
    flash = f"The {month} run has started." if new else f"The {month} run is already under way."
    return redirect(request, f"{BASE}?month={month}", flash=flash, kind="info")


@router.post("/month-close/{month}/lock")
def lock(
    request: Request, month: MonthPath, viewer: RunsLocker, service: ServiceDep, form: PostedForm
) -> RedirectResponse:
    accept = form_text(form, "accept_provisional") == "true"
    locked = closing.lock_month(service.engine, viewer.actor, month, accept_provisional=accept)
    return redirect(request, f"{BASE}?month={month}", flash=f"{month} is locked (run {locked.run_id}).")


@router.get("/month-close/{month}/claims")
def claims(
    month: MonthPath,
    viewer: ClaimsExporter,
    service: ServiceDep,
    fmt: Annotated[str, Query(alias="format", pattern="^(csv|json|x12|fhir)$")] = "csv",
) -> Response:
    identity = None
    if fmt in ("x12", "fhir"):
        identity = practice.claims_identity(service.engine, viewer.actor, service.settings.practice_file)
    made = closing.export_claims(service.engine, viewer.actor, month, fmt, practice=identity)
    return Response(
        content=made.content,
        media_type=made.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{made.filename}"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/month-close/{month}/explanations")
def explanations(month: MonthPath, viewer: ClaimsExporter, service: ServiceDep) -> Response:
    _run_id, body = monthclose.explanations(service.engine, viewer.actor, month)
    return Response(
        content=body,
        media_type="application/x-ndjson",
        headers={
            "Content-Disposition": f'attachment; filename="explanations-{month}.jsonl"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/leakage")
def leakage(
    request: Request,
    viewer: LeakageViewer,
    service: ServiceDep,
    month: Annotated[str, Query(pattern=f"^$|{MONTH_PATTERN}")] = "",
) -> HTMLResponse:
    month = month or default_month()
    reports = monthclose.leakage_trend(service.engine, viewer.actor, month)
    page = pages.leakage_page(month=month, reports=reports, action="/leakage")
    return page_response(request, "leakage", viewer.layout("Leakage", current="leakage"), page)

"""Month close over HTTP: start a month run as a job, follow it, lock the month, download claims."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, Response

from caretally.api import problems
from caretally.api.deps import ClaimsExporter, RunsLocker, RunsReader, RunsWriter, ServiceDep
from caretally.api.routes.params import MONTH_PATTERN, Month
from caretally.api.schemas import JobProgress, JobPublic, LockedRunPublic, LockRequest
from caretally.services import closing, jobs
from caretally.services import practice as practice_settings
from caretally.services.errors import Unavailable

router = APIRouter(tags=["month close"])

JobId = Annotated[
    str, Path(pattern=r"^[0-9a-f-]{36}$", description="A job id, as POST /months/{month}/runs gave it")
]


def _public(job: jobs.Job) -> JobPublic:
    return JobPublic(
        job_id=job.job_id,
        kind="month_run",
        month=job.month,
        state=job.state,  # type: ignore[arg-type]
        progress=JobProgress(done=job.done, total=job.total),
        run_id=job.run_id,
        outcome=job.outcome,  # type: ignore[arg-type]
        error_code=job.error_code,
        error=job.error,
        created_by=job.created_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def _queue(service: ServiceDep) -> object:
    if service.queue is None:
        raise Unavailable("this server runs no job queue", code="queue_unavailable")
    return service.queue


@router.post(
    "/months/{month}/runs",
    status_code=202,
    response_model=JobPublic,
    responses=problems.responses(*problems.GUARDED, 503),
    summary="Start the month run as a job; poll the job at the Location given",
)
def start_month_run(month: Month, actor: RunsWriter, service: ServiceDep, response: Response) -> JobPublic:
    job, _new = jobs.start_month_run(service.engine, actor, _queue(service), month)  # type: ignore[arg-type]
    response.headers["Location"] = f"/api/v1/jobs/{job.job_id}"
    return _public(job)


@router.get(
    "/jobs/{job_id}",
    response_model=JobPublic,
    responses=problems.responses(*problems.GUARDED, 404, 503),
    summary="A job: state, progress (patients done / total), and the run once it succeeded",
)
def get_job(job_id: JobId, actor: RunsReader, service: ServiceDep) -> JobPublic:
    return _public(jobs.get_job(service.engine, actor, _queue(service), job_id))  # type: ignore[arg-type]


@router.get(
    "/jobs",
    response_model=list[JobPublic],
    responses=problems.responses(*problems.GUARDED, 503),
    summary="The organization's jobs, newest first",
)
def list_jobs(
    actor: RunsReader,
    service: ServiceDep,
    month: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="Only this month")] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="How many")] = 50,
) -> list[JobPublic]:
    found = jobs.list_jobs(service.engine, actor, _queue(service), month=month, limit=limit)  # type: ignore[arg-type]
    return [_public(j) for j in found]


@router.post(
    "/months/{month}/lock",
    response_model=LockedRunPublic,
    responses=problems.responses(*problems.GUARDED, 409),
    summary="Lock the month's current run; 409 when there is nothing to lock or the run is provisional",
)
def lock_month(
    month: Month,
    actor: RunsLocker,
    service: ServiceDep,
    body: Annotated[LockRequest | None, Body()] = None,
) -> LockedRunPublic:
    accept = body.accept_provisional if body is not None else False
    locked = closing.lock_month(service.engine, actor, month, accept_provisional=accept)
    return LockedRunPublic.model_validate(locked)


_CLAIM_TYPES = {closing.MEDIA_TYPES[k].split(";")[0]: {} for k in (*closing.FORMATS, "zip")}


@router.get(
    "/months/{month}/claims",
    response_class=Response,
    responses={
        200: {"description": "The claims file", "content": _CLAIM_TYPES},
        **problems.responses(*problems.GUARDED, 409),
    },
    summary="The month's current run as CSV, JSON, an X12 837P (zip for several receivers) or FHIR",
)
def claims(
    month: Month,
    actor: ClaimsExporter,
    service: ServiceDep,
    fmt: Annotated[
        Literal["csv", "json", "x12", "fhir"],
        Query(alias="format", description="csv, json, x12 (837P) or fhir"),
    ] = "csv",
) -> Response:
    practice = None
    if fmt in ("x12", "fhir"):
        # The organization's practice settings (Admin page), else the server's practice file.
        practice = practice_settings.claims_identity(service.engine, actor, service.settings.practice_file)
    made = closing.export_claims(service.engine, actor, month, fmt, practice=practice)
    return Response(
        content=made.content,
        media_type=made.media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{made.filename}"',
            "X-Caretally-Run": made.run_id,
        },
    )

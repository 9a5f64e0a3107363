"""Stored month runs: the list, one run's summary, and its warnings page by page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from caretally.api import problems
from caretally.api.deps import RunsReader, ServiceDep
from caretally.api.routes.params import MONTH_PATTERN, RunId
from caretally.api.schemas import (
    CodeTotalPublic,
    RunDetailPublic,
    RunPublic,
    RunWarningPublic,
    RunWarningsPagePublic,
)
from caretally.services import runs

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get(
    "",
    response_model=list[RunPublic],
    responses=problems.responses(*problems.GUARDED),
    summary="Every stored run, oldest month first, with its status and size",
)
def list_runs(
    actor: RunsReader,
    service: ServiceDep,
    month: Annotated[str | None, Query(pattern=MONTH_PATTERN, description="Only this month")] = None,
) -> list[RunPublic]:
    return [RunPublic.model_validate(r) for r in runs.list_runs(service.engine, actor, month)]


@router.get(
    "/{run_id}",
    response_model=RunDetailPublic,
    responses=problems.responses(*problems.GUARDED, 404),
    summary="One run: totals by code, expected revenue, problems and its first 100 warnings",
)
def get_run(run_id: RunId, actor: RunsReader, service: ServiceDep) -> RunDetailPublic:
    found = runs.run_detail(service.engine, actor, run_id)
    record = RunPublic.model_validate(found.record)
    return RunDetailPublic(
        **record.model_dump(),
        engine_version=found.engine_version,
        ruleset_hash=found.ruleset_hash,
        input_digest=found.input_digest,
        lines_digest=found.lines_digest,
        settings=found.settings,
        decisions=found.decisions,
        expected_revenue=str(found.expected_revenue),
        by_code=[
            CodeTotalPublic(
                code=c.code, lines=c.lines, units=c.units, expected_payment=str(c.expected_payment)
            )
            for c in found.by_code
        ],
        problems=found.problems,
        warnings=found.warnings,
        warnings_total=found.warnings_total,
    )


@router.get(
    "/{run_id}/warnings",
    response_model=RunWarningsPagePublic,
    responses=problems.responses(*problems.GUARDED, 404),
    summary="One run's warnings (overlapping time), a page at a time, in patient order",
)
def get_run_warnings(
    run_id: RunId,
    actor: RunsReader,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0, description="Warnings to skip")] = 0,
    limit: Annotated[int, Query(ge=1, le=runs.MAX_WARNINGS_PAGE, description="Warnings per page")] = 100,
) -> RunWarningsPagePublic:
    page = runs.run_warnings(service.engine, actor, run_id, offset, limit)
    return RunWarningsPagePublic(
        run_id=page.run_id,
        total=page.total,
        offset=page.offset,
        limit=page.limit,
        warnings=[RunWarningPublic(**w) for w in page.warnings],
    )

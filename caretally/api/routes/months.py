"""The worklist and a month's leakage."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from caretally.api import problems
from caretally.api.deps import LeakageReader, ServiceDep, WorklistReader
from caretally.api.routes.params import Cursor, Limit, Month
from caretally.api.schemas import LeakagePublic, WorklistPage, WorklistRowPublic
from caretally.model import Program
from caretally.services import months

router = APIRouter(tags=["months"])


@router.get(
    "/worklist",
    response_model=WorklistPage,
    responses=problems.responses(*problems.GUARDED),
    summary="Open periods ranked by value per staff minute, then deadline, with the next step",
)
def worklist(
    actor: WorklistReader,
    service: ServiceDep,
    as_of: Annotated[
        date | None, Query(description="Date the data is known through (default: today, UTC)")
    ] = None,
    program: Annotated[Program | None, Query(description="Only this program")] = None,
    include_done: Annotated[bool, Query(description="Also periods with nothing left to gain")] = False,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> WorklistPage:
    day = as_of or datetime.now(UTC).date()
    page = months.worklist(
        service.engine,
        actor,
        as_of=day,
        program=program.value if program else None,
        include_done=include_done,
        limit=limit,
        cursor=cursor or None,
    )
    return WorklistPage(
        as_of=day,
        items=[WorklistRowPublic.model_validate(r) for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/months/{month}/leakage",
    response_model=LeakagePublic,
    responses=problems.responses(*problems.GUARDED),
    summary="What the month would have earned had each near miss been reached, by reason",
)
def leakage(month: Month, actor: LeakageReader, service: ServiceDep) -> LeakagePublic:
    return LeakagePublic.model_validate(months.leakage(service.engine, actor, month))

"""``GET /audit-events``: who touched what, filtered by patient, actor and time, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from caretally.api import problems
from caretally.api.deps import AuditReader, ServiceDep
from caretally.api.routes.params import ID_PATTERN, Cursor
from caretally.api.schemas import AuditEventPage, AuditEventPublic
from caretally.services import audit

router = APIRouter(prefix="/audit-events", tags=["audit"])


@router.get(
    "",
    response_model=AuditEventPage,
    responses=problems.responses(*problems.GUARDED),
    summary="The audit trail of the organization, newest first (reading it is recorded too)",
)
def list_events(
    actor: AuditReader,
    service: ServiceDep,
    patient_id: Annotated[
        str | None, Query(pattern=ID_PATTERN, description="Events that touched this patient")
    ] = None,
    actor_filter: Annotated[
        str | None,
        Query(
            alias="actor", max_length=254, description="user:ID, token:ID, cli:NAME, an email or a token name"
        ),
    ] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. patient.read")] = None,
    since: Annotated[AwareDatetime | None, Query(description="From this instant (with offset)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this instant (with offset)")] = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 50,
    cursor: Cursor = None,
) -> AuditEventPage:
    events, following = audit.list_events(
        service.engine,
        actor,
        audit.EventFilter(patient_id, actor_filter, action, since, until),
        limit=limit,
        cursor=cursor or None,
    )
    return AuditEventPage(items=[AuditEventPublic.model_validate(e) for e in events], next_cursor=following)

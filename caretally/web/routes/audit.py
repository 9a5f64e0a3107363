"""The access log (``/audit``): the audit trail searched by patient, user and date.

The pattern every page route follows (docs/web.md, "Writing a page route"): declare the
page's permission with ``page_actor``, call one service (which audits the read), build
the page record with ``caretally.web.pages``, render it with ``viewer.layout``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from caretally.services import audit
from caretally.services.errors import InvalidInput
from caretally.web import pages
from caretally.web.routes.common import AuditViewer, ServiceDep, page_response
from caretally.web.viewmodels import Pager

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50


def _day(text: str, what: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not a date; write it as YYYY-MM-DD", code="invalid_date"
        ) from None


@router.get("/audit")
def audit_log(
    request: Request,
    viewer: AuditViewer,
    service: ServiceDep,
    patient: Annotated[str, Query(max_length=64)] = "",
    user: Annotated[str, Query(max_length=254)] = "",
    date_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    date_to: Annotated[str, Query(alias="to", max_length=10)] = "",
    cursor: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    start, end = _day(date_from, "From"), _day(date_to, "To")
    since = datetime.combine(start, time(), UTC) if start else None
    until = datetime.combine(end + timedelta(days=1), time(), UTC) if end else None
    events, following = audit.list_events(
        service.engine,
        viewer.actor,
        audit.EventFilter(patient.strip() or None, user.strip() or None, None, since, until),
        limit=PAGE_SIZE,
        cursor=cursor or None,
    )
    rows = [
        pages.AuditRow(
            e.occurred_at,
            e.actor_name or e.actor,
            e.action,
            e.resource,
            e.patient_ids,
            e.outcome,
            e.client_address,
        )
        for e in events
    ]
    query = {"patient": patient, "user": user, "from": date_from, "to": date_to}
    next_href = (
        "/audit?" + urlencode({**{k: v for k, v in query.items() if v}, "cursor": following})
        if following
        else None
    )
    pager = Pager(f"{len(rows)} event{'s' if len(rows) != 1 else ''} on this page", None, next_href)
    page = pages.audit_page(
        rows, patient=patient, user=user, date_from=start, date_to=end, pager=pager, action="/audit"
    )
    return page_response(request, "audit", viewer.layout("Access log", current="audit"), page)

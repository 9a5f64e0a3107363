"""The compliance page (``/compliance``): the OIG measure scan of a year or one month of it.

The pattern every page route follows (docs/web.md, "Writing a page route"): the page's
permission (``compliance:read``) as the viewer's type, one service call
(``compliance.scan``, which records the patients it disclosed in the audit trail), a
page record from ``caretally.web.pages``, the template. The JSON download is the same
report and the same audited call, so what an auditor saves is what the page showed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from caretally.services import compliance
from caretally.services.errors import InvalidInput
from caretally.services.months import FIRST_YEAR, LAST_YEAR
from caretally.services.permissions import Permission
from caretally.web import pages
from caretally.web.routes.common import PAGE_HEADERS, ComplianceViewer, ServiceDep, Viewer, page_response

router = APIRouter(include_in_schema=False)

YearQuery = Annotated[int | None, Query(ge=FIRST_YEAR, le=LAST_YEAR)]
#: ``03`` (a month of ``year``) or ``2026-03``; empty for the whole year.
MonthQuery = Annotated[str, Query(max_length=7)]


def _month(year: int, month: str) -> str | None:
    month = month.strip()
    if not month:
        return None
    if len(month) <= 2 and month.isdigit():
        number = int(month)
        if 1 <= number <= 12:
            return f"{year}-{number:02d}"
        raise InvalidInput(f"month {month!r} is not 1–12", code="invalid_month")
    return month  # YYYY-MM: the service checks it and that it lies in the year


def _scan(service: Any, viewer: Viewer, year: int | None, month: str) -> dict[str, Any]:
    chosen = year if year is not None else datetime.now(UTC).year
    return compliance.scan(service.engine, viewer.actor, chosen, _month(chosen, month))


def _query(report: dict[str, Any]) -> str:
    wanted = {"year": report["year"], "month": report["month"] or ""}
    return urlencode({k: v for k, v in wanted.items() if v != ""})


@router.get("/compliance")
def compliance_page(
    request: Request,
    viewer: ComplianceViewer,
    service: ServiceDep,
    year: YearQuery = None,
    month: MonthQuery = "",
) -> HTMLResponse:
    report = _scan(service, viewer, year, month)
    page = pages.compliance_page(
        report,
        patient_links=viewer.may(Permission.PATIENTS_READ),
        json_href=f"/compliance/scan.json?{_query(report)}",
        years=(FIRST_YEAR, LAST_YEAR),
    )
    span = report["month"] or str(report["year"])
    layout = viewer.layout(f"Compliance scan, {span}", current="compliance")
    return page_response(request, "compliance", layout, page)


@router.get("/compliance/scan.json")
def compliance_json(
    viewer: ComplianceViewer, service: ServiceDep, year: YearQuery = None, month: MonthQuery = ""
) -> Response:
    report = _scan(service, viewer, year, month)
    name = f"caretally-compliance-{report['month'] or report['year']}.json"
    return Response(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n",
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="{name}"',
            "Cache-Control": PAGE_HEADERS["Cache-Control"],
            "X-Content-Type-Options": "nosniff",
        },
    )

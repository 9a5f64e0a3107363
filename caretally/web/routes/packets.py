"""The auditor's packet page for one claim line, and its JSON twin.

The packet comes from ``services.packets`` (everything behind a stored claim line, as the
run saw it; reading it is audited as ``packet.read``). The page is built from the
packet's JSON alone (``web.packet_document.packet_page_of``), so the HTML never shows a
number the download does not hold. Lines are numbered from 1 in their run's stored
order; Month close links each line here. The page prints section by section
(``print.css``). Packets belong to runs: the roles that read runs (auditor, biller, admin)
open them, as they open Month close.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from caretally.services import monthclose, packets
from caretally.web.packet_document import packet_page_of
from caretally.web.routes.common import RunsViewer, ServiceDep, page_response, redirect

router = APIRouter(include_in_schema=False)

RunId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")]
LineNumber = Annotated[int, Path(ge=1, le=10_000_000)]


def _packet(service: ServiceDep, viewer: RunsViewer, run_id: str, number: int) -> packets.Packet:
    found = packets.line_packets(service.engine, viewer.actor, run_id=run_id, line=number)
    return found.packets[0]


@router.get("/claims/{run_id}/lines/{number}")
def packet_page(
    request: Request, run_id: RunId, number: LineNumber, viewer: RunsViewer, service: ServiceDep
) -> HTMLResponse:
    packet = _packet(service, viewer, run_id, number)
    doc = packet.model_dump(mode="json")
    page = packet_page_of(doc, f"/claims/{run_id}/lines/{number}/packet.json")
    month = packet.run.month
    layout = viewer.layout(
        page.title,
        current="month_close",
        breadcrumbs=(
            ("Month close", "/month-close"),
            (month, f"/month-close?month={month}"),
            (f"Line {number}", None),
        ),
    )
    return page_response(request, "packet", layout, page)


@router.get("/claims/{run_id}/lines/{number}/packet.json")
def packet_download(
    run_id: RunId, number: LineNumber, viewer: RunsViewer, service: ServiceDep
) -> JSONResponse:
    packet = _packet(service, viewer, run_id, number)
    return JSONResponse(
        packet.model_dump(mode="json"),
        headers={
            "Content-Disposition": f'attachment; filename="packet-{run_id}-line-{number}.json"',
            "Cache-Control": "no-store",
        },
    )


def packet_link(run_id: str, patient_id: str, code: str, enrollment_id: str = "") -> str:
    """Where a stored decision's "Packet" link goes (the patient page's decisions use it)."""
    from urllib.parse import urlencode

    query = {"patient": patient_id, "code": code, **({"enrollment": enrollment_id} if enrollment_id else {})}
    return f"/claims/{run_id}/packet?{urlencode(query)}"


@router.get("/claims/{run_id}/packet")
def packet_of_decision(
    request: Request,
    run_id: RunId,
    viewer: RunsViewer,
    service: ServiceDep,
    patient: Annotated[str, Query(min_length=1, max_length=64)],
    code: Annotated[str, Query(pattern=r"^[A-Z0-9]{5}$")],
    enrollment: Annotated[str, Query(max_length=64)] = "",
) -> RedirectResponse:
    """From a decision (run, patient, code) to its line's packet page."""
    number = monthclose.line_number(service.engine, viewer.actor, run_id, patient, code, enrollment)
    return redirect(request, f"/claims/{run_id}/lines/{number}")

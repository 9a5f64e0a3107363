"""Alerts: open alerts with their acknowledgement forms, and the practice's thresholds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from caretally.services import alerts
from caretally.services.errors import InvalidInput
from caretally.services.permissions import Permission
from caretally.web import pages
from caretally.web.routes.care import patient_row, threshold_bands
from caretally.web.routes.common import (
    AlertsViewer,
    AlertsWriter,
    PostedForm,
    ServiceDep,
    Viewer,
    form_text,
    page_response,
    redirect,
)
from caretally.web.viewmodels import Flash, Link
from caretally.web.views import ReadingRow

router = APIRouter(include_in_schema=False)
AlertId = Annotated[str, Path(pattern=r"^[0-9]{1,12}-[0-9]{1,12}$")]
AsOf = Annotated[str, Query(max_length=10)]
ThresholdId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _answer(
    request: Request,
    viewer: Viewer,
    service: ServiceDep,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
    as_of: date | None = None,
) -> HTMLResponse:
    last = as_of or datetime.now(UTC).date()
    found = alerts.open_alerts(service.engine, viewer.actor, as_of=last)
    rows = []
    for a in found:
        pairs = threshold_bands(a.threshold)
        v = float(a.value)
        listed = next(
            (
                t
                for t, b in pairs
                if (b.low is not None and v >= b.low) or (b.high is not None and v <= b.high)
            ),
            pairs[0][0],
        )
        r = a.reading
        rows.append(
            pages.OpenAlert(
                a.alert_id,
                patient_row(a.patient),
                ReadingRow(r.reading_key, r.measured_local, r.kind, r.value, r.unit, r.manual, r.device_id),
                listed,
                a.raised_at,
            )
        )
    stored = alerts.list_thresholds(service.engine, viewer.actor)
    thresholds = [t for th in stored for t, _ in threshold_bands(th)]
    removable = [
        Link(
            " and ".join(band.label for _, band in threshold_bands(th)) + f" ({th.program})",
            f"/alerts/thresholds/{th.threshold_id}/remove",
            th.patient_id,
        )
        for th in stored
    ]
    writer = viewer.may(Permission.ALERTS_WRITE)
    page = pages.alerts_page(
        rows,
        thresholds,
        add_threshold=pages.threshold_form(errors, values) if writer else None,
        may_acknowledge=writer,
        as_of=as_of,
        window=(last - timedelta(days=alerts.WINDOW_DAYS), last),
        remove=removable if writer else (),
    )
    flashes = (Flash("error", "The threshold was not added: see the form."),) if errors else ()
    return page_response(
        request, "alerts", viewer.layout("Alerts", current="alerts", flashes=flashes), page, status=status
    )


def _as_of(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"As of {text!r} is not a date; write it as YYYY-MM-DD", code="invalid_date"
        ) from None


@router.get("/alerts")
def alerts_list(
    request: Request, viewer: AlertsViewer, service: ServiceDep, as_of: AsOf = ""
) -> HTMLResponse:
    """Alerts from readings of the two weeks up to today (or ``as_of``, to review a past day)."""
    return _answer(request, viewer, service, as_of=_as_of(as_of))


@router.post("/alerts/{alert_id}/acknowledge")
def acknowledge(
    request: Request,
    alert_id: AlertId,
    viewer: AlertsWriter,
    service: ServiceDep,
    form: PostedForm,
    as_of: AsOf = "",
) -> RedirectResponse:
    """Close the alert with a note; "Log as time" goes on to the log-time form, filled in."""
    ack_id, patient_id, words = alerts.acknowledge(
        service.engine, viewer.actor, alert_id, note_text=form_text(form, "note")
    )
    if form_text(form, "log_time") == "true":
        query = urlencode({"alert": ack_id, "activity": words})
        return redirect(
            request,
            f"/patients/{patient_id}/time?{query}",
            flash="Alert acknowledged. Log the time the follow-up took.",
        )
    back = f"/alerts?as_of={_as_of(as_of)}" if as_of else "/alerts"
    return redirect(request, back, flash="Alert acknowledged.")


@router.post("/alerts/thresholds")
def add_threshold(request: Request, viewer: AlertsWriter, service: ServiceDep, form: PostedForm) -> Response:
    values = {
        k: form_text(form, k)[:64] for k in ("program", "measure", "at_or_above", "at_or_below", "patient_id")
    }
    try:
        alerts.add_threshold(
            service.engine,
            viewer.actor,
            program=values["program"],
            measure=values["measure"],
            at_or_above=values["at_or_above"],
            at_or_below=values["at_or_below"],
            patient_id=values["patient_id"] or None,
        )
    except InvalidInput as exc:
        field = "measure" if exc.code in ("invalid_measure", "invalid_program") else "bounds"
        return _answer(request, viewer, service, errors={field: exc.message}, values=values, status=422)
    return redirect(request, "/alerts", flash="Threshold added.")


@router.post("/alerts/thresholds/{threshold_id}/remove")
def remove_threshold(
    request: Request, threshold_id: ThresholdId, viewer: AlertsWriter, service: ServiceDep
) -> RedirectResponse:
    """The threshold stops raising alerts; its row stays (who set it, when it was removed)."""
    alerts.remove_threshold(service.engine, viewer.actor, threshold_id)
    return redirect(request, "/alerts", flash="Threshold removed.")

"""Care staff pages: Worklist, Patients, a patient's month, Log time (timer and entries).

Each route calls one function of ``caretally.services.care`` (which audits what it
discloses), converts its records to the page builders' inputs, and renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from caretally.services import care
from caretally.services.errors import InvalidInput
from caretally.services.permissions import Permission
from caretally.web import pages, views
from caretally.web.routes.common import (
    ExplainViewer,
    PatientsViewer,
    PostedForm,
    ServiceDep,
    TimeWriter,
    Viewer,
    WorklistViewer,
    form_text,
    page_response,
    redirect,
)
from caretally.web.viewmodels import Band, Flash, Pager, Timer

router = APIRouter(include_in_schema=False)

PatientId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
EntryId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _day(text: str, what: str = "As of") -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not a date; write it as YYYY-MM-DD", code="invalid_date"
        ) from None


def _today() -> date:
    return datetime.now(UTC).date()


# --------------------------------------------------------------------------------------
# Converting service records to the page builders' inputs (pure)
# --------------------------------------------------------------------------------------


def patient_row(p: care.PatientRecord) -> pages.PatientRow:
    return pages.PatientRow(
        p.patient_id, p.family_name, p.given_name, p.birth_date, p.payer, p.member_id, p.timezone, p.programs
    )


def reading_rows(found: Sequence[care.ReadingRecord]) -> list[views.ReadingRow]:
    return [
        views.ReadingRow(r.reading_key, r.measured_local, r.kind, r.value, r.unit, r.manual, r.device_id)
        for r in found
    ]


def time_rows(found: Sequence[care.TimeRecord]) -> list[views.TimeLogRow]:
    return [
        views.TimeLogRow(
            e.entry_id,
            e.started_at,
            e.seconds,
            e.performer,
            e.credential,
            e.program,
            e.activity,
            e.interactive,
            e.modality,
        )
        for e in found
    ]


def _number(value: object) -> str:
    text = f"{value:f}" if value is not None else ""
    return text.rstrip("0").rstrip(".") if "." in text else text


def threshold_bands(t: care.Threshold) -> list[tuple[pages.AlertThreshold, Band]]:
    """A stored threshold as the bands drawn and the rows listed (one per bound it sets)."""
    words = views.measure_words(t.measure).lower()
    out = []
    if t.at_or_above is not None:
        band = Band(f"{words} at or above {_number(t.at_or_above)}", float(t.at_or_above), None)
        out.append((pages.AlertThreshold(t.program, t.measure, band, t.patient_id), band))
    if t.at_or_below is not None:
        band = Band(f"{words} at or below {_number(t.at_or_below)}", None, float(t.at_or_below))
        out.append((pages.AlertThreshold(t.program, t.measure, band, t.patient_id), band))
    return out


def bands_by_measure(thresholds: Sequence[care.Threshold]) -> dict[str, list[Band]]:
    out: dict[str, list[Band]] = {}
    for t in thresholds:
        for _, band in threshold_bands(t):
            out.setdefault(t.measure, []).append(band)
    return out


def correct_href(entry_id: str) -> str:
    return f"/time-entries/{entry_id}"


def patient_crumbs(
    patient: care.PatientRecord, *rest: tuple[str, str | None]
) -> list[tuple[str, str | None]]:
    return [
        ("Patients", "/patients"),
        (patient.name, pages.patient_href(patient.patient_id) if rest else None),
        *rest,
    ]


# --------------------------------------------------------------------------------------
# Worklist and patients
# --------------------------------------------------------------------------------------


@router.get("/worklist")
def worklist(
    request: Request,
    viewer: WorklistViewer,
    service: ServiceDep,
    program: Annotated[str, Query(max_length=8)] = "",
    staff: Annotated[str, Query(max_length=64)] = "",
    as_of: Annotated[str, Query(max_length=10)] = "",
    offset: Offset = 0,
) -> HTMLResponse:
    day = _day(as_of) or _today()
    found = care.worklist_view(
        service.engine, viewer.actor, as_of=day, program=program or None, staff=staff or None, offset=offset
    )
    query = {k: v for k, v in (("program", program), ("staff", staff), ("as_of", as_of)) if v}

    def at(position: int | None) -> str | None:
        return None if position is None else "/worklist?" + urlencode({**query, "offset": position})

    shown = len(found.rows)
    pager = Pager(
        f"Rows {found.offset + 1}–{found.offset + shown} of {found.total}"
        if shown
        else f"No rows of {found.total}",
        at(max(0, found.offset - care.PAGE_SIZE)) if found.offset else None,
        at(found.next_offset),
    )
    page = pages.worklist_page(
        found.rows,
        as_of=day,
        program=program or None,
        staff=staff or None,
        staff_choices=found.staff,
        names=found.names,
        pager=pager,
        totals=(found.total, found.value),
    )
    return page_response(request, "worklist", viewer.layout("Worklist", current="worklist"), page)


@router.get("/patients")
def patients(
    request: Request,
    viewer: PatientsViewer,
    service: ServiceDep,
    q: Annotated[str, Query(max_length=100)] = "",
    offset: Offset = 0,
) -> HTMLResponse:
    found = care.find_patients(service.engine, viewer.actor, query=q, offset=offset)
    query = {"q": q} if q else {}

    def at(position: int | None) -> str | None:
        return None if position is None else "/patients?" + urlencode({**query, "offset": position})

    shown = len(found.patients)
    pager = Pager(
        f"Patients {found.offset + 1}–{found.offset + shown} of {found.total}" if shown else "No patients",
        at(max(0, found.offset - care.PAGE_SIZE)) if found.offset else None,
        at(found.next_offset),
    )
    page = pages.patients_page([patient_row(p) for p in found.patients], query=q, pager=pager)
    return page_response(request, "patients", viewer.layout("Patients", current="patients"), page)


@router.get("/patients/{patient_id}")
def patient(
    request: Request,
    patient_id: PatientId,
    viewer: ExplainViewer,
    service: ServiceDep,
    as_of: Annotated[str, Query(max_length=10)] = "",
) -> HTMLResponse:
    # A patient's month is its decisions with their evidence (explain:read): a biller who
    # follows an example patient from Month close reads why a code was not billed.
    day = _day(as_of) or _today()
    found = care.patient_month_view(service.engine, viewer.actor, patient_id, as_of=day)
    page = pages.patient_page(
        patient=patient_row(found.patient),
        facts=found.facts,
        decisions=found.decisions,
        decision_json=found.decision_json,
        decisions_source=found.source,
        year_for=found.year_for,
        readings=reading_rows(found.readings),
        bands=bands_by_measure(found.thresholds),
        entries=time_rows(found.entries),
        today=day,
        log_time_href=f"/patients/{patient_id}/time" if viewer.may(Permission.TIME_WRITE) else None,
        later=found.later,
        correct_href=correct_href if viewer.may(Permission.TIME_WRITE) else None,
    )
    if found.run_id is not None and viewer.may(Permission.RUNS_READ):
        page = with_packet_links(page, found.run_id, patient_id, found.decision_json)
    crumbs = patient_crumbs(found.patient)
    if not viewer.may(Permission.PATIENTS_READ):  # a biller came from Month close: no link to a 403
        back = [("Month close", "/month-close")] if viewer.may(Permission.RUNS_READ) else []
        crumbs = [*back, (found.patient.name, None)]
    layout = viewer.layout(found.patient.name, current="patients", breadcrumbs=crumbs)
    return page_response(request, "patient", layout, page)


# --------------------------------------------------------------------------------------
# Log time: the timer and the entry form
# --------------------------------------------------------------------------------------


def _log_time_answer(
    request: Request,
    viewer: Viewer,
    service: ServiceDep,
    patient_id: str,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    flashes: Sequence[Flash] = (),
    status: int = 200,
    action: str | None = None,
    hidden: Sequence[tuple[str, str]] = (),
    title: str = "Log time",
    submit: str = "Save time",
) -> HTMLResponse:
    found = care.log_time_view(service.engine, viewer.actor, patient_id)
    timer = Timer(
        found.timer.state,
        found.timer.elapsed_seconds,
        found.timer.running_since,
        patient_id,
        f"/patients/{patient_id}/timer",
    )
    notes = list(flashes)
    if found.practitioner_id is None:
        notes.append(
            Flash(
                "info",
                f"{care.NO_PRACTITIONER[0].upper()}{care.NO_PRACTITIONER[1:]}: {care.NO_PRACTITIONER_HINT}.",
            )
        )
    locked = (
        f"This month was billed by the locked run {found.locked_run}: new time in it is refused."
        if found.locked_run
        else None
    )
    page = pages.log_time_page(
        patient=patient_row(found.patient),
        programs=found.programs,
        timer=timer,
        entries=time_rows(found.entries),
        values=values,
        errors=errors,
        locked_note=locked,
        action=action or f"/patients/{patient_id}/time",
        correct_href=correct_href,
        hidden=hidden,
        submit=submit,
        now_local=care.local_input(datetime.now(UTC), found.patient.timezone),
    )
    crumbs = patient_crumbs(found.patient, (title, None))
    layout = viewer.layout(title, current="patients", breadcrumbs=crumbs, flashes=notes)
    return page_response(request, "log_time", layout, page, status=status)


@router.get("/patients/{patient_id}/time")
def log_time_form(
    request: Request,
    patient_id: PatientId,
    viewer: TimeWriter,
    service: ServiceDep,
    started_at: Annotated[str, Query(max_length=16)] = "",
    minutes: Annotated[str, Query(max_length=4)] = "",
    activity: Annotated[str, Query(max_length=200)] = "",
    alert: Annotated[str, Query(max_length=20)] = "",
) -> HTMLResponse:
    """The timer and the entry form; a stopped timer or an alert arrives with values filled in."""
    values = {
        k: v for k, v in (("started_at", started_at), ("minutes", minutes), ("activity", activity)) if v
    }
    hidden = (("alert", alert),) if alert.isdigit() else ()
    return _log_time_answer(request, viewer, service, patient_id, values=values, hidden=hidden)


@router.post("/patients/{patient_id}/timer")
def timer(
    request: Request, patient_id: PatientId, viewer: TimeWriter, service: ServiceDep, form: PostedForm
) -> RedirectResponse:
    action = form_text(form, "action")
    done = care.timer_action(service.engine, viewer.actor, patient_id, action)
    base = f"/patients/{patient_id}/time"
    if isinstance(done, care.StoppedTimer):
        found = care.log_time_view(service.engine, viewer.actor, patient_id)
        query = {
            "started_at": care.local_input(done.started_at, found.patient.timezone),
            "minutes": str(done.minutes) if done.minutes else "",
        }
        words = (
            f"Timer stopped at {done.seconds // 60} min {done.seconds % 60} s: check the entry and save it."
        )
        return redirect(request, f"{base}?{urlencode({k: v for k, v in query.items() if v})}", flash=words)
    words = {"start": "Timer started.", "pause": "Timer paused.", "resume": "Timer resumed."}[action]
    return redirect(request, base, flash=words)


def _time_input(form: object) -> care.TimeInput:
    return care.TimeInput(
        program=form_text(form, "program"),  # type: ignore[arg-type]
        activity=form_text(form, "activity")[:500],  # type: ignore[arg-type]
        started_local=form_text(form, "started_at")[:32],  # type: ignore[arg-type]
        minutes=form_text(form, "minutes")[:6],  # type: ignore[arg-type]
        interactive=form_text(form, "interactive") == "true",  # type: ignore[arg-type]
        modality=form_text(form, "modality")[:16],  # type: ignore[arg-type]
        note=form_text(form, "note")[:2000],  # type: ignore[arg-type]
    )


def _values(given: care.TimeInput) -> dict[str, str]:
    return {
        "program": given.program,
        "activity": given.activity,
        "started_at": given.started_local,
        "minutes": given.minutes,
        "interactive": "true" if given.interactive else "",
        "modality": given.modality,
        "note": given.note,
    }


@router.post("/patients/{patient_id}/time")
def save_time(
    request: Request, patient_id: PatientId, viewer: TimeWriter, service: ServiceDep, form: PostedForm
) -> Response:
    given = _time_input(form)
    try:
        entry_id = care.log_time(service.engine, viewer.actor, patient_id, given, touched=service.touched)
    except care.TimeRefused as exc:
        return _log_time_answer(
            request,
            viewer,
            service,
            patient_id,
            values=_values(given),
            errors=exc.fields,
            flashes=(Flash("error", "The time was not saved: correct the fields marked below."),),
            status=422,
        )
    alert = form_text(form, "alert")
    if alert.isdigit():
        from caretally.services import alerts

        alerts.attach_entry(service.engine, viewer.actor, int(alert), patient_id, entry_id)
    return redirect(request, f"/patients/{patient_id}/time", flash=f"Saved {given.minutes} minutes.")


@router.get("/time-entries/{entry_id}")
def correct_form(
    request: Request, entry_id: EntryId, viewer: TimeWriter, service: ServiceDep
) -> HTMLResponse:
    entry = care.time_entry(service.engine, viewer.actor, entry_id)
    found = care.log_time_view(service.engine, viewer.actor, entry.patient_id)
    values = {
        "program": entry.program or "",
        "activity": entry.activity or "",
        "started_at": care.local_input(entry.started_at, found.patient.timezone),
        "minutes": str(max(1, round(entry.seconds / 60))),
        "interactive": "true" if entry.interactive else "",
        "modality": entry.modality or "",
        "note": entry.note or "",
    }
    return _log_time_answer(
        request,
        viewer,
        service,
        found.patient.patient_id,
        values=values,
        action=f"/time-entries/{entry_id}",
        title=f"Correct time entry {entry_id}",
        submit="Save correction",
    )


@router.post("/time-entries/{entry_id}")
def correct(
    request: Request, entry_id: EntryId, viewer: TimeWriter, service: ServiceDep, form: PostedForm
) -> Response:
    """A correction: an audited amendment; a locked month refuses it with the run named."""
    given = _time_input(form)
    try:
        patient_id = care.amend_time(service.engine, viewer.actor, entry_id, given, touched=service.touched)
    except care.TimeRefused as exc:
        return _log_time_answer(
            request,
            viewer,
            service,
            care.time_entry(service.engine, viewer.actor, entry_id).patient_id,
            values=_values(given),
            errors=exc.fields,
            flashes=(Flash("error", "The correction was not saved: correct the fields marked below."),),
            status=422,
            action=f"/time-entries/{entry_id}",
            title=f"Correct time entry {entry_id}",
            submit="Save correction",
        )
    return redirect(request, f"/patients/{patient_id}/time", flash=f"Time entry {entry_id} corrected.")


def with_packet_links(page: Any, run_id: str, patient_id: str, decisions: list[dict[str, Any]]) -> Any:
    """Each billed decision of a stored run links to its claim line's packet (issue 12)."""
    from dataclasses import replace

    from caretally.web.routes.packets import packet_link

    billed = {(d["program"], d["code"]): d["enrollment_id"] for d in decisions if d["status"] == "billable"}
    linked = tuple(
        replace(d, packet_href=packet_link(run_id, patient_id, d.code, billed[(d.program, d.code)]))
        if (d.program, d.code) in billed
        else d
        for d in page.decisions
    )
    return replace(page, decisions=linked)

"""A patient's record: the list, one patient, readings and time over a date range, and a month."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from caretally.api import problems
from caretally.api.deps import ExplainReader, PatientsReader, ServiceDep
from caretally.api.routes.params import Cursor, Limit, Month, PatientId
from caretally.api.schemas import (
    DevicePublic,
    EnrollmentPublic,
    PatientMonthPublic,
    PatientPage,
    PatientPublic,
    PatientSummaryPublic,
    ReadingPage,
    ReadingPublic,
    TimeEntryPage,
    TimeEntryPublic,
)
from caretally.services import months, patients

router = APIRouter(prefix="/patients", tags=["patients"])

From = Annotated[date, Query(alias="from", description="First patient-local date, YYYY-MM-DD")]
To = Annotated[date, Query(alias="to", description="Last patient-local date (inclusive)")]


@router.get(
    "",
    response_model=PatientPage,
    responses=problems.responses(*problems.GUARDED),
    summary="Patients, in id order, a page at a time",
)
def list_patients(
    actor: PatientsReader, service: ServiceDep, limit: Limit = 50, cursor: Cursor = None
) -> PatientPage:
    page = patients.list_patients(service.engine, actor, limit=limit, cursor=cursor or None)
    return PatientPage(
        items=[PatientSummaryPublic.model_validate(p) for p in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{patient_id}",
    response_model=PatientPublic,
    responses=problems.responses(*problems.GUARDED, 404),
    summary="One patient with enrollments (consent, order, established patient) and devices",
)
def get_patient(patient_id: PatientId, actor: PatientsReader, service: ServiceDep) -> PatientPublic:
    found = patients.get_patient(service.engine, actor, patient_id)
    return PatientPublic(
        **asdict(found.summary),
        member_id=found.member_id,
        address_line=found.address_line,
        city=found.city,
        state=found.state,
        postal_code=found.postal_code,
        enrollments=[
            EnrollmentPublic(**{**asdict(e), "diagnoses": list(e.diagnoses)}, consent=e.consent)
            for e in found.enrollments
        ],
        devices=[DevicePublic.model_validate(d) for d in found.devices],
    )


@router.get(
    "/{patient_id}/readings",
    response_model=ReadingPage,
    responses=problems.responses(*problems.GUARDED, 404),
    summary="Readings whose patient-local date lies in [from, to], oldest first",
)
def list_readings(
    patient_id: PatientId,
    start: From,
    end: To,
    actor: PatientsReader,
    service: ServiceDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> ReadingPage:
    page = patients.list_readings(
        service.engine, actor, patient_id, start, end, limit=limit, cursor=cursor or None
    )
    return ReadingPage(
        items=[ReadingPublic.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{patient_id}/time-entries",
    response_model=TimeEntryPage,
    responses=problems.responses(*problems.GUARDED, 404),
    summary="Time entries whose patient-local date lies in [from, to], oldest first",
)
def list_time_entries(
    patient_id: PatientId,
    start: From,
    end: To,
    actor: PatientsReader,
    service: ServiceDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> TimeEntryPage:
    page = patients.list_time_entries(
        service.engine, actor, patient_id, start, end, limit=limit, cursor=cursor or None
    )
    return TimeEntryPage(
        items=[TimeEntryPublic.model_validate(t) for t in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/{patient_id}/months/{month}",
    response_model=PatientMonthPublic,
    responses=problems.responses(*problems.GUARDED, 404),
    summary="Every code considered for the patient-month, as `caretally explain` shows it",
)
def patient_month(
    patient_id: PatientId,
    month: Month,
    actor: ExplainReader,
    service: ServiceDep,
    source: Annotated[
        Literal["auto", "run", "live"],
        Query(description="auto: the month's current run if there is one, else live"),
    ] = "auto",
    as_of: Annotated[date | None, Query(description="Judge live data as of this date")] = None,
) -> PatientMonthPublic:
    found = months.patient_month(service.engine, actor, patient_id, month, source=source, as_of=as_of)
    return PatientMonthPublic.model_validate(asdict(found))

"""The OIG measure scan of a year or a month (``caretally scan`` over HTTP)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from caretally.api import problems
from caretally.api.deps import ComplianceReader, ServiceDep
from caretally.api.schemas import Model
from caretally.services import compliance

router = APIRouter(tags=["compliance"])


class ScanLinePublic(Model):
    run_id: str
    run_status: str
    line_id: int
    line_key: str
    enrollment_id: str
    code: str
    units: int
    date_of_service: str
    billing_npi: str | None
    diagnoses: list[str]
    expected_payment: str


class ScanFindingPublic(Model):
    patient_id: str | None
    severity: str
    evidence: str
    values: dict[str, Any]
    lines: list[ScanLinePublic]


class ScanMeasurePublic(Model):
    id: str
    title: str
    unit: str
    status: str
    national: str
    practice: str
    explanation: str
    numbers: dict[str, Any]
    thresholds: dict[str, Any]
    options: dict[str, Any]
    citation: str
    doc: str
    patients: list[str]
    findings: list[ScanFindingPublic]


class ScanPublic(Model):
    year: int
    month: str | None
    window: dict[str, str]
    population: dict[str, Any]
    sources: dict[str, Any]
    classification: dict[str, str]
    flagged: list[str]
    measures: list[ScanMeasurePublic]


@router.get(
    "/compliance/scan",
    response_model=ScanPublic,
    responses=problems.responses(*problems.GUARDED),
    summary="The OIG's remote-monitoring measures and the CCM chronic-conditions check, with evidence",
)
def scan(
    actor: ComplianceReader,
    service: ServiceDep,
    year: Annotated[int, Query(ge=1900, le=2200, description="Calendar year to scan")],
    month: Annotated[
        str | None, Query(pattern=r"^\d{4}-\d{2}$", description="Only this month of the year, YYYY-MM")
    ] = None,
) -> ScanPublic:
    return ScanPublic.model_validate(compliance.scan(service.engine, actor, year, month))

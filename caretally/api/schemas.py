"""Request and response bodies: one family per resource (``XCreate``, ``XUpdate``, ``XPublic``).

A ``Public`` model lists exactly what may leave the server, so a column added to a table
(a password hash, a failed-sign-in counter, a token digest) never reaches a client by
accident. Decisions keep ``extra="allow"``: they are the engine's documented JSON
(``billing/serialize.py``) and stored runs may carry fields newer than this module.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from caretally.services.permissions import Role


class Model(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# -- problems ---------------------------------------------------------------------------


class ProblemItem(Model):
    code: str
    message: str
    pointer: str | None = Field(default=None, description="JSON pointer into the request body")
    source: str | None = Field(default=None, description="file:line, or the parameter (query.limit)")
    field: str | None = None


class ProblemPublic(Model):
    """RFC 9457 problem details, with every individual fault in ``errors``."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    hint: str | None = None
    request_id: str | None = None
    errors: list[ProblemItem] = []


# -- health and auth --------------------------------------------------------------------


class HealthPublic(Model):
    status: Literal["ok"]


class SignIn(Model):
    email: str = Field(max_length=320, examples=["nurse@practice.example"])
    password: str = Field(max_length=1024)


class SessionTokenPublic(Model):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds of inactivity after which the token stops working")
    expires_at: datetime = Field(description="When the token stops working whatever the activity")


class MePublic(Model):
    org_id: str
    actor: str
    name: str | None
    role: str | None
    kind: Literal["user", "token"]
    permissions: list[str]


# -- patients ---------------------------------------------------------------------------


class PatientSummaryPublic(Model):
    patient_id: str
    family_name: str
    given_name: str
    birth_date: date
    sex: str
    payer: str
    timezone: str


class PatientPage(Model):
    items: list[PatientSummaryPublic]
    next_cursor: str | None


class EnrollmentPublic(Model):
    enrollment_id: str
    program: str
    start_date: date
    end_date: date | None
    consent_date: date | None
    consent: Literal["recorded", "missing"]
    billing_practitioner_id: str
    diagnoses: list[str]
    complexity: str | None
    order_date: date | None
    established_patient: bool | None
    initiating_visit_date: date | None


class DevicePublic(Model):
    device_id: str
    program: str
    kind: str
    medical_device: bool
    setup_date: date | None
    assigned_date: date
    returned_date: date | None
    hardware_id: str | None


class PatientPublic(PatientSummaryPublic):
    member_id: str | None
    address_line: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    enrollments: list[EnrollmentPublic]
    devices: list[DevicePublic]


class ReadingPublic(Model):
    reading_id: str | None
    reading_key: str
    device_id: str
    measured_at: datetime
    local_date: date
    type: str
    value: str
    unit: str
    transmission: str


class ReadingPage(Model):
    items: list[ReadingPublic]
    next_cursor: str | None


class TimeEntryPublic(Model):
    entry_id: str
    practitioner_id: str
    program: str | None
    started_at: datetime
    local_date: date
    seconds: int
    activity: str | None
    interactive: bool
    modality: str | None
    note: str | None


class TimeEntryPage(Model):
    items: list[TimeEntryPublic]
    next_cursor: str | None


# -- decisions --------------------------------------------------------------------------


class PeriodPublic(Model):
    kind: str
    start: date
    end: date


class ReasonPublic(Model):
    model_config = ConfigDict(extra="allow")

    rule_id: str
    passed: bool
    message: str
    citation: str
    verdict: str | None = None
    kind: str | None = None
    evidence: dict[str, Any] = {}


class DecisionPublic(Model):
    model_config = ConfigDict(extra="allow")

    patient_id: str
    enrollment_id: str
    program: str
    code: str
    status: str
    units: int
    date_of_service: date | None
    period: PeriodPublic
    expected_payment: str | None = None
    reasons: list[ReasonPublic]
    parameters: list[dict[str, Any]] = []
    documentation_gaps: list[str] = []
    rule_year: str | None = None
    measures: dict[str, Any] = {}


class PatientMonthPublic(Model):
    patient_id: str
    month: str
    source: Literal["run", "live"] = Field(
        description="Stored run's decisions, or the engine on today's data"
    )
    run_id: str | None
    run_status: str | None
    as_of: date | None
    decisions: list[DecisionPublic]


# -- worklist and leakage ---------------------------------------------------------------


class ReachablePublic(Model):
    code: str
    value: str
    days_needed: int
    minutes_needed: int
    call_needed: bool


class WorklistRowPublic(Model):
    patient_id: str
    program: str
    enrollment_id: str
    period: PeriodPublic
    deadline: date
    counts_from: date | None
    days_so_far: int | None
    days_left: int | None
    minutes_so_far: int | None
    interactive_done: bool | None
    secured: list[str]
    reachable: list[ReachablePublic]
    next_step: str | None
    days_needed: int | None
    minutes_needed: int | None
    value_at_stake: str
    value_per_staff_minute: str
    action: str
    blocked: list[str]


class WorklistPage(Model):
    as_of: date
    items: list[WorklistRowPublic]
    next_cursor: str | None


class LeakageReasonPublic(Model):
    label: str
    near_misses: int
    patients: int
    value: str


class NearMissPublic(Model):
    patient_id: str
    enrollment_id: str
    code: str
    period_start: date
    period_end: date
    reason: str
    value: str
    detail: str


class LeakagePublic(Model):
    month: str
    billed_expected_payment: str
    leakage: str
    patients: int
    by_reason: dict[str, LeakageReasonPublic]
    near_misses: list[NearMissPublic]


# -- runs and imports -------------------------------------------------------------------


class RunPublic(Model):
    run_id: str
    month: str
    status: str
    created_at: datetime
    locked_at: datetime | None
    amends_run_id: str | None
    lines: int
    patients: int


class CodeTotalPublic(Model):
    code: str
    lines: int
    units: int
    expected_payment: str


class RunDetailPublic(RunPublic):
    engine_version: str
    ruleset_hash: str
    input_digest: str
    lines_digest: str
    settings: dict[str, Any]
    decisions: int
    expected_revenue: str
    by_code: list[CodeTotalPublic]
    problems: list[dict[str, Any]]
    warnings: list[dict[str, Any]] = Field(
        description="The run's first 100 warnings in patient order; the rest: GET /runs/{run_id}/warnings"
    )
    warnings_total: int = Field(description="How many warnings the run stored")


class RunWarningPublic(Model):
    code: str = Field(description="The advisory rule, e.g. time.overlap_other_patient")
    patient_id: str
    message: str
    entry_ids: list[str]


class RunWarningsPagePublic(Model):
    run_id: str
    total: int = Field(description="How many warnings the run stored")
    offset: int
    limit: int
    warnings: list[RunWarningPublic]


class FileCountsPublic(Model):
    model_config = ConfigDict(extra="allow")

    read: int
    inserted: int
    unchanged: int
    updated: int
    rejected: int


class ImportReportPublic(Model):
    ok: bool
    stored: bool
    batch_id: str | None
    source: str
    counts: dict[str, FileCountsPublic]
    problems: list[ProblemItem]
    problems_total: int
    warnings: list[ProblemItem]


class ImportBatchPublic(Model):
    batch_id: str
    source: str
    started_at: datetime
    finished_at: datetime | None
    counts: dict[str, dict[str, int]]


# -- audit ------------------------------------------------------------------------------


class AuditEventPublic(Model):
    event_id: int
    seq: int
    occurred_at: datetime
    actor: str
    actor_name: str | None
    action: str
    resource: str
    request_id: str | None
    client_address: str | None
    outcome: str
    detail: dict[str, Any] | None
    patient_ids: list[str]
    prev_hash: str
    event_hash: str


class AuditEventPage(Model):
    items: list[AuditEventPublic]
    next_cursor: str | None


# -- users and tokens -------------------------------------------------------------------


class UserPublic(Model):
    user_id: int
    email: str
    display_name: str
    role: str
    active: bool
    created_at: datetime
    last_signin_at: datetime | None
    locked_until: datetime | None


class UserCreate(Model):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    role: Role
    display_name: str | None = Field(default=None, max_length=200)


class UserUpdate(Model):
    role: Role | None = None
    active: bool | None = None
    display_name: str | None = Field(default=None, max_length=200)


class TokenPublic(Model):
    token_id: int
    name: str
    role: str
    prefix: str
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreate(Model):
    name: str = Field(max_length=100)
    role: Role


class TokenCreatedPublic(TokenPublic):
    token: str = Field(description="The secret, shown this once; store it now")


# -- month close: jobs, lock, claims -------------------------------------------------------


class JobProgress(Model):
    done: int | None = Field(description="Patients evaluated and stored so far")
    total: int | None = Field(description="Patients of the month (known once the run has its snapshot)")


class JobPublic(Model):
    job_id: str
    kind: Literal["month_run"]
    month: str
    state: Literal["queued", "running", "succeeded", "failed"]
    progress: JobProgress
    run_id: str | None = Field(description="The run made (or found unchanged) once succeeded")
    outcome: Literal["created", "unchanged"] | None = None
    error_code: str | None = None
    error: str | None = Field(default=None, description="One line, when failed")
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class LockRequest(Model):
    accept_provisional: bool = Field(
        default=False, description="Lock a run judged by a proposed (not final) rule-year anyway"
    )


class LockedRunPublic(Model):
    run_id: str
    month: str
    status: str
    locked_at: datetime | None
    provisional_accepted: bool

"""The relational schema, in SQLAlchemy Core.

External identifiers (the practice's own ids) are the keys, scoped by organization, so
bulk ingest never has to look up surrogate keys and every row says whose it is.
Instants are stored as UTC; each reading and time entry also stores its patient-local
date, derived once at ingest, because every billing rule counts local calendar days.

Changing this module means adding an Alembic revision under ``migrations/versions``;
``tests/store/test_migrations.py`` fails when the two disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """Stores aware instants as naive UTC and hands them back aware.

    SQLite has no time zone type; refusing naive input here means no code path can
    store a wall-clock time by mistake.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: instants must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def _org() -> Column[str]:
    return Column("org_id", String(64), nullable=False)


organizations = Table(
    "organizations",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False, default=lambda: datetime.now(UTC)),
)

patients = Table(
    "patients",
    metadata,
    _org(),
    Column("patient_id", String(64), nullable=False),
    Column("birth_date", Date, nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("payer", String(32), nullable=False),
    Column("member_id", String(64)),
    Column("family_name", Text, nullable=False),
    Column("given_name", Text, nullable=False),
    Column("sex", String(16), nullable=False),
    Column("address_line", Text),
    Column("city", Text),
    Column("state", String(2)),
    Column("postal_code", String(10)),
    Column("extra", JSON),
    Column("death_date", Date),  # migration 0011: nothing is billed for a later service date
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    PrimaryKeyConstraint("org_id", "patient_id"),
)

practitioners = Table(
    "practitioners",
    metadata,
    _org(),
    Column("practitioner_id", String(64), nullable=False),
    Column("npi", String(10)),
    Column("name", Text, nullable=False),
    Column("credential", String(16), nullable=False),
    Column("performer_class", String(16), nullable=False),
    Column("extra", JSON),
    # Migration 0011: employee | contractor of the billing practice (the CY2027 proposal
    # staff_minutes_employed_only reads it); rows stored before it are employees.
    Column("employment", String(16), nullable=False, server_default="employee"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    PrimaryKeyConstraint("org_id", "practitioner_id"),
)

enrollments = Table(
    "enrollments",
    metadata,
    _org(),
    Column("enrollment_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("program", String(8), nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date),
    Column("consent_date", Date),
    Column("billing_practitioner_id", String(64), nullable=False),
    Column("diagnoses", Text, nullable=False),  # ';'-joined ICD-10-CM codes, primary first
    Column("complexity", String(16)),
    Column("order_date", Date),
    Column("established_patient", Boolean),  # NULL: not recorded (migration 0004)
    Column("initiating_visit_date", Date),
    Column("extra", JSON),
    # Migration 0008: Qualified Medicare Beneficiary (APCM level 3; NULL = not recorded) and a
    # payer's prior authorization for the episode (number, first and last day it covers).
    Column("qmb", Boolean),
    Column("authorization_id", String(64)),
    Column("authorization_start", Date),
    Column("authorization_end", Date),
    PrimaryKeyConstraint("org_id", "enrollment_id"),
    Index("ix_enrollments_patient", "org_id", "patient_id", "program"),
)

devices = Table(
    "devices",
    metadata,
    _org(),
    Column("device_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("program", String(8), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("medical_device", Boolean, nullable=False),
    Column("setup_date", Date),
    Column("assigned_date", Date, nullable=False),
    Column("returned_date", Date),
    # The vendor's serial (Tenovi hwi_device_id, FHIR Device identifier): live ingest finds the
    # device by it. Not unique: a returned device may be assigned to another patient later.
    Column("hardware_id", String(64)),
    Column("extra", JSON),
    PrimaryKeyConstraint("org_id", "device_id"),
    Index("ix_devices_patient", "org_id", "patient_id"),
    Index("ix_devices_hardware", "org_id", "hardware_id"),
)

readings = Table(
    "readings",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org(),
    # reading_id when the source sent one, else "device|instant|type": the idempotency key.
    Column("reading_key", String(200), nullable=False),
    Column("reading_id", String(64)),
    Column("patient_id", String(64), nullable=False),
    # NULL only for a manual reading sent without a device (a FHIR Observation without
    # Observation.device, migration 0006): the facts query joins devices, so it never counts.
    Column("device_id", String(64)),
    Column("measured_at", UtcDateTime, nullable=False),
    Column("local_date", Date, nullable=False),
    Column("type", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Column("unit", String(32), nullable=False),
    Column("transmission", String(8), nullable=False),
    Column("extra", JSON),  # columns the source sent beyond the documented ones, kept as given
    Index("uq_readings_key", "org_id", "reading_key", unique=True),
    # Serves the facts query: distinct local dates per patient and device over a window.
    Index("ix_readings_patient_day", "org_id", "patient_id", "local_date", "device_id", "transmission"),
    # Where the organization's data begins (MIN(local_date)) without reading all of it:
    # a one-patient month read needs it (migration 0015).
    Index("ix_readings_org_day", "org_id", "local_date"),
)

time_entries = Table(
    "time_entries",
    metadata,
    _org(),
    Column("entry_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("practitioner_id", String(64), nullable=False),
    Column("program", String(8)),  # NULL = unassigned
    Column("started_at", UtcDateTime, nullable=False),
    Column("local_date", Date, nullable=False),
    Column("seconds", Integer, nullable=False),
    Column("activity", Text),
    Column("interactive", Boolean, nullable=False),
    Column("modality", String(16)),
    Column("note", Text),
    Column("extra", JSON),
    PrimaryKeyConstraint("org_id", "entry_id"),
    Index("ix_time_patient_day", "org_id", "patient_id", "local_date"),
    # A performer's entries around an instant: the overlap check of a few patients (0015).
    # Covering (what the check reads and filters on), so a range needs no table lookups.
    Index(
        "ix_time_performer_start",
        "org_id",
        "practitioner_id",
        "started_at",
        "seconds",
        "local_date",
        "patient_id",
        "entry_id",
    ),
)

visits = Table(
    "visits",
    metadata,
    # Migration 0011: encounters (E/M, AWV, IPPE …) as the practice billed them, so an
    # initiating visit, a same-day E/M and a prior relationship can be checked, not attested.
    _org(),
    Column("visit_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("practitioner_id", String(64), nullable=False),
    Column("visit_date", Date, nullable=False),  # the file's `date`, the patient-local day
    Column("code", String(8), nullable=False),  # CPT/HCPCS, upper-case
    Column("place_of_service", String(2)),
    Column("telehealth", Boolean, nullable=False),
    Column("extra", JSON),
    PrimaryKeyConstraint("org_id", "visit_id"),
    Index("ix_visits_patient", "org_id", "patient_id", "visit_date"),
)

import_batches = Table(
    "import_batches",
    metadata,
    Column("batch_id", String(36), primary_key=True),
    _org(),
    Column("source", Text, nullable=False),
    Column("started_at", UtcDateTime, nullable=False),
    Column("finished_at", UtcDateTime),
    Column("counts", JSON, nullable=False),  # {file: {inserted, unchanged, updated, rejected}}
)

audit_changes = Table(
    "audit_changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    _org(),
    Column("batch_id", String(36)),
    Column("table_name", String(64), nullable=False),
    Column("record_key", String(200), nullable=False),
    Column("old_values", JSON, nullable=False),
    Column("new_values", JSON, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("actor", String(200)),  # who made a correction through the API (migration 0006)
    Index("ix_audit_record", "org_id", "table_name", "record_key"),
)

# ----------------------------------------------------------------------------------------
# Billing runs (the month run writes these; nothing else edits them).
# ----------------------------------------------------------------------------------------

#: Ids compared as Python compares strings (code points): PostgreSQL's default collation
#: would order "a-2" and "a1" otherwise, and the kept worklist must rank as ``build_worklist``;
#: a run's claim lines are stored in that order, which an incremental run seeks by patient.
_Ident = String(64).with_variant(String(64, collation="C"), "postgresql")

billing_runs = Table(
    "billing_runs",
    metadata,
    Column("run_id", String(36), primary_key=True),
    _org(),
    Column("month", String(7), nullable=False),  # YYYY-MM
    Column("status", String(16), nullable=False),  # draft | locked | superseded | void
    Column("engine_version", String(32), nullable=False),
    Column("ruleset_hash", String(64), nullable=False),
    Column("input_digest", String(64), nullable=False),
    Column("lines_digest", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("locked_at", UtcDateTime),
    Column("amends_run_id", String(36)),
    Column("settings", JSON, nullable=False),
    Column("summary", JSON),  # problems and warning counts of the run (migrations 0003, 0019)
    Column("decisions_digest", String(64)),  # set by every run; NULL for runs stored before it
    # How the three digests combine their parts (billing.run.DIGEST_SCHEME, migration 0018):
    # NULL for runs stored before, whose digests chain their parts in order.
    Column("digest_scheme", Integer),
    Index("ix_runs_org_month", "org_id", "month"),
)

run_decisions = Table(
    "run_decisions",
    metadata,
    # One row per patient-month: every decision of that patient with reasons, evidence and
    # parameters as one JSON array. A row per decision would be seven times the rows for
    # the same information, and nothing ever queries a single stored decision.
    Column("run_id", String(36), nullable=False),
    _org(),
    Column("patient_id", String(64), nullable=False),
    Column("facts_digest", String(64), nullable=False),
    Column("billable_count", Integer, nullable=False),
    # NULL when ``stored_in`` names the run whose row of this patient holds the text: an
    # incremental run refers to a carried patient's decisions instead of copying them
    # (migration 0017); read them through ``billing.run.decision_rows``.
    Column("decisions", JSON),
    Column("stored_in", String(36)),
    PrimaryKeyConstraint("run_id", "patient_id"),
)

run_warnings = Table(
    "run_warnings",
    metadata,
    # One row per patient of a run with warnings (overlapping time): the warnings as a JSON
    # array. The run's summary keeps only their counts (migration 0019). Not a column of
    # ``run_decisions``: SQLite reads a row's 17 KB of decisions to reach a column after
    # them. A carried patient's row of an incremental run names in ``stored_in`` the run
    # whose row holds the array (``warnings`` NULL); read through ``billing.run.stored_warnings``.
    Column("run_id", String(36), nullable=False),
    _org(),
    Column("patient_id", String(64), nullable=False),
    Column("warning_count", Integer, nullable=False),
    Column("stored_in", String(36)),
    Column("warnings", JSON(none_as_null=True)),
    PrimaryKeyConstraint("run_id", "patient_id"),
)

claim_lines = Table(
    "claim_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    _org(),
    Column("line_key", String(200), nullable=False),
    Column("patient_id", _Ident, nullable=False),
    Column("enrollment_id", String(64), nullable=False),
    Column("program", String(8), nullable=False),
    Column("payer", String(32), nullable=False),
    Column("member_id", String(64)),
    Column("code", String(8), nullable=False),
    Column("units", Integer, nullable=False),
    Column("date_of_service", Date, nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),
    Column("billing_npi", String(10)),
    Column("rendering_npi", String(10)),
    Column("diagnosis_codes", Text, nullable=False),
    Column("place_of_service", String(2), nullable=False),
    Column("modifiers", Text, nullable=False),
    Column("charge", Numeric(12, 2), nullable=False),
    Column("expected_payment", Numeric(12, 2), nullable=False),
    Index("ix_claim_lines_run", "run_id", "patient_id"),
)

x12_interchanges = Table(
    "x12_interchanges",
    metadata,
    # ISA13 must not repeat for a submitter: the sequence lives here, one row per file made.
    Column("org_id", String(64), nullable=False),
    Column("control_number", Integer, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("path", Text),
    PrimaryKeyConstraint("org_id", "control_number"),
)

# ----------------------------------------------------------------------------------------
# The service: accounts, credentials, sessions and the audit trail of PHI access
# (migration 0007). Only caretally.services reads or writes these.
# ----------------------------------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("user_id", Integer, primary_key=True, autoincrement=True),
    _org(),
    # Lower-cased; unique across organizations because signing in names no organization.
    Column("email", String(254), nullable=False),
    Column("display_name", Text, nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("password_hash", Text, nullable=False),  # Argon2id, PHC string
    Column("failed_signins", Integer, nullable=False),  # consecutive; reset by a success
    Column("locked_until", UtcDateTime),  # sign-in refused before this instant
    Column("last_signin_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("uq_users_email", "email", unique=True),
    Index("ix_users_org", "org_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", Integer, primary_key=True, autoincrement=True),
    _org(),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("prefix", String(16), nullable=False),  # the first characters, to recognise a token in lists
    Column("digest", String(64), nullable=False),  # SHA-256 of the whole token; the token is never stored
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    Column("last_used_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("uq_api_tokens_digest", "digest", unique=True),
    Index("ix_api_tokens_org", "org_id", "name"),
)

auth_sessions = Table(
    "auth_sessions",
    metadata,
    # A signed-in user: a bearer token from POST /auth/token today, a browser cookie later.
    # The row is found by a keyed hash of the random id the client holds, never by the id.
    Column("session_id", Integer, primary_key=True, autoincrement=True),
    Column("digest", String(64), nullable=False),
    _org(),
    Column("user_id", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # bearer | cookie
    Column("csrf_secret", String(64), nullable=False),  # per session, for the web forms
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),  # inactivity expiry counts from here
    Column("expires_at", UtcDateTime, nullable=False),  # absolute end, whatever the activity
    Column("revoked_at", UtcDateTime),
    Column("client_address", String(64)),
    ForeignKeyConstraint(["user_id"], ["users.user_id"]),
    Index("uq_auth_sessions_digest", "digest", unique=True),
    Index("ix_auth_sessions_user", "user_id"),
)

audit_chain_heads = Table(
    "audit_chain_heads",
    metadata,
    # One row per organization: the last event's number and hash. Every append updates it
    # first, so the row lock (PostgreSQL) or the write lock (SQLite) serialises appends.
    Column("org_id", String(64), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("last_hash", String(64), nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    _org(),
    Column("seq", Integer, nullable=False),  # 1, 2, 3 … per organization, no gaps
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("actor", String(120), nullable=False),  # user:12 | token:3 | cli:<os user> | anonymous
    Column("actor_name", String(254)),  # the user's email or the token's name, as it was then
    Column("action", String(64), nullable=False),  # e.g. patient.read, import.create
    Column("resource", String(300), nullable=False),  # e.g. patients/P1/months/2026-03
    Column("request_id", String(64)),
    Column("client_address", String(64)),
    Column("outcome", String(16), nullable=False),  # success | denied | not_found | invalid | error
    Column("detail", JSON),  # small, PHI-free facts (counts, a batch id)
    Column("prev_hash", String(64), nullable=False),
    Column("event_hash", String(64), nullable=False),
    Index("uq_audit_events_seq", "org_id", "seq", unique=True),
    Index("ix_audit_events_time", "org_id", "occurred_at"),
)

audit_event_patients = Table(
    "audit_event_patients",
    metadata,
    # Which patients an event touched, one row each, so "who saw patient X" is one index scan.
    Column("event_id", Integer, nullable=False),
    _org(),
    Column("patient_id", String(64), nullable=False),
    PrimaryKeyConstraint("event_id", "patient_id"),
    Index("ix_audit_event_patients_patient", "org_id", "patient_id"),
)

# ----------------------------------------------------------------------------------------
# Month-close jobs (migration 0009): work started over HTTP and done by a queue consumer.
# The row is the job's record; the task queue only carries its id.
# ----------------------------------------------------------------------------------------

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(36), primary_key=True),  # opaque (a random UUID)
    _org(),
    Column("kind", String(16), nullable=False),  # month_run
    Column("month", String(7), nullable=False),  # YYYY-MM
    Column("state", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("done", Integer),  # patients stored so far (written at start and end; live in the queue)
    Column("total", Integer),  # patients of the month, once the run has its snapshot
    Column("run_id", String(36)),  # the run made (or found unchanged) by a succeeded job
    Column("outcome", String(16)),  # created | unchanged
    Column("error_code", String(64)),  # a stable code when failed (month_busy, interrupted …)
    Column("error", Text),  # one line, no PHI
    Column("worker", String(120)),  # the consumer running it: how an interrupted job is recognised
    Column("created_by", String(120), nullable=False),  # the actor: user:12 | token:3 | cli:name
    Column("created_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime),
    Column("finished_at", UtcDateTime),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("ix_jobs_org_created", "org_id", "created_at"),
    Index("ix_jobs_state", "state"),
)

# ----------------------------------------------------------------------------------------
# Webhook secrets (migration 0010).
# ----------------------------------------------------------------------------------------

webhook_secrets = Table(
    "webhook_secrets",
    metadata,
    # One shared secret per organization and webhook source (``tenovi``), kept as its
    # SHA-256 digest: the webhook request is matched to its organization by that digest,
    # never by anything in its URL or body.
    _org(),
    Column("source", String(32), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(120), nullable=False),
    PrimaryKeyConstraint("org_id", "source"),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
    Index("uq_webhook_secrets_source_digest", "source", "digest", unique=True),
)

# --- Web app for care teams (migration 0012) ----------------------------------------------

staff_timers = Table(
    "staff_timers",
    metadata,
    # A user's running or paused timer for one patient, kept on the server so a reload or a
    # second tab shows the same clock. Stopping it deletes the row (the time becomes an entry).
    _org(),
    Column("user_id", Integer, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("state", String(8), nullable=False),  # running | paused
    Column("elapsed_seconds", Integer, nullable=False),  # before the current running stretch
    Column("running_since", UtcDateTime),  # NULL while paused
    Column("first_started_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"]),
    PrimaryKeyConstraint("org_id", "user_id", "patient_id"),
)

user_practitioners = Table(
    "user_practitioners",
    metadata,
    # Which practitioner a signed-in user logs time as (time entries name a practitioner).
    _org(),
    Column("user_id", Integer, nullable=False),
    Column("practitioner_id", String(64), nullable=False),
    ForeignKeyConstraint(["user_id"], ["users.user_id"]),
    PrimaryKeyConstraint("org_id", "user_id"),
)

alert_thresholds = Table(
    "alert_thresholds",
    metadata,
    # A practice's alert threshold (configuration, not medical advice): a reading of
    # ``measure`` at or above ``at_or_above`` or at or below ``at_or_below`` raises an alert,
    # for every patient of ``program`` or for one patient.
    Column("threshold_id", Integer, primary_key=True, autoincrement=True),
    _org(),
    Column("program", String(8), nullable=False),
    Column("measure", String(64), nullable=False),  # a reading type, or blood_pressure.systolic …
    Column("at_or_above", Numeric(12, 3)),
    Column("at_or_below", Numeric(12, 3)),
    Column("patient_id", String(64)),  # NULL: every patient of the program
    Column("created_by", String(120), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("removed_at", UtcDateTime),
    Index("ix_alert_thresholds_org", "org_id", "program"),
)

alert_acknowledgements = Table(
    "alert_acknowledgements",
    metadata,
    # An alert is a reading outside a threshold; acknowledging it closes it, with a note and,
    # when the nurse chose to, the time entry it became.
    Column("ack_id", Integer, primary_key=True, autoincrement=True),
    _org(),
    Column("reading_key", String(200), nullable=False),
    Column("threshold_id", Integer, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("acknowledged_by", String(120), nullable=False),
    Column("acknowledged_at", UtcDateTime, nullable=False),
    Column("note", Text),
    Column("entry_id", String(64)),
    Index("uq_alert_acknowledgements", "org_id", "reading_key", "threshold_id", unique=True),
)

#: Per organization: the practice settings an admin keeps on the Admin page (issue 12). The
#: practice identity is the TOML text ``settings_practice.parse_practice`` reads (the same
#: keys as a practice file, docs/exports.md); locality and payer overlays are what its month
#: runs are priced and judged with.
practice_settings = Table(
    "practice_settings",
    metadata,
    Column("org_id", String(64), primary_key=True),
    Column("identity_toml", Text),
    Column("locality", String(32)),
    Column("payer_overlays", JSON),
    Column("updated_by", String(120), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    ForeignKeyConstraint(["org_id"], ["organizations.org_id"]),
)

#: Which patient-months an ingest changed (issue 13 item 4), so ``bill --incremental``
#: re-evaluates only those. ``patient_id`` "*" means every patient of the organization and
#: ``month`` "*" every month of the patient: changes the run cannot pin to a patient-month
#: (a practitioner, a patient row, a bulk load) make the next incremental run a full one.
month_touches = Table(
    "month_touches",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("org_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("month", String(7), nullable=False),
    Index(None, "org_id", "id"),
)

#: What a stored run had seen of ``month_touches`` (the highest id in its snapshot) and
#: of the billing history of earlier months (a digest of their runs' ids and statuses):
#: an incremental run against it re-evaluates what changed after, or runs in full.
run_touch_marks = Table(
    "run_touch_marks",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("org_id", String(64), nullable=False),
    Column("touches_through", Integer, nullable=False),
    Column("history_key", String(64), nullable=False),
    # patient id → its share of the run's decisions_digest, for runs whose digests chain
    # their parts in order; {} since migration 0018 (summed digests need no parts kept).
    Column("decision_parts", JSON, nullable=False),
)

#: The worklist kept as state (issue 13 item 4): one record per organization, ``as_of`` day
#: and rule book (``state_id`` digests the two), what it has seen of ``month_touches``
#: (``touches_through``) and of earlier months' runs (``history_key``), and the engine
#: that made it. ``caretally.worklist_state`` refreshes it; readers query ``worklist_rows``.
worklist_states = Table(
    "worklist_states",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("state_id", String(32), nullable=False),
    Column("as_of", Date, nullable=False),
    Column("rules_key", String(64), nullable=False),
    Column("overlays", JSON, nullable=False),
    Column("engine_version", String(64), nullable=False),
    Column("history_key", String(64), nullable=False),
    Column("touches_through", Integer, nullable=False),
    Column("refreshed_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("org_id", "state_id"),
)

#: One kept worklist row: the rank key in columns (``r_*`` ascending = ``build_worklist``'s
#: order; ``g_*`` the patient's best open row, ``s_*`` its best open row of the same billing
#: practitioner, for the web's patients-together order), and the row itself as JSON.
worklist_rows = Table(
    "worklist_rows",
    metadata,
    Column("org_id", String(64), nullable=False),
    Column("state_id", String(32), nullable=False),
    Column("patient_id", _Ident, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("enrollment_id", _Ident, nullable=False),
    Column("program", String(8), nullable=False),
    Column("practitioner_id", String(64)),
    Column("is_open", Boolean, nullable=False),
    Column("r_vpm", Integer, nullable=False),
    Column("r_end", Date, nullable=False),
    Column("r_value", Integer, nullable=False),
    Column("g_vpm", Integer),
    Column("g_end", Date),
    Column("g_value", Integer),
    Column("s_vpm", Integer),
    Column("s_end", Date),
    Column("s_value", Integer),
    Column("body", JSON, nullable=False),
    PrimaryKeyConstraint("org_id", "state_id", "patient_id", "seq"),
    Index(
        "ix_worklist_rows_open_rank",
        *("org_id", "state_id", "is_open", "r_vpm", "r_end", "r_value", "patient_id", "enrollment_id", "seq"),
    ),
    Index(
        "ix_worklist_rows_rank",
        *("org_id", "state_id", "r_vpm", "r_end", "r_value", "patient_id", "enrollment_id", "seq"),
    ),
    Index(
        "ix_worklist_rows_patient_rank",
        "org_id",
        "state_id",
        "is_open",
        "g_vpm",
        "g_end",
        "g_value",
        "patient_id",
    ),
    Index(
        "ix_worklist_rows_staff_rank",
        *("org_id", "state_id", "practitioner_id", "is_open", "s_vpm", "s_end", "s_value", "patient_id"),
    ),
)

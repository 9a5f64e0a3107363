"""Per-file row checks: raw record in, normalised column values or a list of faults out.

Each ``check_*`` function reads one record (CSV cells or JSON values), records every
fault it finds rather than stopping at the first, and consults the ``ReferenceIndex``
for cross-file rules. They touch no database and no file, so the rules can be read and
tested on their own; ``FILES`` ties each one to its table and its column lists.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from functools import cached_property, lru_cache
from typing import Any

from sqlalchemy import String, Table, Text

from caretally.dates import is_valid_zone, zone
from caretally.ingest import values as v
from caretally.ingest.cleaning import TEXT_MAX, VALUE_MAX, clean_record, code_points
from caretally.ingest.fastpath import READING_STORED, LocalDays, clean_reading
from caretally.ingest.references import Catalog, ReferenceIndex
from caretally.model import (
    CREDENTIAL_CLASS,
    Modality,
    Payer,
    PerformerClass,
    Program,
    RtmKind,
    Transmission,
)
from caretally.store import schema

SEX_WORDS = {"f": "F", "female": "F", "m": "M", "male": "M", "u": "U", "unknown": "U"}
DEVICE_PROGRAMS = (Program.RPM, Program.RTM)
# Who may be the billing practitioner of an enrollment: only RTM may be billed by a
# therapist (PT/OT/SLP); clinical staff never bill in their own name.
BILLERS: dict[Program, frozenset[PerformerClass]] = {
    p: frozenset({PerformerClass.PRACTITIONER}) for p in Program
} | {Program.RTM: frozenset({PerformerClass.PRACTITIONER, PerformerClass.THERAPIST})}


@dataclass(frozen=True, slots=True)
class Fault:
    field: str | None
    code: str
    message: str


@dataclass
class Row:
    """One record under inspection: the raw input, the values parsed so far, the faults."""

    raw: Mapping[str, Any]
    table: Table
    values: dict[str, Any] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    #: Things changed or doubted that do not reject the row (e.g. invisible characters removed).
    warnings: list[Fault] = field(default_factory=list)

    def fail(self, name: str | None, code: str, message: str) -> None:
        self.faults.append(Fault(name, code, message))

    def take(
        self,
        name: str,
        parse: Callable[[Any], Any] | None = None,
        *,
        required: bool = True,
        store: bool = True,
    ) -> Any:
        """Parse column ``name``; ``None`` when blank (a fault if required) or invalid."""
        raw = self.raw.get(name)
        if v.is_blank(raw):
            if required:
                self.fail(name, "required", f"{name} is required")
            if store:
                self.values[name] = None
            return None
        try:
            result = parse(raw) if parse else v.text(raw, max_len=_max_len(self.table, name))
        except v.FieldError as exc:
            self.fail(name, exc.code, exc.message)
            return None
        if store:
            self.values[name] = result
        return result

    def ref(self, name: str, catalog: Catalog, label: str, unknown_code: str) -> str | None:
        """The referenced record's attribute, or ``None`` after recording why not."""
        key = self.values.get(name)
        if key is None:
            return None
        where = catalog.rejected.get(key)
        if where is not None:
            self.fail(name, "rejected_reference", f"{label} {key} was rejected ({where})")
            return None
        found = catalog.known.get(key)
        if found is None:
            self.fail(name, unknown_code, f"{label} {key} is not in this bundle or the database")
        return found

    @property
    def ok(self) -> bool:
        return not self.faults


#: Unbounded text columns with a tighter documented limit than ``TEXT_MAX``.
TEXT_LIMITS = {"value": VALUE_MAX}


@lru_cache(maxsize=256)
def _max_len(table: Table, name: str) -> int | None:
    """The documented limit: the schema's length for ids and codes, else the text limits."""
    column = table.c.get(name)
    if column is not None and isinstance(column.type, String) and column.type.length is not None:
        return column.type.length
    if column is not None and isinstance(column.type, Text | String):
        return TEXT_LIMITS.get(name, TEXT_MAX)
    return None


def choice(enum: type[StrEnum], *, allowed: tuple[StrEnum, ...] | None = None) -> Callable[[Any], str]:
    """Case-insensitive enum parser returning the canonical spelling."""
    members = allowed or tuple(enum)
    lookup = {m.value.lower(): m.value for m in members}
    spelled = ", ".join(m.value for m in members)

    def parse(value: Any) -> str:
        found = lookup.get(str(value).strip().lower()) if isinstance(value, str) else None
        if found is None:
            raise v.FieldError("bad_enum", f"{value!r} is not one of: {spelled}")
        return found

    return parse


PAYER = choice(Payer)
PROGRAM = choice(Program)
DEVICE_PROGRAM = choice(Program, allowed=DEVICE_PROGRAMS)
RTM_KIND = choice(RtmKind)
TRANSMISSION = choice(Transmission)
MODALITY = choice(Modality)


EMPLOYMENT_WORDS = ("employee", "contractor")


def employment_kind(value: Any) -> str:
    found = value.strip().lower() if isinstance(value, str) else None
    if found not in EMPLOYMENT_WORDS:
        raise v.FieldError("bad_enum", f"{value!r} is not one of: {', '.join(EMPLOYMENT_WORDS)}")
    return found


def hcpcs_code(value: Any) -> str:
    """A CPT or HCPCS Level II code: five digits, a letter and four digits, or four digits
    and a letter (CPT Category II/III), stored upper-case."""
    code = value.strip().upper() if isinstance(value, str) else ""
    shaped = len(code) == 5 and (
        code.isdigit()
        or (code[0].isalpha() and code[1:].isdigit())
        or (code[:4].isdigit() and code[4].isalpha())
    )
    if not shaped:
        raise v.FieldError("bad_code", f"{value!r} is not a CPT/HCPCS code (e.g. 99214, G0438, 0001T)")
    return code


def place_of_service(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else str(value)
    if len(text) == 1 and text.isdigit():
        text = "0" + text
    if len(text) != 2 or not text.isdigit():
        raise v.FieldError("bad_place_of_service", f"{value!r} is not a two-digit CMS place-of-service code")
    return text


def timezone_name(value: Any) -> str:
    if not isinstance(value, str) or not is_valid_zone(value.strip()):
        raise v.FieldError("bad_timezone", f"{value!r} is not an IANA time zone name such as America/Chicago")
    return value.strip()


def sex(value: Any) -> str:
    found = SEX_WORDS.get(value.strip().lower()) if isinstance(value, str) else None
    if found is None:
        raise v.FieldError("bad_enum", f"{value!r} is not one of: F, M, U (or female, male, unknown)")
    return found


def _order(row: Row, first: str, last: str) -> None:
    start, end = row.values.get(first), row.values.get(last)
    if start is not None and end is not None and end < start:
        row.fail(last, "end_before_start", f"{last} {end} is before {first} {start}")


# ---------------------------------------------------------------------------------------
# One check per file. ``today`` is passed in so the future-date rule is testable.
# ---------------------------------------------------------------------------------------


def check_patient(row: Row, index: ReferenceIndex, today: date) -> None:
    row.take("patient_id")
    birth = row.take("birth_date", v.iso_date)
    if birth is not None:
        if birth > today:
            row.fail("birth_date", "future_date", f"birth_date {birth} is in the future")
        elif birth < v.EARLIEST_BIRTH:
            row.fail("birth_date", "date_too_early", f"birth_date {birth} is before 1900-01-01")
    row.take("timezone", timezone_name)
    payer = row.take("payer", PAYER)
    member = row.take("member_id", required=False)
    if member is not None and payer == Payer.MEDICARE:
        if v.is_valid_mbi(member):
            row.values["member_id"] = v.normalise_mbi(member)
        else:
            row.fail("member_id", "bad_mbi", f"{member!r} is not a valid Medicare Beneficiary Identifier")
    row.take("family_name")
    row.take("given_name")
    row.take("sex", sex)
    row.take("address_line", required=False)
    row.take("city", required=False)
    row.take("state", v.us_state, required=False)
    row.take("postal_code", v.postal_code, required=False)
    death = row.take("death_date", v.iso_date, required=False)
    if death is not None:
        if death > today:
            row.fail("death_date", "future_date", f"death_date {death} is in the future")
        elif birth is not None and death < birth:
            row.fail("death_date", "end_before_start", f"death_date {death} is before birth_date {birth}")


def credential(value: Any) -> str:
    name = value.strip().upper() if isinstance(value, str) else ""
    if name not in CREDENTIAL_CLASS:
        raise v.FieldError(
            "unknown_credential",
            f"credential {value!r} is not known; use one of {', '.join(sorted(CREDENTIAL_CLASS))}",
        )
    return name


def npi(value: Any) -> str:
    digits = v.text(value)
    if not v.is_valid_npi(digits):
        raise v.FieldError("bad_npi", f"{digits!r} is not a valid NPI (10 digits, Luhn check with 80840)")
    return digits


def check_practitioner(row: Row, index: ReferenceIndex, today: date) -> None:
    row.take("practitioner_id")
    given_npi = row.take("npi", npi, required=False)
    row.take("name")
    cred = row.take("credential", credential)
    if cred is not None:
        performer = CREDENTIAL_CLASS[cred]
        row.values["performer_class"] = performer.value
        npi_missing = given_npi is None and v.is_blank(row.raw.get("npi"))
        if npi_missing and performer is not PerformerClass.STAFF:
            row.fail("npi", "required", f"npi is required for a {performer.value} ({cred})")
    # Missing means employed: CMS's 2021 stance allows contracted auxiliary staff, so only
    # a practice that records a contractor changes what the CY2027 proposal counts.
    if row.take("employment", employment_kind, required=False) is None:
        row.values["employment"] = "employee"


def diagnoses(row: Row) -> None:
    raw = row.raw.get("diagnoses")
    if v.is_blank(raw) or not isinstance(raw, str):
        if not v.is_blank(raw):
            row.fail("diagnoses", "bad_text", "diagnoses must be text: codes separated by ';'")
        else:
            row.fail("diagnoses", "required", "diagnoses is required: at least one ICD-10-CM code")
        return
    codes: list[str] = []
    for part in raw.split(";"):
        if not part.strip():
            continue
        try:
            code = v.icd10_billable(part)
        except v.FieldError as exc:
            row.fail("diagnoses", exc.code, exc.message)
            continue
        if code not in codes:
            codes.append(code)
    if not codes and row.ok:
        row.fail("diagnoses", "required", "diagnoses is required: at least one ICD-10-CM code")
    row.values["diagnoses"] = ";".join(codes)


def complexity(value: Any) -> str:
    if isinstance(value, str) and value.strip().lower() == "complex":
        return "complex"
    raise v.FieldError("bad_enum", f"{value!r} is not a complexity; leave it empty or write 'complex'")


def check_enrollment(row: Row, index: ReferenceIndex, today: date) -> None:
    row.take("enrollment_id")
    row.take("patient_id")
    program = row.take("program", PROGRAM)
    row.take("start_date", v.iso_date)
    row.take("end_date", v.iso_date, required=False)
    _order(row, "start_date", "end_date")
    row.take("consent_date", v.iso_date, required=False)
    row.take("billing_practitioner_id")
    diagnoses(row)
    row.take("complexity", complexity, required=False)
    row.take("order_date", v.iso_date, required=False)
    # Missing stays missing: the rule-year option established_patient_when_missing decides.
    row.take("established_patient", v.boolean, required=False)
    row.take("initiating_visit_date", v.iso_date, required=False)
    # Missing stays missing: APCM level 3 then fails and says that QMB status is not recorded.
    row.take("qmb", v.boolean, required=False)
    authorization = row.take("authorization_id", required=False)
    row.take("authorization_start", v.iso_date, required=False)
    row.take("authorization_end", v.iso_date, required=False)
    _order(row, "authorization_start", "authorization_end")
    if authorization is None and (
        row.values.get("authorization_start") or row.values.get("authorization_end")
    ):
        row.fail(
            "authorization_id",
            "required",
            "authorization_id is required when authorization_start or authorization_end is given",
        )

    row.ref("patient_id", index.patients, "patient", "unknown_patient")
    biller = row.ref("billing_practitioner_id", index.practitioners, "practitioner", "unknown_practitioner")
    if biller is not None and program is not None:
        allowed = BILLERS[Program(program)]
        if PerformerClass(biller) not in allowed:
            row.fail(
                "billing_practitioner_id",
                "wrong_performer_for_program",
                f"{row.values['billing_practitioner_id']} is {biller}; {program} must be billed by "
                + " or ".join(sorted(a.value for a in allowed)),
            )


def check_device(row: Row, index: ReferenceIndex, today: date) -> None:
    row.take("device_id")
    row.take("patient_id")
    program = row.take("program", DEVICE_PROGRAM)
    if program == Program.RTM:
        row.take("kind", RTM_KIND)
    else:
        row.take("kind")
    row.take("medical_device", v.boolean)
    row.take("setup_date", v.iso_date, required=False)
    row.take("assigned_date", v.iso_date)
    row.take("returned_date", v.iso_date, required=False)
    row.take("hardware_id", required=False)
    _order(row, "assigned_date", "returned_date")
    row.ref("patient_id", index.patients, "patient", "unknown_patient")


#: Prefix of the idempotency key of a manual reading sent without a device.
NO_DEVICE_KEY = "patient:"


def reading_key(reading_id: str | None, device_id: str | None, measured_at: datetime, kind: str) -> str:
    """The idempotency key: the source's id when it has one, else device, instant and type.

    A manual reading without a device (allowed since migration 0006) is keyed by its
    patient instead, prefixed so that it can never collide with a device's key.
    """
    if reading_id:
        return reading_id
    if device_id is None:
        raise ValueError("a reading without a device is keyed by reading_key_without_device")
    return f"{device_id}|{measured_at.isoformat()}|{kind}"


def reading_key_without_device(
    reading_id: str | None, patient_id: str, measured_at: datetime, kind: str
) -> str:
    return reading_id or f"{NO_DEVICE_KEY}{patient_id}|{measured_at.isoformat()}|{kind}"


def check_reading(row: Row, index: ReferenceIndex, today: date) -> None:
    reading_id = row.take("reading_id", required=False)
    patient = row.take("patient_id")
    device_fault_at = len(row.faults)
    device = row.take("device_id", required=False)
    measured = row.take("measured_at", v.instant)
    kind = row.take("type")
    row.take("value")
    row.take("unit")
    mode = row.take("transmission", TRANSMISSION)
    # Only a value typed in may come without a device; it is stored with no device and so
    # never counts as a device day (see docs/formats.md, readings).
    deviceless = device is None and v.is_blank(row.raw.get("device_id"))
    if deviceless and mode != Transmission.MANUAL:
        row.faults.insert(device_fault_at, Fault("device_id", "required", "device_id is required"))
    tz = row.ref("patient_id", index.patients, "patient", "unknown_patient")
    owner = row.ref("device_id", index.devices, "device", "unknown_device")
    if owner is not None and patient is not None and owner != patient:
        row.fail(
            "device_id",
            "device_patient_mismatch",
            f"device {device} belongs to patient {owner}, not {patient}",
        )
    if tz is not None and measured is not None:
        local = measured.astimezone(zone(tz)).date()
        row.values["local_date"] = local
        birth = index.births.get(patient) if patient is not None else None
        if birth is not None and local.isoformat() < birth:
            row.fail(
                "measured_at",
                "before_birth",
                f"measured_at {row.raw.get('measured_at')} is before patient {patient}'s birth date",
            )
    latest = index.not_after
    if measured is not None and latest is not None and measured > latest:
        row.fail(
            "measured_at",
            "future_reading",
            f"measured_at {row.raw.get('measured_at')} is after {latest.isoformat(timespec='seconds')}"
            f" (import time plus the allowed clock skew of {index.clock_skew_text})",
        )
    if device is not None and measured is not None and kind is not None:
        row.values["reading_key"] = reading_key(reading_id, device, measured, kind)
    elif deviceless and patient is not None and measured is not None and kind is not None:
        row.values["reading_key"] = reading_key_without_device(reading_id, patient, measured, kind)


_READING_COLUMNS = frozenset(
    ("reading_id", "patient_id", "device_id", "measured_at", "type", "value", "unit", "transmission")
)


def fast_reading(raw: Mapping[str, Any], index: ReferenceIndex, *, keyed: bool) -> dict[str, Any] | None:
    """The values ``check_reading`` would produce for a clean text row, or ``None``.

    The import itself runs ``fastpath.clean_batch`` over the cells and stores its text
    tuples as they are; this wrapper sends one row through the same code and reads the
    tuple back into the values ``check_row`` gives, so a test can hold the two paths to
    the same result.
    """
    cells = reading_cells(raw, keyed=keyed)
    if cells is None:
        return None
    found = clean_reading(*cells, index, LocalDays())
    if found is None:
        return None
    values: dict[str, Any] = dict(zip(READING_STORED, found, strict=True))
    values["measured_at"] = datetime.fromisoformat(values["measured_at"]).replace(tzinfo=UTC)
    values["local_date"] = date.fromisoformat(values["local_date"])
    values["extra"] = json.loads(values["extra"])  # JSON text in stored form; "null" → None
    return values


def reading_cells(
    raw: Mapping[str, Any], *, keyed: bool
) -> tuple[str | None, str, str, str, str, str, str, str] | None:
    """The eight reading cells as text, ``None`` when a value is missing or not text."""
    if keyed and not _READING_COLUMNS.issuperset(raw):
        return None
    try:
        cells = (
            raw["patient_id"],
            raw["device_id"],
            raw["measured_at"],
            raw["type"],
            raw["value"],
            raw["unit"],
            raw["transmission"],
        )
    except KeyError:
        return None
    reading_id = raw.get("reading_id")
    if not all(type(c) is str for c in cells) or (reading_id is not None and type(reading_id) is not str):
        return None
    return (reading_id, *cells)


def duration(row: Row) -> None:
    seconds = row.take("seconds", v.integer, required=False, store=False)
    minutes = row.take("minutes", v.integer, required=False, store=False)
    if seconds is None and minutes is None:
        if v.is_blank(row.raw.get("seconds")) and v.is_blank(row.raw.get("minutes")):
            row.fail("seconds", "required", "give the duration as seconds or as minutes")
        return
    bad = False
    for name, amount in (("seconds", seconds), ("minutes", minutes)):
        if amount is not None and amount <= 0:
            row.fail(name, "not_positive", f"{name} must be greater than 0, got {amount}")
            bad = True
    if bad:
        return
    if seconds is not None and minutes is not None and seconds != minutes * 60:
        row.fail("minutes", "duration_mismatch", f"seconds {seconds} and minutes {minutes} disagree")
        return
    total = seconds if seconds is not None else minutes * 60  # type: ignore[operator]
    if total > v.MAX_SECONDS:
        row.fail(
            "seconds" if seconds is not None else "minutes",
            "duration_too_long",
            f"{total} seconds is longer than 12 hours",
        )
        return
    row.values["seconds"] = total


def check_time_entry(row: Row, index: ReferenceIndex, today: date) -> None:
    row.take("entry_id")
    patient = row.take("patient_id")
    row.take("practitioner_id")
    program = row.take("program", PROGRAM, required=False)
    started = row.take("started_at", v.instant)
    duration(row)
    row.take("activity")
    interactive = row.take("interactive", v.boolean)
    modality = row.take("modality", MODALITY, required=False)
    if interactive and modality is None and v.is_blank(row.raw.get("modality")):
        row.fail("modality", "required", "modality is required when interactive is true")
    row.take("note", required=False)

    tz = row.ref("patient_id", index.patients, "patient", "unknown_patient")
    row.ref("practitioner_id", index.practitioners, "practitioner", "unknown_practitioner")
    if tz is not None and started is not None:
        row.values["local_date"] = started.astimezone(zone(tz)).date()
    if program is not None and patient is not None and tz is not None:
        pair = (patient, program)
        if pair not in index.enrolled:
            where = index.rejected_enrollments.get(pair)
            if where is not None:
                row.fail("program", "rejected_reference", f"the {program} enrollment was rejected ({where})")
            else:
                row.fail(
                    "program",
                    "not_enrolled_in_program",
                    f"patient {patient} has no {program} enrollment in this bundle or the database",
                )


def check_visit(row: Row, index: ReferenceIndex, today: date) -> None:
    row.take("visit_id")
    patient = row.take("patient_id")
    row.take("practitioner_id")
    day = row.take("date", v.iso_date, store=False)
    row.values["visit_date"] = day
    if day is not None:
        birth = index.births.get(patient or "")
        if birth is not None and day.isoformat() < birth:
            row.fail("date", "before_birth", f"date {day} is before the patient's birth date {birth}")
    row.take("code", hcpcs_code)
    row.take("place_of_service", place_of_service, required=False)
    if row.take("telehealth", v.boolean, required=False) is None:
        row.values["telehealth"] = False
    row.ref("patient_id", index.patients, "patient", "unknown_patient")
    row.ref("practitioner_id", index.practitioners, "practitioner", "unknown_practitioner")


# ---------------------------------------------------------------------------------------
# File specifications.
# ---------------------------------------------------------------------------------------


def _register_patient(values: dict[str, Any], index: ReferenceIndex) -> None:
    if index.patients.accept(values["patient_id"], values["timezone"]):
        index.births[values["patient_id"]] = values["birth_date"].isoformat()


def _reject_patient(values: dict[str, Any], index: ReferenceIndex, where: str) -> None:
    if values.get("patient_id"):
        index.patients.reject(values["patient_id"], where)


def _register_practitioner(values: dict[str, Any], index: ReferenceIndex) -> None:
    index.practitioners.accept(values["practitioner_id"], values["performer_class"])


def _reject_practitioner(values: dict[str, Any], index: ReferenceIndex, where: str) -> None:
    if values.get("practitioner_id"):
        index.practitioners.reject(values["practitioner_id"], where)


def _register_enrollment(values: dict[str, Any], index: ReferenceIndex) -> None:
    index.enrolled.add((values["patient_id"], values["program"]))


def _reject_enrollment(values: dict[str, Any], index: ReferenceIndex, where: str) -> None:
    if values.get("patient_id") and values.get("program"):
        index.rejected_enrollments.setdefault((values["patient_id"], values["program"]), where)


def _register_device(values: dict[str, Any], index: ReferenceIndex) -> None:
    index.devices.accept(values["device_id"], values["patient_id"])


def _reject_device(values: dict[str, Any], index: ReferenceIndex, where: str) -> None:
    if values.get("device_id"):
        index.devices.reject(values["device_id"], where)


def _nothing(*_args: Any) -> None:
    return None


@dataclass(frozen=True)
class FileSpec:
    """How one bundle file maps onto its table.

    ``key`` is the table column that identifies a record within the organization (the
    idempotency key); ``extra`` says whether unknown columns are kept in the ``extra``
    JSON column (readings have none, so unknown reading columns are errors).
    """

    stem: str
    table: Table
    key: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    check: Callable[[Row, ReferenceIndex, date], None]
    register: Callable[[dict[str, Any], ReferenceIndex], None] = _nothing
    unregister: Callable[[dict[str, Any], ReferenceIndex, str], None] = _nothing
    extra: bool = True

    @cached_property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional

    @cached_property
    def stored(self) -> tuple[str, ...]:
        """Table columns this file writes, apart from ``org_id`` (and readings' surrogate id)."""
        return tuple(c.name for c in self.table.columns if c.name not in ("org_id", "id"))


FILES: dict[str, FileSpec] = {
    spec.stem: spec
    for spec in (
        FileSpec(
            "practitioners",
            schema.practitioners,
            "practitioner_id",
            ("practitioner_id", "name", "credential"),
            ("npi", "employment"),
            check_practitioner,
            _register_practitioner,
            _reject_practitioner,
        ),
        FileSpec(
            "patients",
            schema.patients,
            "patient_id",
            ("patient_id", "birth_date", "timezone", "payer", "family_name", "given_name", "sex"),
            ("member_id", "address_line", "city", "state", "postal_code", "death_date"),
            check_patient,
            _register_patient,
            _reject_patient,
        ),
        FileSpec(
            "enrollments",
            schema.enrollments,
            "enrollment_id",
            ("enrollment_id", "patient_id", "program", "start_date", "billing_practitioner_id", "diagnoses"),
            (
                "end_date",
                "consent_date",
                "complexity",
                "order_date",
                "established_patient",
                "initiating_visit_date",
                "qmb",
                "authorization_id",
                "authorization_start",
                "authorization_end",
            ),
            check_enrollment,
            _register_enrollment,
            _reject_enrollment,
        ),
        FileSpec(
            "devices",
            schema.devices,
            "device_id",
            ("device_id", "patient_id", "program", "kind", "medical_device", "assigned_date"),
            ("setup_date", "returned_date", "hardware_id"),
            check_device,
            _register_device,
            _reject_device,
        ),
        FileSpec(
            "readings",
            schema.readings,
            "reading_key",
            ("patient_id", "device_id", "measured_at", "type", "value", "unit", "transmission"),
            ("reading_id",),
            check_reading,
        ),
        FileSpec(
            "time_entries",
            schema.time_entries,
            "entry_id",
            ("entry_id", "patient_id", "practitioner_id", "started_at", "activity", "interactive"),
            ("program", "seconds", "minutes", "modality", "note"),
            check_time_entry,
        ),
        FileSpec(
            "visits",
            schema.visits,
            "visit_id",
            ("visit_id", "patient_id", "practitioner_id", "date", "code"),
            ("place_of_service", "telehealth"),
            check_visit,
        ),
    )
}

#: Dependency order: a file is checked only after every file it may reference.
ORDER: tuple[str, ...] = tuple(FILES)


def json_safe(value: Any) -> Any:
    """Extra-column values as JSON can hold them; anything else becomes its text form."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [json_safe(x) for x in value]
    if isinstance(value, dict):
        return {str(k): json_safe(x) for k, x in sorted(value.items())}
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def check_row(
    spec: FileSpec, raw: Mapping[str, Any], index: ReferenceIndex, today: date, *, keyed: bool
) -> Row:
    """Run one file's checks on one record.

    ``keyed`` sources (JSON) carry column names per record, so unknown names are judged
    here; CSV headers are judged once per file by ``check_header`` instead.
    """
    raw, cleaned = clean_record(raw)
    row = Row(raw, spec.table)
    spec.check(row, index, today)
    if cleaned:
        _report_cleaning(spec, row, cleaned)
    if keyed:
        unknown = sorted(k for k in raw if k not in spec.columns)
        if unknown and not spec.extra:
            for name in unknown:
                row.fail(
                    name,
                    "unknown_column",
                    f"unknown column {name!r}; {spec.stem} accepts only " + ", ".join(spec.columns),
                )
        extras = {k: json_safe(raw[k]) for k in unknown}
    else:
        extras = {k: raw[k] for k in sorted(raw) if k not in spec.columns}
    for name, value in extras.items():
        if isinstance(value, str) and len(value) > TEXT_MAX:
            row.fail(name, "too_long", f"{len(value)} characters, at most {TEXT_MAX} allowed")
    if spec.extra:
        row.values["extra"] = extras or None
    return row


def _report_cleaning(spec: FileSpec, row: Row, cleaned: list[Any]) -> None:
    """Warnings for removed characters; faults for NUL bytes and values left empty.

    The fault for an emptied value replaces the plain ``required`` fault the check gave
    it, because "only invisible characters" is the reason a person can act on.
    """
    whose = _whose(spec, row)
    for note in cleaned:
        if note.nul:
            row.fail(note.field, "nul_byte", f"{note.field} holds a NUL byte (\\0), which cannot be stored")
        elif note.surrogate:
            row.fail(note.field, "bad_text", f"{note.field} holds an unpaired surrogate (\\ud800-\\udfff)")
        elif note.emptied:
            row.faults = [f for f in row.faults if not (f.field == note.field and f.code == "required")]
            row.fail(
                note.field,
                "invisible_only",
                f"{note.field} of {whose} holds only invisible characters ({code_points(note.removed)})",
            )
        else:
            row.warnings.append(
                Fault(
                    note.field,
                    "invisible_removed",
                    f"removed {len(note.removed)} invisible character(s) ({code_points(note.removed)})"
                    f" from {note.field} of {whose}",
                )
            )


def _whose(spec: FileSpec, row: Row) -> str:
    """The record a message names: its patient when it has one, else its own id."""
    for name in ("patient_id", spec.key, "reading_id", "device_id"):
        value = row.raw.get(name)
        if isinstance(value, str) and value.strip():
            return f"patient {value.strip()}" if name == "patient_id" else f"{name} {value.strip()}"
    return f"this {spec.stem.rstrip('s').replace('_', ' ')}"


def check_header(spec: FileSpec, header: list[str]) -> list[Fault]:
    faults: list[Fault] = []
    seen: set[str] = set()
    for name in header:
        if not name:
            faults.append(Fault(None, "bad_header", "the header has an empty column name"))
        elif name in seen:
            faults.append(Fault(name, "duplicate_column", f"column {name!r} appears twice in the header"))
        seen.add(name)
    for name in spec.required:
        if name not in seen:
            faults.append(Fault(name, "missing_column", f"required column {name!r} is missing"))
    if not spec.extra:
        for name in header:
            if name and name not in spec.columns:
                faults.append(
                    Fault(
                        name,
                        "unknown_column",
                        f"unknown column {name!r}; {spec.stem} accepts only " + ", ".join(spec.columns),
                    )
                )
    return faults

"""FHIR R4 Bundles of vital-sign Observations, stored as readings.

Each Observation is parsed and validated with ``fhir.resources`` (its R4B models: the
installed release offers R4B and STU3 for pre-R5 content, and R4B reads R4 vital-sign
Observations unchanged), mapped by LOINC code to one of our reading types, and handed
to the bundle pipeline as a ``readings`` record, so it is checked, keyed, merged and
audited exactly like a CSV row. What the mapping decides (docs/formats.md, "FHIR"):

* **Codes**: blood-pressure panel 85354-9 with components 8480-6 (systolic) and 8462-4
  (diastolic) → one ``blood_pressure`` reading ``"128/82"`` mmHg; 29463-7 → ``weight``;
  2339-0 and 41653-7 → ``glucose`` (mg/dL); 59408-5 and 2708-6 → ``spo2``; 8867-4 →
  ``heart_rate``. Any other code, and a unit the code does not allow, is a problem.
* **Status**: ``final``, ``amended`` and ``corrected`` are stored (a later version of the
  same Observation updates the reading, audited); ``entered-in-error`` retracts the
  reading stored under that id (audited; refused when a locked run may have used it);
  ``registered``, ``preliminary``, ``cancelled`` and ``unknown`` carry no final value and
  are problems.
* **Who and what**: the subject by identifier (our ``patient_id``, with no system or
  ``urn:caretally:patient-id``) or by reference to a Patient entry of the Bundle; the
  device likewise (``urn:caretally:device-id`` = our ``device_id``,
  ``urn:caretally:hardware-id`` or a Device entry's ``serialNumber`` = the vendor serial,
  found within its assignment dates).
* **Provenance**: with a device the reading is device-transmitted (``auto``); without
  ``Observation.device`` it is a manual reading with no device, which never counts as a
  device day.
* **Idempotency**: the Observation's first ``identifier`` value, else its ``id``,
  becomes the ``reading_id``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError
from sqlalchemy import Engine, select

from caretally.errors import Problem
from caretally.ingest import hardware
from caretally.ingest.live import ItemOutcome, LiveResult, Locator, pointer, problem, run_records
from caretally.ingest.pipeline import DEFAULT_CLOCK_SKEW
from caretally.store import schema

KIND = "fhir"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
#: Identifier systems for our own ids; an identifier with no system means the same.
PATIENT_SYSTEM = "urn:caretally:patient-id"
DEVICE_SYSTEM = "urn:caretally:device-id"
HARDWARE_SYSTEM = "urn:caretally:hardware-id"
BUNDLE_TYPES = ("batch", "transaction", "collection")
STORED_STATUSES = frozenset({"final", "amended", "corrected"})
RETRACTED_STATUS = "entered-in-error"

BP_PANEL, SYSTOLIC, DIASTOLIC = "85354-9", "8480-6", "8462-4"
#: Accepted unit spellings (UCUM code or display, compared case-insensitively) → stored unit.
MMHG = {"mm[hg]": "mmHg", "mmhg": "mmHg"}


@dataclass(frozen=True, slots=True)
class Vital:
    type: str
    units: Mapping[str, str]
    label: str


VITALS: dict[str, Vital] = {
    "29463-7": Vital("weight", {"kg": "kg", "[lb_av]": "lbs", "lb": "lbs", "lbs": "lbs"}, "body weight"),
    "2339-0": Vital("glucose", {"mg/dl": "mg/dL"}, "glucose in blood (mass/volume)"),
    "41653-7": Vital("glucose", {"mg/dl": "mg/dL"}, "glucose in capillary blood by glucometer"),
    "59408-5": Vital("spo2", {"%": "%"}, "oxygen saturation by pulse oximetry"),
    "2708-6": Vital("spo2", {"%": "%"}, "oxygen saturation in arterial blood"),
    "8867-4": Vital(
        "heart_rate", {"/min": "bpm", "{beats}/min": "bpm", "beats/min": "bpm", "bpm": "bpm"}, "heart rate"
    ),
}
KNOWN_CODES = (BP_PANEL, *VITALS)

_NAIVE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?")
#: Where each readings column of a record lives in its Observation (relative to the entry).
_FIELDS = {
    "patient_id": "/resource/subject",
    "device_id": "/resource/device",
    "measured_at": "/resource/effectiveDateTime",
    "type": "/resource/code",
    "value": "/resource/valueQuantity",
    "unit": "/resource/valueQuantity",
    "transmission": "/resource/device",
}


class _Refused(Exception):
    """One Observation cannot become a reading; ``where`` is relative to its resource."""

    def __init__(self, where: str, code: str, message: str):
        super().__init__(message)
        self.where = where
        self.code = code
        self.message = message


def ingest_fhir_bundle(
    engine: Engine,
    org_id: str,
    bundle_json: Any,
    *,
    partial: bool = False,
    now: datetime,
    actor: str | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LiveResult:
    """Store the vital-sign Observations of a FHIR R4 Bundle (batch, transaction or collection).

    ``bundle_json`` is the parsed JSON (or its text). Every problem points into the
    Bundle (``/entry/2/resource/valueQuantity``). Patient and Device entries are read to
    resolve references and reported as ``ignored``.
    """
    data, refusal = _parse(bundle_json)
    if refusal is not None:
        return LiveResult(KIND, False, None, problems=[refusal])
    shell = _check_shell(data)
    if shell:
        return LiveResult(KIND, False, None, problems=shell)
    entries: list[Any] = data.get("entry") or []
    resolver = _Resolver(engine, org_id, entries)
    records: list[dict[str, Any]] = []
    locators: list[Locator] = []
    early: list[tuple[str, Problem]] = []
    ignored: list[ItemOutcome] = []
    retract: list[tuple[Mapping[str, Any], Locator]] = []
    warnings: list[Problem] = []
    observations: list[tuple[int, Observation, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        item = pointer("entry", i)
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if not isinstance(resource, Mapping):
            message = (
                "the entry has no resource; send each Observation as a resource (a withdrawn one "
                "with status entered-in-error)"
            )
            early.append((item, problem(KIND, item, "bad_record", message)))
            continue
        rtype = resource.get("resourceType")
        if rtype in ("Patient", "Device"):
            model = Patient if rtype == "Patient" else Device
            try:
                model.model_validate(resource)
            except ValidationError as exc:
                early.extend((item, p) for p in _validation_problems(exc, item + "/resource", resource))
                resolver.invalid.add(i)
                continue
            ignored.append(ItemOutcome(item, "ignored"))
            continue
        if rtype != "Observation":
            message = (
                f"resourceType {rtype!r} is not supported; a Bundle may carry Observation, Patient, Device"
            )
            early.append(
                (item, problem(KIND, item + "/resource/resourceType", "unsupported_resource", message))
            )
            continue
        try:
            observation = Observation.model_validate(resource)
        except ValidationError as exc:
            early.extend((item, p) for p in _validation_problems(exc, item + "/resource", resource))
            continue
        observations.append((i, observation, dict(resource)))
    resolver.prepare(observations)
    for i, observation, resource in observations:
        item = pointer("entry", i)
        try:
            outcome = _reading(observation, resource, resolver)
        except _Refused as refused:
            early.append(
                (item, problem(KIND, item + "/resource" + refused.where, refused.code, refused.message))
            )
            continue
        key = outcome.get("reading_id")
        fields = dict(_FIELDS)
        fields["reading_id"] = _id_pointer(observation)
        if outcome.pop("_component", False):
            fields["value"] = fields["unit"] = "/resource/component"
        if observation.status == RETRACTED_STATUS:
            if resolver.stored(key):
                reason = f"FHIR Observation {key} was marked entered-in-error"
                retract.append(
                    (
                        {"file": "readings", "id": key, "reason": reason},
                        Locator(item, {"id": fields["reading_id"]}, key),
                    )
                )
            else:
                ignored.append(ItemOutcome(item, "ignored", key))
                warnings.append(
                    problem(
                        KIND,
                        item + "/resource/status",
                        "nothing_to_retract",
                        f"Observation {key} is entered-in-error and no reading is stored under that id",
                    )
                )
            continue
        records.append(outcome)
        locators.append(Locator(item, fields, key))
    if not entries:
        return LiveResult(KIND, True, None)
    return run_records(
        engine,
        org_id,
        KIND,
        "readings",
        records,
        locators,
        partial=partial,
        now=now,
        early=early,
        ignored=ignored,
        retract=retract,
        warnings=warnings,
        actor=actor,
        max_clock_skew=max_clock_skew,
    )


def _parse(bundle_json: Any) -> tuple[dict[str, Any], Problem | None]:
    data = bundle_json
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return {}, problem(KIND, "", "bad_json", f"not valid JSON: {exc}")
    if not isinstance(data, dict):
        return {}, problem(KIND, "", "bad_json", "the body must be a FHIR Bundle (a JSON object)")
    return data, None


def _check_shell(data: dict[str, Any]) -> list[Problem]:
    """The Bundle itself: its type, and every element but the entries, per fhir.resources."""
    if data.get("resourceType") != "Bundle":
        found = data.get("resourceType")
        return [problem(KIND, "/resourceType", "not_a_bundle", f"resourceType must be Bundle, not {found!r}")]
    if data.get("type") not in BUNDLE_TYPES:
        message = f"Bundle.type {data.get('type')!r} is not one of: {', '.join(BUNDLE_TYPES)}"
        return [problem(KIND, "/type", "bad_enum", message)]
    if "entry" in data and not isinstance(data["entry"], list):
        return [problem(KIND, "/entry", "bad_json", "Bundle.entry must be an array")]
    try:
        Bundle.model_validate({k: v for k, v in data.items() if k != "entry"})
    except ValidationError as exc:
        return _validation_problems(exc, "", data)
    return []


def _validation_problems(exc: ValidationError, base: str, raw: Mapping[str, Any]) -> list[Problem]:
    """fhir.resources' complaints, each at its place; a time without offset gets our code."""
    out: list[Problem] = []
    for error in exc.errors():
        loc = [t for t in error["loc"] if not (isinstance(t, str) and "[" in t)]
        where = base + pointer(*loc)
        code = "required" if error["type"] == "missing" else "invalid_fhir"
        message = f"{'.'.join(str(t) for t in loc) or 'resource'}: {error['msg']}"
        if loc and loc[0] in ("effectiveDateTime", "effectiveInstant"):
            text = raw.get(str(loc[0]))
            if isinstance(text, str) and _NAIVE.fullmatch(text.strip()):
                code = "naive_timestamp"
                message = f"{loc[0]} {text!r} has no UTC offset; add one such as -05:00 or Z"
            else:
                code = "bad_timestamp"
        out.append(problem(KIND, where, code, message))
    return out


def _id_pointer(observation: Observation) -> str:
    if observation.identifier and observation.identifier[0].value:
        return "/resource/identifier/0/value"
    return "/resource/id"


def _reading_id(observation: Observation) -> str | None:
    if observation.identifier and observation.identifier[0].value:
        return observation.identifier[0].value
    return observation.id


def _decimal_text(value: Decimal) -> str:
    """A quantity as stored text: ``72.50`` → ``72.5``, ``120.0`` → ``120``."""
    return format(value.normalize(), "f")


def _quantity(quantity: Any, units: Mapping[str, str], where: str, what: str) -> tuple[str, str]:
    """(value text, stored unit) of a Quantity, or ``_Refused`` saying what is wrong with it."""
    if quantity is None or quantity.value is None:
        raise _Refused(where, "missing_value", f"{what} has no value")
    spelled = quantity.code if quantity.code and quantity.system in (None, UCUM) else quantity.unit
    unit = units.get((spelled or "").strip().lower())
    if unit is None:
        allowed = ", ".join(sorted({u for u in units}))
        raise _Refused(where, "wrong_unit", f"{what} is in {spelled!r}; allowed units: {allowed}")
    if quantity.value <= 0:
        raise _Refused(where, "bad_value", f"{what} must be greater than 0, got {quantity.value}")
    return _decimal_text(Decimal(quantity.value)), unit


def _loinc(concept: Any) -> str | None:
    """The first LOINC coding we map, else the first LOINC coding at all."""
    codes = [c.code for c in (concept.coding or []) if c.system == LOINC and c.code] if concept else []
    known = [c for c in codes if c in KNOWN_CODES]
    return (known or codes or [None])[0]


def _reading(observation: Observation, resource: Mapping[str, Any], resolver: _Resolver) -> dict[str, Any]:
    """The readings record of one Observation (``_Refused`` when there can be none)."""
    status = observation.status
    key = _reading_id(observation)
    if status == RETRACTED_STATUS:
        if not key:
            raise _Refused(
                "/identifier",
                "required",
                "an entered-in-error Observation needs its identifier or id to find the reading to retract",
            )
        return {"reading_id": key}
    if status not in STORED_STATUSES:
        raise _Refused(
            "/status",
            "not_final",
            f"status {status!r} has no final value; only final, amended and corrected Observations "
            "are stored (entered-in-error retracts)",
        )
    code = _loinc(observation.code)
    if code is None:
        raise _Refused("/code", "unknown_code", "the Observation has no LOINC code (system http://loinc.org)")
    if code not in KNOWN_CODES:
        raise _Refused(
            "/code",
            "unknown_code",
            f"LOINC {code} is not a vital sign caretally stores ({', '.join(KNOWN_CODES)})",
        )
    if code == BP_PANEL:
        value, unit, kind = _blood_pressure(observation), "mmHg", "blood_pressure"
    else:
        vital = VITALS[code]
        if observation.component and observation.valueQuantity is None:
            raise _Refused("/valueQuantity", "missing_value", f"{vital.label} ({code}) needs valueQuantity")
        value, unit = _quantity(
            observation.valueQuantity, vital.units, "/valueQuantity", f"{vital.label} ({code})"
        )
        kind = vital.type
    if "effectiveDateTime" not in resource and "effectiveInstant" not in resource:
        detail = "effectivePeriod is not accepted; " if "effectivePeriod" in resource else ""
        raise _Refused("/effectiveDateTime", "required", f"{detail}give effectiveDateTime with a UTC offset")
    measured = resource.get("effectiveDateTime", resource.get("effectiveInstant"))
    patient = resolver.patient(observation.subject)
    device = resolver.device(observation.device, observation)
    record: dict[str, Any] = {
        "reading_id": key,
        "patient_id": patient,
        "measured_at": measured,
        "type": kind,
        "value": value,
        "unit": unit,
        "transmission": "auto" if device else "manual",
        "source": "fhir",
        "loinc": code,
        "_component": code == BP_PANEL,
    }
    if device:
        record["device_id"] = device
    return record


def _blood_pressure(observation: Observation) -> str:
    parts: dict[str, str] = {}
    for k, component in enumerate(observation.component or []):
        code = _loinc(component.code)
        if code in (SYSTOLIC, DIASTOLIC) and code not in parts:
            name = "systolic" if code == SYSTOLIC else "diastolic"
            value, _ = _quantity(
                component.valueQuantity, MMHG, f"/component/{k}/valueQuantity", f"{name} pressure ({code})"
            )
            parts[code] = value
    for code, name in ((SYSTOLIC, "systolic"), (DIASTOLIC, "diastolic")):
        if code not in parts:
            raise _Refused(
                "/component",
                "missing_component",
                f"the blood-pressure panel ({BP_PANEL}) has no {name} component ({code})",
            )
    return f"{parts[SYSTOLIC]}/{parts[DIASTOLIC]}"


class _Resolver:
    """Patients and devices named by an Observation: by identifier, or by Bundle entry."""

    def __init__(self, engine: Engine, org_id: str, entries: list[Any]):
        self.engine = engine
        self.org_id = org_id
        self.entries: dict[str, tuple[int, Mapping[str, Any]]] = {}
        for i, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, Mapping) else None
            if not isinstance(resource, Mapping):
                continue
            if isinstance(entry.get("fullUrl"), str):
                self.entries[entry["fullUrl"]] = (i, resource)
            if isinstance(resource.get("id"), str) and isinstance(resource.get("resourceType"), str):
                self.entries.setdefault(f"{resource['resourceType']}/{resource['id']}", (i, resource))
        self.invalid: set[int] = set()  # Patient and Device entries that fhir.resources refused
        self.device_ids: set[str] = set()
        self.serials: dict[str, list[hardware.Assignment]] = {}
        self.keys: set[str] = set()

    def prepare(self, observations: list[tuple[int, Observation, dict[str, Any]]]) -> None:
        """One query each for the device ids, serials and stored reading ids the Bundle names."""
        names: set[str] = set()
        keys: set[str] = set()
        for _, observation, _ in observations:
            key = _reading_id(observation)
            if key:
                keys.add(key)
            for identifier in self._device_identifiers(observation.device):
                names.add(identifier[1])
        d, r = schema.devices, schema.readings
        with self.engine.connect() as conn:
            ordered = sorted(names)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                query = select(d.c.device_id).where(d.c.org_id == self.org_id, d.c.device_id.in_(chunk))
                self.device_ids.update(conn.execute(query).scalars())
            ordered = sorted(keys)
            for start in range(0, len(ordered), 500):
                chunk = ordered[start : start + 500]
                query = select(r.c.reading_key).where(r.c.org_id == self.org_id, r.c.reading_key.in_(chunk))
                self.keys.update(conn.execute(query).scalars())
        self.serials = hardware.assignments(self.engine, self.org_id, names)

    def stored(self, key: str | None) -> bool:
        return key is not None and key in self.keys

    def _entry(self, reference: str, kind: str, where: str) -> Mapping[str, Any]:
        found = self.entries.get(reference)
        if found is None or found[1].get("resourceType") != kind:
            raise _Refused(
                where,
                "unresolved_reference",
                f"{reference!r} is not a {kind} entry of this Bundle; identify the {kind.lower()} "
                f"by identifier instead",
            )
        if found[0] in self.invalid:
            raise _Refused(
                where, "rejected_reference", f"the {kind} entry {reference} is invalid (entry {found[0]})"
            )
        return found[1]

    def patient(self, subject: Any) -> str:
        if subject is None:
            raise _Refused("/subject", "required", "subject is required: the patient, by identifier")
        if subject.identifier is not None:
            return self._own(subject.identifier.system, subject.identifier.value, "/subject/identifier")
        if subject.reference:
            resource = Patient.model_validate(self._entry(subject.reference, "Patient", "/subject"))
            for own in resource.identifier or []:
                if own.system in (None, PATIENT_SYSTEM) and own.value:
                    return own.value
            raise _Refused(
                "/subject",
                "unknown_patient_identifier",
                f"the Patient entry {subject.reference} has no identifier with system {PATIENT_SYSTEM} "
                "(or none) carrying the caretally patient_id",
            )
        raise _Refused("/subject", "required", "subject needs an identifier or a reference")

    @staticmethod
    def _own(system: str | None, value: str | None, where: str) -> str:
        if system not in (None, PATIENT_SYSTEM):
            raise _Refused(
                where + "/system",
                "unknown_identifier_system",
                f"patient identifier system {system!r} is not one caretally knows; send the caretally "
                f"patient_id with system {PATIENT_SYSTEM} (or no system)",
            )
        if not value:
            raise _Refused(where + "/value", "required", "the patient identifier has no value")
        return value

    def _device_identifiers(self, device: Any) -> list[tuple[str, str]]:
        """(system or "", value) pairs that may name the device."""
        if device is None:
            return []
        if device.identifier is not None and device.identifier.value:
            return [(device.identifier.system or "", device.identifier.value)]
        if device.reference:
            found = self.entries.get(device.reference)
            if found is None or found[1].get("resourceType") != "Device" or found[0] in self.invalid:
                return []
            resource = Device.model_validate(found[1])
            pairs = [(i.system or "", i.value) for i in resource.identifier or [] if i.value]
            if resource.serialNumber:
                pairs.append((HARDWARE_SYSTEM, resource.serialNumber))
            return pairs
        return []

    def device(self, device: Any, observation: Observation) -> str | None:
        """Our device_id, ``None`` when the Observation names no device (a manual reading)."""
        if device is None:
            return None
        if device.identifier is None and device.reference:
            self._entry(device.reference, "Device", "/device")  # refuses a dangling reference
        pairs = self._device_identifiers(device)
        if not pairs:
            raise _Refused("/device", "required", "device needs an identifier (device_id or hardware_id)")
        instant = observation.effectiveDateTime or observation.effectiveInstant
        refusal: _Refused | None = None
        for system, value in pairs:
            if system in ("", DEVICE_SYSTEM) and (value in self.device_ids or system == DEVICE_SYSTEM):
                return value
            if system in ("", HARDWARE_SYSTEM):
                if not isinstance(instant, datetime):
                    return value  # the pipeline reports the missing or naive time
                found = hardware.device_at(self.serials.get(value), value, instant)
                if found.assignment is not None:
                    return found.assignment.device_id
                message = found.message or ""
                if found.code == "unknown_device" and not system:
                    message = f"no device has device_id or hardware_id {value}"
                refusal = _Refused("/device", found.code or "unknown_device", message)
        if refusal is not None:
            raise refusal
        systems = ", ".join(sorted({s or "(none)" for s, _ in pairs}))
        raise _Refused(
            "/device",
            "unknown_identifier_system",
            f"device identifier system {systems} is not one caretally knows; use {DEVICE_SYSTEM} "
            f"(our device_id) or {HARDWARE_SYSTEM} (the vendor serial)",
        )

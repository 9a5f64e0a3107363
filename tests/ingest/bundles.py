"""A small valid practice bundle, and writers that put it on disk in each accepted format.

Tests start from ``valid_bundle()`` and change one thing, so every failure is caused by
exactly the fault the test introduced.
"""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from caretally.ingest.values import luhn_ok

Records = dict[str, list[dict[str, Any]]]


def npi_with_check_digit(first_nine: str) -> str:
    """Completes nine digits into a valid NPI (independently of the validator under test)."""
    for digit in "0123456789":
        candidate = first_nine + digit
        if luhn_ok("80840" + candidate):
            return candidate
    raise AssertionError("unreachable")


DR_NPI = "1234567893"  # the worked example in the CMS NPI check-digit note
NP_NPI = npi_with_check_digit("198765432")
PT_NPI = npi_with_check_digit("155555555")
MBI = "1EG4-TE5-MK73"  # the CMS specimen MBI

_BASE: Records = {
    "practitioners": [
        {"practitioner_id": "DR1", "npi": DR_NPI, "name": "Ada Moreno", "credential": "MD"},
        {"practitioner_id": "NP1", "npi": NP_NPI, "name": "Ben Ortiz", "credential": "np"},
        {"practitioner_id": "RN1", "npi": "", "name": "Cy Park", "credential": "RN"},
        {"practitioner_id": "PT1", "npi": PT_NPI, "name": "Dee Quinn", "credential": "PT"},
    ],
    "patients": [
        {
            "patient_id": "P1",
            "birth_date": "1948-05-17",
            "timezone": "America/Chicago",
            "payer": "medicare",
            "member_id": MBI,
            "family_name": "Lopez",
            "given_name": "Maria",
            "sex": "female",
            "address_line": "1 Elm St",
            "city": "Austin",
            "state": "tx",
            "postal_code": "78701",
        },
        {
            "patient_id": "P2",
            "birth_date": "1955-11-02",
            "timezone": "Pacific/Honolulu",
            "payer": "commercial",
            "member_id": "XYZ-123",
            "family_name": "Kahale",
            "given_name": "Noa",
            "sex": "M",
            "address_line": "",
            "city": "",
            "state": "",
            "postal_code": "96813-1234",
        },
    ],
    "enrollments": [
        {
            "enrollment_id": "E1",
            "patient_id": "P1",
            "program": "RPM",
            "start_date": "2026-01-05",
            "end_date": "",
            "consent_date": "2026-01-05",
            "billing_practitioner_id": "DR1",
            "diagnoses": "I10;E119",
            "complexity": "",
            "order_date": "2026-01-02",
            "established_patient": "true",
            "initiating_visit_date": "",
        },
        {
            "enrollment_id": "E2",
            "patient_id": "P1",
            "program": "ccm",
            "start_date": "2026-01-05",
            "end_date": "2026-12-31",
            "consent_date": "",
            "billing_practitioner_id": "NP1",
            "diagnoses": "I10; E11.9",
            "complexity": "complex",
            "order_date": "",
            "established_patient": "",
            "initiating_visit_date": "2025-12-20",
        },
        {
            "enrollment_id": "E3",
            "patient_id": "P2",
            "program": "RTM",
            "start_date": "2026-02-01",
            "end_date": "",
            "consent_date": "2026-02-01",
            "billing_practitioner_id": "PT1",
            "diagnoses": "M17.11",
            "complexity": "",
            "order_date": "",
            "established_patient": "no",
            "initiating_visit_date": "",
        },
    ],
    "devices": [
        {
            "device_id": "D1",
            "patient_id": "P1",
            "program": "RPM",
            "kind": "blood_pressure",
            "medical_device": "true",
            "setup_date": "2026-01-06",
            "assigned_date": "2026-01-05",
            "returned_date": "",
        },
        {
            "device_id": "D2",
            "patient_id": "P2",
            "program": "RTM",
            "kind": "Musculoskeletal",
            "medical_device": "yes",
            "setup_date": "",
            "assigned_date": "2026-02-01",
            "returned_date": "2026-04-30",
        },
    ],
    "readings": [
        {
            "reading_id": "",
            "patient_id": "P1",
            "device_id": "D1",
            "measured_at": "2026-03-01T05:30:00Z",
            "type": "blood_pressure",
            "value": "128/82",
            "unit": "mmHg",
            "transmission": "auto",
        },
        {
            "reading_id": "",
            "patient_id": "P1",
            "device_id": "D1",
            "measured_at": "2026-03-01T19:45:00-06:00",
            "type": "blood_pressure",
            "value": "131/85",
            "unit": "mmHg",
            "transmission": "manual",
        },
        {
            "reading_id": "",
            "patient_id": "P1",
            "device_id": "D1",
            "measured_at": "2026-03-08T07:59:59.5+00:00",
            "type": "pulse",
            "value": "72",
            "unit": "bpm",
            "transmission": "AUTO",
        },
        {
            "reading_id": "MSK-0001",
            "patient_id": "P2",
            "device_id": "D2",
            "measured_at": "2026-03-02T09:00:00+00:00",
            "type": "range_of_motion",
            "value": "95",
            "unit": "deg",
            "transmission": "auto",
        },
    ],
    "time_entries": [
        {
            "entry_id": "T1",
            "patient_id": "P1",
            "practitioner_id": "RN1",
            "program": "RPM",
            "started_at": "2026-03-03T23:30:00-06:00",
            "seconds": "1199",
            "minutes": "",
            "activity": "reviewed readings, called patient",
            "interactive": "true",
            "modality": "phone",
            "note": "BP trending up",
        },
        {
            "entry_id": "T2",
            "patient_id": "P1",
            "practitioner_id": "NP1",
            "program": "CCM",
            "started_at": "2026-03-10T15:00:00Z",
            "seconds": "",
            "minutes": "31",
            "activity": "care plan update",
            "interactive": "no",
            "modality": "",
            "note": "",
        },
        {
            "entry_id": "T3",
            "patient_id": "P2",
            "practitioner_id": "PT1",
            "program": "",
            "started_at": "2026-03-05T08:00:00-10:00",
            "seconds": "600",
            "minutes": "10",
            "activity": "exercise review",
            "interactive": "1",
            "modality": "video",
            "note": "",
        },
    ],
}


def valid_bundle() -> Records:
    return copy.deepcopy(_BASE)


def with_row(bundle: Records, stem: str, index: int, **changes: Any) -> Records:
    """The bundle with one row's cells changed (a value of ``...`` deletes the cell)."""
    row = bundle[stem][index]
    for name, value in changes.items():
        if value is ...:
            row.pop(name, None)
        else:
            row[name] = value
    return bundle


def write_csv(folder: Path, bundle: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, rows in bundle.items():
        columns: list[str] = []
        for row in rows:
            columns.extend(c for c in row if c not in columns)
        with (folder / f"{stem}.csv").open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    return folder


def write_jsonl(folder: Path, bundle: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, rows in bundle.items():
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (folder / f"{stem}.jsonl").write_text(text, encoding="utf-8")
    return folder


def write_bundle_json(folder: Path, bundle: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bundle.json").write_text(json.dumps(bundle, indent=1), encoding="utf-8")
    return folder


def natively_typed(bundle: Records) -> Records:
    """The same bundle with JSON-native numbers and booleans where the format allows them."""
    typed = copy.deepcopy(bundle)
    for row in typed["devices"]:
        row["medical_device"] = row["medical_device"].lower() in ("true", "yes", "1")
    for row in typed["time_entries"]:
        for name in ("seconds", "minutes"):
            row[name] = int(row[name]) if row[name] else None
        row["interactive"] = row["interactive"].lower() in ("true", "yes", "1")
    for row in typed["readings"]:
        if row["value"].isdigit():
            row["value"] = int(row["value"])
    return typed

"""A small practice stored through the bundle importer, for the live-ingest tests.

Two RPM patients in different zones. The blood-pressure cuff ``TNV-CUFF-1`` (a Tenovi
serial) went to P1 in February and, after P1 returned it on 2026-03-15, to P2 from
2026-03-20: a serial alone does not say whose reading it is, its assignment does. P1
also has a cellular scale. Tests change nothing here; they post live data on top.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import DR_NPI, MBI

ORG = "clinic"
#: The live requests' clock: readings up to a day after this are accepted.
NOW = datetime(2026, 4, 10, 12, 0, tzinfo=UTC)
CUFF = "TNV-CUFF-1"
SCALE_IMEI = "353103444921691"


def practice_records() -> dict[str, list[dict[str, Any]]]:
    return {
        "practitioners": [
            {"practitioner_id": "DR1", "npi": DR_NPI, "name": "Ada Moreno", "credential": "MD"},
            {"practitioner_id": "RN1", "npi": "", "name": "Cy Park", "credential": "RN"},
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
                "sex": "F",
            },
            {
                "patient_id": "P2",
                "birth_date": "1951-02-03",
                "timezone": "Pacific/Honolulu",
                "payer": "medicare",
                "member_id": "2EG4TE5MK74",
                "family_name": "Kahale",
                "given_name": "Noa",
                "sex": "M",
            },
        ],
        "enrollments": [
            {
                "enrollment_id": "E1",
                "patient_id": "P1",
                "program": "RPM",
                "start_date": "2026-02-01",
                "consent_date": "2026-02-01",
                "billing_practitioner_id": "DR1",
                "diagnoses": "I10",
                "established_patient": "true",
            },
            {
                "enrollment_id": "E2",
                "patient_id": "P2",
                "program": "RPM",
                "start_date": "2026-03-20",
                "consent_date": "2026-03-20",
                "billing_practitioner_id": "DR1",
                "diagnoses": "I10",
                "established_patient": "true",
            },
        ],
        "devices": [
            {
                "device_id": "D1",
                "patient_id": "P1",
                "program": "RPM",
                "kind": "blood_pressure",
                "medical_device": "true",
                "setup_date": "2026-02-01",
                "assigned_date": "2026-02-01",
                "returned_date": "2026-03-15",
                "hardware_id": CUFF,
            },
            {
                "device_id": "D2",
                "patient_id": "P1",
                "program": "RPM",
                "kind": "weight",
                "medical_device": "true",
                "setup_date": "2026-02-01",
                "assigned_date": "2026-02-01",
                "hardware_id": SCALE_IMEI,
            },
            {
                "device_id": "D3",
                "patient_id": "P2",
                "program": "RPM",
                "kind": "blood_pressure",
                "medical_device": "true",
                "setup_date": "2026-03-20",
                "assigned_date": "2026-03-20",
                "hardware_id": CUFF,
            },
        ],
    }


def open_practice(url: str, org: str = ORG) -> Engine:
    engine = open_database(url, org)
    report = import_records(engine, org, practice_records())
    assert report.stored and not report.problems, report.problems
    return engine


def stored_readings(engine: Engine, org: str = ORG) -> list[dict[str, Any]]:
    r = schema.readings
    with engine.connect() as conn:
        rows = conn.execute(select(r).where(r.c.org_id == org).order_by(r.c.reading_key)).mappings()
        return [dict(row) for row in rows]


def audit_rows(engine: Engine, table: str, org: str = ORG) -> list[dict[str, Any]]:
    a = schema.audit_changes
    with engine.connect() as conn:
        query = select(a).where(a.c.org_id == org, a.c.table_name == table).order_by(a.c.id)
        return [dict(row) for row in conn.execute(query).mappings()]


def reading(**changes: Any) -> dict[str, Any]:
    """One valid JSON reading of P1's scale; ``changes`` override fields (``...`` removes one)."""
    item: dict[str, Any] = {
        "patient_id": "P1",
        "device_id": "D2",
        "measured_at": "2026-03-05T07:30:00-06:00",
        "type": "weight",
        "value": "182.4",
        "unit": "lbs",
        "transmission": "auto",
    }
    for name, value in changes.items():
        if value is ...:
            item.pop(name, None)
        else:
            item[name] = value
    return item

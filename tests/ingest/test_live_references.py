"""A live request reads only the ids it names: every referring column must be named.

A live import (``import_records(live=True)``) reads from the database only the patients,
practitioners and devices its records name. An enrollment names its practitioner in
``billing_practitioner_id``, and JSON may carry an id as a number; both were once left
out of that scope, so a stored practitioner or patient was refused as unknown.
"""

from __future__ import annotations

import re
from pathlib import Path

from caretally.ingest import import_records, rows
from caretally.ingest.references import REFERS_TO
from tests.ingest.live_practice import NOW, ORG, open_practice


def test_a_live_enrollment_finds_its_stored_billing_practitioner(db_url: str) -> None:
    engine = open_practice(db_url)
    enrollment = {
        "enrollment_id": "E9",
        "patient_id": "P2",
        "program": "CCM",
        "start_date": "2026-03-01",
        "consent_date": "2026-03-01",
        "billing_practitioner_id": "DR1",
        "diagnoses": "I10;E11.9",
        "established_patient": "true",
    }
    report = import_records(engine, ORG, {"enrollments": [enrollment]}, live=True, now=NOW)
    assert not report.problems, report.problems
    assert report.stored


def test_a_live_record_naming_a_stored_id_as_a_json_number_finds_it(db_url: str) -> None:
    engine = open_practice(db_url)
    patient = {
        "patient_id": "1001",
        "birth_date": "1950-01-01",
        "timezone": "America/New_York",
        "payer": "medicare",
        "member_id": "1EG4TE5MK73",
        "family_name": "Stone",
        "given_name": "Ana",
        "sex": "F",
    }
    assert not import_records(engine, ORG, {"patients": [patient]}).problems
    entry = {
        "entry_id": "T1001",
        "patient_id": 1001,
        "practitioner_id": "RN1",
        "started_at": "2026-03-03T10:00:00-05:00",
        "minutes": 5,
        "activity": "called patient",
        "interactive": True,
        "modality": "phone",
    }
    report = import_records(engine, ORG, {"time_entries": [entry]}, live=True, now=NOW)
    assert not report.problems, report.problems


def test_every_column_the_row_checker_looks_up_is_in_the_live_scope() -> None:
    """The checker's ``row.ref(column, index.<catalog>, …)`` calls, read from its source."""
    source = Path(rows.__file__).read_text()
    looked_up = set(re.findall(r'row\.ref\(\s*"(\w+)",\s*index\.(\w+)', source))
    assert looked_up, "no row.ref calls found: the pattern no longer matches rows.py"
    scoped = {(column, catalog) for catalog, columns in REFERS_TO.items() for column in columns}
    assert looked_up <= scoped, sorted(looked_up - scoped)

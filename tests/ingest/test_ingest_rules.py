"""One failing row for every validation rule, each checked for file, line, field and code.

Every case starts from the valid bundle and changes one row; the import must refuse the
whole bundle and report exactly the expected problems at that row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import valid_bundle, with_row

ORG = "clinic"

# (stem, row index, cell changes, expected (field, code) problems at that row)
CASES: list[tuple[str, int, dict[str, Any], list[tuple[str | None, str]]]] = [
    # patients
    ("patients", 0, {"patient_id": ""}, [("patient_id", "required")]),
    ("patients", 1, {"patient_id": "P" * 65}, [("patient_id", "too_long")]),
    ("patients", 0, {"birth_date": "05/17/1948"}, [("birth_date", "bad_date")]),
    ("patients", 0, {"birth_date": "1948-02-30"}, [("birth_date", "bad_date")]),
    ("patients", 0, {"birth_date": "2999-01-01"}, [("birth_date", "future_date")]),
    ("patients", 0, {"birth_date": "1899-12-31"}, [("birth_date", "date_too_early")]),
    ("patients", 0, {"timezone": "America/Chicgo"}, [("timezone", "bad_timezone")]),
    ("patients", 0, {"timezone": "CST"}, [("timezone", "bad_timezone")]),
    ("patients", 0, {"payer": "medigap"}, [("payer", "bad_enum")]),
    ("patients", 0, {"member_id": "1SG4-TE5-MK73"}, [("member_id", "bad_mbi")]),
    ("patients", 0, {"member_id": "1EG4-TE5-MK7"}, [("member_id", "bad_mbi")]),
    ("patients", 0, {"member_id": "0EG4-TE5-MK73"}, [("member_id", "bad_mbi")]),
    ("patients", 0, {"family_name": " "}, [("family_name", "required")]),
    ("patients", 0, {"given_name": ...}, [("given_name", "required")]),
    ("patients", 0, {"sex": "X"}, [("sex", "bad_enum")]),
    ("patients", 0, {"state": "Texas"}, [("state", "bad_state")]),
    ("patients", 0, {"postal_code": "7870"}, [("postal_code", "bad_postal_code")]),
    # practitioners
    ("practitioners", 0, {"npi": "1234567890"}, [("npi", "bad_npi")]),
    ("practitioners", 0, {"npi": "12345678"}, [("npi", "bad_npi")]),
    ("practitioners", 0, {"npi": ""}, [("npi", "required")]),
    ("practitioners", 3, {"npi": ""}, [("npi", "required")]),
    ("practitioners", 2, {"npi": "1234567890"}, [("npi", "bad_npi")]),
    ("practitioners", 0, {"credential": "Shaman"}, [("credential", "unknown_credential")]),
    ("practitioners", 0, {"name": ""}, [("name", "required")]),
    # enrollments
    ("enrollments", 0, {"program": "TCM"}, [("program", "bad_enum")]),
    ("enrollments", 0, {"start_date": "2026-1-5"}, [("start_date", "bad_date")]),
    ("enrollments", 0, {"start_date": ""}, [("start_date", "required")]),
    ("enrollments", 1, {"end_date": "2026-01-04"}, [("end_date", "end_before_start")]),
    ("enrollments", 0, {"consent_date": "soon"}, [("consent_date", "bad_date")]),
    ("enrollments", 0, {"order_date": "2026-02-30"}, [("order_date", "bad_date")]),
    ("enrollments", 0, {"initiating_visit_date": "x"}, [("initiating_visit_date", "bad_date")]),
    ("enrollments", 0, {"patient_id": "P9"}, [("patient_id", "unknown_patient")]),
    (
        "enrollments",
        0,
        {"billing_practitioner_id": "DR9"},
        [("billing_practitioner_id", "unknown_practitioner")],
    ),
    (
        "enrollments",
        0,
        {"billing_practitioner_id": "RN1"},
        [("billing_practitioner_id", "wrong_performer_for_program")],
    ),
    (
        "enrollments",
        1,
        {"billing_practitioner_id": "PT1"},
        [("billing_practitioner_id", "wrong_performer_for_program")],
    ),
    (
        "enrollments",
        2,
        {"billing_practitioner_id": "RN1"},
        [("billing_practitioner_id", "wrong_performer_for_program")],
    ),
    ("enrollments", 0, {"diagnoses": "E11"}, [("diagnoses", "icd10_not_billable")]),
    ("enrollments", 0, {"diagnoses": "I10;XYZ.9"}, [("diagnoses", "bad_icd10")]),
    (
        "enrollments",
        0,
        {"diagnoses": "E11;Q9999"},
        [("diagnoses", "icd10_not_billable"), ("diagnoses", "bad_icd10")],
    ),
    ("enrollments", 0, {"diagnoses": " ; "}, [("diagnoses", "required")]),
    ("enrollments", 0, {"complexity": "high"}, [("complexity", "bad_enum")]),
    ("enrollments", 0, {"established_patient": "maybe"}, [("established_patient", "bad_boolean")]),
    # devices
    ("devices", 0, {"program": "CCM"}, [("program", "bad_enum")]),
    ("devices", 1, {"kind": "blood_pressure"}, [("kind", "bad_enum")]),
    ("devices", 0, {"kind": ""}, [("kind", "required")]),
    ("devices", 0, {"medical_device": ""}, [("medical_device", "required")]),
    ("devices", 0, {"medical_device": "perhaps"}, [("medical_device", "bad_boolean")]),
    ("devices", 0, {"setup_date": "2026-13-01"}, [("setup_date", "bad_date")]),
    ("devices", 1, {"returned_date": "2026-01-31"}, [("returned_date", "end_before_start")]),
    ("devices", 0, {"patient_id": "P9"}, [("patient_id", "unknown_patient")]),
    # readings
    ("readings", 0, {"measured_at": "2026-03-01T05:30:00"}, [("measured_at", "naive_timestamp")]),
    ("readings", 0, {"measured_at": "2026-03-01"}, [("measured_at", "bad_timestamp")]),
    ("readings", 0, {"measured_at": "yesterday at noon"}, [("measured_at", "bad_timestamp")]),
    ("readings", 0, {"device_id": "D9"}, [("device_id", "unknown_device")]),
    ("readings", 0, {"device_id": "D2"}, [("device_id", "device_patient_mismatch")]),
    (
        "readings",
        0,
        {"patient_id": "P9"},
        [("patient_id", "unknown_patient"), ("device_id", "device_patient_mismatch")],
    ),
    ("readings", 0, {"transmission": "fax"}, [("transmission", "bad_enum")]),
    ("readings", 0, {"value": ""}, [("value", "required")]),
    ("readings", 0, {"unit": "u" * 33}, [("unit", "too_long")]),
    # time entries
    ("time_entries", 0, {"started_at": "2026-03-03T23:30:00"}, [("started_at", "naive_timestamp")]),
    ("time_entries", 0, {"seconds": "20m"}, [("seconds", "bad_integer")]),
    ("time_entries", 0, {"seconds": "0"}, [("seconds", "not_positive")]),
    ("time_entries", 1, {"minutes": "-5"}, [("minutes", "not_positive")]),
    ("time_entries", 2, {"seconds": "660"}, [("minutes", "duration_mismatch")]),
    ("time_entries", 1, {"minutes": "721"}, [("minutes", "duration_too_long")]),
    ("time_entries", 0, {"seconds": "43201"}, [("seconds", "duration_too_long")]),
    ("time_entries", 0, {"seconds": "", "minutes": ""}, [("seconds", "required")]),
    ("time_entries", 0, {"modality": ""}, [("modality", "required")]),
    ("time_entries", 0, {"modality": "fax"}, [("modality", "bad_enum")]),
    ("time_entries", 0, {"interactive": "sometimes"}, [("interactive", "bad_boolean")]),
    ("time_entries", 0, {"activity": ""}, [("activity", "required")]),
    ("time_entries", 0, {"program": "TCM"}, [("program", "bad_enum")]),
    ("time_entries", 0, {"program": "BHI"}, [("program", "not_enrolled_in_program")]),
    ("time_entries", 0, {"practitioner_id": "XX"}, [("practitioner_id", "unknown_practitioner")]),
    ("time_entries", 0, {"patient_id": "P9"}, [("patient_id", "unknown_patient")]),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One database for every case: a refused import leaves it empty, which is checked."""
    path = tmp_path_factory.mktemp("rules") / "rules.db"
    engine = open_database(f"sqlite:///{path}", ORG)
    yield engine
    engine.dispose()


def _empty(engine: Engine) -> bool:
    tables = (
        schema.patients,
        schema.readings,
        schema.time_entries,
        schema.import_batches,
        schema.audit_changes,
    )
    with engine.connect() as conn:
        return all(conn.execute(select(func.count()).select_from(t)).scalar() == 0 for t in tables)


def test_the_base_bundle_is_valid(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'ok.db'}", ORG)
    report = import_records(engine, ORG, valid_bundle())
    assert report.problems == []
    assert report.stored


@pytest.mark.parametrize(
    ("stem", "index", "changes", "expected"),
    CASES,
    ids=[f"{s}[{i}]-{next(iter(c))}-{e[0][1]}" for s, i, c, e in CASES],
)
def test_each_rule_rejects_its_row(
    engine: Engine, stem: str, index: int, changes: dict[str, Any], expected: list[tuple[str | None, str]]
) -> None:
    bundle = with_row(valid_bundle(), stem, index, **changes)
    report = import_records(engine, ORG, bundle)
    position = index + 1
    here = f"<records>:{stem}[{position}]"
    own = [(p.field, p.code) for p in report.problems if p.file == here]
    assert own == expected, [str(p) for p in report.problems]
    assert all(p.line == position for p in report.problems if p.file == here)
    assert not report.stored and report.batch_id is None
    assert report.counts[stem].rejected >= 1
    assert _empty(engine)


def test_problem_carries_the_offending_row_and_prints_as_file_line_field(engine: Engine) -> None:
    bundle = with_row(valid_bundle(), "readings", 2, measured_at="2026-03-08 07:59")
    report = import_records(engine, ORG, bundle, source_name="api")
    (problem,) = report.problems
    assert problem.code == "naive_timestamp"
    assert problem.row is not None and problem.row["measured_at"] == "2026-03-08 07:59"
    assert str(problem).startswith("api:readings[3]:3: measured_at: ")


def test_a_row_pointing_at_a_rejected_row_is_rejected_and_says_why(engine: Engine) -> None:
    bundle = with_row(valid_bundle(), "patients", 1, sex="X")
    report = import_records(engine, ORG, bundle)
    found = {(p.file, p.field, p.code) for p in report.problems}
    assert found == {
        ("<records>:patients[2]", "sex", "bad_enum"),
        ("<records>:enrollments[3]", "patient_id", "rejected_reference"),
        ("<records>:devices[2]", "patient_id", "rejected_reference"),
        ("<records>:readings[4]", "patient_id", "rejected_reference"),
        ("<records>:readings[4]", "device_id", "rejected_reference"),
        ("<records>:time_entries[3]", "patient_id", "rejected_reference"),
    }
    cascade = next(p for p in report.problems if p.file == "<records>:devices[2]")
    assert "<records>:patients[2]" in cascade.message


def test_time_entry_for_a_rejected_enrollment_is_rejected(engine: Engine) -> None:
    bundle = with_row(valid_bundle(), "enrollments", 1, diagnoses="E11")
    report = import_records(engine, ORG, bundle)
    found = {(p.file, p.field, p.code) for p in report.problems}
    assert found == {
        ("<records>:enrollments[2]", "diagnoses", "icd10_not_billable"),
        ("<records>:time_entries[2]", "program", "rejected_reference"),
    }


def test_same_id_twice_with_different_content_is_a_duplicate(engine: Engine) -> None:
    bundle = valid_bundle()
    bundle["devices"].append(dict(bundle["devices"][0], kind="weight"))
    bundle["devices"].append(dict(bundle["devices"][1]))  # identical repeat: harmless
    report = import_records(engine, ORG, bundle)
    assert [(p.file, p.line, p.field, p.code) for p in report.problems] == [
        ("<records>:devices[3]", 3, "device_id", "duplicate_id")
    ]
    assert "kind" in report.problems[0].message


def test_same_reading_twice_with_different_value_is_a_duplicate(engine: Engine) -> None:
    bundle = valid_bundle()
    bundle["readings"].append(dict(bundle["readings"][0], value="140/90"))
    report = import_records(engine, ORG, bundle)
    assert [(p.file, p.field, p.code) for p in report.problems] == [
        ("<records>:readings[5]", "measured_at", "duplicate_id")
    ]


def test_references_resolve_against_the_database(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'db.db'}", ORG)
    assert import_records(engine, ORG, valid_bundle()).stored
    later = {
        "readings": [
            {
                "patient_id": "P1",
                "device_id": "D1",
                "measured_at": "2026-04-01T12:00:00Z",
                "type": "bp",
                "value": "120/80",
                "unit": "mmHg",
                "transmission": "auto",
            },
            {
                "patient_id": "P1",
                "device_id": "D2",
                "measured_at": "2026-04-01T12:00:00Z",
                "type": "bp",
                "value": "120/80",
                "unit": "mmHg",
                "transmission": "auto",
            },
        ],
        "time_entries": [
            {
                "entry_id": "T9",
                "patient_id": "P2",
                "practitioner_id": "PT1",
                "program": "RTM",
                "started_at": "2026-04-02T09:00:00-10:00",
                "minutes": "12",
                "activity": "review",
                "interactive": "false",
            },
            {
                "entry_id": "T10",
                "patient_id": "P2",
                "practitioner_id": "PT1",
                "program": "RPM",
                "started_at": "2026-04-02T09:00:00-10:00",
                "minutes": "12",
                "activity": "review",
                "interactive": "false",
            },
        ],
    }
    report = import_records(engine, ORG, later, skip_invalid=True)
    assert [(p.file, p.field, p.code) for p in report.problems] == [
        ("<records>:readings[2]", "device_id", "device_patient_mismatch"),
        ("<records>:time_entries[2]", "program", "not_enrolled_in_program"),
    ]
    assert report.counts["readings"].inserted == 1
    assert report.counts["time_entries"].inserted == 1


def test_another_organization_sees_none_of_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'orgs.db'}"
    engine = open_database(url, ORG)
    assert import_records(engine, ORG, valid_bundle()).stored
    open_database(url, "other")
    readings_only = {"readings": valid_bundle()["readings"][:1]}
    report = import_records(engine, "other", readings_only)
    assert {p.code for p in report.problems} == {"unknown_patient", "unknown_device"}


def test_unknown_section_in_records_is_reported(engine: Engine) -> None:
    bundle: dict[str, Any] = valid_bundle()
    bundle["claims"] = [{"x": 1}]
    report = import_records(engine, ORG, bundle)
    assert [(p.field, p.code) for p in report.problems] == [("claims", "unknown_section")]
    assert not report.stored

"""visits.csv, patients.death_date and practitioners.employment: checked, stored, idempotent.

Each runs on SQLite and PostgreSQL (``db_url``); every fault points at file:line: field.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import select

from caretally.ingest import import_bundle, import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import valid_bundle, with_row, write_csv

ORG = "clinic"
CLOCK = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def _visits() -> list[dict[str, str]]:
    return [
        {
            "visit_id": "V1",
            "patient_id": "P1",
            "practitioner_id": "DR1",
            "date": "2026-02-10",
            "code": "99214",
            "place_of_service": "11",
            "telehealth": "false",
        },
        {
            "visit_id": "V2",
            "patient_id": "P1",
            "practitioner_id": "NP1",
            "date": "2026-03-03",
            "code": "g0439",
            "place_of_service": "10",
            "telehealth": "yes",
        },
    ]


def test_visits_death_date_and_employment_are_stored_and_reimport_is_unchanged(
    db_url: str, tmp_path: Path
) -> None:
    bundle = valid_bundle()
    bundle["visits"] = _visits()
    with_row(bundle, "practitioners", 2, employment="Contractor")
    with_row(bundle, "patients", 1, death_date="2026-03-10")
    engine = open_database(db_url, ORG)
    folder = write_csv(tmp_path / "b", bundle)
    first = import_bundle(engine, ORG, folder, now=CLOCK)
    assert first.ok, first.problems
    assert first.counts["visits"].inserted == 2
    with engine.connect() as conn:
        v = schema.visits
        rows = conn.execute(
            select(v.c.visit_id, v.c.visit_date, v.c.code, v.c.telehealth).order_by(v.c.visit_id)
        )
        assert [tuple(r) for r in rows] == [
            ("V1", date(2026, 2, 10), "99214", False),
            ("V2", date(2026, 3, 3), "G0439", True),
        ]
        pr = schema.practitioners
        jobs = dict(conn.execute(select(pr.c.practitioner_id, pr.c.employment)).all())
        assert jobs == {"DR1": "employee", "NP1": "employee", "RN1": "contractor", "PT1": "employee"}
        pt = schema.patients
        deaths = dict(conn.execute(select(pt.c.patient_id, pt.c.death_date)).all())
        assert deaths == {"P1": None, "P2": date(2026, 3, 10)}
    again = import_bundle(engine, ORG, folder, now=CLOCK)
    assert again.ok and again.counts["visits"].unchanged == 2 and not again.changed


def test_bad_visit_rows_point_at_their_line_and_field(db_url: str) -> None:
    bundle = valid_bundle()
    visits = _visits()
    visits[0].update(code="9921", place_of_service="1a")
    visits[1].update(patient_id="P9", telehealth="maybe")
    visits.append({**_visits()[0], "visit_id": "V3", "date": "1901-01-01"})
    bundle["visits"] = visits
    with_row(bundle, "practitioners", 1, employment="freelance")
    engine = open_database(db_url, ORG)
    report = import_records(engine, ORG, bundle, now=CLOCK)
    found = {(p.file, p.line, p.field, p.code) for p in report.problems}
    assert ("<records>:visits[1]", 1, "code", "bad_code") in found
    assert ("<records>:visits[1]", 1, "place_of_service", "bad_place_of_service") in found
    assert ("<records>:visits[2]", 2, "patient_id", "unknown_patient") in found
    assert ("<records>:visits[3]", 3, "date", "before_birth") in found
    assert ("<records>:visits[2]", 2, "telehealth", "bad_boolean") in found
    assert ("<records>:practitioners[2]", 2, "employment", "bad_enum") in found
    assert not report.stored


def test_death_before_birth_or_in_the_future_is_refused(sqlite_url: str) -> None:
    engine = open_database(sqlite_url, ORG)
    for value, code in (("1900-01-02", "end_before_start"), ("2026-04-01", "future_date")):
        bundle = with_row(valid_bundle(), "patients", 0, death_date=value)
        report = import_records(engine, ORG, bundle, now=CLOCK)
        assert ("<records>:patients[1]", 1, "death_date", code) in {
            (p.file, p.line, p.field, p.code) for p in report.problems
        }
        assert not report.stored

"""Storing on SQLite and PostgreSQL: first import, idempotent re-import, audited updates,
all-or-nothing refusal, --skip-invalid with rejects files, and format equivalence."""

from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from caretally.ingest import import_bundle, import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import (
    MBI,
    natively_typed,
    valid_bundle,
    with_row,
    write_bundle_json,
    write_csv,
    write_jsonl,
)

ORG = "clinic"
TABLES = {
    "patients": schema.patients,
    "practitioners": schema.practitioners,
    "enrollments": schema.enrollments,
    "devices": schema.devices,
    "readings": schema.readings,
    "time_entries": schema.time_entries,
}


def _rows(engine: Engine, stem: str) -> list[dict[str, Any]]:
    table = TABLES[stem]
    key = table.c.reading_key if stem == "readings" else table.c[table.primary_key.columns.keys()[-1]]
    columns = [c for c in table.c if c.name != "id"]
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(*columns).order_by(key)).mappings()]


def _snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    return {stem: _rows(engine, stem) for stem in TABLES}


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_import_reimport_and_update(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, ORG)
    folder = write_csv(tmp_path / "bundle", valid_bundle())

    first = import_bundle(engine, ORG, folder)
    assert first.ok() and first.stored and first.batch_id
    sizes = {stem: len(rows) for stem, rows in valid_bundle().items()}
    assert {s: c.inserted for s, c in first.counts.items()} == sizes
    stored = _snapshot(engine)

    patient = stored["patients"][0]
    assert patient["member_id"] == MBI.replace("-", "")
    assert (patient["sex"], patient["state"], patient["extra"]) == ("F", "TX", None)
    assert stored["patients"][1]["postal_code"] == "968131234"
    assert [p["performer_class"] for p in stored["practitioners"]] == [
        "practitioner",
        "practitioner",
        "therapist",
        "staff",
    ]
    e1, e2, e3 = stored["enrollments"]
    assert (e1["diagnoses"], e2["diagnoses"], e2["program"]) == ("I10;E11.9", "I10;E11.9", "CCM")
    # e2 leaves the column empty: stored as not recorded (option established_patient_when_missing)
    assert (e1["established_patient"], e2["established_patient"], e3["established_patient"]) == (
        True,
        None,
        False,
    )
    assert e2["consent_date"] is None and e2["complexity"] == "complex"
    assert stored["devices"][1]["kind"] == "musculoskeletal"
    by_key = {r["reading_key"]: r for r in stored["readings"]}
    late = by_key["D1|2026-03-01T05:30:00+00:00|blood_pressure"]
    assert late["measured_at"] == datetime(2026, 3, 1, 5, 30, tzinfo=UTC)
    assert late["local_date"] == date(2026, 2, 28)  # 23:30 the evening before in Chicago
    evening = by_key["D1|2026-03-02T01:45:00+00:00|blood_pressure"]
    assert (evening["local_date"], evening["transmission"]) == (date(2026, 3, 1), "manual")
    assert by_key["D1|2026-03-08T07:59:59.500000+00:00|pulse"]["transmission"] == "auto"
    assert by_key["MSK-0001"]["local_date"] == date(2026, 3, 1)  # Honolulu is UTC-10
    t1, t2, t3 = stored["time_entries"]
    assert (t1["seconds"], t1["local_date"], t1["modality"]) == (1199, date(2026, 3, 3), "phone")
    assert (t2["seconds"], t2["interactive"], t2["modality"]) == (31 * 60, False, None)
    assert (t3["program"], t3["seconds"]) == (None, 600)

    again = import_bundle(engine, ORG, folder)
    assert again.ok() and again.stored and not again.changed
    assert {s: (c.inserted, c.updated, c.unchanged) for s, c in again.counts.items()} == {
        s: (0, 0, n) for s, n in sizes.items()
    }
    assert _snapshot(engine) == stored
    assert _count(engine, schema.audit_changes) == 0

    changed = valid_bundle()
    with_row(changed, "patients", 1, timezone="America/Anchorage", city="Juneau")
    with_row(changed, "readings", 3, value="101")
    with_row(changed, "time_entries", 1, minutes="32")
    write_csv(folder, changed)
    update = import_bundle(engine, ORG, folder)
    assert update.ok() and update.changed
    assert update.counts["patients"].updated == 1 and update.counts["patients"].unchanged == 1
    assert update.counts["readings"].updated == 1 and update.counts["time_entries"].updated == 1
    with engine.connect() as conn:
        audits = (
            conn.execute(select(schema.audit_changes).order_by(schema.audit_changes.c.table_name))
            .mappings()
            .all()
        )
    assert [(a["table_name"], a["record_key"], a["old_values"], a["new_values"]) for a in audits] == [
        (
            "patients",
            "P2",
            {"city": None, "timezone": "Pacific/Honolulu"},
            {"city": "Juneau", "timezone": "America/Anchorage"},
        ),
        # the zone change in the same bundle moves this reading to the next local day
        (
            "readings",
            "MSK-0001",
            {"local_date": "2026-03-01", "value": "95"},
            {"local_date": "2026-03-02", "value": "101"},
        ),
        ("time_entries", "T2", {"seconds": 1860}, {"seconds": 1920}),
    ]
    assert {a["batch_id"] for a in audits} == {update.batch_id}
    with engine.connect() as conn:
        batches = conn.execute(select(schema.import_batches.c.counts)).scalars().all()
    assert len(batches) == 3
    assert [b["readings"]["updated"] for b in batches] == [0, 0, 1]


def test_refused_bundle_leaves_nothing(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, ORG)
    bundle = with_row(valid_bundle(), "time_entries", 2, seconds="1")
    report = import_bundle(engine, ORG, write_csv(tmp_path / "b", bundle))
    assert not report.stored and report.batch_id is None
    assert [(p.file, p.line, p.field, p.code) for p in report.problems] == [
        ("time_entries.csv", 4, "minutes", "duration_mismatch")
    ]
    assert report.counts["time_entries"].rejected == 1
    for table in (*TABLES.values(), schema.import_batches, schema.audit_changes):
        assert _count(engine, table) == 0
    assert not (tmp_path / "b" / "rejects").exists()


def test_skip_invalid_stores_the_rest_and_writes_rejects(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, ORG)
    bundle = valid_bundle()
    with_row(bundle, "devices", 1, medical_device="maybe")  # D2 → its reading is rejected too
    with_row(bundle, "readings", 0, measured_at="2026-03-01T05:30:00")
    folder = write_csv(tmp_path / "b", bundle)
    report = import_bundle(engine, ORG, folder, skip_invalid=True)
    assert report.stored and not report.ok()
    assert [(p.file, p.line, p.field, p.code) for p in report.problems] == [
        ("devices.csv", 3, "medical_device", "bad_boolean"),
        ("readings.csv", 2, "measured_at", "naive_timestamp"),
        ("readings.csv", 5, "device_id", "rejected_reference"),
    ]
    assert (report.counts["devices"].inserted, report.counts["devices"].rejected) == (1, 1)
    assert (report.counts["readings"].inserted, report.counts["readings"].rejected) == (2, 2)
    assert _count(engine, schema.readings) == 2 and _count(engine, schema.devices) == 1

    rejects = folder / "rejects"
    assert sorted(p.name for p in report.rejects_written) == ["devices.rejects.csv", "readings.rejects.csv"]
    with (rejects / "readings.rejects.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["source"], r["measured_at"]) for r in rows] == [
        ("readings.csv:2", "2026-03-01T05:30:00"),
        ("readings.csv:5", "2026-03-02T09:00:00+00:00"),
    ]
    assert "no UTC offset" in rows[0]["error"] and "devices.csv:3" in rows[1]["error"]

    elsewhere = tmp_path / "my-rejects"
    second = import_bundle(engine, ORG, folder, skip_invalid=True, rejects_path=elsewhere)
    assert second.counts["readings"].unchanged == 2
    assert (elsewhere / "devices.rejects.csv").exists()


@pytest.mark.parametrize("writer", [write_jsonl, write_bundle_json], ids=["jsonl", "bundle.json"])
def test_json_forms_store_what_csv_stores(tmp_path: Path, writer: Any) -> None:
    csv_engine = open_database(f"sqlite:///{tmp_path / 'csv.db'}", ORG)
    json_engine = open_database(f"sqlite:///{tmp_path / 'json.db'}", ORG)
    by_csv = import_bundle(csv_engine, ORG, write_csv(tmp_path / "csv", valid_bundle()))
    by_json = import_bundle(json_engine, ORG, writer(tmp_path / "json", natively_typed(valid_bundle())))
    assert by_csv.ok() and by_json.ok()
    assert by_csv.counts == by_json.counts
    assert _snapshot(csv_engine) == _snapshot(json_engine)


@pytest.mark.parametrize("writer", [write_jsonl, write_bundle_json], ids=["jsonl", "bundle.json"])
def test_json_forms_report_the_same_faults(tmp_path: Path, writer: Any) -> None:
    bundle = with_row(valid_bundle(), "patients", 0, sex="X", extra_note="keep me")
    engine = open_database(f"sqlite:///{tmp_path / 'j.db'}", ORG)
    from_csv = import_bundle(engine, ORG, write_csv(tmp_path / "csv", bundle))
    from_json = import_bundle(engine, ORG, writer(tmp_path / "json", bundle))
    # CSV counts the header as line 1; JSON Lines and bundle.json count records from 1
    assert [(p.line, p.field, p.code) for p in from_csv.problems] == [
        (p.line + 1, p.field, p.code) for p in from_json.problems
    ]
    label = "patients.jsonl" if writer is write_jsonl else "bundle.json:patients[1]"
    assert {p.file for p in from_json.problems if p.code == "bad_enum"} == {label}


def test_extra_columns_are_kept(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}", ORG)
    bundle = with_row(valid_bundle(), "patients", 0, preferred_language="es", mrn="A-17")
    report = import_records(engine, ORG, bundle)
    assert report.ok()
    assert _rows(engine, "patients")[0]["extra"] == {"mrn": "A-17", "preferred_language": "es"}
    bundle = with_row(bundle, "patients", 0, preferred_language="en")
    second = import_records(engine, ORG, bundle)
    assert second.counts["patients"].updated == 1


def test_csv_bom_multiline_cells_and_line_numbers(tmp_path: Path) -> None:
    folder = write_csv(tmp_path / "b", valid_bundle())
    path = folder / "time_entries.csv"
    rows = list(csv.DictReader(path.open(newline="")))
    rows[0]["note"] = "first line\nsecond line\nthird line"
    rows[2]["interactive"] = "maybe"
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}", ORG)
    report = import_bundle(engine, ORG, folder)
    # the note spans lines 2-4, so the third record starts on physical line 6
    assert [(p.file, p.line, p.field, p.code) for p in report.problems] == [
        ("time_entries.csv", 6, "interactive", "bad_boolean")
    ]


def test_file_level_faults(tmp_path: Path) -> None:
    bundle = valid_bundle()
    for row in bundle["devices"]:
        del row["medical_device"]
    for row in bundle["readings"]:
        row["comment"] = ""
    folder = write_csv(tmp_path / "b", bundle)
    with (folder / "patients.csv").open("a") as handle:
        handle.write("P3,1950-01-01,America/Denver\n")
    engine = open_database(f"sqlite:///{tmp_path / 'x.db'}", ORG)
    report = import_bundle(engine, ORG, folder)
    assert [(p.file, p.line, p.field, p.code) for p in report.problems] == [
        ("patients.csv", 4, None, "wrong_field_count"),
        ("devices.csv", 1, "medical_device", "missing_column"),
        # the readings' extra "comment" column is kept, but their devices were rejected
        *[("readings.csv", line, "device_id", "rejected_reference") for line in (2, 3, 4, 5)],
    ]
    assert report.counts["devices"].rejected == 2 and report.counts["readings"].rejected == 4


def test_extra_reading_columns_are_kept(db_url: str, tmp_path: Path) -> None:
    """Columns beyond the documented ones are stored in ``extra``, as for every other file."""
    bundle = valid_bundle()
    for n, row in enumerate(bundle["readings"]):
        row["cuff_size"] = "large" if n == 0 else ""
    folder = write_csv(tmp_path / "b", bundle)
    engine = open_database(db_url, ORG)
    report = import_bundle(engine, ORG, folder)
    assert report.ok(), report.problems
    with engine.connect() as conn:
        extras = [e for (e,) in conn.execute(select(schema.readings.c.extra).order_by(schema.readings.c.id))]
    assert extras[0] == {"cuff_size": "large"} and all(e == {"cuff_size": ""} for e in extras[1:])
    again = import_bundle(engine, ORG, folder)
    assert again.counts["readings"].unchanged == len(bundle["readings"])

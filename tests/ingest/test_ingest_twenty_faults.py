"""A bundle with twenty different faults yields exactly twenty precise problems and stores
nothing, through the Python API and through ``caretally import``."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_bundle
from caretally.store import schema
from caretally.store.db import open_database

FIXTURE = Path(__file__).parent / "fixtures" / "twenty_faults"
ORG = "clinic"

EXPECTED = [
    ("practitioners.csv", 6, "npi", "bad_npi"),
    ("practitioners.csv", 7, "credential", "unknown_credential"),
    ("patients.csv", 4, "birth_date", "bad_date"),
    ("patients.csv", 5, "timezone", "bad_timezone"),
    ("patients.csv", 6, "member_id", "bad_mbi"),
    ("patients.csv", 7, "sex", "bad_enum"),
    ("enrollments.csv", 5, "diagnoses", "icd10_not_billable"),
    ("enrollments.csv", 6, "billing_practitioner_id", "wrong_performer_for_program"),
    ("enrollments.csv", 7, "end_date", "end_before_start"),
    ("devices.csv", 4, "kind", "bad_enum"),
    ("devices.csv", 5, "patient_id", "unknown_patient"),
    ("readings.csv", 6, "measured_at", "naive_timestamp"),
    ("readings.csv", 7, "device_id", "unknown_device"),
    ("readings.csv", 8, "device_id", "device_patient_mismatch"),
    ("readings.csv", 9, "transmission", "bad_enum"),
    ("time_entries.csv", 5, "seconds", "bad_integer"),
    ("time_entries.csv", 6, "minutes", "duration_too_long"),
    ("time_entries.csv", 7, "modality", "required"),
    ("time_entries.csv", 8, "program", "not_enrolled_in_program"),
    ("time_entries.csv", 9, "entry_id", "duplicate_id"),
]

DATA_TABLES = (
    schema.patients,
    schema.practitioners,
    schema.enrollments,
    schema.devices,
    schema.readings,
    schema.time_entries,
    schema.import_batches,
    schema.audit_changes,
)


def _all_empty(url: str) -> bool:
    engine = open_database(url, ORG)
    with engine.connect() as conn:
        return all(conn.execute(select(func.count()).select_from(t)).scalar() == 0 for t in DATA_TABLES)


def test_twenty_faults_twenty_problems_nothing_stored(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    report = import_bundle(engine, ORG, FIXTURE)
    assert [(p.file, p.line, p.field, p.code) for p in report.problems] == EXPECTED
    assert len({p.code for p in report.problems}) == 18  # bad_enum on sex, kind and transmission
    assert not report.stored and report.batch_id is None
    assert sum(c.rejected for c in report.counts.values()) == 20
    assert _all_empty(db_url)
    assert not (FIXTURE / "rejects").exists()


def test_twenty_faults_through_the_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    app = build_app()

    text_run = runner.invoke(app, ["import", str(FIXTURE), "--db", url, "--org", ORG])
    assert text_run.exit_code == 1
    lines = text_run.stderr.strip().splitlines()
    assert len(lines) == 20
    assert lines[0].startswith("practitioners.csv:6: npi: ")
    assert [[part.strip() for part in line.split(":")[:3]] for line in lines] == [
        [f, str(n), fld] for f, n, fld, _ in EXPECTED
    ]
    assert "Nothing stored" in text_run.stdout

    json_run = runner.invoke(app, ["import", str(FIXTURE), "--db", url, "--org", ORG, "--json"])
    assert json_run.exit_code == 1
    payload = json.loads(json_run.stdout)
    assert (payload["ok"], payload["stored"]) == (False, False)
    assert [(p["file"], p["line"], p["field"], p["code"]) for p in payload["problems"]] == EXPECTED
    assert payload["problems"][0]["row"]["practitioner_id"] == "DR2"
    assert payload["counts"]["readings"] == {
        "read": 8,
        "inserted": 0,
        "unchanged": 0,
        "updated": 0,
        "rejected": 4,
    }
    assert _all_empty(url)


def test_cli_skip_invalid_then_clean_reimport(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    runner = CliRunner()
    app = build_app()
    rejects = tmp_path / "rejects"
    args = [
        "import",
        str(FIXTURE),
        "--db",
        url,
        "--org",
        ORG,
        "--json",
        "--skip-invalid",
        "--rejects",
        str(rejects),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 1
    payload = json.loads(first.stdout)
    assert payload["stored"] and len(payload["problems"]) == 20
    assert payload["counts"]["readings"]["inserted"] == 4
    assert sorted(p.name for p in rejects.iterdir()) == [
        f"{stem}.rejects.csv"
        for stem in sorted(
            ("devices", "enrollments", "patients", "practitioners", "readings", "time_entries")
        )
    ]
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["counts"]["readings"]["unchanged"] == 4
    assert not (FIXTURE / "rejects").exists()

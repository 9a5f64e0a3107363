"""The month run end to end through the CLI: bill, rerun, lock, late data, amendment, exports.

Runs on SQLite and PostgreSQL. Every check reads what a user would read — the command's
JSON output, the exported files, the stored run — never internal state.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store.db import open_database
from tests.export.x12check import validate_x12

NY = ZoneInfo("America/New_York")
runner = CliRunner()


PEOPLE = (("A1", "1EG4TE5MK73", "Able"), ("B2", "2EG4TE5MK74", "Baker"), ("C3", "3EG4TE5MK75", "Cole"))


def practice_records() -> dict[str, list[dict[str, Any]]]:
    """Two RPM patients and one CCM patient with February 2026 data."""
    patients = [
        {"patient_id": pid, "birth_date": "1948-05-01", "timezone": "America/New_York", "payer": "medicare",
         "member_id": mbi, "family_name": name, "given_name": "Alex", "sex": "F",
         "address_line": "1 Main St", "city": "Albany", "state": "NY", "postal_code": "12207"}
        for pid, mbi, name in PEOPLE
    ]  # fmt: skip
    practitioners = [
        {"practitioner_id": "DR1", "npi": "1234567893", "name": "Dana Reyes", "credential": "MD"},
        {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
    ]
    enrollments = [
        {"enrollment_id": "EA", "patient_id": "A1", "program": "RPM", "start_date": "2026-02-01",
         "consent_date": "2026-02-01", "billing_practitioner_id": "DR1", "diagnoses": "I10"},
        {"enrollment_id": "EB", "patient_id": "B2", "program": "RPM", "start_date": "2026-02-01",
         "consent_date": "2026-02-01", "billing_practitioner_id": "DR1", "diagnoses": "E11.9;I10"},
        {"enrollment_id": "EC", "patient_id": "C3", "program": "CCM", "start_date": "2026-01-05",
         "consent_date": "2026-01-05", "billing_practitioner_id": "DR1", "diagnoses": "I50.22;N18.30",
         "initiating_visit_date": "2026-01-05"},
    ]  # fmt: skip
    devices = [
        {"device_id": f"D{p}", "patient_id": p, "program": "RPM", "kind": "blood_pressure",
         "medical_device": "true", "setup_date": "2026-02-01", "assigned_date": "2026-02-01"}
        for p in ("A1", "B2")
    ]  # fmt: skip
    readings = []
    for pid, days in (("A1", 20), ("B2", 9)):
        for n in range(days):
            when = datetime(2026, 2, 1 + n, 8, 30, tzinfo=NY)
            readings.append(
                {"patient_id": pid, "device_id": f"D{pid}", "measured_at": when.isoformat(), "type": "bp",
                 "value": "130/80", "unit": "mmHg", "transmission": "auto"}
            )  # fmt: skip
    time = [
        entry("T1", "A1", "RPM", datetime(2026, 2, 10, 10, tzinfo=NY), 25 * 60, True),
        entry("T2", "C3", "CCM", datetime(2026, 2, 11, 10, tzinfo=NY), 22 * 60, False),
    ]
    return {
        "patients": patients,
        "practitioners": practitioners,
        "enrollments": enrollments,
        "devices": devices,
        "readings": readings,
        "time_entries": time,
    }


def entry(eid: str, pid: str, program: str, when: datetime, seconds: int, live: bool) -> dict[str, Any]:
    return {
        "entry_id": eid,
        "patient_id": pid,
        "practitioner_id": "RN1",
        "program": program,
        "started_at": when.isoformat(),
        "seconds": str(seconds),
        "activity": "call" if live else "review",
        "interactive": "true" if live else "false",
        "modality": "phone" if live else "",
        "note": "",
    }


def cli(*args: str) -> Any:
    result = runner.invoke(build_app(), list(args), catch_exceptions=False)
    return result


def bill_json(db: str) -> dict[str, Any]:
    result = cli("bill", "--month", "2026-03", "--db", db, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def loaded(db_url: str) -> str:
    engine = open_database(db_url)
    report = import_records(engine, "default", practice_records())
    assert report.ok(), report.problems
    engine.dispose()
    return db_url


def test_bill_rerun_lock_and_amend(loaded: str, tmp_path: Path) -> None:
    db = loaded
    first = bill_json(db)
    assert first["outcome"] == "created" and first["status"] == "draft"
    codes = {(line["patient_id"], line["code"]): line for line in first["claim_lines"]}
    # A1: 20 days in the 30-day period 2026-02-01..03-02 → 99454 dated 03-02; B2: 9 days → 99445.
    assert codes[("A1", "99454")]["date_of_service"] == "2026-03-02"
    assert codes[("B2", "99445")]["date_of_service"] == "2026-03-02"
    assert ("A1", "99453") in codes and ("B2", "99453") in codes
    # February time belongs to February, not March: no management codes in the March run.
    assert not any(code in {"99457", "99490"} for _, code in codes)

    again = bill_json(db)
    assert again["outcome"] == "unchanged"
    assert again["run_id"] == first["run_id"]
    assert again["claim_lines"] == first["claim_lines"]

    locked = cli("lock", "--month", "2026-03", "--db", db)
    assert locked.exit_code == 0, locked.output
    assert cli("lock", "--month", "2026-03", "--db", db).exit_code == 1  # already locked

    # Late data: a call and 21 more minutes for A1 in March arrive after the lock.
    engine = open_database(db)
    late = {"time_entries": [entry("T9", "A1", "RPM", datetime(2026, 3, 12, 9, tzinfo=NY), 21 * 60, True)]}
    assert import_records(engine, "default", late).ok()
    amended = bill_json(db)
    assert amended["outcome"] == "created"
    assert amended["amends_run_id"] == first["run_id"]
    assert [(a["change"], a["after"]["code"]) for a in amended["amendments"]] == [("added", "99457")]

    # The locked run is untouched: exporting it by id gives exactly the first lines.
    out = tmp_path / "locked.json"
    run_flag = ["--run", first["run_id"]]
    assert (
        cli(
            "export", "--month", "2026-03", "--format", "json", "--out", str(out), *run_flag, "--db", db
        ).exit_code
        == 0
    )
    assert [line["code"] for line in json.loads(out.read_text())] == [x["code"] for x in first["claim_lines"]]
    current = tmp_path / "current.json"
    assert (
        cli("export", "--month", "2026-03", "--format", "json", "--out", str(current), "--db", db).exit_code
        == 0
    )
    assert "99457" in [line["code"] for line in json.loads(current.read_text())]


def test_exports_csv_x12_and_fhir(loaded: str, tmp_path: Path) -> None:
    db = loaded
    bill_json(db)
    csv_path = tmp_path / "claims.csv"
    assert (
        cli("export", "--month", "2026-03", "--format", "csv", "--out", str(csv_path), "--db", db).exit_code
        == 0
    )
    with csv_path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:14] == [
        "patient_id", "code", "units", "date_of_service", "period_start", "period_end", "billing_npi",
        "rendering_npi", "diagnosis_codes", "place_of_service", "modifiers", "charge", "expected_payment",
        "run_id",
    ]  # fmt: skip
    assert any(r[1] == "99454" and r[8] == "I10" for r in rows[1:])

    # x12 and fhir refuse to run without a practice identity …
    x12 = tmp_path / "claims.x12"
    refused = cli("export", "--month", "2026-03", "--format", "x12", "--out", str(x12), "--db", db)
    assert refused.exit_code == 2 and "--practice" in refused.output

    # … and with one, the 837P passes the pyx12 validator.
    practice = tmp_path / "practice.toml"
    _fill_practice(practice)
    made = cli("export", "--month", "2026-03", "--format", "x12", "--out", str(x12), "--db", db, "--practice",
               str(practice))  # fmt: skip
    assert made.exit_code == 0, made.output
    check = validate_x12(x12.read_text())
    assert check.accepted, check.errors
    second = tmp_path / "again.x12"
    cli("export", "--month", "2026-03", "--format", "x12", "--out", str(second), "--db", db, "--practice",
        str(practice))  # fmt: skip
    isa13 = [text.read_text().split("~")[0].split("*")[13] for text in (x12, second)]
    assert isa13[0] != isa13[1], "interchange control numbers must not repeat"

    fhir = tmp_path / "claims.json"
    fhir_args = ["--format", "fhir", "--out", str(fhir), "--db", db, "--practice", str(practice)]
    made = cli("export", "--month", "2026-03", *fhir_args)
    assert made.exit_code == 0, made.output
    from fhir.resources.R4B.bundle import Bundle

    bundle = Bundle.model_validate_json(fhir.read_text())
    assert {e.resource.get_resource_type() for e in bundle.entry} == {"Claim"}


def _fill_practice(path: Path) -> None:
    path.write_text(
        """
[practice]
name = "Hudson Valley Internal Medicine"
tin = "141234567"
npi = "1234567893"
[practice.address]
line1 = "12 State St"
city = "Albany"
state = "NY"
postal_code = "122070001"
[submitter]
id = "HVIM01"
name = "Hudson Valley Internal Medicine"
contact_name = "Billing Office"
contact_phone = "5185550100"
usage = "test"
[receiver]
id = "NGSMEDICARE"
name = "NGS Medicare"
[payer]
name = "Medicare Part B"
id = "13202"
"""
    )


def test_bill_unknown_locality_fails_cleanly(loaded: str) -> None:
    result = cli("bill", "--month", "2026-03", "--db", loaded, "--locality", "ZZ-99")
    assert result.exit_code == 2
    assert "gpci" in result.output.lower() or "locality" in result.output.lower()


def test_locality_pricing_uses_gpci(loaded: str, tmp_path: Path) -> None:
    """RVUs × GPCIs × CF, from a CMS-layout GPCI file: 99454 (2026, corrected) has PE 1.55 and MP 0.01."""
    gpci = tmp_path / "gpci.csv"
    gpci.write_text("mac,state,locality,name,work,pe,mp\n99999,TS,01,TEST LOCALITY,1.000,1.500,1.000\n")
    result = cli(
        "bill", "--month", "2026-03", "--db", loaded, "--json", "--locality", "TS-01", "--gpci", str(gpci)
    )
    assert result.exit_code == 0, result.output
    pay = {
        (x["patient_id"], x["code"]): x["expected_payment"] for x in json.loads(result.stdout)["claim_lines"]
    }
    # (0.00 × 1.0 + 1.55 × 1.5 + 0.01 × 1.0) × 33.4009 = 77.991… → 77.99
    assert pay[("A1", "99454")] == "77.99"

"""A month judged by the proposed CY2027 rule-year, through the commands a practice runs.

``bill`` says the run is provisional (and ``--json`` carries it); ``lock`` refuses it
(``provisional_rules``) until ``--accept-provisional``, which is recorded; the 837P is
refused until then, while CSV and JSON exports mark each line judged provisionally. A
month judged by final rules is unchanged by all of this. ``bill --what-if-rules`` judges
a stored month again by another year without storing anything. SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.export.test_payer_directory import DIRECTORY
from tests.export.x12check import validate_x12

NY = ZoneInfo("America/New_York")
runner = CliRunner()
PROPOSED = "medicare/2026+medicare/2027"


def records(start: date, days: int, staff_minutes: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Two Medicare RPM patients from ``start``: ``days`` of readings each, and a call."""
    people = (("A1", "1EG4TE5MK73"), ("B2", "2EG4TE5MK74"))
    out: dict[str, list[dict[str, Any]]] = {
        "patients": [
            {"patient_id": pid, "birth_date": "1948-05-01", "timezone": "America/New_York",
             "payer": "medicare", "member_id": mbi, "family_name": f"Fam{pid}", "given_name": "Alex",
             "sex": "F", "address_line": "1 Main St", "city": "Albany", "state": "NY", "postal_code": "12207"}
            for pid, mbi in people
        ],
        "practitioners": [
            {"practitioner_id": "DR1", "npi": "1245319599", "name": "Dana Reyes", "credential": "MD"},
            {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
        ],
        "enrollments": [], "devices": [], "readings": [], "time_entries": [],
    }  # fmt: skip
    for pid, _ in people:
        out["enrollments"].append(
            {"enrollment_id": f"E{pid}", "patient_id": pid, "program": "RPM", "start_date": start.isoformat(),
             "consent_date": start.isoformat(), "billing_practitioner_id": "DR1", "diagnoses": "I10"}
        )  # fmt: skip
        out["devices"].append(
            {"device_id": f"D{pid}", "patient_id": pid, "program": "RPM", "kind": "blood_pressure",
             "medical_device": "true", "setup_date": start.isoformat(), "assigned_date": start.isoformat()}
        )  # fmt: skip
        for n in range(days):
            when = datetime.combine(start + timedelta(days=n), datetime.min.time(), NY).replace(hour=8)
            out["readings"].append(
                {"patient_id": pid, "device_id": f"D{pid}", "measured_at": when.isoformat(), "type": "bp",
                 "value": "130/80", "unit": "mmHg", "transmission": "auto"}
            )  # fmt: skip
        if staff_minutes:
            when = datetime.combine(start + timedelta(days=20), datetime.min.time(), NY).replace(hour=9)
            out["time_entries"].append(
                {"entry_id": f"T{pid}", "patient_id": pid, "practitioner_id": "RN1", "program": "RPM",
                 "started_at": when.isoformat(), "seconds": str(staff_minutes * 60), "activity": "call",
                 "interactive": "true", "modality": "phone", "note": ""}
            )  # fmt: skip
    return out


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args), catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def load(db_url: str, data: dict[str, list[dict[str, Any]]]) -> str:
    engine = open_database(db_url)
    report = import_records(engine, "default", data, max_clock_skew=timedelta(days=3650))
    assert report.ok(), report.problems
    engine.dispose()
    return db_url


@pytest.fixture
def january(db_url: str) -> str:
    """Readings from 20 December 2026: the first periods end in January 2027."""
    return load(db_url, records(date(2026, 12, 20), 20, staff_minutes=22))


def test_a_provisional_month_is_flagged_refused_at_lock_and_accepted_on_request(january: str) -> None:
    run = ok_json("bill", "--month", "2027-01", "--db", january)
    assert run["provisional"]["rule_years"] == [PROPOSED]
    assert "CMS-1848-P" in run["provisional"]["citations"][PROPOSED]
    assert run["by_code"]["99454"]["expected_payment"] == "102.46"  # 2 × 1.56 RVU × 32.8409

    text = cli("bill", "--month", "2027-01", "--db", january).output
    assert "PROVISIONAL" in text and PROPOSED in text

    refused = cli("lock", "--month", "2027-01", "--db", january, "--json")
    assert refused.exit_code == 1
    problem = json.loads(refused.stdout)["problems"][0]
    assert problem["code"] == "provisional_rules" and problem["run_id"] == run["run_id"]
    assert "--accept-provisional" in problem["hint"]
    listed = ok_json("runs", "list", "--month", "2027-01", "--db", january)
    assert [r["status"] for r in listed] == ["draft"]

    locked = ok_json("lock", "--month", "2027-01", "--db", january, "--accept-provisional")
    assert locked["status"] == "locked" and locked["provisional"]["accepted_at"]
    assert locked["provisional"]["rule_years"] == [PROPOSED]


def test_exports_mark_provisional_lines_and_the_837p_waits_for_acceptance(
    january: str, tmp_path: Path
) -> None:
    ok_json("bill", "--month", "2027-01", "--db", january)
    out_csv = tmp_path / "claims.csv"
    assert (
        cli(
            "export", "--month", "2027-01", "--format", "csv", "--out", str(out_csv), "--db", january
        ).exit_code
        == 0
    )
    rows = list(csv.DictReader(out_csv.open(encoding="utf-8", newline="")))
    assert rows and {r["provisional_rules"] for r in rows} == {PROPOSED}
    out_json = tmp_path / "claims.json"
    cli("export", "--month", "2027-01", "--format", "json", "--out", str(out_json), "--db", january)
    assert {r["provisional_rules"] for r in json.loads(out_json.read_text())} == {PROPOSED}

    practice = tmp_path / "practice.toml"
    practice.write_text(DIRECTORY, encoding="utf-8")
    x12 = tmp_path / "claims.x12"
    args = ("export", "--month", "2027-01", "--format", "x12", "--out", str(x12), "--db", january,
            "--practice", str(practice))  # fmt: skip
    refused = cli(*args)
    assert refused.exit_code == 1 and "--accept-provisional" in refused.output and not x12.exists()
    fhir = cli("export", "--month", "2027-01", "--format", "fhir", "--out", str(tmp_path / "c.json"),
               "--db", january, "--practice", str(practice))  # fmt: skip
    assert fhir.exit_code == 1 and "provisional" in fhir.output

    ok_json("lock", "--month", "2027-01", "--db", january, "--accept-provisional")
    done = cli(*args)
    assert done.exit_code == 0, done.output
    assert "PROVISIONAL" in done.output
    assert validate_x12(x12.read_text(encoding="ascii")).accepted


def test_a_month_judged_by_final_rules_is_not_flagged(db_url: str, tmp_path: Path) -> None:
    db = load(db_url, records(date(2026, 2, 1), 20))
    run = ok_json("bill", "--month", "2026-03", "--db", db)
    assert run["provisional"] is None
    out = tmp_path / "claims.csv"
    cli("export", "--month", "2026-03", "--format", "csv", "--out", str(out), "--db", db)
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "provisional_rules" not in header and header[-1] == "member_id"
    assert ok_json("lock", "--month", "2026-03", "--db", db)["provisional"] is None


def _runs(db: str) -> int:
    engine = open_database(db)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(schema.billing_runs)).scalar_one()
    engine.dispose()
    return int(n)


def test_what_if_rules_compares_a_stored_month_with_another_year_and_stores_nothing(db_url: str) -> None:
    db = load(db_url, records(date(2026, 11, 15), 20, staff_minutes=22))
    stored = ok_json("bill", "--month", "2026-12", "--db", db)
    before = _runs(db)

    same = ok_json("bill", "--month", "2026-12", "--db", db, "--what-if-rules", "2026")
    assert same["difference"] == "0.00" and same["run_id"] == stored["run_id"] and same["stored"] is False
    assert same["what_if_rules"]["status"] == "final" and not same["provisional"]

    proposed = ok_json("bill", "--month", "2026-12", "--db", db, "--what-if-rules", "2027")
    assert proposed["what_if_rules"] == {
        "year": 2027, "rule_year": PROPOSED, "status": "proposed",
        "citation": "cms-2027-pfs-proposed, cms-2027-fact-sheet, p27-qp-note",
    }  # fmt: skip
    assert proposed["provisional"] is True
    assert proposed["current_revenue"] == stored["expected_revenue"]
    by_code = proposed["by_code"]
    for code, cents_2026, cents_2027 in (("99454", "52.11", "51.23"), ("99457", "51.77", "50.90")):
        row = by_code[code]
        n = row["current"]["lines"]
        assert n == 2 and row["what_if"]["lines"] == n
        assert Decimal(row["current"]["expected_payment"]) == n * Decimal(cents_2026)
        assert Decimal(row["what_if"]["expected_payment"]) == n * Decimal(cents_2027)
        assert Decimal(row["difference"]) == n * (Decimal(cents_2027) - Decimal(cents_2026))
    total = sum(Decimal(r["difference"]) for r in by_code.values())
    assert Decimal(proposed["difference"]) == total < 0
    assert _runs(db) == before, "a what-if stores no run"

    text = cli("bill", "--month", "2026-12", "--db", db, "--what-if-rules", "2027").output
    assert "nothing was stored" in text and "PROVISIONAL" in text and "99454" in text


def test_what_if_refusals_are_one_line(db_url: str) -> None:
    db = load(db_url, records(date(2026, 11, 15), 20))
    none = cli("bill", "--month", "2026-12", "--db", db, "--what-if-rules", "2027", "--json")
    assert none.exit_code == 1 and json.loads(none.stdout)["problems"][0]["code"] == "no_run"
    ok_json("bill", "--month", "2026-12", "--db", db)
    unknown = cli("bill", "--month", "2026-12", "--db", db, "--what-if-rules", "2031", "--json")
    assert unknown.exit_code == 1
    assert json.loads(unknown.stdout)["problems"][0]["code"] == "unknown_rule_year"
    mixed = cli("bill", "--month", "2026-12", "--db", db, "--what-if-rules", "2027", "--locality", "CO-01")
    words = " ".join(mixed.output.replace("│", " ").split())
    assert mixed.exit_code == 2 and "stored run's own settings" in words
    assert "Traceback" not in mixed.output + unknown.output + none.output

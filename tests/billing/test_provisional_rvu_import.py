"""CMS's files replace the estimates in a practice's runs: expected payments follow the import.

A practice bills March 2026 on the shipped (hand-entered) amounts, imports CMS's PPRRVU
file (the fixture in CMS's layout) into its rules folder, and bills again: the new run's
expected payments are the file's RVUs × the conversion factor, the carrier-priced
(status C) code becomes unpriced and says so, and each decision names the imported layer
as the source of its amount. The GPCI file, imported the same way, prices ``--locality``.
SQLite and PostgreSQL; the rules folder is the test's own (``$CARETALLY_RULES_DIR``).
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store.db import open_database

NY = ZoneInfo("America/New_York")
FIXTURES = Path(__file__).parents[1] / "fixtures" / "cms"
runner = CliRunner()


def _at(day: date, hour: int) -> str:
    return datetime.combine(day, datetime.min.time(), NY).replace(hour=hour).isoformat()


def practice() -> dict[str, list[dict[str, Any]]]:
    """A1: RPM, 20 days and a 22-minute call (99454, 99453, 99457); B2: RTM, 10 days (98985)."""
    start = date(2026, 2, 20)  # the first 30-day periods end on 21 March
    out: dict[str, list[dict[str, Any]]] = {
        "patients": [
            {"patient_id": pid, "birth_date": "1950-01-02", "timezone": "America/New_York",
             "payer": "medicare", "member_id": mbi, "family_name": f"Fam{pid}", "given_name": "Sam",
             "sex": "M"}
            for pid, mbi in (("A1", "1EG4TE5MK73"), ("B2", "2EG4TE5MK74"))
        ],
        "practitioners": [
            {"practitioner_id": "DR1", "npi": "1245319599", "name": "Dana Reyes", "credential": "MD"},
            {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
        ],
        "enrollments": [
            {"enrollment_id": f"E{pid}", "patient_id": pid, "program": program,
             "start_date": start.isoformat(), "consent_date": start.isoformat(),
             "billing_practitioner_id": "DR1", "diagnoses": "M17.11;I10"}
            for pid, program in (("A1", "RPM"), ("B2", "RTM"))
        ],
        "devices": [
            {"device_id": f"D{pid}", "patient_id": pid, "program": program, "kind": kind,
             "medical_device": "true", "setup_date": start.isoformat(), "assigned_date": start.isoformat()}
            for pid, program, kind in (("A1", "RPM", "blood_pressure"), ("B2", "RTM", "musculoskeletal"))
        ],
        "readings": [],
        "time_entries": [
            {"entry_id": "T1", "patient_id": "A1", "practitioner_id": "RN1", "program": "RPM",
             "started_at": _at(date(2026, 3, 10), 9), "seconds": str(22 * 60), "activity": "call",
             "interactive": "true", "modality": "phone", "note": ""}
        ],
    }  # fmt: skip
    for pid, kind, value, days in (("A1", "bp", "130/80", 20), ("B2", "exercise_adherence", "1", 10)):
        for n in range(days):
            out["readings"].append(
                {"patient_id": pid, "device_id": f"D{pid}", "measured_at": _at(start + timedelta(days=n), 8),
                 "type": kind, "value": value, "unit": "u", "transmission": "auto"}
            )  # fmt: skip
    return out


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args), catch_exceptions=False)


def ok_json(*args: str) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def loaded(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("CARETALLY_RULES_DIR", str(tmp_path / "rules"))
    engine = open_database(db_url)
    report = import_records(engine, "default", practice())
    assert report.ok(), report.problems
    engine.dispose()
    return db_url


def _payments(run: dict[str, Any]) -> dict[str, str]:
    return {code: v["expected_payment"] for code, v in run["by_code"].items()}


def _decision(db: str, patient: str, code: str) -> dict[str, Any]:
    body = ok_json("explain", "--patient", patient, "--month", "2026-03", "--db", db)
    found = [d for d in body if d["code"] == code and d["status"] == "billable"]
    assert len(found) == 1, [(d["code"], d["status"]) for d in body]
    return found[0]


def test_importing_the_rvu_file_changes_the_runs_expected_payments(loaded: str) -> None:
    before = ok_json("bill", "--month", "2026-03", "--db", loaded)
    assert _payments(before) == {
        "99453": "21.71",
        "99454": "52.11",
        "99457": "51.77",
        "98975": "21.71",
        "98985": "36.00",
    }
    estimated = _decision(loaded, "B2", "98985")
    assert not any(r["rule_id"] == "pricing.amount" for r in estimated["reasons"])

    imported = ok_json("rules", "import-rvu", str(FIXTURES / "PPRRVU26_APR_nonQPP.csv"), "--year", "2026",
                       "--release", "B")  # fmt: skip
    assert imported["layer"] == "cms/pprrvu26-b"

    after = ok_json("bill", "--month", "2026-03", "--db", loaded)
    assert after["outcome"] == "created" and after["run_id"] != before["run_id"], "new rules, new run"
    # 99457: 1.53 RVU × 33.4009; 98985 is status C in the file: carrier-priced, unpriced.
    assert _payments(after) == {
        "99453": "21.71",
        "99454": "52.11",
        "99457": "51.10",
        "98975": "21.71",
        "98985": "0.00",
    }
    assert Decimal(after["expected_revenue"]) == Decimal(before["expected_revenue"]) - Decimal(
        "0.67"
    ) - Decimal("36.00")

    unpriced = _decision(loaded, "B2", "98985")
    assert unpriced["expected_payment"] == "0.00" and unpriced["rule_year"] == "medicare/2026+cms/pprrvu26-b"
    flag = next(r for r in unpriced["reasons"] if r["rule_id"] == "pricing.amount")
    assert flag["kind"] == "advisory" and "PPRRVU26 release B" in flag["citation"]
    priced = _decision(loaded, "A1", "99457")
    amount = next(p for p in priced["parameters"] if p["name"] == "amount")
    assert (amount["value"], amount["layer"], amount["citation"]) == (
        "51.10",
        "cms/pprrvu26-b",
        "cms-pprrvu26-b",
    )

    # January 2027 derives from the imported RVUs: 1.53 × 32.8409 for 99457.
    assert (
        ok_json("rules", "show", "--date", "2027-01-15")["codes"]["99457"]["params"]["amount"]["value"]
        == "50.25"
    )


def test_importing_the_gpci_file_prices_a_locality(loaded: str) -> None:
    refused = cli("bill", "--month", "2026-03", "--db", loaded, "--locality", "CO-01")
    assert refused.exit_code == 2 and "import-gpci" in refused.output
    ok_json("rules", "import-gpci", str(FIXTURES / "GPCI2026.csv"), "--year", "2026")
    run = ok_json("bill", "--month", "2026-03", "--db", loaded, "--locality", "CO-01")
    # 99454 (shipped RVU parts 0.00 / 1.55 / 0.01) × CO-01 (1.011 / 1.062 / 0.835) × 33.4009
    expected = (Decimal("1.55") * Decimal("1.062") + Decimal("0.01") * Decimal("0.835")) * Decimal("33.4009")
    assert run["by_code"]["99454"]["expected_payment"] == str(expected.quantize(Decimal("0.01")))

"""Exporting stored runs end to end, on SQLite and PostgreSQL: routing, corrections, charges.

The data goes in through ingest and the month run through the ``bill`` and ``lock``
commands, as a practice would do it; the files ``caretally export`` writes are validated
with pyx12 and read back segment by segment.
"""

from __future__ import annotations

import csv
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.export.test_payer_directory import DIRECTORY
from tests.export.x12check import segments, validate_x12

NY = ZoneInfo("America/New_York")
runner = CliRunner()

#: patient id → (payer, member id, payer_plan column or None)
PEOPLE = {
    "A1": ("medicare", "1EG4TE5MK73", None),
    "B2": ("medicaid", "123456789A", None),
    "C3": ("commercial", "BCB0123456789", None),
    "D4": ("medicare_advantage", "XJH123456789", "acme-hmo"),
}


def patient_row(pid: str, payer: str, member: str, plan: str | None) -> dict[str, Any]:
    row = {
        "patient_id": pid, "birth_date": "1948-05-01", "timezone": "America/New_York", "payer": payer,
        "member_id": member, "family_name": f"Fam{pid}", "given_name": "Alex", "sex": "F",
        "address_line": "1 Main St", "city": "Albany", "state": "NY", "postal_code": "12207",
    }  # fmt: skip
    if plan:
        row["payer_plan"] = plan
    return row


def monitored(pid: str, start: str = "2026-02-01") -> dict[str, list[dict[str, Any]]]:
    """An RPM enrollment with 20 days of February readings: 99453 and 99454 in March."""
    readings = [
        {"patient_id": pid, "device_id": f"D{pid}", "measured_at": datetime(2026, 2, 1 + n, 8, 30, tzinfo=NY)
         .isoformat(), "type": "bp", "value": "130/80", "unit": "mmHg", "transmission": "auto"}
        for n in range(20)
    ]  # fmt: skip
    return {
        "enrollments": [
            {"enrollment_id": f"E{pid}", "patient_id": pid, "program": "RPM", "start_date": start,
             "consent_date": start, "billing_practitioner_id": "DR1", "diagnoses": "I10"}
        ],
        "devices": [
            {"device_id": f"D{pid}", "patient_id": pid, "program": "RPM", "kind": "blood_pressure",
             "medical_device": "true", "setup_date": "2026-02-01", "assigned_date": "2026-02-01"}
        ],
        "readings": readings,
    }  # fmt: skip


def records(people: dict[str, tuple[str, str, str | None]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {
        "patients": [patient_row(pid, *spec) for pid, spec in people.items()],
        "practitioners": [
            {"practitioner_id": "DR1", "npi": "1245319599", "name": "Dana Reyes", "credential": "MD"},
            {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
        ],
    }
    for pid in people:
        for name, rows in monitored(pid).items():
            out.setdefault(name, []).extend(rows)
    return out


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def loaded(db_url: str) -> str:
    engine = open_database(db_url)
    report = import_records(engine, "default", records(PEOPLE))
    assert report.ok(), report.problems
    engine.dispose()
    return db_url


def practice(tmp_path: Path, text: str = DIRECTORY) -> Path:
    path = tmp_path / "practice.toml"
    path.write_text(text, encoding="utf-8")
    return path


def export_x12(db: str, out: Path, practice_path: Path, *extra: str) -> Any:
    return cli(
        "export", "--month", "2026-03", "--format", "x12", "--out", str(out), "--db", db,
        "--practice", str(practice_path), *extra,
    )  # fmt: skip


def read_claims(text: str) -> dict[str, dict[str, Any]]:
    """CLM01 → what the file says about that claim: payer, SBR09, frequency, REF*F8, lines."""
    claims: dict[str, dict[str, Any]] = {}
    payer = sbr09 = ""
    current: dict[str, Any] = {}
    for s in segments(text):
        if s[0] == "SBR":
            sbr09 = s[9]
        elif s[:2] == ["NM1", "PR"]:
            payer = s[9]
        elif s[0] == "CLM":
            current = {"payer": payer, "sbr09": sbr09, "frequency": s[5].split(":")[2], "total": s[2]}
            current |= {"ref_f8": None, "codes": [], "charges": []}
            claims.setdefault(s[1], {})[current["frequency"]] = current
        elif s[:2] == ["REF", "F8"]:
            current["ref_f8"] = s[2]
        elif s[0] == "SV1":
            current["codes"].append(s[1].split(":")[1])
            current["charges"].append(Decimal(s[2]))
    return claims


def accepted(path: Path) -> str:
    text = path.read_text(encoding="ascii")
    result = validate_x12(text)
    assert result.accepted, "\n".join(result.errors) + "\n" + text
    return text


def test_claims_go_to_each_patients_payer_one_file_per_receiver(loaded: str, tmp_path: Path):
    ok("bill", "--month", "2026-03", "--db", loaded)
    out = tmp_path / "claims.x12"
    result = export_x12(loaded, out, practice(tmp_path))
    assert result.exit_code == 0, result.output
    assert not out.exists(), "two receivers: one file each, named after the receiver"
    clearing, state = tmp_path / "claims.CLEARHOUSE01.x12", tmp_path / "claims.ILMEDICAID.x12"
    assert "CLEARHOUSE01" in result.output and "ILMEDICAID" in result.output
    first, second = read_claims(accepted(clearing)), read_claims(accepted(state))
    assert {cid: c["1"]["payer"] + "/" + c["1"]["sbr09"] for cid, c in first.items()} == {
        "A1-202603": "12502/MB",
        "C3-202603": "BX001/CI",
        "D4-202603": "ACME1/HM",  # the plan named in the patients file's payer_plan column
    }
    assert {cid: c["1"]["payer"] + "/" + c["1"]["sbr09"] for cid, c in second.items()} == {
        "B2-202603": "IL770/MC"
    }
    isa13 = {accepted(p).split("*")[13] for p in (clearing, state)}
    assert len(isa13) == 2, "each interchange has its own control number"
    engine = open_database(loaded)
    with engine.connect() as conn:
        stored = conn.execute(select(schema.x12_interchanges.c.path)).scalars().all()
    engine.dispose()
    assert sorted(stored) == sorted([str(clearing), str(state)])


def test_one_receiver_keeps_the_single_file_and_an_unlisted_payer_stops_the_export(
    loaded: str, tmp_path: Path
):
    ok("bill", "--month", "2026-03", "--db", loaded)
    one = practice(tmp_path, DIRECTORY.replace('receiver = "state"\n', ""))
    out = tmp_path / "claims.x12"
    assert export_x12(loaded, out, one).exit_code == 0
    assert set(read_claims(accepted(out))) == {f"{p}-202603" for p in PEOPLE}

    medicare_only = practice(tmp_path, DIRECTORY.split("[payers.medicaid]")[0])
    refused = export_x12(loaded, tmp_path / "refused.x12", medicare_only)
    assert refused.exit_code == 2
    assert "Traceback" not in refused.output and not (tmp_path / "refused.x12").exists()
    lines = [ln for ln in refused.output.splitlines() if "no entry" in ln]
    assert len(lines) == 3 and any("medicaid" in ln and "B2" in ln for ln in lines)


def amend(db: str, tmp_path: Path) -> None:
    """Lock March, then late data: A1 gets 21 live minutes (99457), C3's enrollment starts
    after its readings (its claim goes), and a new Medicare patient E5 appears."""
    ok("bill", "--month", "2026-03", "--db", db)
    ok("lock", "--month", "2026-03", "--db", db)
    late = records({"E5": ("medicare", "2EG4TE5MK74", None)})
    del late["practitioners"]
    late["time_entries"] = [
        {"entry_id": "T9", "patient_id": "A1", "practitioner_id": "RN1", "program": "RPM",
         "started_at": datetime(2026, 3, 12, 9, tzinfo=NY).isoformat(), "seconds": str(21 * 60),
         "activity": "call", "interactive": "true", "modality": "phone", "note": ""}
    ]  # fmt: skip
    late["enrollments"] += monitored("C3", start="2026-03-20")["enrollments"]
    engine = open_database(db)
    report = import_records(engine, "default", late)
    assert report.ok(), report.problems
    engine.dispose()
    ok("bill", "--month", "2026-03", "--db", db)


def test_an_amendment_exports_only_corrections_of_the_locked_claims(loaded: str, tmp_path: Path):
    amend(loaded, tmp_path)
    numbers = tmp_path / "claim-numbers.csv"
    numbers.write_text(
        "claim_id,payer_claim_number\nA1-202603,OLDNUMBER\nA1-202603,22126500012345\n", encoding="utf-8"
    )
    one = practice(tmp_path, DIRECTORY.replace('receiver = "state"\n', ""))
    out = tmp_path / "amend.x12"
    result = export_x12(loaded, out, one, "--claim-numbers", str(numbers))
    assert result.exit_code == 0, result.output
    assert "corrections of locked run" in result.output
    claims = read_claims(accepted(out))
    assert set(claims) == {"A1-202603", "C3-202603", "E5-202603"}, "B2 and D4 did not change"
    a1 = claims["A1-202603"]["7"]
    assert a1["ref_f8"] == "22126500012345", "the payer's number, the latest row of the file"
    assert sorted(a1["codes"]) == ["99453", "99454", "99457"], "a replacement carries the whole claim"
    c3 = claims["C3-202603"]["8"]
    assert c3["ref_f8"] == "C3-202603", "no recorded number: our claim id"
    assert sorted(c3["codes"]) == ["99453", "99454"], "a void repeats the claim it voids"
    assert c3["payer"] == "BX001"
    e5 = claims["E5-202603"]["1"]
    assert e5["ref_f8"] is None and e5["payer"] == "12502"

    # --all: the whole month again, every claim an original with no reference.
    whole = tmp_path / "whole.x12"
    assert export_x12(loaded, whole, one, "--all").exit_code == 0
    everything = read_claims(accepted(whole))
    assert set(everything) == {"A1-202603", "B2-202603", "D4-202603", "E5-202603"}
    assert all(set(c) == {"1"} and c["1"]["ref_f8"] is None for c in everything.values())


def test_claim_ids_stay_stable_between_the_locked_run_and_its_amendment(loaded: str, tmp_path: Path):
    one = practice(tmp_path, DIRECTORY.replace('receiver = "state"\n', ""))
    ok("bill", "--month", "2026-03", "--db", loaded)
    first = tmp_path / "first.x12"
    assert export_x12(loaded, first, one).exit_code == 0
    amend(loaded, tmp_path)
    again = tmp_path / "again.x12"
    assert export_x12(loaded, again, one, "--all").exit_code == 0
    before, after = set(read_claims(accepted(first))), set(read_claims(accepted(again)))
    assert before - {"C3-202603"} <= after and "C3-202603" in before


def test_charges_come_from_the_practice_fees_unless_the_run_had_a_fee_schedule(loaded: str, tmp_path: Path):
    schedule = tmp_path / "fees.csv"
    schedule.write_text("code,charge\n99454,80.00\n", encoding="utf-8")
    ok("bill", "--month", "2026-03", "--db", loaded, "--fee-schedule", str(schedule))
    fees = "\n[fees]\n99453 = 25.50\n99454 = 999.00\n"
    one = practice(tmp_path, DIRECTORY.replace('receiver = "state"\n', "") + fees)
    out = tmp_path / "claims.x12"
    assert export_x12(loaded, out, one).exit_code == 0
    claims = read_claims(accepted(out))
    for claim in claims.values():
        charge = dict(zip(claim["1"]["codes"], claim["1"]["charges"], strict=True))
        assert charge == {"99453": Decimal("25.5"), "99454": Decimal("80")}
        assert Decimal(claim["1"]["total"]) == Decimal("105.5")


def test_a_code_without_any_charge_refuses_the_x12_export_naming_it(loaded: str, tmp_path: Path):
    schedule = tmp_path / "fees.csv"
    schedule.write_text("code,charge\n99454,80.00\n99453,0\n", encoding="utf-8")
    ok("bill", "--month", "2026-03", "--db", loaded, "--fee-schedule", str(schedule))
    one = practice(tmp_path, DIRECTORY.replace('receiver = "state"\n', ""))
    refused = export_x12(loaded, tmp_path / "claims.x12", one)
    assert refused.exit_code == 2 and not (tmp_path / "claims.x12").exists()
    (message,) = [ln for ln in refused.output.splitlines() if ln.strip()]
    assert "99453" in message and "[fees]" in message and "99454" not in message
    fhir = cli(
        "export", "--month", "2026-03", "--format", "fhir", "--out", str(tmp_path / "claims.json"),
        "--db", loaded, "--practice", str(one),
    )  # fmt: skip
    assert fhir.exit_code == 2 and "99453" in fhir.output and not (tmp_path / "claims.json").exists()
    # The CSV still writes, with the expected payment.
    out = tmp_path / "claims.csv"
    ok("export", "--month", "2026-03", "--format", "csv", "--out", str(out), "--db", loaded)
    with out.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["code"] == "99453"]
    assert rows and all(r["charge"] == "0.00" and Decimal(r["expected_payment"]) > 0 for r in rows)
    # Adding the fee to the practice file is enough.
    fixed = practice(tmp_path, DIRECTORY.replace('receiver = "state"\n', "") + "\n[fees]\n99453 = 19\n")
    assert export_x12(loaded, tmp_path / "claims.x12", fixed).exit_code == 0

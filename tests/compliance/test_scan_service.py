"""``caretally scan`` end to end on SQLite and PostgreSQL: import, bill, scan, audit.

Three RPM patients are billed for March 2026 by the real month run; one of them was seen
in February (visits.csv). The scan reads the stored run, so the measures count what the
practice bills; the audit trail names every patient the report disclosed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.cli.main import build_app
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.services import audit, compliance
from caretally.services.context import cli_actor
from caretally.services.errors import InvalidInput
from caretally.store.db import open_database

ORG = "default"
runner = CliRunner()


def _patient(pid: str, n: int) -> dict[str, str]:
    return {
        "patient_id": pid,
        "birth_date": "1950-04-02",
        "timezone": "America/New_York",
        "payer": "medicare",
        "member_id": f"1EG4TE5MK7{n}",
        "family_name": "Doe",
        "given_name": "Pat",
        "sex": "F",
    }


def _practice() -> dict[str, list[dict[str, str]]]:
    records: dict[str, list[dict[str, str]]] = {
        "practitioners": [
            {"practitioner_id": "DR1", "npi": "1234567893", "name": "Dana Reyes", "credential": "MD"},
            {"practitioner_id": "RN1", "npi": "", "name": "Ava Brooks", "credential": "RN"},
        ],
        "patients": [],
        "enrollments": [],
        "devices": [],
        "readings": [],
        "time_entries": [],
        "visits": [
            {
                "visit_id": "V1",
                "patient_id": "P1",
                "practitioner_id": "DR1",
                "date": "2026-02-10",
                "code": "99214",
                "telehealth": "false",
            }
        ],
    }
    ccm_dx = {"P1": "I10;E11.9", "P2": "E11.9;E11.65"}
    for n, pid in enumerate(("P1", "P2", "P3"), start=1):
        records["patients"].append(_patient(pid, n))
        common = {"patient_id": pid, "start_date": "2026-03-01", "billing_practitioner_id": "DR1"}
        records["enrollments"].append(
            {
                "enrollment_id": f"{pid}-R",
                "program": "RPM",
                "diagnoses": "I10",
                "consent_date": "2026-03-01",
                **common,
            }
        )
        if pid in ccm_dx:
            records["enrollments"].append(
                {"enrollment_id": f"{pid}-C", "program": "CCM", "diagnoses": ccm_dx[pid], **common}
                | {"consent_date": "2026-03-01"}
            )
            records["time_entries"].append(
                {
                    "entry_id": f"{pid}-TC",
                    "patient_id": pid,
                    "practitioner_id": "RN1",
                    "program": "CCM",
                    "started_at": "2026-03-20T14:00:00+00:00",
                    "minutes": "25",
                    "activity": "care plan",
                    "interactive": "false",
                }
            )
        records["devices"].append(
            {
                "device_id": f"{pid}-D",
                "patient_id": pid,
                "program": "RPM",
                "kind": "blood_pressure",
                "medical_device": "true",
                "assigned_date": "2026-03-01",
                "setup_date": "2026-03-01",
            }
        )
        for day in range(16):
            when = datetime(2026, 3, 1, 14, 0, tzinfo=UTC) + timedelta(days=day)
            records["readings"].append(
                {
                    "patient_id": pid,
                    "device_id": f"{pid}-D",
                    "measured_at": when.isoformat(),
                    "type": "blood_pressure",
                    "value": "128/82",
                    "unit": "mmHg",
                    "transmission": "auto",
                }
            )
    records["time_entries"].append(
        {
            "entry_id": "P1-TR",
            "patient_id": "P1",
            "practitioner_id": "RN1",
            "program": "RPM",
            "started_at": "2026-03-12T15:00:00+00:00",
            "minutes": "22",
            "activity": "call",
            "interactive": "true",
            "modality": "phone",
        }
    )
    return records


@pytest.fixture
def billed(db_url: str) -> str:
    engine = open_database(db_url, ORG)
    report = import_records(engine, ORG, _practice(), now=datetime(2026, 4, 2, tzinfo=UTC))
    assert report.ok, report.problems
    bill_month(engine, ORG, parse_month("2026-03"), PayerRules.load())
    return db_url


def _measure(report: dict, mid: str) -> dict:
    return next(m for m in report["measures"] if m["id"] == mid)


def test_scan_reads_the_stored_run_and_visits_and_is_audited(billed: str) -> None:
    engine = open_database(billed, ORG)
    actor = cli_actor(ORG)
    report = compliance.scan(engine, actor, 2026)
    assert report["population"]["rpm_enrollees"] == 3
    assert report["sources"]["visits"] == 1 and len(report["sources"]["runs"]) == 1
    b2 = _measure(report, "B2")
    assert b2["patients"] == ["P2", "P3"] and b2["status"] == "findings"  # 2 of 3: not above 80%
    b3 = _measure(report, "B3")
    assert b3["patients"] == ["P2", "P3"] and b3["status"] == "findings"
    assert {x["code"] for f in b3["findings"] for x in f["lines"]} == {"99453", "99454"}
    c11 = _measure(report, "C11")
    assert c11["numbers"] == {"ccm_lines": 2, "below_minimum": 1} and c11["patients"] == ["P2"]
    [finding] = c11["findings"]
    assert finding["lines"][0]["code"] == "99490" and "(E11)" in finding["evidence"]
    a2 = _measure(report, "A2")
    assert a2["national"].startswith("43%") and a2["patients"] == ["P2", "P3"]
    assert a2["numbers"]["no_setup"] == 0 and a2["numbers"]["no_treatment_management"] == 2
    assert report["classification"]["table"].startswith("cci_icd10cm_2019_1")

    events, _ = audit.list_events(engine, actor, audit.EventFilter())
    scans = [e for e in events if e.action == "compliance.scan"]
    assert scans and scans[0].resource == "compliance/scan/2026"
    shown, _ = audit.list_events(engine, actor, audit.EventFilter(patient_id="P3"))
    assert any(e.action == "compliance.scan" for e in shown)


def test_scan_of_another_month_finds_nothing_and_a_month_outside_the_year_is_refused(billed: str) -> None:
    engine = open_database(billed, ORG)
    april = compliance.scan(engine, cli_actor(ORG), 2026, "2026-04")
    assert april["population"]["rpm_enrollees"] == 0 and april["flagged"] == []
    with pytest.raises(InvalidInput) as refused:
        compliance.scan(engine, cli_actor(ORG), 2026, "2025-12")
    assert refused.value.code == "month_outside_year"


def test_cli_scan_json_and_table(billed: str) -> None:
    app = build_app()
    out = runner.invoke(app, ["scan", "--db", billed, "--year", "2026", "--month", "2026-03", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["month"] == "2026-03" and _measure(report, "B3")["patients"] == ["P2", "P3"]
    table = runner.invoke(app, ["scan", "--db", billed, "--year", "2026", "--multiple-devices-repeated", "1"])
    assert table.exit_code == 0, table.output
    assert "C11" in table.stdout and "cci_icd10cm_2019_1" in table.stdout
    bad = runner.invoke(
        app, ["scan", "--db", billed, "--year", "2026", "--prior-relationship-lookback", "ever"]
    )
    assert bad.exit_code == 1 and "Traceback" not in bad.output

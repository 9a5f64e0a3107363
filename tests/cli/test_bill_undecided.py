"""``caretally bill`` names the programs it imported but that no rule-year decides."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store.db import open_database

runner = CliRunner()


def _practice(url: str) -> None:
    engine = open_database(url)
    records = {
        "practitioners": [
            {"practitioner_id": "PT1", "npi": "1555555550", "name": "Kim Novak", "credential": "PT"}
        ],
        "patients": [
            {
                "patient_id": "P1",
                "birth_date": "1950-04-02",
                "timezone": "America/New_York",
                "payer": "commercial",
                "member_id": "C123456789",
                "family_name": "Doe",
                "given_name": "Pat",
                "sex": "F",
            }
        ],
        "enrollments": [
            {
                "enrollment_id": "E1",
                "patient_id": "P1",
                "program": "RTM",
                "start_date": "2026-03-01",
                "consent_date": "2026-03-01",
                "billing_practitioner_id": "PT1",
                "diagnoses": "M17.11",
            }
        ],
    }
    assert import_records(engine, "default", records).ok()
    engine.dispose()


def test_bill_says_which_imported_programs_no_rule_year_decides(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _practice(url)
    args = ["bill", "--month", "2026-03", "--db", url, "--payer-rules", "commercial=example-commercial"]
    done = runner.invoke(build_app(), args)
    assert done.exit_code == 0, done.output
    text = " ".join(done.stdout.split())
    assert (
        "RTM: 1 enrollment imported, no rule-year decides RTM (medicare/2026+payers/example-commercial)"
        in text
    )

    again = runner.invoke(build_app(), [*args, "--json"])
    body = json.loads(again.stdout)
    assert body["undecided_programs"] == {
        "RTM": {"enrollments": 1, "rule_years": ["medicare/2026+payers/example-commercial"]}
    }


def test_bill_under_medicare_rules_reports_nothing_undecided(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    _practice(url)
    done = runner.invoke(build_app(), ["bill", "--month", "2026-03", "--db", url, "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["undecided_programs"] == {}

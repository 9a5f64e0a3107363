"""``caretally db verify``: a stored run whose bytes changed is named, on both databases.

The runs are made by ``caretally bill`` and changed behind caretally's back with SQL, as
someone with database access would; the check reads only the command's output and exit.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Text, select, update
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import JsonText, open_database
from tests.billing.test_month_run import NY, practice_records

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args), catch_exceptions=False)


def verify(db: str) -> tuple[int, dict[str, Any]]:
    done = cli("db", "verify", "--db", db, "--json")
    return done.exit_code, json.loads(done.stdout)


@pytest.fixture
def billed(db_url: str) -> tuple[str, str, str]:
    """March billed and locked, then an amendment run: (url, locked run, amendment run)."""
    engine = open_database(db_url)
    assert import_records(engine, "default", practice_records()).ok()
    engine.dispose()
    first = cli("bill", "--month", "2026-03", "--db", db_url, "--json")
    assert first.exit_code == 0, first.output
    assert cli("lock", "--month", "2026-03", "--db", db_url).exit_code == 0
    engine = open_database(db_url)
    late = {"readings": [one_more_reading("A1", 21)]}
    assert import_records(engine, "default", late).ok()
    engine.dispose()
    second = cli("bill", "--month", "2026-03", "--db", db_url, "--json")
    assert second.exit_code == 0, second.output
    return db_url, json.loads(first.stdout)["run_id"], json.loads(second.stdout)["run_id"]


def one_more_reading(patient: str, day: int) -> dict[str, str]:
    when = datetime(2026, 2, day, 8, 30, tzinfo=NY).isoformat()
    return {"patient_id": patient, "device_id": f"D{patient}", "measured_at": when, "type": "bp",
            "value": "128/79", "unit": "mmHg", "transmission": "auto"}  # fmt: skip


def test_every_digest_of_fresh_runs_matches(billed: tuple[str, str, str]) -> None:
    db, locked, amendment = billed
    status, report = verify(db)
    assert status == 0 and report["ok"] is True and report["problems"] == []
    assert {r["run_id"] for r in report["runs"]} == {locked, amendment}
    assert all((r["lines"], r["decisions"], r["input"]) == ("match",) * 3 for r in report["runs"])
    check = report["database"]["check"]
    assert ("integrity_check" in check) if db.startswith("sqlite") else ("data_checksums" in check)
    text = cli("db", "verify", "--db", db)
    assert (
        text.exit_code == 0
        and "2 stored run(s) checked" in text.stdout
        and "2 match, 0 do not" in text.stdout
    )


def test_a_flipped_byte_in_a_decision_or_a_claim_line_is_caught(billed: tuple[str, str, str]) -> None:
    db, locked, amendment = billed
    engine = open_database(db)
    d = schema.run_decisions
    with engine.begin() as conn:
        (text,) = conn.execute(
            select(d.c.decisions.cast(Text)).where(d.c.run_id == locked, d.c.patient_id == "A1")
        ).one()
        flipped = re.sub(r'"units": ?1\b', '"units":2', text, count=1)
        assert flipped != text
        conn.execute(
            update(d).where(d.c.run_id == locked, d.c.patient_id == "A1").values(decisions=JsonText(flipped))
        )
    status, report = verify(db)
    assert status == 1 and report["ok"] is False
    (problem,) = report["problems"]
    assert problem["code"] == "digest_mismatch" and problem["field"] == "decisions_digest"
    assert problem["run_id"] == locked and problem["month"] == "2026-03"
    runs = {r["run_id"]: r for r in report["runs"]}
    assert (runs[locked]["decisions"], runs[locked]["lines"]) == ("mismatch", "match")
    assert runs[amendment]["decisions"] == "match"

    c = schema.claim_lines
    with engine.begin() as conn:
        line_id = conn.execute(
            select(c.c.id).where(c.c.run_id == amendment).order_by(c.c.id).limit(1)
        ).scalar()
        conn.execute(update(c).where(c.c.id == line_id).values(units=c.c.units + 1))
    status, report = verify(db)
    assert status == 1
    assert {(p["run_id"], p["field"]) for p in report["problems"]} == {
        (locked, "decisions_digest"),
        (amendment, "lines_digest"),
    }
    text = cli("db", "verify", "--db", db)
    assert text.exit_code == 1
    assert f"run {locked} (default, 2026-03, locked): its stored decisions no longer match" in text.output
    assert f"run {amendment} (default, 2026-03, draft): its claim lines no longer match" in text.output
    engine.dispose()


def test_a_changed_facts_digest_or_setting_breaks_the_input_digest(billed: tuple[str, str, str]) -> None:
    db, locked, _ = billed
    engine = open_database(db)
    d = schema.run_decisions
    with engine.begin() as conn:
        conn.execute(
            update(d).where(d.c.run_id == locked, d.c.patient_id == "B2").values(facts_digest="0" * 64)
        )
    status, report = verify(db)
    assert status == 1 and [(p["run_id"], p["field"]) for p in report["problems"]] == [
        (locked, "input_digest")
    ]
    engine.dispose()


def test_runs_stored_before_decisions_digests_are_not_verifiable_not_tampered(
    billed: tuple[str, str, str],
) -> None:
    db, locked, _amendment = billed
    engine = open_database(db)
    r = schema.billing_runs
    with engine.begin() as conn:  # as migration 0003 left every run stored before this
        conn.execute(update(r).where(r.c.run_id == locked).values(decisions_digest=None))
    status, report = verify(db)
    assert status == 0 and report["ok"] is True and report["problems"] == []
    assert report["not_verifiable"] == [
        {
            "run_id": locked,
            "org_id": "default",
            "month": "2026-03",
            "digest": "decisions",
            "reason": "not verifiable (stored before decisions digests)",
        }
    ]
    text = cli("db", "verify", "--db", db)
    assert text.exit_code == 0
    assert "decisions digest not verifiable (stored before decisions digests)" in text.stdout
    engine.dispose()

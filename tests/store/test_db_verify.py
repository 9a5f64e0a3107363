"""``caretally db verify``: a stored run whose bytes changed is named, on both databases.

The runs are made by ``caretally bill`` and changed behind caretally's back with SQL, as
someone with database access would; the check reads only the command's output and exit.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, Text, select, update
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


def _bump_first_line(engine: Engine, run_id: str) -> None:
    """Edit a stored run's first claim line (one more unit), as a tamperer would."""
    c = schema.claim_lines
    with engine.begin() as conn:
        line_id = conn.execute(select(c.c.id).where(c.c.run_id == run_id).order_by(c.c.id).limit(1)).scalar()
        conn.execute(update(c).where(c.c.id == line_id).values(units=c.c.units + 1))


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

    _bump_first_line(engine, amendment)
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


def _chained_digests(engine: Any, run_id: str) -> dict[str, str]:
    """The digests a run stored before migration 0018, by that code's definition (kept here,
    written out, so the test does not lean on the code it checks): SHA-256 chained over every
    line's sorted-JSON content in stored order, over every patient's decisions part in
    Python's order of their ids, and over their facts digests then the settings."""
    from caretally.billing.run import decision_rows, decisions_digest_part, line_content, stored_line

    r, d, c = schema.billing_runs, schema.run_decisions, schema.claim_lines
    with engine.connect() as conn:
        settings = conn.execute(select(r.c.settings).where(r.c.run_id == run_id)).scalar_one()
        lines = hashlib.sha256()
        for row in conn.execute(select(c).where(c.c.run_id == run_id).order_by(c.c.id)).mappings():
            lines.update(json.dumps(line_content(stored_line(row)), sort_keys=True).encode())
        joined, text = decision_rows(text=True)
        rows = conn.execute(
            select(d.c.patient_id, d.c.facts_digest, d.c.billable_count, text)
            .select_from(joined)
            .where(d.c.run_id == run_id)
        ).all()
    decisions, facts = hashlib.sha256(), hashlib.sha256()
    for patient, facts_digest, billable, value in sorted(rows):
        decisions.update(decisions_digest_part(patient, billable, value).encode())
        facts.update(facts_digest.encode())
    inputs = hashlib.sha256((facts.hexdigest() + json.dumps(settings, sort_keys=True)).encode())
    return {
        "lines_digest": lines.hexdigest(),
        "decisions_digest": decisions.hexdigest(),
        "input_digest": inputs.hexdigest(),
    }


def test_runs_stored_before_summed_digests_still_verify_after_migration_0018(
    billed: tuple[str, str, str],
) -> None:
    """Both runs are taken back to what a database at migration 0017 held (chained digests,
    no ``digest_scheme``), the schema brought to head again: they verify as they did, an edit
    of one of their lines is still caught."""
    from alembic import command

    from caretally.store.db import alembic_config, current_revision, upgrade

    db, locked, amendment = billed
    engine = open_database(db)
    r = schema.billing_runs
    chained = {run: _chained_digests(engine, run) for run in (locked, amendment)}
    with engine.begin() as conn:
        summed = dict(conn.execute(select(r.c.run_id, r.c.lines_digest)).all())
    assert all(summed[run] != chained[run]["lines_digest"] for run in chained)  # two schemes indeed
    command.downgrade(alembic_config(engine), "0017")
    assert current_revision(engine) == "0017"
    with engine.begin() as conn:
        for run, digests in chained.items():
            conn.execute(update(r).where(r.c.run_id == run).values(**digests))
    upgrade(engine)
    with engine.connect() as conn:
        schemes = set(conn.execute(select(r.c.digest_scheme)).scalars())
    assert schemes == {None}
    status, report = verify(db)
    assert status == 0 and report["ok"] is True and report["problems"] == [], report["problems"]
    assert all((x["lines"], x["decisions"], x["input"]) == ("match",) * 3 for x in report["runs"])

    _bump_first_line(engine, amendment)
    status, report = verify(db)
    assert status == 1 and [(p["run_id"], p["field"]) for p in report["problems"]] == [
        (amendment, "lines_digest")
    ]
    engine.dispose()

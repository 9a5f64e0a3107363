"""Amending a locked month through the CLI, as a biller would: bill → lock → late data → bill → export.

One more reading that changes no claim line still makes a new run (its decisions carry the
new evidence), and every surface says the amendment changes nothing: ``bill --json``,
the text summary, and the 837P export, which refuses with a hint. Late data that does
change lines is listed line by line with what changed, and exports as corrections.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.ingest import import_records
from caretally.store.db import open_database
from tests.billing.test_month_run import NY, _fill_practice, entry, practice_records

runner = CliRunner()


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args), catch_exceptions=False)


def bill(db: str, *extra: str) -> Any:
    return cli("bill", "--month", "2026-03", "--db", db, *extra)


def late(db: str, records: dict[str, list[dict[str, Any]]]) -> None:
    engine = open_database(db)
    report = import_records(engine, "default", records)
    assert report.ok(), report.problems
    engine.dispose()


@pytest.fixture
def locked(db_url: str, tmp_path: Path) -> tuple[str, str, Path]:
    """March billed and locked: (url, locked run id, practice file)."""
    late(db_url, practice_records())
    first = bill(db_url, "--json")
    assert first.exit_code == 0, first.output
    assert cli("lock", "--month", "2026-03", "--db", db_url).exit_code == 0
    practice = tmp_path / "practice.toml"
    _fill_practice(practice)
    return db_url, json.loads(first.stdout)["run_id"], practice


def x12(db: str, out: Path, practice: Path, *extra: str) -> Any:
    return cli(
        "export", "--month", "2026-03", "--format", "x12", "--out", str(out), "--practice", str(practice),
        "--db", db, *extra,
    )  # fmt: skip


def test_one_more_reading_makes_an_amendment_that_changes_nothing(
    locked: tuple[str, str, Path], tmp_path: Path
) -> None:
    db, locked_id, practice = locked
    reading = practice_records()["readings"][0]
    late(db, {"readings": [{**reading, "measured_at": datetime(2026, 2, 21, 8, 30, tzinfo=NY).isoformat()}]})

    made = bill(db, "--json")
    assert made.exit_code == 0, made.output
    body = json.loads(made.stdout)
    assert body["outcome"] == "created" and body["run_id"] != locked_id, "new evidence, new run"
    assert body["amends_run_id"] == locked_id
    assert body["amendments"] == [] and body["amendment_changes_nothing"] is True

    again = bill(db)  # nothing new since: unchanged, and still said to amend the locked run
    assert again.exit_code == 0
    assert "unchanged" in again.stdout and "amendment changes nothing" in again.stdout
    assert locked_id in again.stdout
    rerun = json.loads(bill(db, "--json").stdout)
    assert rerun["outcome"] == "unchanged" and rerun["amends_run_id"] == locked_id
    assert rerun["amendment_changes_nothing"] is True

    refused = x12(db, tmp_path / "fix.x12", practice)
    assert refused.exit_code == 1 and not (tmp_path / "fix.x12").exists()
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert lines[0].startswith("caretally: amendment changes nothing: run ") and locked_id in lines[0]
    assert lines[1] == "hint: --all writes the whole month as original claims"
    whole = x12(db, tmp_path / "whole.x12", practice, "--all")
    assert whole.exit_code == 0, whole.output
    csv_out = tmp_path / "claims.csv"
    assert (
        cli("export", "--month", "2026-03", "--format", "csv", "--out", str(csv_out), "--db", db).exit_code
        == 0
    )


def test_an_amendment_lists_each_changed_line_and_exports_corrections(
    locked: tuple[str, str, Path], tmp_path: Path
) -> None:
    db, locked_id, practice = locked
    enrollment = next(e for e in practice_records()["enrollments"] if e["enrollment_id"] == "EA")
    late(
        db,
        {
            "enrollments": [{**enrollment, "diagnoses": "I10;E11.9"}],  # A1's claim gains a diagnosis
            "time_entries": [entry("T9", "A1", "RPM", datetime(2026, 3, 12, 9, tzinfo=NY), 21 * 60, True)],
        },
    )
    made = bill(db, "--json")
    assert made.exit_code == 0, made.output
    body = json.loads(made.stdout)
    assert body["amends_run_id"] == locked_id and body["amendment_changes_nothing"] is False
    changes = {(a["change"], a["after"]["code"]): a for a in body["amendments"]}
    assert set(changes) == {("added", "99457"), ("changed", "99453"), ("changed", "99454")}
    changed = changes[("changed", "99454")]
    assert changed["fields"] == ["diagnosis_codes"]
    assert (changed["before"]["diagnosis_codes"], changed["after"]["diagnosis_codes"]) == ("I10", "I10;E11.9")

    text = bill(db)
    assert text.exit_code == 0
    out = " ".join(text.stdout.split())  # a table cell may wrap on a narrow terminal
    assert f"Amendments to locked run {locked_id}: 1 added, 0 removed, 2 changed" in out
    assert "diagnosis_codes: I10 → I10;E11.9" in out
    assert "new line: 1 unit, expected payment $" in out

    fixed = x12(db, tmp_path / "fix.x12", practice)
    assert fixed.exit_code == 0, fixed.output
    assert f"corrections of locked run {locked_id}" in fixed.output

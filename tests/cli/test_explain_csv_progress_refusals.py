"""``explain --csv``, progress bars on a terminal only, and refusals as Problems.

Refusals come from the service layer as ``Problem`` values (what the API will get) and
reach the person as one line plus a hint, or as Problem JSON with ``--json``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from caretally.billing.exporting import ExportRefused, export_month
from caretally.billing.run import RunError, lock_month
from caretally.cli.common import progress_bar
from caretally.cli.main import build_app
from caretally.errors import Problem, Refusal
from caretally.ingest import import_records
from caretally.store.db import open_database
from tests.billing.test_month_run import practice_records

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args), catch_exceptions=False)


def renamed(records: dict[str, list[dict[str, Any]]], old: str, new: str) -> dict[str, list[dict[str, Any]]]:
    """The practice with one patient id changed everywhere it is referenced."""
    return {
        stem: [{k: (new if k == "patient_id" and v == old else v) for k, v in row.items()} for row in rows]
        for stem, rows in records.items()
    }


@pytest.fixture
def practice(db_url: str) -> str:
    """The three-patient practice, B2 renamed to a spreadsheet formula."""
    engine = open_database(db_url)
    report = import_records(engine, "default", renamed(practice_records(), "B2", "=B2+1"))
    assert report.ok(), report.problems
    engine.dispose()
    return db_url


def read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_explain_csv_has_one_row_per_decision_with_its_blocking_rules(practice: str) -> None:
    args = ("explain", "--month", "2026-03", "--patient", "A1", "--db", practice)
    decisions = json.loads(cli(*args, "--json").stdout)
    done = cli(*args, "--csv")
    assert done.exit_code == 0, done.output
    rows = read_csv(done.stdout)
    assert list(rows[0])[:8] == [
        "patient_id", "month", "code", "status", "units", "date_of_service", "failed_rules", "pending_rules",
    ]  # fmt: skip
    assert [(r["code"], r["status"], r["units"], r["date_of_service"]) for r in rows] == [
        (d["code"], d["status"], str(d["units"]), d["date_of_service"] or "") for d in decisions
    ]
    for row, decision in zip(rows, decisions, strict=True):
        failed = [
            r["rule_id"] for r in decision["reasons"] if r["verdict"] == "failed" and r["kind"] != "advisory"
        ]
        assert row["failed_rules"] == ";".join(failed) and row["month"] == "2026-03"
    assert any(r["status"] == "not_billable" and r["failed_rules"] for r in rows)
    assert all(r["failed_rules"] == "" for r in rows if r["status"] == "billable")


def test_explain_csv_of_a_whole_month_is_spreadsheet_safe(practice: str) -> None:
    done = cli("explain", "--month", "2026-03", "--csv", "--db", practice)
    assert done.exit_code == 0, done.output
    rows = read_csv(done.stdout)
    assert {r["patient_id"] for r in rows} == {"A1", "'=B2+1", "C3"}
    assert not any(cell.startswith(("=", "+", "@")) for r in rows for cell in r.values())
    needs = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", "explain", "--month", "2026-03", "--db", practice],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert needs.returncode == 2 and needs.stderr.startswith("caretally: explain needs --patient")


def test_progress_bar_counts_patients_on_a_terminal_and_is_silent_otherwise() -> None:
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    with progress_bar("explaining 2026-03", terminal) as progress:
        assert progress is not None
        for done in range(0, 1201, 300):
            progress(done, 1200)
    assert "1200/1200" in screen.getvalue() and "patients" in screen.getvalue()
    piped = Console(file=io.StringIO(), force_terminal=False)
    with progress_bar("explaining 2026-03", piped) as progress:
        assert progress is None


def _in_a_terminal(args: list[str]) -> str:
    """Run a command with stdout and stderr on a pseudo-terminal; everything it drew."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", *args],
        stdout=follower,
        stderr=follower,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(follower)
    drawn = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the command ended and closed its side
                break
            if not chunk:
                break
            drawn += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, drawn.decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn.decode(errors="replace"))  # colours and cursor moves


@pytest.mark.parametrize(
    "command", [["leakage", "--month", "2026-03"], ["worklist", "--as-of", "2026-03-20"]], ids=lambda c: c[0]
)
def test_long_commands_draw_a_bar_on_a_terminal_and_nothing_when_piped(
    sqlite_url: str, command: list[str]
) -> None:
    engine = open_database(sqlite_url)
    assert import_records(engine, "default", practice_records()).ok()
    engine.dispose()
    drawn = _in_a_terminal([*command, "--db", sqlite_url])
    # All done, of a real total: 3 patients (the worklist adds a second pass for the 2 with devices).
    assert "patients" in drawn and re.search(r"\b([35])/\1\b", drawn)
    piped = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", *command, "--db", sqlite_url],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert piped.returncode == 0 and "patients" not in piped.stderr and "━" not in piped.stderr


def test_run_and_export_refusals_are_problems(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url)
    with pytest.raises(RunError) as no_run:
        lock_month(engine, "default", "2026-03")
    assert isinstance(no_run.value, Refusal) and isinstance(no_run.value.problem, Problem)
    assert (no_run.value.problem.code, no_run.value.problem.month) == ("no_run", "2026-03")
    assert no_run.value.problem.hint == "bill it first: caretally bill --month 2026-03"
    with pytest.raises(ExportRefused) as no_export:
        export_month(engine, "default", "2026-03", "csv", tmp_path / "x.csv")
    assert (no_export.value.problem.code, no_export.value.exit_code) == ("no_run", 1)
    with pytest.raises(ExportRefused) as unknown:
        export_month(engine, "default", "2026-03", "csv", tmp_path / "x.csv", run_id="nope")
    assert (unknown.value.problem.code, unknown.value.problem.run_id) == ("unknown_run", "nope")

    assert import_records(engine, "default", practice_records()).ok()
    assert cli("bill", "--month", "2026-03", "--db", db_url).exit_code == 0
    with pytest.raises(ExportRefused) as settings:
        export_month(engine, "default", "2026-03", "x12", tmp_path / "x.x12")
    assert (settings.value.problem.code, settings.value.exit_code) == ("practice_needed", 2)
    assert settings.value.problem.run_id is not None
    engine.dispose()

    text = cli("lock", "--month", "2026-04", "--db", db_url)
    assert text.exit_code == 1
    assert text.output.splitlines() == [
        "caretally: 2026-04 has no run to lock",
        "hint: bill it first: caretally bill --month 2026-04",
    ]
    as_json = cli("lock", "--month", "2026-04", "--db", db_url, "--json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert body["ok"] is False
    assert body["problems"] == [
        {
            "file": "<month run>",
            "line": None,
            "field": None,
            "code": "no_run",
            "message": "2026-04 has no run to lock",
            "row": None,
            "hint": "bill it first: caretally bill --month 2026-04",
            "month": "2026-04",
        }
    ]
    missing = cli(
        "export", "--month", "2026-04", "--format", "csv", "--out", str(tmp_path / "a.csv"), "--db", db_url
    )
    assert missing.exit_code == 1 and missing.output.startswith("caretally: 2026-04 has no billing run yet\n")
    assert cli("lock", "--month", "2026-03", "--db", db_url).exit_code == 0
    again = cli("lock", "--month", "2026-03", "--db", db_url, "--json")
    assert again.exit_code == 1 and json.loads(again.stdout)["problems"][0]["code"] == "already_locked"

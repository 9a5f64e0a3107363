"""``runs list``/``runs void``/``imports list``, CSV output and the no-wrap rule, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select
from typer.testing import CliRunner

from caretally.billing.records import RecordError, list_imports, list_runs, void_run
from caretally.cli.common import write_csv
from caretally.cli.main import build_app
from caretally.export.csvsafe import safe_cell
from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import valid_bundle

ORG = "clinic"
CLOCK = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
runner = CliRunner()


def _run_row(engine: Engine, run_id: str, month: str, status: str, minute: int, patients: int = 0) -> None:
    at = datetime(2026, 4, 1, 9, minute, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(schema.billing_runs).values(
                run_id=run_id,
                org_id=ORG,
                month=month,
                status=status,
                engine_version="t",
                ruleset_hash="h",
                input_digest="i",
                lines_digest="l",
                created_at=at,
                locked_at=at if status == "locked" else None,
                settings={},
            )
        )
        for n in range(patients):
            conn.execute(
                insert(schema.run_decisions).values(
                    run_id=run_id,
                    org_id=ORG,
                    patient_id=f"P{n}",
                    facts_digest="f",
                    billable_count=0,
                    decisions=[],
                )
            )


def test_runs_list_and_void_on_both_databases(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    _run_row(engine, "r-old", "2026-02", "superseded", 1)
    _run_row(engine, "r-locked", "2026-02", "locked", 2, patients=2)
    _run_row(engine, "r-draft", "2026-03", "draft", 3, patients=1)
    listed = [(r.run_id, r.status, r.patients) for r in list_runs(engine, ORG)]
    assert listed == [("r-old", "superseded", 0), ("r-locked", "locked", 2), ("r-draft", "draft", 1)]
    assert [r.run_id for r in list_runs(engine, ORG, "2026-03")] == ["r-draft"]

    app = build_app()
    shown = runner.invoke(app, ["runs", "list", "--db", db_url, "--org", ORG, "--json"])
    assert shown.exit_code == 0 and [r["status"] for r in json.loads(shown.stdout)] == [
        "superseded",
        "locked",
        "draft",
    ]
    voided = runner.invoke(app, ["runs", "void", "r-draft", "--db", db_url, "--org", ORG, "--json"])
    assert voided.exit_code == 0 and json.loads(voided.stdout)["status"] == "void"
    for run_id, why in (
        ("r-locked", "locked"),
        ("r-old", "superseded"),
        ("r-draft", "void already"),
        ("x", "exist"),
    ):
        with pytest.raises(RecordError, match=why):
            void_run(engine, ORG, run_id)
    with engine.connect() as conn:
        statuses = dict(
            conn.execute(select(schema.billing_runs.c.run_id, schema.billing_runs.c.status)).all()
        )
    assert statuses == {"r-old": "superseded", "r-locked": "locked", "r-draft": "void"}


def test_void_refusal_is_one_line_through_the_entry_point(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    _run_row(open_database(url, ORG), "r-locked", "2026-02", "locked", 2)
    done = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", "runs", "void", "r-locked", "--db", url, "--org", ORG],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[0] == (
        "caretally: run r-locked (2026-02) cannot be voided: "
        "it is locked: a locked run is the record of what was billed"
    )


def test_imports_list_on_both_databases(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    first = import_records(engine, ORG, valid_bundle(), source_name="march", now=CLOCK)
    second = import_records(engine, ORG, valid_bundle(), source_name="again", now=CLOCK)
    batches = list_imports(engine, ORG)
    assert [b.batch_id for b in batches] == [second.batch_id, first.batch_id]
    assert batches[1].total("inserted") == sum(c.inserted for c in first.counts.values())
    assert batches[0].total("unchanged") == sum(c.read for c in second.counts.values())
    shown = runner.invoke(
        build_app(), ["imports", "list", "--db", db_url, "--org", ORG, "--json", "--limit", "1"]
    )
    assert shown.exit_code == 0
    assert [b["source"] for b in json.loads(shown.stdout)] == ["again"]


@pytest.fixture
def march(sqlite_url: str) -> str:
    engine = open_database(sqlite_url, ORG)
    assert import_records(engine, ORG, valid_bundle(), now=CLOCK).ok()
    return sqlite_url


def test_worklist_csv_has_every_json_row(march: str) -> None:
    app = build_app()
    args = ["worklist", "--as-of", "2026-03-20", "--db", march, "--org", ORG, "--all"]
    as_json = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["rows"]
    done = runner.invoke(app, [*args, "--csv"])
    assert done.exit_code == 0, done.stdout
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows and [(r["patient_id"], r["program"]) for r in rows] == [
        (r["patient_id"], r["program"]) for r in as_json
    ]


def test_leakage_csv_has_every_near_miss(march: str) -> None:
    app = build_app()
    args = ["leakage", "--month", "2026-03", "--db", march, "--org", ORG]
    misses = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["near_misses"]
    done = runner.invoke(app, [*args, "--csv"])
    assert done.exit_code == 0, done.stdout
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert sorted((r["patient_id"], r["code"]) for r in rows) == sorted(
        (m["patient_id"], m["code"]) for m in misses
    )
    assert runner.invoke(app, [*args, "--csv", "--json"]).exit_code != 0


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised() -> None:
    out = io.StringIO()
    rows = [["=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", "-5", "+1.25", 3, None, True, "plain"]]
    assert write_csv(rows, ["a"] * 12, out) == 1
    cells = list(csv.reader(io.StringIO(out.getvalue(), newline="")))[1]
    assert cells == [
        "'=1+1",
        "'+SUM(A1)",
        "'-2+3",
        "'@cmd",
        "'\tx",
        "'\rx",
        "-5",
        "+1.25",
        "3",
        "",
        "true",
        "plain",
    ]
    assert safe_cell("=cmd") == "'=cmd"


def test_piped_tables_are_not_wrapped_at_80_columns(march: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", "imports", "list", "--db", march, "--org", ORG],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    widths = [len(line) for line in done.stdout.splitlines()]
    assert max(widths) > 100  # batch id, time, source and six counts on one line
    assert sum(1 for line in done.stdout.splitlines() if "│" in line) == 1  # one row, one line

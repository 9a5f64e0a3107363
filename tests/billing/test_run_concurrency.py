"""The month run against other writers: one snapshot, one run of a month at a time.

Real databases, real processes: an import runs as ``caretally import`` in its own
process while a run is paused between two reads (or before its forked workers read
anything); a second run of the month runs in another thread, or as ``caretally bill``
in another process while the test holds the month's lock. Every check reads what the
run stored or what the command printed.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text

import caretally.billing.evaluate as evaluate
from caretally.billing.payers import PayerRules
from caretally.billing.run import RunError, bill_month, lock_month, month_lock_name, stored_decisions
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.store import schema
from caretally.store.db import lock_key, open_database
from tests.billing.test_month_run import NY, practice_records

MARCH = parse_month("2026-03")
RULES = PayerRules.load()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def loaded(db_url: str) -> str:
    engine = open_database(db_url)
    assert import_records(engine, "default", practice_records()).ok()
    engine.dispose()
    return db_url


def codes(lines: Any) -> set[tuple[str, str]]:
    return {(line.patient_id, line.code) for line in lines}


def cli_process(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


class Watched:
    """A command in its own process whose stderr is read as it comes, line by line."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.proc = cli_process(*args, env=env)
        self.lines: list[str] = []
        self.waiting = threading.Event()
        self.finished_at: datetime | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "waiting up to" in line:
                self.waiting.set()

    def wait(self, timeout: float = 120) -> tuple[int, str, str]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()  # stderr belongs to the reader thread
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        if self.finished_at is None:
            self.finished_at = datetime.now(UTC)
        return self.proc.returncode, out, "".join(self.lines)

    def done_within(self, seconds: float) -> bool:
        try:
            self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return False
        self.finished_at = datetime.now(UTC)
        return True


def more_days_for_b2(folder: Path) -> Path:
    """Twelve more days of B2's readings: 9 days become 21, so 99445 becomes 99454."""
    folder.mkdir()
    with (folder / "readings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "device_id", "measured_at", "type", "value", "unit", "transmission"])
        for n in range(12):
            when = datetime(2026, 2, 10 + n, 9, 0, tzinfo=NY).isoformat()
            writer.writerow(["B2", "DB2", when, "bp", "131/79", "mmHg", "auto"])
    return folder


@pytest.mark.parametrize("workers", [False, True], ids=["in-process", "forked-workers"])
def test_an_import_committing_during_a_run_is_wholly_out_of_it(
    loaded: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: bool
) -> None:
    """The run pauses after its snapshot (workers: before any worker reads; in process:
    between A1's range and B2's) while ``caretally import`` adds B2's readings.

    PostgreSQL: the import commits at once, mid-run; the run's snapshot does not see it.
    SQLite: the import waits, with its message, until the run has committed.
    Either way the run bills B2 on the data before the import, and a rerun after it.
    """
    monkeypatch.setattr(evaluate, "BATCH", 1)  # one range per patient: A1, B2, C3
    monkeypatch.setattr(evaluate, "PARALLEL_FROM", 1 if workers else 10**9)
    bundle = more_days_for_b2(tmp_path / "late")
    engine = open_database(loaded)
    postgres = engine.dialect.name == "postgresql"
    importer: list[Watched] = []

    def pause(done: int, total: int) -> None:
        if importer or done != (0 if workers else 1):
            return
        importer.append(Watched("import", str(bundle), "--db", loaded, "--json"))
        if postgres:
            assert importer[0].done_within(60), "nothing holds up an import on PostgreSQL"
        else:
            assert importer[0].waiting.wait(60), "the import says it waits for the run"

    run = bill_month(engine, "default", MARCH, RULES, progress=pause)
    run_ended = datetime.now(UTC)
    status, out, err = importer[0].wait()
    assert status == 0, err
    assert json.loads(out)["ok"] is True
    finished = importer[0].finished_at
    assert finished is not None
    if postgres:
        assert finished < run_ended, "the import committed while the run was going"
    else:
        assert finished > run_ended and "another caretally command is writing" in err

    assert ("B2", "99445") in codes(run.lines) and ("B2", "99454") not in codes(run.lines)
    stored = stored_decisions(engine, run.run_id, "B2")
    device = next(d for d in stored if d["code"] == "99445")
    assert device["measures"]["days"] == 9, "the stored evidence is the old side's too"

    again = bill_month(engine, "default", MARCH, RULES)
    assert again.outcome == "created"
    assert ("B2", "99454") in codes(again.lines) and ("B2", "99445") not in codes(again.lines)
    engine.dispose()


def test_two_runs_of_a_month_cannot_both_store(loaded: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run holds the month; a second one waits (and says so), then is refused after the
    timeout; a third waits for the first to commit and finds its run unchanged."""
    engine = open_database(loaded)
    holding, release = threading.Event(), threading.Event()
    first: dict[str, Any] = {}

    def hold(done: int, total: int) -> None:
        if done == 0:
            holding.set()
            assert release.wait(60)

    def first_run() -> None:
        first["run"] = bill_month(engine, "default", MARCH, RULES, progress=hold)

    worker = threading.Thread(target=first_run)
    worker.start()
    try:
        assert holding.wait(60)
        monkeypatch.setenv("CARETALLY_LOCK_TIMEOUT", "0.5")
        heard: list[str] = []
        with pytest.raises(RunError) as refused:
            bill_month(engine, "default", MARCH, RULES, on_wait=heard.append)
        problem = refused.value.problem
        assert problem.code == "month_busy" and problem.month == "2026-03"
        assert "nothing was stored" in problem.message and "CARETALLY_LOCK_TIMEOUT" in (problem.hint or "")
        assert refused.value.exit_code == 1
        assert len(heard) == 1 and "waiting up to 0.5 s" in heard[0]
        with pytest.raises(RunError, match="nothing was stored"):
            lock_month(engine, "default", "2026-03")

        monkeypatch.setenv("CARETALLY_LOCK_TIMEOUT", "60")
        second: dict[str, Any] = {}
        waited = threading.Event()

        def second_run() -> None:
            second["run"] = bill_month(engine, "default", MARCH, RULES, on_wait=lambda _: waited.set())

        follower = threading.Thread(target=second_run)
        follower.start()
        assert waited.wait(60), "the second run waits for the first"
        assert "run" not in second
    finally:
        release.set()
        worker.join(60)
    follower.join(60)
    assert first["run"].outcome == "created"
    assert second["run"].outcome == "unchanged" and second["run"].run_id == first["run"].run_id
    with engine.connect() as conn:
        stored = conn.execute(
            select(func.count())
            .select_from(schema.billing_runs)
            .where(schema.billing_runs.c.month == "2026-03")
        ).scalar()
    assert stored == 1, "one run of the month, however many asked"
    engine.dispose()


@pytest.mark.postgres
def test_postgres_holds_one_month_not_the_others(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The advisory lock is per organization and month: February bills while March is held."""
    engine = open_database(postgres_url)
    assert import_records(engine, "default", practice_records()).ok()
    holder = _hold_the_month(postgres_url)
    try:
        february = bill_month(engine, "default", parse_month("2026-02"), RULES, on_wait=pytest.fail)
        assert february.outcome == "created"
        monkeypatch.setenv("CARETALLY_LOCK_TIMEOUT", "0")  # 0: refused at once, no waiting
        with pytest.raises(RunError) as refused:
            bill_month(engine, "default", MARCH, RULES, on_wait=pytest.fail)
        assert refused.value.problem.code == "month_busy"
    finally:
        _let_go(holder)
        engine.dispose()


def _hold_the_month(url: str) -> Any:
    """Take what a run of default/2026-03 takes, from outside caretally: the test is the other run."""
    if url.startswith("sqlite"):
        import sqlite3

        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        return holder
    conn = create_engine(url).connect()
    conn.execute(select(func.pg_advisory_lock(lock_key(month_lock_name("default", "2026-03")))))
    conn.commit()
    return conn


def _let_go(holder: Any) -> None:
    if hasattr(holder, "total_changes"):  # sqlite3
        holder.execute("ROLLBACK")
    else:
        holder.execute(text("SELECT pg_advisory_unlock_all()"))
        holder.commit()
    holder.close()


def test_bill_waits_with_a_message_then_refuses_in_one_line(loaded: str) -> None:
    holder = _hold_the_month(loaded)
    try:
        text_run = Watched("bill", "--month", "2026-03", "--db", loaded, env={"CARETALLY_LOCK_TIMEOUT": "1"})
        json_run = Watched(
            "bill", "--month", "2026-03", "--db", loaded, "--json", env={"CARETALLY_LOCK_TIMEOUT": "1"}
        )
        status, _out, err = text_run.wait()
        json_status, json_out, json_err = json_run.wait()
    finally:
        _let_go(holder)
    assert status == 1 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "waiting up to 1 s" in lines[0] and "CARETALLY_LOCK_TIMEOUT" in lines[0]
    assert lines[1].startswith("caretally: ") and lines[1].endswith("nothing was stored")
    assert lines[2].startswith("hint: ") and len(lines) == 3
    assert json_status == 1 and "Traceback" not in json_err
    body = json.loads(json_out)
    assert body["ok"] is False
    (problem,) = body["problems"]
    assert problem["code"] == "month_busy" and problem["month"] == "2026-03" and problem["hint"]


def test_bill_waits_for_the_month_then_runs(loaded: str) -> None:
    holder = _hold_the_month(loaded)
    try:
        waiting = Watched(
            "bill", "--month", "2026-03", "--db", loaded, "--json", env={"CARETALLY_LOCK_TIMEOUT": "60"}
        )
        assert waiting.waiting.wait(60), "the second writer says it waits"
        assert waiting.proc.poll() is None
    finally:
        _let_go(holder)
    status, out, err = waiting.wait()
    assert status == 0, err
    assert json.loads(out)["outcome"] == "created"

"""What keeps a month run's memory flat in the practice's size, without changing its answers.

A created run no longer holds every claim line it made: ``RunResult.lines`` reads them
from the store when a caller looks, so they must be exactly the lines the engine made
for the run, field for field and in order. Forked workers are given a few ranges at a
time, so finished ranges cannot pile up in the run while it stores the earlier ones.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest

import caretally.billing.evaluate as evaluate
from caretally.billing.evaluate import _bounded_map, evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import (
    RUN_CACHE_KIB,
    BillingSettings,
    StoredLines,
    _directory,
    _small_cache,
    bill_month,
    claim_lines_for,
)
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize

MONTH = parse_month("2026-03")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("memory")
    synthesize(SynthConfig(patients=120, start=date(2026, 3, 1), months=1, seed=31), out)
    return out


def test_result_lines_are_the_lines_the_engine_made(
    bundle: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate, "BATCH", 17)  # several ranges, an uneven last one
    engine = open_database(db_url)
    assert import_bundle(engine, "default", bundle).ok()
    rules, settings = PayerRules.load(), BillingSettings()
    result = bill_month(engine, "default", MONTH, rules, settings)
    assert isinstance(result.lines, StoredLines) and result.lines._lines is None, "nothing read yet"
    # The lines the engine makes for the run, made again here in patient order.
    directory = _directory(engine, "default")
    made = [
        line
        for facts, decisions in evaluate_month(engine, "default", MONTH, rules, problems=[])
        for line in claim_lines_for(facts, decisions, rules, settings, directory, result.run_id)
    ]
    assert len(made) > 50, "the practice bills something"
    assert len(result.lines) == result.summary.lines == len(made)
    # Field for field, Decimals by their text too (the CLI's JSON prints them).
    assert [repr(x) for x in result.lines] == [repr(x) for x in made]
    assert result.lines == made and result.lines[3] == made[3] and list(result.lines[-2:]) == made[-2:]
    again = bill_month(engine, "default", MONTH, rules, settings)
    assert again.outcome == "unchanged" and again.run_id == result.run_id
    assert [repr(x) for x in again.lines] == [repr(x) for x in made]
    engine.dispose()


def test_workers_are_given_a_few_ranges_at_a_time() -> None:
    given: list[int] = []
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            given.append(i)
        time.sleep(0.002)
        return i * i

    with ThreadPoolExecutor(max_workers=3) as pool:
        taken = 0
        for got in _bounded_map(pool, work, range(40), ahead=4):
            assert got == taken * taken, "results come back in order"
            time.sleep(0.01)  # the taker is slower than the workers, as a run's writer can be
            with lock:
                assert max(given) < taken + 1 + 4, "no more than `ahead` ranges out beyond the one taken"
            taken += 1
    assert taken == 40 and sorted(given) == list(range(40))


def test_the_runs_write_transaction_has_a_small_cache_and_gives_it_back(sqlite_url: str) -> None:
    engine = open_database(sqlite_url)
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert driver is not None
        (before,) = driver.execute("PRAGMA cache_size").fetchone()
        assert before == -200000, "the store's cache for everything else"
        with _small_cache(conn):
            conn.begin()
            (during,) = driver.execute("PRAGMA cache_size").fetchone()
            conn.rollback()  # as an unchanged run ends
        (after,) = driver.execute("PRAGMA cache_size").fetchone()
    assert during == -RUN_CACHE_KIB and after == before
    engine.dispose()


def test_the_current_and_locked_run_are_found_reading_one_summary_each(bundle: Path, db_url: str) -> None:
    """A summary holds every warning of its run (145 MB at 100,000 synthetic patients): the
    runs a month run compares with are picked from their light columns, and only the picked
    run's summary is read."""
    from sqlalchemy import event

    from caretally.billing.records import void_run
    from caretally.billing.run import current_run, latest_locked, lock_month

    engine = open_database(db_url)
    assert import_bundle(engine, "default", bundle).ok()
    rules = PayerRules.load()
    first = bill_month(engine, "default", MONTH, rules)
    void_run(engine, "default", first.run_id)
    second = bill_month(engine, "default", MONTH, rules)
    lock_month(engine, "default", "2026-03")
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *rest: object) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(engine, "before_cursor_execute", seen)
    try:
        current = current_run(engine, "default", "2026-03")
        locked = latest_locked(engine, "default", "2026-03")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert current is not None and locked is not None
    assert current.run_id == locked.run_id == second.run_id
    assert current.summary == locked.summary and current.summary is not None
    assert current.summary["patients"] == second.summary.patients
    reading = [s for s in statements if "billing_runs.summary" in s]
    assert len(reading) == 2, statements
    assert all("billing_runs.run_id =" in s for s in reading), reading


def test_the_month_view_finds_the_locked_run_its_amendment_amends(bundle: Path, db_url: str) -> None:
    """The amended run is read by id (``run_by_id``), not picked from every run of the month."""
    from caretally.billing.run import lock_month
    from caretally.services.context import Actor
    from caretally.services.monthclose import month_view

    engine = open_database(db_url)
    assert import_bundle(engine, "default", bundle).ok()
    rules = PayerRules.load()
    locked = bill_month(engine, "default", MONTH, rules)
    lock_month(engine, "default", "2026-03")
    amendment = bill_month(engine, "default", MONTH, rules, BillingSettings(place_of_service="02"))
    assert amendment.amends_run_id == locked.run_id
    view = month_view(engine, Actor(org_id="default", actor="cli:test", role=None), "2026-03")
    assert view.run is not None and view.run.run_id == amendment.run_id
    assert view.changes == amendment.changes and view.changes, "every line's place of service changed"

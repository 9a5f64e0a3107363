"""Migration 0019 moves a run's warnings out of its summary into its patients' rows.

Runs are made at head — a full run and an incremental one on top of it, whose carried
patients' warnings refer to the first run's rows — then the database is taken back to 0018, where
each summary holds its warnings as a list again (what runs stored before looked like),
and brought to head: every run reads the same warnings in the same order, its summary
the same counts, and ``db verify`` passes before and after.
"""

from __future__ import annotations

import random
from pathlib import Path

from alembic import command
from sqlalchemy import func, inspect, select

from caretally.billing.incremental import bill_month_incremental
from caretally.billing.integrity import verify_database
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, stored_warnings
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store import schema
from caretally.store.db import alembic_config, current_revision, open_database, upgrade
from tests.billing.test_incremental import _ingest_round
from tests.billing.test_run_warnings import MONTH, ORG
from tests.billing.test_run_warnings import bundle as bundle  # the fixture


def _summaries(engine) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    r = schema.billing_runs
    with engine.connect() as conn:
        return dict(conn.execute(select(r.c.run_id, r.c.summary)).all())


def _references(engine, run_id: str) -> int:  # type: ignore[no-untyped-def]
    w = schema.run_warnings
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(w.c.run_id == run_id, w.c.stored_in.is_not(None))
        ).scalar_one()


def test_runs_keep_their_warnings_across_migration_0019(db_url: str, bundle: Path) -> None:
    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules, month = PayerRules.load(), parse_month(MONTH)
    first = bill_month(engine, ORG, month, rules)
    _ingest_round(engine, random.Random(3), 0)
    second, how = bill_month_incremental(engine, ORG, month, rules)
    assert how.mode == "incremental", how
    runs = (first.run_id, second.run_id)
    before = {run: stored_warnings(engine, run) for run in runs}
    assert all(page.total > 20 for page in before.values())
    summaries = _summaries(engine)
    assert _references(engine, second.run_id) > 0
    assert verify_database(engine, ORG).ok

    command.downgrade(alembic_config(engine), "0018")
    assert current_revision(engine) == "0018"
    assert "run_warnings" not in inspect(engine).get_table_names()
    old = _summaries(engine)
    for run in runs:
        assert "warnings_total" not in old[run]
        assert old[run]["warnings"] == [w.to_json() for w in before[run].items]
    assert verify_database(engine, ORG).ok

    upgrade(engine)
    assert current_revision(engine) == "0019"
    # The incremental run's carried patients referred to the first run's rows; migrated,
    # every run's rows hold their own arrays.
    assert _references(engine, second.run_id) == 0
    assert {run: stored_warnings(engine, run) for run in runs} == before
    assert _summaries(engine) == summaries
    assert verify_database(engine, ORG).ok
    engine.dispose()

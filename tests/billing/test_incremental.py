"""``bill --incremental`` stores what a full ``bill`` of the same state stores (issue 13 item 4).

A generated practice is billed in full; then, round after round, a few readings, a time
entry and a retraction are ingested through the live paths, the month is billed
incrementally, the incremental run is voided and the month billed in full again from the
same state. The two runs must agree byte for byte: claim lines in order, stored decisions,
summary and all three digests. With nothing ingested the incremental run evaluates nobody.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, String, cast, select

from caretally.billing.incremental import bill_month_incremental
from caretally.billing.payers import PayerRules
from caretally.billing.records import void_run
from caretally.billing.run import BillingSettings, RunResult, bill_month
from caretally.dates import parse_month
from caretally.ingest import import_bundle, import_records
from caretally.ingest.time_entries import create_time_entries
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize

ORG = "default"
MONTH = "2026-04"
NOW = datetime(2026, 5, 3, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("incr-practice")
    synthesize(SynthConfig(patients=80, start=date(2026, 3, 1), months=2, seed=13, lead_in_days=29), out)
    return out


def _stored(engine: Engine, run_id: str) -> dict[str, Any]:
    """Everything a run stored, without its id and the rows' own ids."""
    r, d, c = schema.billing_runs, schema.run_decisions, schema.claim_lines
    with engine.connect() as conn:
        run = conn.execute(select(r).where(r.c.run_id == run_id)).mappings().one()
        decisions = conn.execute(
            select(d.c.patient_id, d.c.facts_digest, d.c.billable_count, cast(d.c.decisions, String))
            .where(d.c.run_id == run_id)
            .order_by(d.c.patient_id)
        ).all()
        lines = [
            {k: v for k, v in row.items() if k not in ("id", "run_id")}
            for row in conn.execute(select(c).where(c.c.run_id == run_id).order_by(c.c.id)).mappings()
        ]
    return {
        "digests": (run["input_digest"], run["lines_digest"], run["decisions_digest"]),
        "summary": run["summary"],
        "decisions": [tuple(x) for x in decisions],
        "lines": lines,
    }


def _ingest_round(engine: Engine, rng: random.Random, round_no: int) -> None:
    """A few more reading days, one more time entry and one retracted reading, all in April."""
    rd, te = schema.readings, schema.time_entries
    with engine.connect() as conn:
        april = (date(2026, 4, 1), date(2026, 4, 30))
        readings = conn.execute(
            select(rd).where(rd.c.org_id == ORG, rd.c.local_date.between(*april)).order_by(rd.c.reading_id)
        ).mappings().all()  # fmt: skip
        entries = conn.execute(
            select(te).where(te.c.org_id == ORG, te.c.local_date.between(*april)).order_by(te.c.entry_id)
        ).mappings().all()  # fmt: skip
    new = []
    for i, base in enumerate(rng.sample(list(readings), 3)):
        shifted = base["measured_at"] + timedelta(days=rng.choice([-2, -1, 1, 2]))
        if not date(2026, 4, 2) <= shifted.date() <= date(2026, 4, 28):
            shifted = base["measured_at"]
        new.append(
            {
                "reading_id": f"incr-{round_no}-{i}",
                "patient_id": base["patient_id"],
                "device_id": base["device_id"],
                "measured_at": shifted.isoformat(),
                "type": base["type"],
                "value": str(base["value"]),
                "unit": base["unit"],
                "transmission": base["transmission"],
            }
        )
    assert import_records(engine, ORG, {"readings": new}, live=True, now=NOW).stored
    base = rng.choice(list(entries))
    entry = {
        "entry_id": f"incr-te-{round_no}",
        "patient_id": base["patient_id"],
        "practitioner_id": base["practitioner_id"],
        "started_at": (base["started_at"] + timedelta(hours=3)).isoformat(),
        "activity": base["activity"],
        "interactive": "true" if base["interactive"] else "false",
        "seconds": str(base["seconds"] + 600),
        "program": base["program"] or "",
        "modality": base["modality"] or "",
    }
    done = create_time_entries(engine, ORG, [entry], now=NOW, actor="test")
    assert done.ok(), [p.message for p in done.problems]
    gone = rng.choice(list(readings))
    retraction = {"file": "readings", "id": gone["reading_id"], "reason": "wrong patient"}
    assert import_records(engine, ORG, {"retractions": [retraction]}, live=True, now=NOW).stored


def _full_of_same_state(engine: Engine, rules: PayerRules, incremental: RunResult) -> RunResult:
    void_run(engine, ORG, incremental.run_id)
    full = bill_month(engine, ORG, parse_month(MONTH), rules)
    assert full.outcome == "created"
    return full


def test_incremental_runs_store_what_full_runs_store(db_url: str, bundle: Path) -> None:
    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)

    first, how = bill_month_incremental(engine, ORG, period, rules)
    assert how.mode == "full" and "no stored run" in how.reason
    assert first.outcome == "created" and first.summary.lines > 0

    again, how = bill_month_incremental(engine, ORG, period, rules)
    assert (how.mode, how.evaluated, again.outcome) == ("unchanged", 0, "unchanged")
    assert again.run_id == first.run_id

    rng = random.Random(7)
    for round_no in range(3):
        _ingest_round(engine, rng, round_no)
        result, how = bill_month_incremental(engine, ORG, period, rules)
        assert how.mode == "incremental", how
        assert 0 < how.evaluated < first.summary.patients and how.carried > 0, how
        assert result.outcome == "created"
        made = _stored(engine, result.run_id)
        full = _full_of_same_state(engine, rules, result)
        assert made == _stored(engine, full.run_id)
        assert [x.code for x in result.lines] == [x.code for x in full.lines]
    engine.dispose()


def test_changed_settings_or_a_bulk_load_make_the_full_run_and_say_why(sqlite_url: str, bundle: Path) -> None:
    engine = open_database(sqlite_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)
    bill_month(engine, ORG, period, rules)
    telehealth = BillingSettings(place_of_service="02")
    _, how = bill_month_incremental(engine, ORG, period, rules, telehealth)
    assert how.mode == "full" and "settings" in how.reason
    assert import_bundle(engine, ORG, bundle).ok()  # the same bundle again: nothing changed
    _, how = bill_month_incremental(engine, ORG, period, rules, telehealth)
    assert (how.mode, how.evaluated) == ("unchanged", 0), how
    rd = schema.readings
    with engine.connect() as conn:
        base = conn.execute(
            select(rd).where(rd.c.local_date == date(2026, 4, 15)).order_by(rd.c.reading_id)
        ).first()
    assert base is not None
    reading = {
        n: str(getattr(base, n)) for n in ("patient_id", "device_id", "type", "value", "unit", "transmission")
    }
    reading |= {"reading_id": "bulk-1", "measured_at": (base.measured_at + timedelta(minutes=5)).isoformat()}
    assert import_records(engine, ORG, {"readings": [reading]}).stored  # not live: not tracked row by row
    _, how = bill_month_incremental(engine, ORG, period, rules, telehealth)
    assert how.mode == "full" and "whole organization" in how.reason, how
    engine.dispose()

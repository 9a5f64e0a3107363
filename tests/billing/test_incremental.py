"""``bill --incremental`` stores what a full ``bill`` of the same state stores (issue 13 item 4).

A generated practice is billed in full; then, round after round, a few readings, a time
entry and a retraction are ingested through the live paths, the month is billed
incrementally, the incremental run is voided and the month billed in full again from the
same state. The two runs must agree byte for byte: claim lines in order, stored decisions,
summary and all three digests. With nothing ingested the incremental run evaluates nobody.
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, String, cast, func, select, update

from caretally.billing.incremental import bill_month_incremental
from caretally.billing.integrity import verify_database
from caretally.billing.payers import PayerRules
from caretally.billing.records import void_run
from caretally.billing.run import (
    BillingSettings,
    RunResult,
    bill_month,
    decision_rows,
    line_content,
    stored_decisions,
    stored_warnings,
)
from caretally.dates import parse_month
from caretally.ingest import import_bundle, import_records
from caretally.ingest.time_entries import create_time_entries
from caretally.store import schema
from caretally.store.db import JsonText, open_database
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
        # A carried patient's row refers to the row holding its text: read as every reader does.
        joined, text = decision_rows(text=True)
        decisions = conn.execute(
            select(d.c.patient_id, d.c.facts_digest, d.c.billable_count, text)
            .select_from(joined)
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
        # What explain, packets and the month views show of the run.
        "explained": stored_decisions(engine, run_id),
        # Its warnings, in patient order (carried ones read through the reference).
        "warnings": stored_warnings(engine, run_id).items,
    }


def _texts_stored(engine: Engine, run_id: str) -> int:
    """How many of the run's rows hold their own decisions text (the others refer)."""
    d = schema.run_decisions
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).where(d.c.run_id == run_id, d.c.decisions.is_not(None))
        ).scalar_one()


def _later_entry(base: Mapping[str, Any], entry_id: str, more_seconds: int) -> dict[str, str]:
    """A new time entry of ``base``'s patient and performer, three hours later and longer."""
    return {
        "entry_id": entry_id,
        "patient_id": base["patient_id"],
        "practitioner_id": base["practitioner_id"],
        "started_at": (base["started_at"] + timedelta(hours=3)).isoformat(),
        "activity": base["activity"],
        "interactive": "true" if base["interactive"] else "false",
        "seconds": str(base["seconds"] + more_seconds),
        "program": base["program"] or "",
        "modality": base["modality"] or "",
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
    entry = _later_entry(base, f"incr-te-{round_no}", 600)
    done = create_time_entries(engine, ORG, [entry], now=NOW, actor="test")
    assert done.ok(), [p.message for p in done.problems]
    gone = rng.choice(list(readings))
    retraction = {"file": "readings", "id": gone["reading_id"], "reason": "wrong patient"}
    assert import_records(engine, ORG, {"retractions": [retraction]}, live=True, now=NOW).stored


def _drop_a_patient(engine: Engine, bundle: Path, first: RunResult) -> str:
    """Retract the only enrollment of a billed patient in the middle of the practice: the
    patient leaves the month's population, and the lines of the base run around theirs
    are no longer one stretch (the carry goes by patient)."""
    with (bundle / "enrollments.csv").open() as f:
        rows = list(csv.DictReader(f))
    counts = Counter(r["patient_id"] for r in rows)
    billed = sorted({line.patient_id for line in first.lines})
    middle = billed[len(billed) // 3 :]
    row = next(r for r in rows if counts[r["patient_id"]] == 1 and r["patient_id"] in middle)
    retraction = {"file": "enrollments", "id": row["enrollment_id"], "reason": "enrolled in error"}
    done = import_records(engine, ORG, {"retractions": [retraction]}, live=True, now=NOW)
    assert done.stored, [p.message for p in done.problems]
    return row["patient_id"]


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
        if round_no == 1:
            gone = _drop_a_patient(engine, bundle, first)
        result, how = bill_month_incremental(engine, ORG, period, rules)
        if round_no == 1:
            assert gone not in {line.patient_id for line in result.lines}
        assert how.mode == "incremental", how
        assert 0 < how.evaluated < first.summary.patients and how.carried > 0, how
        assert result.outcome == "created"
        # Only the re-evaluated patients were written out; everyone else is a reference.
        assert _texts_stored(engine, result.run_id) == how.evaluated
        made = _stored(engine, result.run_id)
        assert verify_database(engine, ORG).ok
        full = _full_of_same_state(engine, rules, result)
        assert made == _stored(engine, full.run_id)
        assert [x.code for x in result.lines] == [x.code for x in full.lines]
        assert [line_content(x) for x in result.lines] == [line_content(x) for x in full.lines]
    engine.dispose()


def test_chained_incremental_runs_refer_to_the_row_with_the_text_and_verify_catches_its_edit(
    db_url: str, bundle: Path
) -> None:
    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)
    first = bill_month(engine, ORG, period, rules)
    rng = random.Random(11)
    runs = [first.run_id]
    for round_no in range(2):
        _ingest_round(engine, rng, round_no)
        result, how = bill_month_incremental(engine, ORG, period, rules)
        assert how.mode == "incremental", how
        runs.append(result.run_id)
    d = schema.run_decisions
    with engine.connect() as conn:
        refs = dict(
            conn.execute(
                select(d.c.patient_id, d.c.stored_in).where(
                    d.c.run_id == runs[-1], d.c.stored_in.is_not(None)
                )
            ).all()
        )
        owners = set(refs.values())
        with_text = set(conn.execute(select(d.c.run_id).where(d.c.decisions.is_not(None))).scalars())
    # One hop: a reference names a row that holds text, never another reference.
    assert refs and owners <= with_text and owners <= set(runs[:-1])
    assert verify_database(engine, ORG).ok
    # Edit the shared row of a patient carried twice: every run that reads it must fail.
    patient = next(p for p, owner in sorted(refs.items()) if owner == first.run_id)
    with engine.begin() as conn:
        conn.execute(
            update(d)
            .where(d.c.run_id == first.run_id, d.c.patient_id == patient)
            .values(
                decisions=stored_decisions_json_text(conn, first.run_id, patient).replace("true", "false", 1)
            )
        )
    report = verify_database(engine, ORG)
    failed = {c.run_id for c in report.runs if c.digests["decisions"] == "mismatch"}
    assert failed == set(runs), failed
    engine.dispose()


def stored_decisions_json_text(conn: Any, run_id: str, patient_id: str) -> JsonText:
    d = schema.run_decisions
    value = conn.execute(
        select(cast(d.c.decisions, String)).where(d.c.run_id == run_id, d.c.patient_id == patient_id)
    ).scalar_one()
    assert "true" in value
    return JsonText(value)


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


def _one_more_reading_for(engine: Engine, patients: list[str], tag: str) -> None:
    """A reading on a day of April each of ``patients`` had none, through the live path."""
    rd = schema.readings
    with engine.connect() as conn:
        rows = conn.execute(
            select(rd)
            .where(rd.c.org_id == ORG, rd.c.patient_id.in_(patients))
            .where(rd.c.local_date.between(date(2026, 4, 1), date(2026, 4, 30)))
            .order_by(rd.c.patient_id, rd.c.measured_at)
        ).mappings().all()  # fmt: skip
    items = []
    for patient in patients:
        mine = [r for r in rows if r["patient_id"] == patient]
        days = {r["local_date"] for r in mine}
        base = mine[0]
        shift = next(s for s in range(1, 30) if base["local_date"] + timedelta(days=s) not in days)
        items.append(
            {
                "reading_id": f"{tag}-{patient}",
                "patient_id": patient,
                "device_id": base["device_id"],
                "measured_at": (base["measured_at"] + timedelta(days=shift)).isoformat(),
                "type": base["type"],
                "value": str(base["value"]),
                "unit": base["unit"],
                "transmission": base["transmission"],
            }
        )
    assert import_records(engine, ORG, {"readings": items}, live=True, now=NOW).stored


class _Reads:
    """What a run reads: SQL statements sent (every engine, forked workers aside) and stored
    claim lines and decision texts turned back into Python objects."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import caretally.billing.incremental as incremental

        self.statements = 0
        self.lines = 0
        self.texts = 0
        real_line, real_part = incremental.stored_line, incremental.decisions_digest_part

        def line(*args: Any, **kwargs: Any) -> Any:
            self.lines += 1
            return real_line(*args, **kwargs)

        def part(*args: Any, **kwargs: Any) -> Any:
            self.texts += 1
            return real_part(*args, **kwargs)

        monkeypatch.setattr(incremental, "stored_line", line)
        monkeypatch.setattr(incremental, "decisions_digest_part", part)

    def statement(self, *_: Any) -> None:
        self.statements += 1


def test_what_an_incremental_run_reads_does_not_grow_with_the_patients_it_carries(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same three patients get one more reading in a practice of 30 and one of 120: the
    incremental run sends as many statements in both, reads back the three patients' old
    lines and decision texts only, and still stores what the full run stores."""
    seen: dict[int, tuple[int, int, int, int]] = {}
    with _another(db_url, tmp_path) as second:
        for size, url in ((30, db_url), (120, second)):
            seen[size] = _reads_of_one_practice(url, tmp_path / f"practice-{size}", size, monkeypatch)
    assert seen[120][3] > 3 * seen[30][3]
    assert seen[120][0] == seen[30][0], seen


def _reads_of_one_practice(
    url: str, out: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, int, int, int]:
    """(statements, old lines read, decision texts read, patients) of one incremental run."""
    from sqlalchemy import event

    synthesize(SynthConfig(patients=size, start=date(2026, 3, 1), months=2, seed=5, lead_in_days=29), out)
    engine = open_database(url, ORG)
    assert import_bundle(engine, ORG, out).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)
    first = bill_month(engine, ORG, period, rules)
    rd = schema.readings
    with engine.connect() as conn:
        measured = set(
            conn.execute(select(rd.c.patient_id).where(rd.c.local_date >= date(2026, 4, 1))).scalars()
        )
    billed = sorted({line.patient_id for line in first.lines} & measured)
    chosen = [billed[0], billed[len(billed) // 2], billed[-1]]
    _one_more_reading_for(engine, chosen, f"reads-{size}")
    with monkeypatch.context() as patch:
        reads = _Reads(patch)
        event.listen(Engine, "before_cursor_execute", reads.statement)
        try:
            result, how = bill_month_incremental(engine, ORG, period, rules)
        finally:
            event.remove(Engine, "before_cursor_execute", reads.statement)
    assert (how.mode, how.evaluated, how.carried) == ("incremental", 3, first.summary.patients - 3), how
    old_lines = sum(1 for line in first.lines if line.patient_id in chosen)
    assert (reads.lines, reads.texts) == (old_lines, 3)
    assert first.summary.lines - old_lines > 3 * old_lines  # most lines were carried, unread
    made = _stored(engine, result.run_id)
    assert made == _stored(engine, _full_of_same_state(engine, rules, result).run_id)
    engine.dispose()
    return reads.statements, reads.lines, reads.texts, first.summary.patients


@contextmanager
def _another(db_url: str, tmp_path: Path) -> Iterator[str]:
    """A second empty database of the same kind as ``db_url`` (dropped after, on PostgreSQL)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(db_url)
    name = f"{url.database}_b"
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def test_a_base_run_with_chained_digests_makes_the_full_run(sqlite_url: str, bundle: Path) -> None:
    """A run stored before summed digests has no digest to update: the full run says so."""
    engine = open_database(sqlite_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)
    first = bill_month(engine, ORG, period, rules)
    r = schema.billing_runs
    with engine.begin() as conn:
        conn.execute(update(r).where(r.c.run_id == first.run_id).values(digest_scheme=None))
    _ingest_round(engine, random.Random(3), 0)
    _, how = bill_month_incremental(engine, ORG, period, rules)
    assert how.mode == "full" and "summed digests" in how.reason, how
    engine.dispose()


def _one_more_entry(engine: Engine, tag: str) -> None:
    """A longer copy of an April time entry, three hours later: new facts, no new reading."""
    te = schema.time_entries
    with engine.connect() as conn:
        base = conn.execute(
            select(te)
            .where(te.c.org_id == ORG, te.c.local_date.between(date(2026, 4, 1), date(2026, 4, 27)))
            .order_by(te.c.entry_id)
            .limit(1)
        ).mappings().one()  # fmt: skip
    entry = _later_entry(base, f"incr-te-{tag}", 1200)
    done = create_time_entries(engine, ORG, [entry], now=NOW, actor="test")
    assert done.ok(), [p.message for p in done.problems]


def test_the_reading_mark_follows_new_readings_and_a_retracted_newest_one(db_url: str, bundle: Path) -> None:
    """The run's reading mark (``summary.readings_through``) is read from the base's mark
    on; when the base's newest reading is retracted and nothing newer came, the mark falls
    back to the organization's newest, as a full run records it."""
    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)
    first = bill_month(engine, ORG, period, rules)
    rd = schema.readings
    with engine.connect() as conn:
        newest = (
            conn.execute(select(rd).where(rd.c.org_id == ORG).order_by(rd.c.id.desc()).limit(1))
            .mappings()
            .one()
        )
    assert first.summary.readings_through == newest["id"]
    retraction = {"file": "readings", "id": newest["reading_id"], "reason": "wrong patient"}
    assert import_records(engine, ORG, {"retractions": [retraction]}, live=True, now=NOW).stored
    _one_more_entry(engine, "mark")  # so that the run is not "unchanged": no reading came
    result, how = bill_month_incremental(engine, ORG, period, rules)
    assert how.mode == "incremental", how
    assert result.summary.readings_through is not None and result.summary.readings_through < newest["id"]
    made = _stored(engine, result.run_id)
    assert made == _stored(engine, _full_of_same_state(engine, rules, result).run_id)

    _ingest_round(engine, random.Random(3), 0)
    result, how = bill_month_incremental(engine, ORG, period, rules)
    assert how.mode == "incremental", how
    made = _stored(engine, result.run_id)
    assert made["summary"]["readings_through"] > newest["id"]
    assert made == _stored(engine, _full_of_same_state(engine, rules, result).run_id)
    engine.dispose()


def test_touched_patients_evaluated_in_forked_workers_store_what_one_process_stores(
    db_url: str, bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From ``PARALLEL_FROM`` touched patients on, the incremental run forks workers as a cold
    run does, one range each; the run stored is still the full run's."""
    import caretally.billing.evaluate as evaluate
    import caretally.billing.incremental as incremental

    pools: list[int] = []

    class CountedPool(evaluate.ProcessPoolExecutor):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pools.append(kwargs.get("max_workers") or 0)
            super().__init__(*args, **kwargs)

    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    rules = PayerRules.load()
    period = parse_month(MONTH)
    bill_month(engine, ORG, period, rules)  # 80 patients: in one process
    monkeypatch.setattr(incremental, "PARALLEL_FROM", 2)
    monkeypatch.setattr(evaluate, "ProcessPoolExecutor", CountedPool)
    monkeypatch.setattr(evaluate.os, "cpu_count", lambda: 2)
    _ingest_round(engine, random.Random(5), 0)
    result, how = bill_month_incremental(engine, ORG, period, rules)
    assert how.mode == "incremental" and how.evaluated >= 2, how
    assert pools == [2]
    made = _stored(engine, result.run_id)
    assert made == _stored(engine, _full_of_same_state(engine, rules, result).run_id)
    engine.dispose()

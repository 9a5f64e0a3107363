"""The kept worklist (``caretally.worklist_state``) answers what ``build_worklist`` answers.

A generated practice is imported as it stood on the 20th; then, example after example,
hypothesis picks rounds of live ingest (more reading days, a time entry, a retraction).
After each round the state is refreshed and its rows are compared with a cold
``build_worklist`` of the same data: the same rows in the same order, the same JSON byte
for byte, and the web's patients-together order, staff and program filters and totals.
Refreshes evaluate only the touched patients (counted at the engine); another day, rule
book, billing history or an organization-wide touch rebuild the state.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

import caretally.billing.evaluate as evaluate_module
from caretally import worklist_state as ws
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.ingest.time_entries import create_time_entries
from caretally.model import Program
from caretally.services.care import patients_together
from caretally.store import schema
from caretally.store.db import open_database
from caretally.worklist import WorklistRow, build_worklist
from tests.worklist.conftest import AS_OF, ORG, copy_database, import_until

NOW = datetime(2026, 3, 21, 12, 0, tzinfo=UTC)
RULES = PayerRules.load()


def _ingest_round(engine: Engine, rng: random.Random, tag: str) -> None:
    """A few more reading days, one more time entry and one retracted reading, before the 20th."""
    rd, te = schema.readings, schema.time_entries
    window = (date(2026, 3, 1), date(2026, 3, 19))
    with engine.connect() as conn:
        readings = conn.execute(
            select(rd).where(rd.c.org_id == ORG, rd.c.local_date.between(*window)).order_by(rd.c.reading_id)
        ).mappings().all()  # fmt: skip
        entries = conn.execute(
            select(te).where(te.c.org_id == ORG, te.c.local_date.between(*window)).order_by(te.c.entry_id)
        ).mappings().all()  # fmt: skip
    new = []
    for i, base in enumerate(rng.sample(list(readings), rng.randint(1, 4))):
        shifted = base["measured_at"] + timedelta(days=rng.choice([-3, -1, 1, 2]))
        if not date(2026, 3, 2) <= shifted.date() <= date(2026, 3, 18):
            shifted = base["measured_at"]
        new.append(
            {
                "reading_id": f"wl-{tag}-{i}",
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
    if rng.random() < 0.8:
        base = rng.choice(list(entries))
        entry = {
            "entry_id": f"wl-te-{tag}",
            "patient_id": base["patient_id"],
            "practitioner_id": base["practitioner_id"],
            "started_at": (base["started_at"] + timedelta(hours=3)).isoformat(),
            "activity": base["activity"],
            "interactive": rng.choice(["true", "false"]),
            "seconds": str(base["seconds"] + rng.choice([60, 600, 1200])),
            "program": base["program"] or "",
            "modality": "phone",
        }
        done = create_time_entries(engine, ORG, [entry], now=NOW, actor="test")
        assert done.ok(), [p.message for p in done.problems]
    if rng.random() < 0.5:
        gone = rng.choice(list(readings))
        retraction = {"file": "readings", "id": gone["reading_id"], "reason": "wrong patient"}
        assert import_records(engine, ORG, {"retractions": [retraction]}, live=True, now=NOW).stored


def _assigned(engine: Engine) -> dict[str, str | None]:
    e = schema.enrollments
    with engine.connect() as conn:
        return dict(
            conn.execute(
                select(e.c.enrollment_id, e.c.billing_practitioner_id).where(e.c.org_id == ORG)
            ).all()
        )


def _dump(rows: list[WorklistRow]) -> str:
    return json.dumps([r.to_json() for r in rows])


def assert_kept_equals_cold(engine: Engine, sid: str, as_of: date = AS_OF, rules: PayerRules = RULES) -> int:
    """Every reader of the kept state against the cold worklist; answers the rows compared."""
    cold = build_worklist(engine, ORG, as_of, rules)
    opened = [r for r in cold if r.next_step is not None]
    assigned = _assigned(engine)
    with engine.connect() as conn:
        kept = ws.ranked(conn, ORG, sid, include_done=True)
        assert [ws.row_body(r) for r in kept] == [ws.row_body(r) for r in cold]
        assert kept == cold
        assert _dump(kept) == _dump(cold)
        assert ws.ranked(conn, ORG, sid) == opened
        assert ws.ranked(conn, ORG, sid, offset=3, limit=5) == opened[3:8]
        assert ws.together(conn, ORG, sid) == patients_together(opened)
        assert ws.together(conn, ORG, sid, offset=2, limit=7) == patients_together(opened)[2:9]
        value = sum((r.value_at_stake for r in opened), Decimal("0"))
        assert ws.totals(conn, ORG, sid) == (len(opened), value)
        in_use = {assigned.get(r.enrollment_id) for r in cold}
        assert ws.practitioners_in_use(conn, ORG, sid) == in_use
        for staff in sorted(p for p in in_use if p):
            mine = [r for r in opened if assigned.get(r.enrollment_id) == staff]
            assert ws.together(conn, ORG, sid, staff=staff) == patients_together(mine)
            assert ws.totals(conn, ORG, sid, staff=staff) == (
                len(mine),
                sum((r.value_at_stake for r in mine), Decimal("0")),
            )
        for program in sorted({r.program for r in cold}):
            theirs = [r for r in opened if r.program is program]
            assert ws.ranked(conn, ORG, sid, program=program, include_done=True) == [
                r for r in cold if r.program is program
            ]
            assert ws.together(conn, ORG, sid, program=program) == patients_together(theirs)
            staff = next((assigned.get(r.enrollment_id) for r in theirs), None)
            if staff is not None:
                both = [r for r in theirs if assigned.get(r.enrollment_id) == staff]
                assert ws.together(conn, ORG, sid, program=program, staff=staff) == patients_together(both)
    return len(cold)


class Evaluations:
    """Counts the patient-months the rules engine evaluates (wrapping, not replacing, it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.patients: list[str] = []
        real = evaluate_module.evaluate_patient_month

        def counted(facts: Any, book: Any) -> Any:
            self.patients.append(facts.patient_id)
            return real(facts, book)

        monkeypatch.setattr(evaluate_module, "evaluate_patient_month", counted)

    def take(self) -> set[str]:
        seen = set(self.patients)
        self.patients.clear()
        return seen


def _touched_after(engine: Engine, after: int) -> set[str]:
    t = schema.month_touches
    with engine.connect() as conn:
        return set(conn.execute(select(t.c.patient_id).where(t.c.org_id == ORG, t.c.id > after)).scalars())


@settings(
    max_examples=4,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.integers(0, 2**16), rounds=st.integers(1, 3))
def test_kept_rows_are_the_cold_worklist_after_random_ingests(
    kept_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, rounds: int
) -> None:
    engine = copy_database(kept_template, tmp_path / uuid.uuid4().hex)  # one folder per example
    counted = Evaluations(monkeypatch)
    first = ws.refresh(engine, ORG, AS_OF, RULES)
    assert first.mode == "full"
    everyone = counted.take()
    assert assert_kept_equals_cold(engine, first.state_id) > 0
    counted.take()
    assert ws.refresh(engine, ORG, AS_OF, RULES).mode == "fresh"
    assert counted.take() == set()
    rng = random.Random(seed)
    for n in range(rounds):
        mark = ws.touches_mark(engine, ORG)
        _ingest_round(engine, rng, f"{seed}-{n}")
        touched = _touched_after(engine, mark)
        done = ws.refresh(engine, ORG, AS_OF, RULES)
        evaluated = counted.take()
        assert done.mode == "incremental", done
        assert evaluated and evaluated <= touched, (evaluated, touched)
        assert len(evaluated) < len(everyone)
        assert_kept_equals_cold(engine, done.state_id)
        counted.take()
    engine.dispose()


def test_a_program_filter_is_the_program_rows_of_the_whole_worklist(
    kept_template: Path, tmp_path: Path
) -> None:
    """The kept state stores every program and readers filter; that equals asking the engine
    for one program, as ``build_worklist(program=…)`` (the former readers) did."""
    engine = copy_database(kept_template, tmp_path)
    cold = build_worklist(engine, ORG, AS_OF, RULES)
    programs = {r.program for r in cold}
    assert {Program.RPM, Program.CCM} <= programs
    for program in programs:
        assert build_worklist(engine, ORG, AS_OF, RULES, program=program) == [
            r for r in cold if r.program is program
        ]
    engine.dispose()


def test_another_day_rule_book_history_or_a_bulk_load_rebuild(kept_template: Path, tmp_path: Path) -> None:
    engine = copy_database(kept_template, tmp_path)
    today = ws.refresh(engine, ORG, AS_OF, RULES)
    assert today.mode == "full"

    tomorrow = ws.refresh(engine, ORG, AS_OF + timedelta(days=1), RULES)
    assert tomorrow.mode == "full" and tomorrow.state_id != today.state_id
    assert_kept_equals_cold(engine, tomorrow.state_id, AS_OF + timedelta(days=1))

    overlays = {"commercial": "example-commercial"}
    other = PayerRules.load(overlays)
    assert other.content_hash != RULES.content_hash
    theirs = ws.refresh(engine, ORG, AS_OF, other, overlays)
    assert theirs.mode == "full" and theirs.state_id not in (today.state_id, tomorrow.state_id)
    assert_kept_equals_cold(engine, theirs.state_id, AS_OF, other)
    assert {(a, key) for a, _, key in ws.kept_states(engine, ORG)} == {
        (AS_OF, RULES.content_hash),
        (AS_OF + timedelta(days=1), RULES.content_hash),
        (AS_OF, other.content_hash),
    }

    bill_month(engine, ORG, parse_month("2026-02"), RULES)  # the billed history of earlier months
    again = ws.refresh(engine, ORG, AS_OF, RULES)
    assert (again.mode, again.reason) == ("full", "the billing history of earlier months changed")
    assert_kept_equals_cold(engine, again.state_id)

    mark = ws.touches_mark(engine, ORG)
    with engine.begin() as conn:  # what an untracked bulk load or a practitioner change records
        conn.execute(schema.month_touches.insert().values(org_id=ORG, patient_id="*", month="*"))
    bulk = ws.refresh(engine, ORG, AS_OF, RULES)
    assert (bulk.mode, bulk.reason) == ("full", "a change touched the whole organization")
    assert bulk.touches_through > mark

    for as_of in (AS_OF + timedelta(days=d) for d in range(2, 2 + ws.MAX_STATES)):
        ws.refresh(engine, ORG, as_of, RULES)
    assert len(ws.kept_states(engine, ORG)) == ws.MAX_STATES
    engine.dispose()


def test_refreshes_of_touched_patients_only_on_both_databases(
    db_url: str, kept_practice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same agreement on PostgreSQL (``C``-collated ids, the SHARE-locked watermark)."""
    engine = open_database(db_url, ORG)
    import_until(engine, kept_practice, "2026-03-20")
    counted = Evaluations(monkeypatch)
    first = ws.refresh(engine, ORG, AS_OF, RULES)
    everyone = counted.take()
    assert_kept_equals_cold(engine, first.state_id)
    rng = random.Random(5)
    for n in range(2):
        counted.take()
        _ingest_round(engine, rng, f"db-{n}")
        done = ws.refresh(engine, ORG, AS_OF, RULES)
        evaluated = counted.take()
        assert done.mode == "incremental" and 0 < len(evaluated) < len(everyone), done
        assert_kept_equals_cold(engine, done.state_id)
    engine.dispose()

"""Time entries logged and corrected live; a locked month refuses new and changed time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, lock_month
from caretally.dates import parse_month
from caretally.ingest.time_entries import amend_time_entry, create_time_entries
from caretally.store import schema
from tests.ingest.live_practice import NOW, audit_rows, open_practice


def entry(entry_id: str = "T1", **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "entry_id": entry_id,
        "patient_id": "P1",
        "practitioner_id": "RN1",
        "program": "RPM",
        "started_at": "2026-03-03T10:00:00-06:00",
        "minutes": 20,
        "activity": "reviewed readings, called patient",
        "interactive": True,
        "modality": "phone",
    }
    item.update(changes)
    return item


def stored(engine: Engine, entry_id: str) -> dict[str, Any]:
    t = schema.time_entries
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.org_id == "clinic", t.c.entry_id == entry_id)).mappings().one()
        return dict(row)


def lock(engine: Engine, month: str) -> str:
    bill_month(
        engine, "clinic", parse_month(month), PayerRules.load(), now=lambda: datetime(2026, 4, 2, tzinfo=UTC)
    )
    return lock_month(engine, "clinic", month).run_id


def test_entries_are_stored_with_outcomes_and_checked_like_a_bundle(db_url: str) -> None:
    engine = open_practice(db_url)
    result = create_time_entries(
        engine, "clinic", [entry("T1"), entry("T2", minutes=0)], partial=True, now=NOW
    )
    assert [(i.pointer, i.status, i.key) for i in result.items] == [
        ("/0", "inserted", "T1"),
        ("/1", "rejected", "T2"),
    ]
    assert [(p.pointer, p.code) for p in result.problems] == [("/1/minutes", "not_positive")]
    assert stored(engine, "T1")["seconds"] == 1200
    assert result.touched == {("P1", "2026-03")}
    overlap = create_time_entries(
        engine, "clinic", [entry("T3", started_at="2026-03-03T10:10:00-06:00")], now=NOW
    )
    assert [i.status for i in overlap.items] == ["inserted"]
    assert [(w.pointer, w.code) for w in overlap.warnings] == [("/0/started_at", "overlapping_time")]


def test_a_locked_month_refuses_new_and_changed_time_naming_the_run(db_url: str) -> None:
    engine = open_practice(db_url)
    assert create_time_entries(
        engine, "clinic", [entry("T1", started_at="2026-02-10T10:00:00-06:00")], now=NOW
    ).ok()
    run_id = lock(engine, "2026-02")
    new = create_time_entries(
        engine, "clinic", [entry("T2", started_at="2026-02-11T10:00:00-06:00"), entry("T3")], now=NOW
    )
    assert not new.stored
    [problem] = new.problems
    assert (problem.pointer, problem.code) == ("/0/started_at", "locked_month")
    assert run_id in problem.message and "2026-02" in problem.message
    assert [i.status for i in new.items] == ["rejected", "not_stored"]
    # The same entry sent again is no change; moving it out of the locked month is one.
    same = create_time_entries(
        engine, "clinic", [entry("T1", started_at="2026-02-10T10:00:00-06:00")], now=NOW
    )
    assert [i.status for i in same.items] == ["unchanged"]
    moved = create_time_entries(engine, "clinic", [entry("T1")], partial=True, now=NOW)
    assert [(p.pointer, p.code) for p in moved.problems] == [("/0/started_at", "locked_month")]
    assert stored(engine, "T1")["local_date"].isoformat() == "2026-02-10"
    march = create_time_entries(engine, "clinic", [entry("T4")], now=NOW)
    assert [i.status for i in march.items] == ["inserted"]


def test_an_amendment_is_audited_with_who_and_the_old_and_new_values(db_url: str) -> None:
    engine = open_practice(db_url)
    create_time_entries(engine, "clinic", [entry("T1", note="first note")], now=NOW)
    result = amend_time_entry(
        engine, "clinic", "T1", {"minutes": 25, "note": "called back"}, actor="user:rn1@example.org", now=NOW
    )
    assert result.stored and [(i.status, i.key) for i in result.items] == [("updated", "T1")]
    assert result.touched == {("P1", "2026-03")}
    row = stored(engine, "T1")
    assert (row["seconds"], row["note"]) == (1500, "called back")
    [audit] = audit_rows(engine, "time_entries")
    assert audit["actor"] == "user:rn1@example.org" and audit["record_key"] == "T1"
    assert audit["old_values"] == {"seconds": 1200, "note": "first note"}
    assert audit["new_values"] == {"seconds": 1500, "note": "called back"}
    again = amend_time_entry(engine, "clinic", "T1", {"seconds": 1500}, actor="user:rn1@example.org", now=NOW)
    assert [i.status for i in again.items] == ["unchanged"] and len(audit_rows(engine, "time_entries")) == 1


def test_an_amendment_is_checked_and_refused_in_or_into_a_locked_month(db_url: str) -> None:
    engine = open_practice(db_url)
    create_time_entries(
        engine, "clinic", [entry("T1"), entry("T2", started_at="2026-02-10T10:00:00-06:00")], now=NOW
    )
    run_id = lock(engine, "2026-02")

    def amend(entry_id: str, changes: Any) -> list[tuple[str | None, str]]:
        found = amend_time_entry(engine, "clinic", entry_id, changes, actor="user:x", now=NOW)
        assert not found.stored
        return [(p.pointer, p.code) for p in found.problems]

    assert amend("T404", {"minutes": 5}) == [("", "unknown_entry")]
    assert amend("T1", {"minutes": -5}) == [("/minutes", "not_positive")]
    assert amend("T1", {"entry_id": "T9", "minuets": 5}) == [
        ("/entry_id", "immutable_field"),
        ("/minuets", "unknown_column"),
    ]
    assert amend("T1", {"started_at": "2026-03-04T10:00:00"}) == [("/started_at", "naive_timestamp")]
    assert amend("T1", {"interactive": True, "modality": ""}) == [("/modality", "required")]
    assert amend("T1", []) == [("", "bad_json")]
    into = amend_time_entry(
        engine, "clinic", "T1", {"started_at": "2026-02-20T10:00:00-06:00"}, actor="user:x", now=NOW
    )
    assert [p.code for p in into.problems] == ["locked_month"] and run_id in into.problems[0].message
    out_of = amend_time_entry(engine, "clinic", "T2", {"note": "late note"}, actor="user:x", now=NOW)
    assert [p.code for p in out_of.problems] == ["locked_month"]
    assert audit_rows(engine, "time_entries") == []

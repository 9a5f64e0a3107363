"""JSON readings posted live: the bundle's checks, pointers, per-item outcomes, audit, months."""

from __future__ import annotations

from datetime import date

from caretally.ingest.live import ingest_readings
from tests.ingest.live_practice import NOW, audit_rows, open_practice, reading, stored_readings


def test_one_bad_reading_refuses_the_request_and_points_at_it(db_url: str) -> None:
    engine = open_practice(db_url)
    items = [
        reading(reading_id="R1"),
        reading(reading_id="R2", measured_at="2026-03-06T07:30:00"),
        reading(reading_id="R3", device_id="D404"),
        "not an object",
    ]
    result = ingest_readings(engine, "clinic", items, now=NOW)
    assert not result.stored and result.batch_id is None
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/1/measured_at", "naive_timestamp"),
        ("/2/device_id", "unknown_device"),
        ("/3", "bad_record"),
    ]
    assert [i.status for i in result.items] == ["not_stored", "rejected", "rejected", "rejected"]
    assert stored_readings(engine) == []
    assert result.touched == frozenset()
    body = result.to_json()
    assert body["problems"][0] == {
        "file": "readings",
        "line": None,
        "field": "measured_at",
        "code": "naive_timestamp",
        "message": "'2026-03-06T07:30:00' has no UTC offset; add one such as -05:00 or Z",
        "row": None,
        "pointer": "/1/measured_at",
    }


def test_partial_stores_the_valid_items_and_reports_the_rest(db_url: str) -> None:
    engine = open_practice(db_url)
    items = [reading(reading_id="R1"), reading(reading_id="R2", value=""), reading(reading_id="R3")]
    result = ingest_readings(engine, "clinic", items, partial=True, now=NOW)
    assert result.stored and not result.ok()
    assert [(i.pointer, i.status, i.key) for i in result.items] == [
        ("/0", "inserted", "R1"),
        ("/1", "rejected", "R2"),
        ("/2", "inserted", "R3"),
    ]
    assert [(p.pointer, p.code) for p in result.problems] == [("/1/value", "required")]
    assert [r["reading_key"] for r in stored_readings(engine)] == ["R1", "R3"]
    assert result.counts["inserted"] == 2 and result.counts["rejected"] == 1


def test_same_id_same_content_is_unchanged_other_content_is_an_audited_update(db_url: str) -> None:
    engine = open_practice(db_url)
    first = ingest_readings(engine, "clinic", [reading(reading_id="R1")], now=NOW)
    assert [i.status for i in first.items] == ["inserted"]
    assert first.touched == {("P1", "2026-03")}
    again = ingest_readings(engine, "clinic", [reading(reading_id="R1")], now=NOW)
    assert [i.status for i in again.items] == ["unchanged"]
    assert again.touched == frozenset() and audit_rows(engine, "readings") == []
    moved = reading(reading_id="R1", value="181.0", measured_at="2026-04-01T02:00:00Z")
    changed = ingest_readings(engine, "clinic", [moved], now=NOW, actor="user:ana@example.org")
    assert [i.status for i in changed.items] == ["updated"]
    # 2026-04-01T02:00Z is still March 31 in Chicago: the old and the new month are both March.
    assert changed.touched == {("P1", "2026-03")}
    [audit] = audit_rows(engine, "readings")
    assert audit["record_key"] == "R1" and audit["actor"] == "user:ana@example.org"
    assert audit["batch_id"] == changed.batch_id
    assert audit["old_values"]["value"] == "182.4" and audit["new_values"]["value"] == "181.0"
    [row] = stored_readings(engine)
    assert row["value"] == "181.0" and row["local_date"] == date(2026, 3, 31)


def test_touched_months_follow_the_patients_local_date_before_and_after(db_url: str) -> None:
    engine = open_practice(db_url)
    ingest_readings(
        engine, "clinic", [reading(reading_id="R1", measured_at="2026-03-31T20:00:00-05:00")], now=NOW
    )
    later = reading(reading_id="R1", measured_at="2026-04-02T08:00:00-05:00")
    result = ingest_readings(engine, "clinic", [later], now=NOW)
    assert result.touched == {("P1", "2026-03"), ("P1", "2026-04")}


def test_repeats_inside_one_request(db_url: str) -> None:
    engine = open_practice(db_url)
    same = reading(reading_id="R1")
    result = ingest_readings(engine, "clinic", [same, dict(same)], now=NOW)
    assert [i.status for i in result.items] == ["inserted", "unchanged"]
    clash = ingest_readings(
        engine, "clinic", [reading(reading_id="R9"), reading(reading_id="R9", value="1")], now=NOW
    )
    assert not clash.stored
    assert [(p.pointer, p.code) for p in clash.problems] == [("/1/reading_id", "duplicate_id")]


def test_a_manual_reading_may_come_without_a_device_an_automatic_one_may_not(db_url: str) -> None:
    engine = open_practice(db_url)
    typed_in = reading(device_id=..., transmission="manual")
    result = ingest_readings(engine, "clinic", [typed_in], now=NOW)
    assert [i.status for i in result.items] == ["inserted"]
    [row] = stored_readings(engine)
    assert row["device_id"] is None and row["transmission"] == "manual"
    assert row["reading_key"] == "patient:P1|2026-03-05T13:30:00+00:00|weight"
    refused = ingest_readings(engine, "clinic", [reading(device_id=...)], now=NOW)
    assert [(p.pointer, p.code) for p in refused.problems] == [("/0/device_id", "required")]


def test_the_import_clock_and_the_organization_apply(db_url: str) -> None:
    engine = open_practice(db_url)
    future = reading(measured_at="2026-04-12T12:00:00Z")
    result = ingest_readings(engine, "clinic", [future], now=NOW)
    assert [(p.pointer, p.code) for p in result.problems] == [("/0/measured_at", "future_reading")]
    elsewhere = ingest_readings(engine, "other-clinic", [reading()], now=NOW)
    assert [(p.pointer, p.code) for p in elsewhere.problems] == [
        ("/0/patient_id", "unknown_patient"),
        ("/0/device_id", "unknown_device"),
    ]


def test_the_body_must_be_an_array(db_url: str) -> None:
    engine = open_practice(db_url)
    result = ingest_readings(engine, "clinic", {"readings": []}, now=NOW)
    assert not result.stored and [(p.pointer, p.code) for p in result.problems] == [("", "bad_json")]
    empty = ingest_readings(engine, "clinic", [], now=NOW)
    assert empty.stored and empty.items == [] and empty.ok()

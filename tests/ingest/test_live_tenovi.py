"""The Tenovi measurement webhook, in the shape Tenovi documents, stored as device readings."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.dates import parse_month
from caretally.ingest.tenovi import ingest_tenovi, instant_of, offset_of, verify_tenovi
from tests.ingest.live_practice import CUFF, NOW, SCALE_IMEI, open_practice, stored_readings

GATEWAY = "A1B2C3D4E5F6"


def measurement(**changes: Any) -> dict[str, Any]:
    """One measurement with every field of Tenovi's measurement webhook."""
    item: dict[str, Any] = {
        "metric": "blood_pressure",
        "device_name": "Tenovi BPM - L",
        "hwi_device_id": CUFF,
        "patient_id": "P1",
        "hardware_uuid": GATEWAY,
        "sensor_code": "10",
        "value_1": 128,
        "value_2": 82,
        "created": "2026-03-05T14:00:00Z",
        "timestamp": "2026-03-05T14:00:00Z",
        "timezone_offset": -6,
        "estimated_timestamp": False,
    }
    item.update(changes)
    return item


def test_a_posted_array_of_one_physical_reading(db_url: str) -> None:
    engine = open_practice(db_url)
    payload = [
        measurement(),
        measurement(metric="pulse", value_1=71, value_2=None),
        measurement(metric="battery_percentage", value_1=88, value_2=None),
    ]
    result = ingest_tenovi(engine, "clinic", payload, now=NOW)
    assert result.ok() and result.stored
    assert [(i.pointer, i.status) for i in result.items] == [
        ("/0", "inserted"),
        ("/1", "inserted"),
        ("/2", "ignored"),
    ]
    assert [(w.pointer, w.code) for w in result.warnings] == [("/2/metric", "ignored_metric")]
    rows = stored_readings(engine)
    got = [
        (r["patient_id"], r["device_id"], r["type"], r["value"], r["unit"], r["transmission"]) for r in rows
    ]
    assert got == [
        ("P1", "D1", "blood_pressure", "128/82", "mmHg", "auto"),
        ("P1", "D1", "heart_rate", "71", "bpm", "auto"),
    ]
    assert rows[0]["reading_key"] == "D1|2026-03-05T14:00:00+00:00|blood_pressure"
    assert rows[0]["local_date"] == date(2026, 3, 5)
    assert rows[0]["extra"] == {"hwi_device_id": CUFF, "source": "tenovi"}
    assert result.touched == {("P1", "2026-03")}
    again = ingest_tenovi(engine, "clinic", payload, now=NOW)
    assert [i.status for i in again.items] == ["unchanged", "unchanged", "ignored"]


def test_a_single_object_and_every_mapped_metric(db_url: str) -> None:
    engine = open_practice(db_url)
    one = ingest_tenovi(
        engine,
        "clinic",
        measurement(metric="weight", hwi_device_id=SCALE_IMEI, value_1="182.40", value_2=None),
        now=NOW,
    )
    assert [i.status for i in one.items] == ["inserted"]
    more = [
        measurement(
            metric="glucose",
            hwi_device_id=SCALE_IMEI,
            value_1=104,
            value_2=None,
            timestamp="2026-03-06T14:00:00Z",
        ),
        measurement(
            metric="spO2", hwi_device_id=SCALE_IMEI, value_1=97, value_2=1, timestamp="2026-03-07T14:00:00Z"
        ),
    ]
    assert ingest_tenovi(engine, "clinic", more, now=NOW).ok()
    assert sorted((r["type"], r["value"], r["unit"]) for r in stored_readings(engine)) == [
        ("glucose", "104", "mg/dL"),
        ("spo2", "97", "%"),
        ("weight", "182.4", "lbs"),
    ]


def test_the_serial_means_whichever_device_it_was_assigned_to_then(db_url: str) -> None:
    engine = open_practice(db_url)
    payload = [
        measurement(timestamp="2026-03-25T18:00:00Z", patient_id=""),  # P2 has the cuff from 03-20
        measurement(timestamp="2026-03-17T18:00:00Z"),  # returned by P1 on 03-15, not yet reassigned
        measurement(hwi_device_id="TNV-UNKNOWN"),
    ]
    result = ingest_tenovi(engine, "clinic", payload, partial=True, now=NOW)
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/1/hwi_device_id", "device_not_assigned"),
        ("/2/hwi_device_id", "unknown_device"),
    ]
    [row] = stored_readings(engine)
    assert (row["patient_id"], row["device_id"], row["local_date"]) == ("P2", "D3", date(2026, 3, 25))
    assert result.touched == {("P2", "2026-03")}


def test_unknown_metrics_and_bad_values_are_reported_not_guessed(db_url: str) -> None:
    engine = open_practice(db_url)
    payload = [
        measurement(metric="temperature", value_1=98.6, value_2=None),
        measurement(value_2=None),
        measurement(value_1="high"),
        measurement(timestamp="2026-03-05T08:00:00", timezone_offset=None),
        measurement(timezone_offset=99),
        "oops",
        measurement(metric=None),
    ]
    result = ingest_tenovi(engine, "clinic", payload, now=NOW)
    assert not result.stored and stored_readings(engine) == []
    assert [(p.pointer, p.code) for p in result.problems] == [
        ("/0/metric", "unknown_metric"),
        ("/1/value_2", "required"),
        ("/2/value_1", "bad_value"),
        ("/3/timestamp", "naive_timestamp"),
        ("/4/timezone_offset", "bad_offset"),
        ("/5", "bad_record"),
        ("/6/metric", "required"),
    ]


def test_time_offset_and_the_warnings_a_person_should_see(db_url: str) -> None:
    engine = open_practice(db_url)
    payload = [
        # A wall-clock time with Tenovi's offset: 08:00 at UTC-06:00 is 14:00Z.
        measurement(
            timestamp="2026-03-05T08:00:00", timezone_offset=-360, metric="pulse", value_1=70, value_2=None
        ),
        measurement(timestamp="2026-03-06T14:00:00Z", estimated_timestamp=True),
        measurement(timestamp="2026-03-07T14:00:00Z", timezone_offset=-10, patient_id="TENOVI-PT-77"),
    ]
    result = ingest_tenovi(engine, "clinic", payload, now=NOW)
    assert result.ok()
    assert [(w.pointer, w.code) for w in result.warnings] == [
        ("/1/estimated_timestamp", "estimated_timestamp"),
        ("/2/timezone_offset", "offset_mismatch"),
        ("/2/patient_id", "patient_id_differs"),
    ]
    keys = {r["reading_key"] for r in stored_readings(engine)}
    assert "D1|2026-03-05T14:00:00+00:00|heart_rate" in keys


def test_offsets_in_hours_minutes_or_seconds() -> None:
    assert offset_of(-6) == offset_of("-360") == offset_of(-21600) == timedelta(hours=-6)
    assert offset_of(5.5) == timedelta(hours=5, minutes=30)
    assert offset_of(0) == timedelta(0)
    for bad in (99_999, "x", True, 7.3):
        with pytest.raises(ValueError):
            offset_of(bad)
    assert instant_of("2026-03-05T14:00:00Z", timedelta(hours=-6)) == datetime(2026, 3, 5, 14, tzinfo=UTC)


def test_verify_tenovi_compares_the_configured_header_with_the_secret() -> None:
    body = b"[]"
    assert verify_tenovi({"authorization": "s3cret-value"}, body, "s3cret-value")
    assert verify_tenovi({"X-Tenovi-Key": "k"}, body, "k", header="x-tenovi-key")
    assert not verify_tenovi({"Authorization": "s3cret-valuE"}, body, "s3cret-value")
    assert not verify_tenovi({"Authorization": "s3cret-value "}, body, "s3cret-value")
    assert not verify_tenovi({}, body, "s3cret-value")
    assert not verify_tenovi({"Authorization": ""}, body, "")


def test_a_tenovi_reading_is_a_device_day_for_the_engine(db_url: str) -> None:
    engine = open_practice(db_url)
    days = [
        measurement(
            metric="weight",
            hwi_device_id=SCALE_IMEI,
            value_1=182,
            value_2=None,
            timestamp=f"2026-03-{d:02d}T14:00:00Z",
        )
        for d in (4, 9, 10)
    ]
    assert ingest_tenovi(engine, "clinic", days, now=NOW).ok()
    [(facts, decisions)] = [
        (f, d)
        for f, d in evaluate_month(engine, "clinic", parse_month("2026-04"), PayerRules.load())
        if f.patient_id == "P1"
    ]
    [program] = facts.programs
    assert {d for d in program.data_days if d.month == 3} == {
        date(2026, 3, 4),
        date(2026, 3, 9),
        date(2026, 3, 10),
    }
    supply = [d for d in decisions if d.code in ("99445", "99454") and d.period.start == date(2026, 3, 3)]
    assert supply and all(len(d.measures.dates) == 3 for d in supply)

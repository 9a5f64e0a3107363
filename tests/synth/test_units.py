"""The small pure pieces: clock conversion, window segments, splitting minutes, day sampling."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from caretally.synth.clock import local_text, to_utc, utc_text
from caretally.synth.config import add_months, window_for
from caretally.synth.patients import DevicePlan
from caretally.synth.readings import data_days
from caretally.synth.timelog import _split

ZONES = [
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
]
# Days around the 2026 US transitions (spring forward 8 March, fall back 1 November).
DAYS = [
    date(2026, 3, 7),
    date(2026, 3, 8),
    date(2026, 3, 9),
    date(2026, 10, 31),
    date(2026, 11, 1),
    date(2026, 11, 2),
]
SECONDS = [0, 1800, 3599, 6 * 3600 + 5, 12 * 3600, 21 * 3600 + 59 * 60, 23 * 3600 + 1800, 86399]


@pytest.mark.parametrize("tz", ZONES)
def test_planned_local_times_round_trip_through_zoneinfo(tz: str) -> None:
    zone = ZoneInfo(tz)
    for day in DAYS:
        for seconds in SECONDS:
            expected = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(seconds=seconds)
            # Wall-clock arithmetic above matches the plan outside the skipped/repeated hour.
            utc = to_utc(tz, day, seconds)
            local = utc.astimezone(zone)
            assert (local.date(), local.hour * 3600 + local.minute * 60 + local.second) == (day, seconds)
            assert utc_text(tz, day, seconds) == utc.strftime("%Y-%m-%dT%H:%M:%SZ")
            with_offset = datetime.fromisoformat(local_text(tz, day, seconds))
            assert with_offset == utc and with_offset.replace(tzinfo=None) == expected.replace(tzinfo=None)


def test_offsets_follow_dst_in_new_york_but_not_in_phoenix_or_honolulu() -> None:
    before, after = (date(2026, 3, 7), 9 * 3600), (date(2026, 3, 9), 9 * 3600)
    assert to_utc("America/New_York", *before) == datetime(2026, 3, 7, 14, tzinfo=UTC)
    assert to_utc("America/New_York", *after) == datetime(2026, 3, 9, 13, tzinfo=UTC)
    assert to_utc("America/Phoenix", *after) == datetime(2026, 3, 9, 16, tzinfo=UTC)
    assert to_utc("Pacific/Honolulu", date(2026, 11, 2), 23 * 3600) == datetime(2026, 11, 3, 9, tzinfo=UTC)


def test_window_segments_follow_calendar_months() -> None:
    assert add_months(date(2026, 1, 31), 1) == date(2026, 2, 28)
    w = window_for(date(2026, 3, 1), 2)
    assert w.segments == ((date(2026, 3, 1), date(2026, 3, 31)), (date(2026, 4, 1), date(2026, 4, 30)))
    w = window_for(date(2026, 1, 15), 2)
    assert (w.first, w.last, w.days) == (date(2026, 1, 15), date(2026, 3, 14), 59)
    assert [s[0] for s in w.segments] == [date(2026, 1, 15), date(2026, 2, 1), date(2026, 3, 1)]
    w = window_for(date(2026, 12, 1), 1)
    assert w.segments == ((date(2026, 12, 1), date(2026, 12, 31)),)


def test_split_keeps_every_second_and_no_piece_under_a_minute() -> None:
    rng = random.Random(3)
    for total in (*range(60, 400), 599, 1199, 1200, 2759, 7800):
        for parts in range(1, 9):
            pieces = _split(rng, total, parts)
            assert sum(pieces) == total
            assert all(p >= 60 for p in pieces)
            assert len(pieces) == max(1, min(parts, total // 60))
    assert _split(rng, 45, 3) == [45]  # under a minute stays one piece


def test_days_of_data_hit_the_target_rate_exactly() -> None:
    window = window_for(date(2026, 4, 1), 1)  # 30 days
    rng = random.Random(1)
    for target in (0, 1, 2, 15, 16, 30):
        device = DevicePlan(
            "D1", "RPM", "weight", "m", True, date(2026, 1, 5), date(2026, 1, 5), None, target
        )
        days = data_days(rng, device, window)
        assert len(days) == target
        assert days == sorted(set(days))
    late = DevicePlan(
        "D2", "RPM", "weight", "m", True, date(2026, 4, 16), date(2026, 4, 14), date(2026, 4, 25), 30
    )
    days = data_days(rng, late, window)
    assert days == [date(2026, 4, 16) + timedelta(days=i) for i in range(10)]

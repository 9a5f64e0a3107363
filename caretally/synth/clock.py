"""Wall-clock times in a patient's zone turned into UTC text, fast enough for millions.

Readings are planned as "local date + seconds after local midnight" because that is how
people behave (a cuff in the morning, a scale at night). The UTC offset only changes at
DST transitions, on the hour, so it is looked up once per (zone, date, hour) and cached;
the generator never plans a reading in the skipped or repeated 01:00–02:59 hour.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from caretally.dates import zone


@lru_cache(maxsize=65536)
def utc_offset_seconds(tz: str, day: date, hour: int) -> int:
    """Seconds east of UTC on ``day`` at ``hour``:00 local time in zone ``tz``."""
    offset = datetime(day.year, day.month, day.day, hour, tzinfo=zone(tz)).utcoffset()
    assert offset is not None  # an IANA zone always has one
    return int(offset.total_seconds())


@lru_cache(maxsize=4096)
def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day)


def utc_text(tz: str, day: date, seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for local ``day`` + ``seconds`` after midnight in ``tz``."""
    offset = utc_offset_seconds(tz, day, seconds // 3600)
    return (_midnight(day) + timedelta(seconds=seconds - offset)).isoformat() + "Z"


def local_text(tz: str, day: date, seconds: int) -> str:
    """ISO 8601 with the zone's offset at that moment, e.g. ``2026-03-09T10:15:00-04:00``.

    This is how an EHR export writes a start time; the importer has to honour the offset.
    """
    offset = utc_offset_seconds(tz, day, seconds // 3600)
    stamp = (_midnight(day) + timedelta(seconds=seconds)).isoformat()
    sign = "+" if offset >= 0 else "-"
    hours, rest = divmod(abs(offset), 3600)
    return f"{stamp}{sign}{hours:02d}:{rest // 60:02d}"


def to_utc(tz: str, day: date, seconds: int) -> datetime:
    """The aware UTC instant of a planned local time (used by tests and checks)."""
    offset = utc_offset_seconds(tz, day, seconds // 3600)
    return (_midnight(day) + timedelta(seconds=seconds - offset)).replace(tzinfo=UTC)

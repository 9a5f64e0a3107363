"""Calendar arithmetic for billing: local dates, calendar months and 30-day periods.

A "day of data" is the patient's local calendar date, so every instant is converted
with the patient's IANA zone (``zoneinfo`` handles DST and historic offsets). Device
supply runs on 30-day periods counted from an anchor date; time-based services run on
calendar months. Both clocks live here so no other module does date arithmetic by hand.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from caretally.model import Period, PeriodKind

THIRTY = 30


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A cached IANA zone; raises ``ZoneInfoNotFoundError`` for unknown names."""
    return ZoneInfo(name)


def is_valid_zone(name: str) -> bool:
    if not name or name != name.strip():
        return False
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def local_date(instant: datetime, tz: str) -> date:
    """The date on the patient's wall clock at ``instant`` (which must be aware)."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: cannot place it on a wall clock")
    return instant.astimezone(zone(tz)).date()


def parse_month(text: str) -> Period:
    """``YYYY-MM`` → the calendar month as a period."""
    try:
        year, month = (int(p) for p in text.split("-"))
        first = date(year, month, 1)
    except ValueError as exc:
        raise ValueError(f"month must be YYYY-MM, got {text!r}") from exc
    return month_of(first)


def month_of(day: date) -> Period:
    last = calendar.monthrange(day.year, day.month)[1]
    return Period(PeriodKind.CALENDAR_MONTH, day.replace(day=1), day.replace(day=last))


def thirty_day_period(anchor: date, index: int, length: int = THIRTY) -> Period:
    """The ``index``-th device period counted from ``anchor`` (index 0 starts on it).

    ``length`` is the rule-year's ``device_period_days`` (30 for Medicare).
    """
    start = anchor + timedelta(days=length * index)
    return Period(PeriodKind.THIRTY_DAY, start, start + timedelta(days=length - 1))


def thirty_day_period_containing(anchor: date, day: date, length: int = THIRTY) -> Period | None:
    if day < anchor:
        return None
    return thirty_day_period(anchor, (day - anchor).days // length, length)


def periods_ending_in(anchor: date, month: Period, length: int = THIRTY) -> list[Period]:
    """Device periods from ``anchor`` whose last day falls inside ``month``.

    With 30-day periods a 28-day February can hold none; a 31-day month can hold two.
    """
    found: list[Period] = []
    first = thirty_day_period_containing(anchor, month.start, length)
    index = 0 if first is None else (first.start - anchor).days // length
    while True:
        p = thirty_day_period(anchor, index, length)
        if p.end > month.end:
            break
        if p.end >= month.start:
            found.append(p)
        index += 1
    return found


def days_between(first: date, last: date) -> int:
    """Inclusive count of calendar days from ``first`` to ``last`` (0 if empty)."""
    return max(0, (last - first).days + 1)


def add_months(day: date, months: int) -> date:
    """The first day of the month ``months`` after (or before, if negative) ``day``'s month."""
    index = day.year * 12 + (day.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)

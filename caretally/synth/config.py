"""What to generate, and the calendar window it covers."""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

FORMATS = ("csv", "jsonl")

#: March holds the spring DST change in every US zone that observes it, so a default run
#: already exercises local dates whose UTC offset moves mid-month.
DEFAULT_START = date(2026, 3, 1)


@dataclass(frozen=True, slots=True)
class SynthConfig:
    patients: int
    start: date
    months: int
    seed: int
    fmt: str = "csv"
    #: Days of readings (only readings) before ``start``. A 30-day device period that
    #: ends in the first month began in the month before; without this lead-in its
    #: early days are empty and the first month's device codes look worse than they are.
    lead_in_days: int = 0

    def __post_init__(self) -> None:
        if self.patients < 0:
            raise ValueError("patients must be >= 0")
        if self.months < 1:
            raise ValueError("months must be >= 1")
        if not 0 <= self.lead_in_days <= 366:
            raise ValueError("lead_in_days must be between 0 and 366")
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")


def add_months(day: date, months: int) -> date:
    """The same day-of-month ``months`` later, clamped to the month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return date(year, month0 + 1, min(day.day, last))


@dataclass(frozen=True, slots=True)
class Window:
    """The inclusive date range a bundle covers, cut into calendar-month segments.

    Time-based services are billed per calendar month, so time entries are planned per
    segment; a start that is not the 1st simply makes the first segment partial.
    """

    first: date
    last: date
    segments: tuple[tuple[date, date], ...]

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


def window_for(start: date, months: int) -> Window:
    last = add_months(start, months) - timedelta(days=1)
    segments: list[tuple[date, date]] = []
    cursor = start
    while cursor <= last:
        month_end = date(cursor.year, cursor.month, calendar.monthrange(cursor.year, cursor.month)[1])
        seg_end = min(month_end, last)
        segments.append((cursor, seg_end))
        cursor = seg_end + timedelta(days=1)
    return Window(start, last, tuple(segments))


def with_lead_in(window: Window, days: int) -> Window:
    """The same window extended ``days`` earlier, the extra days as one leading segment."""
    if days <= 0:
        return window
    first = window.first - timedelta(days=days)
    return Window(first, window.last, ((first, window.first - timedelta(days=1)), *window.segments))

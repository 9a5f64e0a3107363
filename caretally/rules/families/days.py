"""Counting days of data in a 30-day period, shared by device supply and set-up.

``ProgramFacts.data_days`` already holds only qualifying readings (RPM: automatic
readings from medical devices; RTM: per the manual-readings option) inside the
enrollment. What is left here is the part that depends on the period: which of those
days fall in the period, after the consent date, and whether a day minimum is met, can
still be met with the days left, or is out of reach.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from caretally.model import Evidence, Measures, Period
from caretally.rules.families.common import Check, EnrollmentView, Verdict, Window, is_open, span


@dataclass(frozen=True, slots=True)
class DayCount:
    days: tuple[date, ...]  # counted, sorted
    devices: tuple[str, ...]
    left: int  # days still to come in the window (0 once the period is closed)
    dropped: tuple[date, ...]  # data days in the period outside the window (before consent …)
    #: days in the window whose only readings were patient-reported, in a program whose
    #: manual readings do not count (the rule-year's ``manual_readings_count``)
    manual: tuple[date, ...] = ()

    @property
    def n(self) -> int:
        return len(self.days)


def count_days(
    view: EnrollmentView, period: Period, win: Window, devices: Iterable[str] | None = None
) -> DayCount:
    """Days of data in ``period`` inside ``win``; ``devices`` limits to some devices (RTM kinds)."""
    wanted = None if devices is None else frozenset(devices)
    counted: list[date] = []
    dropped: list[date] = []
    seen: set[str] = set()
    for day in sorted(view.program.data_days):
        if not period.contains(day):
            continue
        ids = view.program.data_days[day]
        if wanted is not None:
            ids = tuple(i for i in ids if i in wanted)
            if not ids:
                continue
        if win.contains(day):
            counted.append(day)
            seen.update(ids)
        else:
            dropped.append(day)
    left = win.days_left(view.facts.as_of) if is_open(view, period) else 0
    manual = tuple(
        day
        for day in view.program.excluded_days.get("manual", ())
        if period.contains(day) and win.contains(day)
    )
    return DayCount(tuple(counted), tuple(sorted(seen)), left, tuple(dropped), manual)


def days_check(
    rule_id: str, count: DayCount, period: Period, min_days: int, citation: str, also: str = ""
) -> Check:
    """Met, still reachable with the days left, or out of reach — with a biller's sentence."""
    where = span(period.start, period.end)
    values = [("days", str(count.n)), ("min_days", str(min_days)), ("days_left", str(count.left))]
    if count.dropped:
        values.append(("days_outside_enrollment_or_before_consent", str(len(count.dropped))))
    if count.manual:
        values.append(("days_with_only_manual_readings", str(len(count.manual))))
    ev = Evidence(dates=count.days, device_ids=count.devices, values=tuple(values))
    m = Measures(days=count.n, min_days=min_days, days_left=count.left, dates=count.days)
    dropped = (
        f" ({len(count.dropped)} more outside the enrollment or before consent do not count)"
        if count.dropped
        else ""
    )
    if count.manual:
        dropped += (
            f" ({len(count.manual)} more with only patient-reported readings do not count for "
            "this program: global manual_readings_count)"
        )
    tail = f"; {also}" if also else ""
    if count.n >= min_days:
        msg = f"{count.n} days with data in {where}{dropped}; {min_days} required{tail}"
        return Check.of(rule_id, Verdict.PASS, msg, citation, ev, m)
    head = f"{count.n} of {min_days} required days in {where}{dropped}"
    if count.left and count.n + count.left >= min_days:
        so_far = f" (so far {also})" if also else ""
        msg = f"{head}; {count.left} days left in the period{so_far}"
        return Check.of(rule_id, Verdict.PENDING, msg, citation, ev, m)
    if count.left:
        msg = f"{head}; only {count.left} days left: cannot reach {min_days}{tail}"
    else:
        msg = f"{head}{tail}"
    return Check.of(rule_id, Verdict.FAIL, msg, citation, ev, m)


def nth_day(count: DayCount, n: int) -> date | None:
    return count.days[n - 1] if 0 < n <= count.n else None

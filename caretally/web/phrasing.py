"""The words a nurse reads on the worklist, made from a step's typed numbers.

The engine's ``WorklistRow.action`` is written for a terminal; the web says the same thing
the way a care team talks ("2 more days of readings by Oct 30 complete 99454, worth
$52.11"). Every number here comes from ``Step``'s fields and the row's period — no
sentence of the engine is ever parsed — so a change in the engine's wording cannot
change what the page says, and a change in its numbers always does.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from caretally.worklist import Step, WorklistRow


def money(value: Decimal) -> str:
    """Dollars with cents and thousands separators: ``$1,234.50``; negative as ``−$3.00``."""
    cents = value.quantize(Decimal("0.01"))
    sign = "−" if cents < 0 else ""
    return f"{sign}${abs(cents):,.2f}"


def short_date(day: date, today: date | None = None) -> str:
    """``Oct 30``, with the year only when it is not the current one (``Jan 2, 2027``)."""
    text = f"{day:%b} {day.day}"
    if today is not None and day.year != today.year:
        text += f", {day.year}"
    return text


def day_and_time(at: datetime) -> str:
    """``Oct 30 14:05``: a reading's or an entry's local moment, compact for tables."""
    return f"{at:%b} {at.day} {at:%H:%M}"


def count(n: int, singular: str, plural: str | None = None) -> str:
    """``1 day``, ``2 days``; ``plural`` for words that do not just take an s."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _needs(step: Step, deadline: date, today: date | None) -> tuple[list[str], bool]:
    """The parts of what is still missing, and whether they read as one singular subject."""
    parts: list[str] = []
    singular = True
    if step.minutes_needed:
        parts.append(f"{count(step.minutes_needed, 'more minute', 'more minutes')}")
        singular = step.minutes_needed == 1
    if step.call_needed:
        parts.append("a live call")
    if step.days_needed:
        days = count(step.days_needed, "more day", "more days")
        parts.append(f"{days} of readings by {short_date(deadline, today)}")
        singular = singular and step.days_needed == 1
    return parts, singular and len(parts) == 1


def step_phrase(step: Step, deadline: date, *, today: date | None = None) -> str:
    """What completes ``step`` and what it is worth, e.g. ``a live call completes 99457, worth $51.77``.

    ``deadline`` is the last day of the step's period: days of readings must arrive by
    then. A gap that is not a number (no set-up date on file) is shown in the engine's
    own words, as something to resolve first.
    """
    worth = f"worth {money(step.value)}"
    parts, singular = _needs(step, deadline, today)
    if not parts:
        if step.other:
            return f"resolve first: {step.other}; then {step.code} bills, {worth}"
        return f"{step.code} is within reach, {worth}"
    verb = "completes" if singular else "complete"
    return f"{' and '.join(parts)} {verb} {step.code}, {worth}"


def row_phrase(row: WorklistRow, *, today: date | None = None) -> str:
    """The next step of a worklist row in words, or why there is none."""
    step = row.next_step
    if step is None:
        if row.secured:
            return f"nothing more to gain this period; {', '.join(row.secured)} already met"
        return "nothing reachable before the period ends"
    return step_phrase(step, row.period.end, today=today)

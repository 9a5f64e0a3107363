"""The worklist's words come from the step's numbers: each kind of step, each side of one."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from caretally.model import Period, PeriodKind, Program
from caretally.web.phrasing import count, money, row_phrase, short_date, step_phrase
from caretally.worklist import Step, WorklistRow

DEADLINE = date(2026, 10, 30)
TODAY = date(2026, 10, 20)


def step(**kw: object) -> Step:
    fields: dict[str, object] = {"code": "99454", "value": Decimal("52.11")}
    fields.update(kw)
    return Step(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (1, "1 more day of readings by Oct 30 completes 99454, worth $52.11"),
        (2, "2 more days of readings by Oct 30 complete 99454, worth $52.11"),
        (14, "14 more days of readings by Oct 30 complete 99454, worth $52.11"),
    ],
)
def test_days_of_readings_name_the_deadline_and_agree_in_number(days: int, expected: str) -> None:
    assert step_phrase(step(days_needed=days, days_left=10), DEADLINE, today=TODAY) == expected


def test_the_issue_example_for_days_reads_as_written() -> None:
    assert step_phrase(step(days_needed=2), DEADLINE).startswith("2 more days of readings by Oct 30")


def test_a_live_call_alone_completes_the_code() -> None:
    got = step_phrase(step(code="99457", value=Decimal("51.77"), call_needed=True), DEADLINE)
    assert got == "a live call completes 99457, worth $51.77"


@pytest.mark.parametrize(
    ("minutes", "expected"),
    [
        (1, "1 more minute completes 99458, worth $41.42"),
        (8, "8 more minutes complete 99458, worth $41.42"),
    ],
)
def test_minutes_agree_in_number(minutes: int, expected: str) -> None:
    got = step_phrase(step(code="99458", value=Decimal("41.42"), minutes_needed=minutes), DEADLINE)
    assert got == expected


@pytest.mark.parametrize("minutes", [1, 5])
def test_minutes_and_a_call_together_take_the_plural_verb(minutes: int) -> None:
    got = step_phrase(
        step(code="99457", value=Decimal("51.77"), minutes_needed=minutes, call_needed=True), DEADLINE
    )
    noun = "minute" if minutes == 1 else "minutes"
    assert got == f"{minutes} more {noun} and a live call complete 99457, worth $51.77"


def test_a_gap_without_numbers_is_shown_in_the_engines_words_to_resolve_first() -> None:
    got = step_phrase(step(code="99453", value=Decimal("21.71"), other="no device set-up date"), DEADLINE)
    assert got == "resolve first: no device set-up date; then 99453 bills, worth $21.71"


def test_a_deadline_in_another_year_carries_its_year() -> None:
    got = step_phrase(step(days_needed=3), date(2027, 1, 4), today=date(2026, 12, 20))
    assert "by Jan 4, 2027" in got
    assert "by Jan 4 " not in got


def test_the_value_is_the_steps_own_number() -> None:
    assert step_phrase(step(minutes_needed=3, value=Decimal("1234.5")), DEADLINE).endswith("worth $1,234.50")


def row(*steps: Step, secured: tuple[str, ...] = ()) -> WorklistRow:
    r = WorklistRow("P1", Program.RPM, "E1", Period(PeriodKind.THIRTY_DAY, date(2026, 10, 1), DEADLINE))
    r.steps = list(steps)
    r.secured = list(secured)
    return r


def test_a_row_says_its_next_step_with_its_periods_deadline() -> None:
    got = row_phrase(row(step(days_needed=2, days_left=10)), today=TODAY)
    assert got == "2 more days of readings by Oct 30 complete 99454, worth $52.11"


def test_a_row_follows_the_engines_choice_of_next_step() -> None:
    # The engine picks the step with the fewest staff minutes: the call (5) before 15 minutes.
    r = row(
        step(code="99458", value=Decimal("41.42"), minutes_needed=15),
        step(code="99457", value=Decimal("51.77"), call_needed=True),
    )
    assert r.next_step is not None and r.next_step.code == "99457"
    assert row_phrase(r) == "a live call completes 99457, worth $51.77"


def test_a_row_with_nothing_to_gain_says_why() -> None:
    assert row_phrase(row(secured=("99454",))) == "nothing more to gain this period; 99454 already met"
    assert row_phrase(row()) == "nothing reachable before the period ends"
    worthless = row(step(minutes_needed=4, value=Decimal("0.00")))
    assert row_phrase(worthless) == "nothing reachable before the period ends"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("0"), "$0.00"),
        (Decimal("51.771"), "$51.77"),
        (Decimal("1234567.8"), "$1,234,567.80"),
        (Decimal("-3"), "−$3.00"),
    ],
)
def test_money(value: Decimal, expected: str) -> None:
    assert money(value) == expected


def test_count_and_dates() -> None:
    assert count(1, "day") == "1 day"
    assert count(0, "day") == "0 days"
    assert count(2, "entry", "entries") == "2 entries"
    assert short_date(date(2026, 3, 5)) == "Mar 5"
    assert short_date(date(2026, 3, 5), date(2026, 1, 1)) == "Mar 5"
    assert short_date(date(2026, 3, 5), date(2025, 12, 31)) == "Mar 5, 2026"

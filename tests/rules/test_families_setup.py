"""Set-up (99453, 98975): day minimum by year and payer, once per episode, set-up on record."""

from __future__ import annotations

from datetime import date

import pytest

from caretally.model import BilledCode, Period, PeriodKind, Program, Status
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.loader import load_rulebook
from tests.rules.factories import device, make_facts, medicare, one, reason, with_option

BOOK = medicare()


def min_days(book, day: date) -> int:
    return book.for_date(day).code("99453").value("min_days")


@pytest.mark.parametrize(
    ("month", "book_name"), [("2025-03", "medicare"), ("2026-03", "medicare"), ("2026-03", "overlay")]
)
def test_setup_needs_the_rule_years_day_minimum(month: str, book_name: str) -> None:
    book = BOOK if book_name == "medicare" else load_rulebook("medicare", overlay="example-commercial")
    year, mon = (int(x) for x in month.split("-"))
    need = min_days(book, date(year, mon, 30))
    below = make_facts(month=month, days=[date(year, mon, d) for d in range(1, need)])
    at = make_facts(month=month, days=[date(year, mon, d) for d in range(1, need + 1)])
    short = one(evaluate_patient_month(below, book), "99453")
    assert short.status is Status.NOT_BILLABLE
    assert f"{need - 1} of {need} required days" in reason(short, "rpm.setup.min_days").message
    ok = one(evaluate_patient_month(at, book), "99453")
    assert ok.status is Status.BILLABLE and ok.units == 1
    assert ok.date_of_service == date(year, mon, 30)  # with the device period, which ends on day 30
    assert ok.expected_payment == book.for_date(date(year, mon, 30)).code("99453").amount


def test_the_2026_minimum_differs_from_2025() -> None:
    assert min_days(BOOK, date(2025, 6, 1)) != min_days(BOOK, date(2026, 6, 1))


def test_a_second_setup_in_the_episode_is_not_billable() -> None:
    earlier = BilledCode("99453", date(2026, 2, 28), "E-RPM", "run-7")
    ds = evaluate_patient_month(make_facts(days=range(1, 21), billed=[earlier]), BOOK)
    d = one(ds, "99453")
    assert d.status is Status.NOT_BILLABLE
    r = reason(d, "rpm.setup.once_per_episode")
    assert "already billed" in r.message and "2026-02-28" in r.message and "run-7" in r.message
    assert one(ds, "99454").status is Status.BILLABLE  # device supply is unaffected


def test_setup_billed_for_another_episode_does_not_count() -> None:
    other = BilledCode("99453", date(2025, 6, 30), "E-OLD", "run-1")
    ds = evaluate_patient_month(make_facts(days=range(1, 21), billed=[other]), BOOK)
    assert one(ds, "99453").status is Status.BILLABLE


def test_two_periods_in_one_month_carry_one_setup() -> None:
    # A month can hold the date of service of two periods (the facts layer decides which
    # periods reach the month); both are judged, the set-up goes with the first.
    p1 = Period(PeriodKind.THIRTY_DAY, date(2026, 2, 2), date(2026, 3, 3))
    p2 = Period(PeriodKind.THIRTY_DAY, date(2026, 3, 4), date(2026, 4, 2))
    facts = make_facts(month="2026-03", start=date(2026, 2, 2), periods=[p1, p2], days=[1, 2, 3, 5, 6])
    ds = [d for d in evaluate_patient_month(facts, BOOK) if d.code == "99453"]
    assert [d.period for d in ds] == [p1, p2]
    assert ds[0].status is Status.BILLABLE
    assert ds[1].status is Status.NOT_BILLABLE
    assert "(an earlier period)" in reason(ds[1], "rpm.setup.first_period").message


def test_setup_needs_a_recorded_setup_date() -> None:
    facts = make_facts(days=range(1, 21), devices=[device(Program.RPM, setup=None)])
    d = one(evaluate_patient_month(facts, BOOK), "99453")
    assert d.status is Status.NOT_BILLABLE
    assert not reason(d, "rpm.setup.device").passed


def test_setup_date_option_dates_the_line_on_the_setup() -> None:
    book = with_option(BOOK, "setup_dos", "setup_date")
    facts = make_facts(days=range(1, 21), devices=[device(Program.RPM, setup=date(2026, 2, 3))])
    d = one(evaluate_patient_month(facts, book), "99453")
    assert d.status is Status.BILLABLE and d.date_of_service == date(2026, 2, 3)


def test_rtm_setup_has_no_established_patient_rule() -> None:
    ds = evaluate_patient_month(make_facts(Program.RTM, days=range(1, 5), established=False), BOOK)
    d = one(ds, "98975")
    assert d.status is Status.BILLABLE
    assert "rpm.established_patient" not in {r.rule_id for r in d.reasons}

"""Device supply (99445/99454, RTM device codes): day tiers, open periods, kinds, practitioners."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest

from caretally.model import Period, PeriodKind, Program, Status
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.loader import load_rulebook
from tests.rules.factories import (
    billable,
    combine,
    device,
    make_facts,
    medicare,
    one,
    reason,
    with_option,
)

BOOK = medicare()
MARCH_PERIOD = Period(PeriodKind.THIRTY_DAY, date(2026, 3, 1), date(2026, 3, 30))


def amount(code: str, day: date = date(2026, 3, 30)):
    return BOOK.for_date(day).code(code).amount


def device_codes(decisions):
    return {c: u for c, u in billable(decisions).items() if c in {"99445", "99454"}}


@pytest.mark.parametrize(
    ("days", "expected"),
    [(1, {}), (2, {"99445": 1}), (15, {"99445": 1}), (16, {"99454": 1}), (30, {"99454": 1})],
)
def test_2026_tiers_on_both_sides_of_each_threshold(days: int, expected: dict[str, int]) -> None:
    ds = evaluate_patient_month(make_facts(days=range(1, days + 1)), BOOK)
    assert device_codes(ds) == expected
    for code in ("99445", "99454"):
        d = one(ds, code)
        assert d.period == MARCH_PERIOD
        if code in expected:
            assert d.date_of_service == MARCH_PERIOD.end
            assert d.expected_payment == amount(code)
        else:
            assert d.status is Status.NOT_BILLABLE
            assert d.units == 0 and d.date_of_service is None and d.expected_payment is None


def test_the_tier_that_loses_names_the_one_that_wins() -> None:
    ds = evaluate_patient_month(make_facts(days=range(1, 21)), BOOK)
    r = reason(one(ds, "99445"), "rpm.device.max_days")
    assert not r.passed
    assert "20 days with data" in r.message and "qualifies for 99454 instead" in r.message
    low = evaluate_patient_month(make_facts(days=range(1, 11)), BOOK)
    r = reason(one(low, "99454"), "rpm.device.min_days")
    assert r.message.startswith("10 of 16 required days in 2026-03-01..2026-03-30")
    assert "qualifies for 99445 instead" in r.message
    assert r.evidence.dates == tuple(date(2026, 3, d) for d in range(1, 11))
    assert r.evidence.device_ids == ("D1",)


@pytest.mark.parametrize(("days", "expected"), [(15, {}), (16, {"99454": 1})])
def test_2025_has_no_short_tier(days: int, expected: dict[str, int]) -> None:
    facts = make_facts(month="2025-03", days=[date(2025, 3, d) for d in range(1, days + 1)])
    ds = evaluate_patient_month(facts, BOOK)
    assert "99445" not in {d.code for d in ds}
    assert device_codes(ds) == expected


def test_open_period_with_enough_days_left_is_reachable() -> None:
    # 12 days by 2026-03-20; the period ends 2026-03-30, so 10 days remain and 16 is possible.
    ds = evaluate_patient_month(make_facts(days=range(1, 13), as_of=date(2026, 3, 20)), BOOK)
    high, low = one(ds, "99454"), one(ds, "99445")
    assert high.status is Status.REACHABLE and high.units == 0
    msg = reason(high, "rpm.device.min_days").message
    assert "12 of 16 required days" in msg and "10 days left" in msg
    assert low.status is Status.REACHABLE and low.units == 1 and low.date_of_service is None
    assert low.expected_payment == amount("99445")
    assert "99445 → 99454" in reason(low, "period.open").message
    assert billable(ds) == {}


def test_open_period_that_cannot_reach_the_minimum_is_not_billable() -> None:
    ds = evaluate_patient_month(make_facts(days=[1, 2, 3], as_of=date(2026, 3, 25)), BOOK)
    high = one(ds, "99454")
    assert high.status is Status.NOT_BILLABLE
    msg = reason(high, "rpm.device.min_days").message
    assert "3 of 16" in msg and "only 5 days left: cannot reach 16" in msg
    assert one(ds, "99445").status is Status.REACHABLE


def test_threshold_day_option_dates_the_line_on_the_day_the_minimum_was_reached() -> None:
    book = with_option(BOOK, "device_dos", "threshold_day")
    ds = evaluate_patient_month(make_facts(days=range(1, 21)), book)
    d = one(ds, "99454")
    assert d.date_of_service == date(2026, 3, 16)
    assert any(
        p.name == "device_dos" and p.value == "threshold_day" and p.layer == "test" for p in d.parameters
    )


def test_a_month_without_a_period_end_has_no_device_decision() -> None:
    ds = evaluate_patient_month(make_facts(month="2026-02", periods=()), BOOK)
    assert not [d for d in ds if d.code in {"99445", "99454", "99453"}]


def test_days_before_consent_do_not_count() -> None:
    ds = evaluate_patient_month(make_facts(days=range(1, 21), consent=date(2026, 3, 10)), BOOK)
    assert device_codes(ds) == {"99445": 1}
    r = reason(one(ds, "99454"), "rpm.device.min_days")
    assert r.message.startswith("11 of 16") and "9 more outside the enrollment or before consent" in r.message


@pytest.mark.parametrize(
    ("consent", "fragment"),
    [(None, "no consent on file"), (date(2026, 4, 2), "after the period ends")],
)
def test_missing_or_late_consent_blocks_every_code(consent: date | None, fragment: str) -> None:
    facts = make_facts(days=range(1, 21), time=[(25, 0, "staff", True, "phone")], consent=consent)
    ds = evaluate_patient_month(facts, BOOK)
    assert billable(ds) == {}
    for d in ds:
        r = reason(d, "common.consent")
        assert not r.passed and fragment in r.message


def test_not_established_blocks_rpm_but_not_rtm() -> None:
    rpm = evaluate_patient_month(make_facts(days=range(1, 21), established=False), BOOK)
    assert billable(rpm) == {}
    assert not reason(one(rpm, "99454"), "rpm.established_patient").passed
    rtm = evaluate_patient_month(make_facts(Program.RTM, days=range(1, 21), established=False), BOOK)
    assert billable(rtm) == {"98975": 1, "98977": 1}


def test_rtm_device_code_follows_the_device_kind() -> None:
    ds = evaluate_patient_month(make_facts(Program.RTM, days=range(1, 21)), BOOK)
    assert one(ds, "98977").status is Status.BILLABLE
    assert "no respiratory device assigned" in reason(one(ds, "98976"), "rtm.device.kind").message


def _two_kinds(book):
    start = date(2026, 1, 30)
    resp = device(Program.RTM, did="R1", kind="respiratory", setup=start)
    msk = device(Program.RTM, did="M1", kind="musculoskeletal", setup=start)
    facts = make_facts(Program.RTM, devices=(resp, msk))
    data = {date(2026, 3, d): ("R1",) for d in range(1, 11)}
    for d in range(1, 21):
        data[date(2026, 3, d)] = (*data.get(date(2026, 3, d), ()), "M1")
    pf = facts.programs[0]
    return replace(facts, programs=(replace(pf, data_days=data),)), book


@pytest.mark.parametrize("choice", ["highest_paying", "most_days"])
def test_rtm_several_kinds_bill_one_kind_by_option(choice: str) -> None:
    facts, book = _two_kinds(with_option(BOOK, "rtm_multiple_kinds", choice))
    ds = evaluate_patient_month(facts, book)
    y = BOOK.for_date(date(2026, 3, 30))
    resp_pay, msk_pay = y.code("98984").amount, y.code("98977").amount  # 10 resp days, 20 msk days
    by_pay = "98984" if resp_pay > msk_pay else "98977"
    winner = by_pay if choice == "highest_paying" else "98977"
    device_lines = {c for c in billable(ds) if c in {"98976", "98977", "98978", "98984", "98985", "98986"}}
    assert device_lines == {winner}
    loser = "98977" if winner == "98984" else "98984"
    r = reason(one(ds, loser), "rtm.device.kind")
    assert not r.passed and f"option rtm_multiple_kinds: {choice}" in r.message


def test_two_practitioners_in_one_device_period_only_the_earlier_enrollment_bills() -> None:
    first = make_facts(days=range(1, 21), eid="E-A", practitioner="P1", start=date(2026, 1, 30))
    second = make_facts(
        days=range(1, 21), eid="E-B", practitioner="P2", start=date(2026, 2, 1), periods=[MARCH_PERIOD]
    )
    ds = evaluate_patient_month(combine(first, second), BOOK)
    assert one(ds, "99454", enrollment_id="E-A").status is Status.BILLABLE
    late = one(ds, "99454", enrollment_id="E-B")
    assert late.status is Status.NOT_BILLABLE
    r = reason(late, "concurrency.one_practitioner")
    assert "E-A" in r.message and "P1" in r.message


def test_a_period_spanning_new_year_is_judged_by_the_new_year() -> None:
    # From 2025-11-18 the second 30-day period is 2025-12-18..2026-01-16: its two data
    # days straddle the new year, and only the 2026 rule-year has the 2-15 day code 99445.
    facts = make_facts(month="2026-01", start=date(2025, 11, 18), days=[date(2025, 12, 20), date(2026, 1, 5)])
    ds = evaluate_patient_month(facts, BOOK)
    d = one(ds, "99445")
    assert d.period.start == date(2025, 12, 18) and d.period.end == date(2026, 1, 16)
    assert d.status is Status.BILLABLE
    assert all(p.layer == "medicare/2026" for p in d.parameters if p.name.startswith("min_days"))


def test_overlay_layer_is_visible_in_parameters() -> None:
    book = load_rulebook("medicare", overlay="example-commercial")
    ds = evaluate_patient_month(make_facts(days=range(1, 11)), book)
    setup = one(ds, "99453")
    assert setup.status is Status.NOT_BILLABLE  # the example payer wants 16 days
    assert [p.layer for p in setup.parameters if p.name.startswith("min_days")] == [
        "payers/example-commercial"
    ]

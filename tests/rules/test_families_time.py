"""Treatment management (99470/99457/99458, RTM 98979–98981) and 99091."""

from __future__ import annotations

from datetime import date

import pytest

from caretally.model import Program, Status
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.loader import load_rulebook
from tests.rules.factories import billable, make_facts, medicare, one, reason, with_option, with_param

BOOK = medicare()
TM = {"99470", "99457", "99458"}


def tm_lines(ds) -> dict[str, int]:
    return {c: u for c, u in billable(ds).items() if c in TM}


def month_of_time(minutes: int, seconds: int = 0, *, month: str = "2026-03", **kw):
    """One qualifying phone call plus the rest as staff review time."""
    call = min(minutes, 5)
    rest = minutes - call
    time = [(call, 0, "staff", True, "phone")]
    if rest or seconds:
        time.append((rest, seconds, "staff", False, None))
    return make_facts(month=month, time=time, **kw)


@pytest.mark.parametrize(
    ("minutes", "seconds", "expected"),
    [
        (9, 59, {}),
        (10, 0, {"99470": 1}),
        (19, 59, {"99470": 1}),
        (20, 0, {"99457": 1}),
        (39, 59, {"99457": 1}),
        (40, 0, {"99457": 1, "99458": 1}),
        (59, 59, {"99457": 1, "99458": 1}),
        (60, 0, {"99457": 1, "99458": 2}),
        (100, 0, {"99457": 1, "99458": 4}),
    ],
)
def test_2026_ladder_on_both_sides_of_each_threshold(
    minutes: int, seconds: int, expected: dict[str, int]
) -> None:
    ds = evaluate_patient_month(month_of_time(minutes, seconds), BOOK)
    assert tm_lines(ds) == expected
    for code, units in expected.items():
        d = one(ds, code)
        assert d.date_of_service == date(2026, 3, 31)
        assert d.expected_payment == BOOK.for_date(date(2026, 3, 31)).code(code).amount * units


def test_19_59_is_not_20() -> None:
    ds = evaluate_patient_month(month_of_time(19, 59), BOOK)
    r = reason(one(ds, "99457"), "rpm.tm.min_minutes")
    assert not r.passed
    assert (
        r.message
        == "19 minutes (1,199 s) of 20 required: 19:59 is not 20; the month qualifies for 99470 instead"
    )
    assert set(r.evidence.time_entry_ids) == {"t1", "t2"}


def test_99458_never_rides_on_99470() -> None:
    ds = evaluate_patient_month(month_of_time(15), BOOK)
    d = one(ds, "99458")
    assert d.status is Status.NOT_BILLABLE
    assert "needs a billable 99457" in reason(d, "rpm.tm.add_on_base").message


@pytest.mark.parametrize(
    ("minutes", "expected"), [(10, {}), (19, {}), (20, {"99457": 1}), (45, {"99457": 1, "99458": 1})]
)
def test_2025_ladder_starts_at_20(minutes: int, expected: dict[str, int]) -> None:
    ds = evaluate_patient_month(month_of_time(minutes, month="2025-03", start=date(2025, 1, 30)), BOOK)
    assert "99470" not in {d.code for d in ds}
    assert tm_lines(ds) == expected


def test_99458_uncapped_by_default_and_capped_by_option() -> None:
    assert BOOK.for_date(date(2026, 3, 1)).code("99458").get("max_units") is None
    assert tm_lines(evaluate_patient_month(month_of_time(85), BOOK))["99458"] == 3
    capped = with_option(BOOK, "rpm_addon_max_units", 2)
    d = one(evaluate_patient_month(month_of_time(85), capped), "99458")
    assert d.units == 2
    assert "capped at 2 (option rpm_addon_max_units)" in reason(d, "rpm.tm.add_on_minutes").message


def test_the_example_payer_caps_99458_and_says_which_layer_did() -> None:
    book = load_rulebook("medicare", overlay="example-commercial")
    d = one(evaluate_patient_month(month_of_time(85), book), "99458")
    assert d.units == 2
    assert [p.layer for p in d.parameters if p.name.startswith("max_units")] == ["payers/example-commercial"]


def test_add_on_lists_no_entries_of_its_own() -> None:
    ds = evaluate_patient_month(month_of_time(45), BOOK)
    base, add = one(ds, "99457"), one(ds, "99458")
    assert set(reason(base, "rpm.tm.min_minutes").evidence.time_entry_ids) == {"t1", "t2"}
    assert all(not r.evidence.time_entry_ids for r in add.reasons)


def test_portal_messages_are_not_interactive_communication() -> None:
    time = [(10, 0, "staff", True, "portal"), (8, 0, "staff", True, "portal"), (10, 0, "staff", False, None)]
    ds = evaluate_patient_month(make_facts(time=time), BOOK)
    assert tm_lines(ds) == {}
    r = reason(one(ds, "99457"), "rpm.tm.interactive")
    assert r.message == (
        "no real-time interactive communication this month "
        "(2 portal messages do not count: modality portal is not one of phone, video)"
    )


def test_the_call_itself_counts_toward_the_minutes() -> None:
    ds = evaluate_patient_month(make_facts(time=[(20, 0, "practitioner", True, "video")]), BOOK)
    assert tm_lines(ds) == {"99457": 1}
    r = reason(one(ds, "99457"), "rpm.tm.interactive")
    assert r.passed and r.evidence.interactive_entry_ids == ("t1",)


def test_time_outside_the_enrollment_does_not_count() -> None:
    time = [
        (5, 0, "staff", True, "phone", 2),
        (10, 0, "staff", False, None, 10),
        (10, 0, "staff", False, None, 20),
    ]
    ds = evaluate_patient_month(make_facts(time=time, end=date(2026, 3, 15)), BOOK)
    assert tm_lines(ds) == {"99470": 1}
    r = reason(one(ds, "99470"), "rpm.tm.min_minutes")
    assert r.evidence.time_entry_ids == ("t1", "t2")
    assert ("excluded_entries", "t3 (outside the enrollment or before consent)") in r.evidence.values
    assert one(ds, "99470").date_of_service == date(2026, 3, 15)


def test_therapist_time_does_not_count_for_rpm() -> None:
    time = [(5, 0, "staff", True, "phone"), (20, 0, "therapist", False, None)]
    ds = evaluate_patient_month(make_facts(time=time), BOOK)
    assert tm_lines(ds) == {}


def test_open_month_reports_reachable_lines() -> None:
    ds = evaluate_patient_month(month_of_time(12, as_of=date(2026, 3, 20)), BOOK)
    low, high = one(ds, "99470"), one(ds, "99457")
    assert low.status is Status.REACHABLE and low.units == 1 and low.date_of_service is None
    assert high.status is Status.REACHABLE and high.units == 0
    assert "11 days left in 2026-03" in reason(high, "rpm.tm.min_minutes").message
    no_call = make_facts(time=[(25, 0, "staff", False, None)], as_of=date(2026, 3, 20))
    assert one(evaluate_patient_month(no_call, BOOK), "99457").status is Status.REACHABLE


def test_open_month_after_the_enrollment_ended_cannot_reach() -> None:
    facts = month_of_time(12, as_of=date(2026, 3, 20), end=date(2026, 3, 18))
    ds = evaluate_patient_month(facts, BOOK)
    assert one(ds, "99457").status is Status.NOT_BILLABLE


def test_rtm_rendering_is_the_therapist_with_most_minutes() -> None:
    time = [
        (5, 0, "therapist", True, "phone", None, None, "T2"),
        (12, 0, "therapist", False, None, None, None, "T1"),
        (3, 0, "staff", False, None),
    ]
    ds = evaluate_patient_month(make_facts(Program.RTM, time=time), BOOK)
    d = one(ds, "98980")
    assert d.status is Status.BILLABLE and d.rendering_practitioner_id == "T1"


def test_rendering_tie_goes_to_the_lowest_id_and_staff_render_under_the_biller() -> None:
    tie = [
        (10, 0, "therapist", True, "phone", None, None, "T9"),
        (10, 0, "therapist", False, None, None, None, "T3"),
    ]
    assert (
        one(
            evaluate_patient_month(make_facts(Program.RTM, time=tie), BOOK), "98980"
        ).rendering_practitioner_id
        == "T3"
    )
    staff = [(25, 0, "staff", True, "phone")]
    assert (
        one(evaluate_patient_month(make_facts(time=staff), BOOK), "99457").rendering_practitioner_id == "P1"
    )


def interpretation_month():
    # 35 practitioner minutes of data review, plus a 5-minute staff call: 40 minutes of TM,
    # or 35 practitioner minutes for 99091 — never both in one month.
    time = [
        (5, 0, "staff", True, "phone"),
        (20, 0, "practitioner", False, None),
        (15, 0, "practitioner", False, None),
    ]
    return make_facts(time=time)


def test_99091_and_99457_are_never_billed_together_and_the_better_one_wins() -> None:
    year = BOOK.for_date(date(2026, 3, 31))
    tm_pay = year.code("99457").amount + year.code("99458").amount
    ds = evaluate_patient_month(interpretation_month(), BOOK)
    di_pay = year.code("99091").amount or 0
    winner = {"99457", "99458"} if tm_pay >= di_pay else {"99091"}
    assert set(billable(ds)) == winner

    richer = with_param(BOOK, "99091", "amount", str(tm_pay + 10))
    ds = evaluate_patient_month(interpretation_month(), richer)
    assert set(billable(ds)) == {"99091"}
    for code in ("99457", "99458"):
        r = reason(one(ds, code), "concurrency.exclusive_with")
        assert "99091 pays more" in r.message
    d91 = one(ds, "99091")
    assert d91.rendering_practitioner_id == "P1"
    assert set(reason(d91, "rpm.interpretation.min_minutes").evidence.time_entry_ids) == {"t2", "t3"}


def test_99091_needs_30_practitioner_minutes() -> None:
    richer = with_param(BOOK, "99091", "amount", "100.00")
    time = [(29, 59, "practitioner", False, None), (30, 0, "staff", False, None)]
    d = one(evaluate_patient_month(make_facts(time=time), richer), "99091")
    assert d.status is Status.NOT_BILLABLE
    assert (
        "29 minutes (1,799 s) of 30 required: 29:59 is not 30"
        in reason(d, "rpm.interpretation.min_minutes").message
    )

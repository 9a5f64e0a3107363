"""Care management: CCM and PCM lanes, add-on caps, eligibility, and CCM with PCM."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from caretally.model import Program, Status
from caretally.rules.engine import evaluate_patient_month
from tests.rules.factories import (
    billable,
    combine,
    entries,
    make_facts,
    medicare,
    one,
    reason,
    with_option,
    with_param,
)

BOOK = medicare()
YEAR = BOOK.for_date(date(2026, 3, 31))


def staff(minutes: int, seconds: int = 0, **kw):
    return make_facts(Program.CCM, time=[(minutes, seconds, "staff", False, "portal")], **kw)


@pytest.mark.parametrize(
    ("minutes", "seconds", "expected"),
    [
        (19, 59, {}),
        (20, 0, {"99490": 1}),
        (39, 59, {"99490": 1}),
        (40, 0, {"99490": 1, "99439": 1}),
        (59, 59, {"99490": 1, "99439": 1}),
        (60, 0, {"99490": 1, "99439": 2}),
        (95, 0, {"99490": 1, "99439": 2}),
    ],
)
def test_staff_ccm_ladder_and_99439_cap(minutes: int, seconds: int, expected: dict[str, int]) -> None:
    ds = evaluate_patient_month(staff(minutes, seconds), BOOK)
    assert billable(ds) == expected


def test_99439_cap_is_read_from_the_rule_year() -> None:
    assert YEAR.code("99439").value("max_units") == 2
    d = one(evaluate_patient_month(staff(95), BOOK), "99439")
    assert (
        "3 full additional blocks of 20 beyond 99490's 20, capped at 2 (max_units)"
        in reason(d, "ccm.time.add_on_minutes").message
    )
    looser = with_param(BOOK, "99439", "max_units", 3)
    assert billable(evaluate_patient_month(staff(95), looser))["99439"] == 3


def test_ccm_has_no_live_contact_rule() -> None:
    ds = evaluate_patient_month(staff(20), BOOK)
    assert all(not r.rule_id.endswith("interactive") for r in one(ds, "99490").reasons)


def test_ccm_needs_two_chronic_conditions() -> None:
    ds = evaluate_patient_month(staff(30, diagnoses=("I10",)), BOOK)
    d = one(ds, "99490")
    assert d.status is Status.NOT_BILLABLE
    assert (
        reason(d, "ccm.chronic_conditions").message
        == "1 of 2 required chronic condition diagnoses on the enrollment"
    )


def test_practitioner_time_counts_for_the_staff_lane_but_staff_time_not_for_the_practitioner_lane() -> None:
    time = [(15, 0, "practitioner", False, "phone"), (10, 0, "staff", False, "phone")]
    ds = evaluate_patient_month(make_facts(Program.CCM, time=time), BOOK)
    assert billable(ds) == {"99490": 1}
    assert reason(one(ds, "99490"), "ccm.time.min_minutes").message.startswith("25 minutes")
    assert reason(one(ds, "99491"), "ccm.time.min_minutes").message.startswith("15 minutes (900 s) of 30")


def test_one_ccm_lane_per_month_the_better_paying_one() -> None:
    time = [(65, 0, "practitioner", False, "phone")]
    facts = make_facts(Program.CCM, time=time)
    # Staff lane 99490 + 2 × 99439 against practitioner lane 99491 + 1 × 99437.
    priced = with_param(BOOK, "99439", "amount", "48.00")  # money decides only when every lane is priced
    staff_pay = (YEAR.code("99490").amount or 0) + 2 * Decimal("48.00")
    rich = with_param(priced, "99491", "amount", str(staff_pay + 1))
    ds = evaluate_patient_month(facts, rich)
    assert billable(ds) == {"99491": 1, "99437": 1}
    lost = one(ds, "99490")
    assert lost.status is Status.NOT_BILLABLE
    assert "one CCM lane per month: ccm_practitioner pays more" in reason(lost, "ccm.lane").message


def test_complex_ccm_needs_recorded_complexity() -> None:
    rich = with_param(with_param(BOOK, "99487", "amount", "150.00"), "99489", "amount", "70.00")
    simple = evaluate_patient_month(staff(95), rich)
    d = one(simple, "99487")
    assert d.status is Status.NOT_BILLABLE
    assert not reason(d, "ccm.complexity").passed
    complex_ = evaluate_patient_month(staff(95, complexity="complex"), rich)
    assert billable(complex_) == {"99487": 1, "99489": 1}


def test_missing_initiating_visit_is_a_gap_not_a_block() -> None:
    d = one(evaluate_patient_month(staff(25, initiating_visit=None), BOOK), "99490")
    assert d.status is Status.BILLABLE
    assert d.documentation_gaps and d.documentation_gaps[0].startswith("initiating_visit_date")
    assert not reason(d, "docs.initiating_visit").passed


def pcm(minutes: int, performer: str, practitioner: str = "P1"):
    return make_facts(
        Program.PCM,
        eid="E-PCM",
        practitioner=practitioner,
        diagnoses=("I50.22",),
        time=[(minutes, 0, performer, False, "phone", None, Program.PCM)],
    )


def test_pcm_lanes() -> None:
    ds = evaluate_patient_month(pcm(65, "practitioner"), BOOK)
    assert billable(ds) == {"99424": 1, "99425": 1}
    ds = evaluate_patient_month(pcm(29, "practitioner"), BOOK)
    assert billable(ds) == {}


def ccm_and_pcm(pcm_practitioner: str):
    ccm = make_facts(Program.CCM, eid="E-CCM", practitioner="P1")
    p = pcm(0, "practitioner", practitioner=pcm_practitioner)
    month = ccm.month
    time = (
        *entries([(25, 0, "staff", False, "phone")], month, Program.CCM, prefix="c"),
        *entries([(35, 0, "practitioner", False, "phone")], month, Program.PCM, prefix="p"),
    )
    both = combine(ccm, p)
    return replace(both, time=time)


def test_ccm_and_pcm_by_the_same_practitioner_keep_the_better_paying() -> None:
    ds = evaluate_patient_month(ccm_and_pcm("P1"), BOOK)
    ccm_pay = YEAR.code("99490").amount or 0
    pcm_pay = YEAR.code("99424").amount or 0
    keep, drop = ("99424", "99490") if pcm_pay > ccm_pay else ("99490", "99424")
    assert set(billable(ds)) == {keep}
    r = reason(one(ds, drop), "concurrency.not_same_practitioner")
    assert "same practitioner" in r.message


def test_ccm_and_pcm_by_different_practitioners_follow_the_option() -> None:
    assert set(billable(evaluate_patient_month(ccm_and_pcm("P2"), BOOK))) == {"99490", "99424"}
    blocked = with_option(BOOK, "ccm_pcm_different_practitioners", "blocked")
    ds = evaluate_patient_month(ccm_and_pcm("P2"), blocked)
    assert len(billable(ds)) == 1
    dropped = next(d for d in ds if d.code in {"99490", "99424"} and d.status is Status.NOT_BILLABLE)
    assert "even by different practitioners" in reason(dropped, "concurrency.not_same_practitioner").message


def test_two_ccm_practitioners_in_one_month() -> None:
    a = make_facts(Program.CCM, eid="E-A", practitioner="P1", start=date(2026, 1, 5))
    b = make_facts(Program.CCM, eid="E-B", practitioner="P2", start=date(2026, 2, 5))
    month = a.month
    time = (
        *entries([(25, 0, "staff", False, "phone", None, Program.CCM, "P1")], month, Program.CCM, "a"),
        *entries([(25, 0, "staff", False, "phone", None, Program.CCM, "P2")], month, Program.CCM, "b"),
    )
    ds = evaluate_patient_month(replace(combine(a, b), time=time), BOOK)
    assert one(ds, "99490", enrollment_id="E-A").status is Status.BILLABLE
    late = one(ds, "99490", enrollment_id="E-B")
    assert late.status is Status.NOT_BILLABLE
    assert "one CCM practitioner per period" in reason(late, "concurrency.one_practitioner").message

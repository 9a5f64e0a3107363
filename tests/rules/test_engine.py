"""The engine as a whole: program concurrency, allocation of unassigned time, evidence."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

from caretally.model import Program, Status
from caretally.rules.allocation import allocate
from caretally.rules.engine import evaluate_patient_month
from tests.rules.factories import (
    billable,
    combine,
    entries,
    make_facts,
    medicare,
    one,
    reason,
    with_global,
    with_option,
    with_param,
)

BOOK = medicare()
YEAR = BOOK.for_date(date(2026, 3, 31))


def paid(ds) -> Decimal:
    return sum((d.expected_payment or Decimal(0) for d in ds if d.status is Status.BILLABLE), Decimal(0))


def test_rpm_and_rtm_never_together_the_better_program_stays() -> None:
    rpm = make_facts(Program.RPM, eid="E-RPM", days=range(1, 21), time=[(25, 0, "staff", True, "phone")])
    rtm = make_facts(Program.RTM, eid="E-RTM", days=range(1, 21))
    alone = {p: paid(evaluate_patient_month(f, BOOK)) for p, f in ((Program.RPM, rpm), (Program.RTM, rtm))}
    winner = max(alone, key=lambda p: alone[p])
    loser = Program.RTM if winner is Program.RPM else Program.RPM
    ds = evaluate_patient_month(combine(rpm, rtm), BOOK)
    assert {d.program for d in ds if d.status is Status.BILLABLE} == {winner}
    assert paid(ds) == alone[winner]
    dropped = [d for d in ds if d.program is loser and d.units == 0 and d.status is Status.NOT_BILLABLE]
    assert dropped
    for d in dropped:
        if any(r.rule_id == "concurrency.never_together" for r in d.reasons):
            msg = reason(d, "concurrency.never_together").message
            assert f"{winner} pays more" in msg
    assert any(r.rule_id == "concurrency.never_together" for d in dropped for r in d.reasons)


def rpm_ccm(unassigned_minutes: int, **kw):
    rpm = make_facts(Program.RPM, eid="E-RPM", days=range(1, 21))
    ccm = make_facts(Program.CCM, eid="E-CCM")
    m = rpm.month
    time = (
        *entries([(5, 0, "staff", True, "phone", 3), (10, 0, "staff", False, None, 4)], m, Program.RPM, "r"),
        *entries([(15, 0, "staff", False, "phone", 5)], m, Program.CCM, "c"),
        *entries([(unassigned_minutes, 0, "staff", False, "phone", 6)], m, None, "u"),
    )
    return replace(combine(rpm, ccm), time=time)


def test_unassigned_time_goes_where_it_pays_most() -> None:
    facts = rpm_ccm(5)
    # 15 RPM minutes (99470) and 15 CCM minutes (nothing); 5 more minutes make 99457 of the
    # RPM month or 99490 of the CCM month — whichever adds more.
    gain_rpm = YEAR.code("99457").amount - YEAR.code("99470").amount
    gain_ccm = YEAR.code("99490").amount
    target = "E-CCM" if gain_ccm > gain_rpm else "E-RPM"
    allocation = allocate(facts, YEAR)
    assert allocation.enrollment_of["u1"] == target
    assert allocation.method == "exact"
    ds = evaluate_patient_month(facts, BOOK)
    code = "99490" if target == "E-CCM" else "99457"
    d = one(ds, code)
    assert d.status is Status.BILLABLE
    assert (
        "u1"
        in reason(d, f"{'ccm.time' if code == '99490' else 'rpm.tm'}.min_minutes").evidence.time_entry_ids
    )
    why = reason(d, "time.allocation")
    assert why.passed and "u1" in why.message and "exact search" in why.message
    assert any(p.name == "allocate_unassigned_time" for p in d.parameters)


def test_unassigned_time_is_not_used_when_the_option_is_off() -> None:
    book = with_option(BOOK, "allocate_unassigned_time", False)
    ds = evaluate_patient_month(rpm_ccm(5), book)
    assert set(billable(ds)) >= {"99470"}
    assert "99490" not in billable(ds)
    r = reason(one(ds, "99490"), "time.unassigned")
    assert "u1" in r.message and "allocate_unassigned_time is false" in r.message


def test_many_unassigned_entries_use_the_greedy_search_deterministically() -> None:
    rpm = make_facts(Program.RPM, eid="E-RPM")
    ccm = make_facts(Program.CCM, eid="E-CCM")
    m = rpm.month
    spare = [(3, 0, "staff", d % 2 == 0, "phone", d) for d in range(1, 16)]
    facts = replace(combine(rpm, ccm), time=entries(spare, m, None, "u"))
    a1, a2 = allocate(facts, YEAR), allocate(facts, YEAR)
    assert a1.method == "greedy"
    assert a1.enrollment_of == a2.enrollment_of
    assert set(a1.enrollment_of) == {f"u{i}" for i in range(1, 16)}
    ds = evaluate_patient_month(facts, BOOK)
    # 45 minutes in all: both programs can be served (≥ 20 each); the greedy search must find it.
    assert {"99490", "99457"} <= set(billable(ds))


def test_named_entries_stay_in_their_program() -> None:
    facts = rpm_ccm(0)
    allocation = allocate(facts, YEAR)
    assert allocation.enrollment_of["r1"] == "E-RPM" and allocation.enrollment_of["c1"] == "E-CCM"


def test_reasons_cite_sources_and_parameters_name_their_layer() -> None:
    ds = evaluate_patient_month(make_facts(days=range(1, 21), time=[(25, 0, "staff", True, "phone")]), BOOK)
    d = one(ds, "99454")
    r = reason(d, "rpm.device.min_days")
    assert "https://" in r.citation  # source keys resolved to titles and addresses
    assert d.parameters and all(p.layer == "medicare/2026" and p.citation for p in d.parameters)
    names = {p.name for p in d.parameters}
    assert {"min_days", "max_days", "amount", "device_dos"} <= names


def test_missing_order_is_a_gap_not_a_block() -> None:
    ds = evaluate_patient_month(make_facts(days=range(1, 21), order=None), BOOK)
    d = one(ds, "99454")
    assert d.status is Status.BILLABLE
    assert d.documentation_gaps == ("order_date: no dated practitioner order for the monitoring on file",)


def test_output_is_sorted_and_deterministic() -> None:
    facts = rpm_ccm(5)
    a, b = evaluate_patient_month(facts, BOOK), evaluate_patient_month(facts, BOOK)
    assert a == b
    keys = [(d.enrollment_id, d.code, d.period.start) for d in a]
    assert keys == sorted(keys)


def test_a_code_without_an_amount_is_billed_at_zero_and_flagged() -> None:
    unpriced = with_param(BOOK, "99091", "amount", None)
    time = [(35, 0, "practitioner", False, None)]
    d = one(evaluate_patient_month(make_facts(time=time), unpriced), "99091")
    assert d.status is Status.BILLABLE and d.expected_payment == Decimal("0.00")
    assert not reason(d, "pricing.amount").passed


def test_a_rule_year_may_waive_a_structural_rule() -> None:
    facts = make_facts(days=range(1, 21), established=False)
    assert billable(evaluate_patient_month(facts, BOOK)) == {}
    waived = with_global(BOOK, "established_patient", [])  # the rule covers no program any more
    d = one(evaluate_patient_month(facts, waived), "99454")
    assert d.status is Status.BILLABLE
    assert not any(r.rule_id == "rpm.established_patient" for r in d.reasons)
    assert any(p.name == "established_patient" and p.layer == "test" for p in d.parameters)


def test_an_unrecorded_established_patient_follows_the_option() -> None:
    facts = make_facts(days=range(1, 21), established=None)
    d = one(evaluate_patient_month(facts, BOOK), "99454")
    assert d.status is Status.BILLABLE
    assert "assumed established" in reason(d, "rpm.established_patient").message
    assert any(g.startswith("established_patient:") for g in d.documentation_gaps)
    strict = with_option(BOOK, "established_patient_when_missing", "assume_not")
    d = one(evaluate_patient_month(facts, strict), "99454")
    assert d.status is Status.NOT_BILLABLE
    assert not reason(d, "rpm.established_patient").passed


def test_time_codes_record_that_no_entry_is_counted_twice() -> None:
    ds = evaluate_patient_month(make_facts(time=[(25, 0, "staff", True, "phone")]), BOOK)
    r = reason(one(ds, "99457"), "time.no_double_count")
    assert r.passed and "1 counted entries" in r.message


def test_threshold_day_option_for_time_codes() -> None:
    book = with_option(BOOK, "time_dos", "threshold_day")
    time = [
        (5, 0, "staff", True, "phone", 3),
        (10, 0, "staff", False, None, 9),
        (30, 0, "staff", False, None, 20),
    ]
    ds = evaluate_patient_month(make_facts(time=time), book)
    assert one(ds, "99457").date_of_service == date(2026, 3, 20)
    assert one(ds, "99458").date_of_service == date(2026, 3, 20)  # rides on its base's claim line


def test_unassigned_time_from_the_previous_month_is_left_to_that_month() -> None:
    # The 30-day period 2026-02-15..2026-03-16 reaches into February; an unassigned
    # February entry was February's to allocate, so 99091 may not pick it up in March.
    facts = make_facts(start=date(2026, 1, 16), time=[(20, 0, "practitioner", False, None, 10)])
    feb = entries([(15, 0, "practitioner", False, None, date(2026, 2, 20))], facts.month, None, "u")
    facts = replace(facts, time=facts.time + feb)
    d = one(evaluate_patient_month(facts, BOOK), "99091")
    assert d.period.start == date(2026, 2, 15)
    assert d.status is Status.NOT_BILLABLE
    assert "u1" in reason(d, "time.unassigned").message
    named = replace(facts, time=(*facts.time[:1], replace(feb[0], program=Program.RPM)))
    assert one(evaluate_patient_month(named, BOOK), "99091").status is Status.BILLABLE

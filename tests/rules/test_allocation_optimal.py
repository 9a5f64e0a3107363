"""Allocation of unassigned time is optimal for the patient-month: checked by brute force.

For small random patient-months every way of handing the unassigned entries to the
enrolled programs is tried through the same engine, and the engine's own allocation must
earn exactly the best of them — never less, and never by counting an entry twice.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from decimal import Decimal

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from caretally.model import PatientMonthFacts, Program, Status
from caretally.rules.engine import evaluate_patient_month
from tests.rules.test_engine_properties import BOOK, counted_entries, patient_months


def revenue(facts: PatientMonthFacts) -> Decimal:
    ds = evaluate_patient_month(facts, BOOK)
    return sum((d.expected_payment or Decimal(0) for d in ds if d.status is Status.BILLABLE), Decimal(0))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(patient_months(), st.data())
def test_allocation_matches_brute_force(facts: PatientMonthFacts, data: st.DataObject) -> None:
    facts = replace(facts, as_of=facts.month.end)  # a closed month: revenue is final
    unassigned = [t for t in facts.time if t.program is None and facts.month.contains(t.local_date)]
    assume(0 < len(unassigned) <= 5 and len({p.enrollment.program for p in facts.programs}) >= 2)
    programs = sorted({p.enrollment.program for p in facts.programs}, key=lambda p: p.value)
    best = Decimal(0)
    for choice in itertools.product(programs, repeat=len(unassigned)):
        given_to = dict(zip((t.entry_id for t in unassigned), choice, strict=True))
        fixed = replace(
            facts,
            time=tuple(
                replace(t, program=given_to[t.entry_id]) if t.entry_id in given_to else t for t in facts.time
            ),
        )
        best = max(best, revenue(fixed))
    decisions = evaluate_patient_month(facts, BOOK)
    mine = sum(
        (d.expected_payment or Decimal(0) for d in decisions if d.status is Status.BILLABLE), Decimal(0)
    )
    assert mine == best
    seen: dict[str, str] = {}
    for d in decisions:
        if d.status is Status.BILLABLE:
            for entry in counted_entries(d):
                assert seen.setdefault(entry, d.enrollment_id) == d.enrollment_id


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=14), min_size=12, max_size=12))
def test_twelve_untagged_entries_are_allocated_exactly(minutes: list[int]) -> None:
    """At the documented limit (12 entries, two programs each) the search is exact, not greedy."""
    from tests.rules.factories import combine, entries, make_facts

    # CCM and PCM by different practitioners: both take staff minutes, so every entry has two
    # candidates, and the two programs have the fewest codes (2^12 engine runs stay affordable).
    ccm = make_facts(Program.CCM, eid="E-CCM")
    pcm = make_facts(Program.PCM, eid="E-PCM", practitioner="P2", diagnoses=("I50.22",))
    specs = [(m, 0, "staff", False, None, 2 + i, None) for i, m in enumerate(minutes)]
    facts = combine(ccm, pcm, time=entries(specs, ccm.month, None, prefix="u"))
    decisions = evaluate_patient_month(facts, BOOK)
    methods = {
        v
        for d in decisions
        for r in d.reasons
        if r.rule_id == "time.allocation"
        for k, v in r.evidence.values
        if k == "method"
    }
    assert methods == {"exact"}, methods
    best = Decimal(0)
    for choice in itertools.product((Program.CCM, Program.PCM), repeat=12):
        fixed = replace(
            facts, time=tuple(replace(t, program=p) for t, p in zip(facts.time, choice, strict=True))
        )
        best = max(best, revenue(fixed))
    assert revenue(facts) == best

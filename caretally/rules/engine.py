"""The rules engine's one entry point: a patient-month of facts in, decisions out.

Pure: no I/O, no clock (``facts.as_of`` says how far the data goes), deterministic order.
Each period is judged by the rule-year in force on its last day — a 30-day period that
starts in December and ends in January follows January's rules; calendar-month codes
follow the rule-year of the month's end.

Steps: cut each time entry down to the minutes no earlier entry of the same performer
covers (:mod:`caretally.rules.intervals`), credit every time entry to one enrollment
(:mod:`caretally.rules.allocation`, which scores candidate allocations with the same
code), run every code family for every enrollment, then the concurrency pass; sort by
enrollment, code and period start.
See :mod:`caretally.rules.families.common` for how a status is derived (``reachable``
means the period is still open — whether or not the threshold is already met).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal

from caretally.model import Decision, PatientMonthFacts
from caretally.rules.allocation import Allocation, allocate, total
from caretally.rules.families import month
from caretally.rules.intervals import counts_once, trim_overlaps
from caretally.rules.params import RuleBook, RuleYear


def evaluate_patient_month(facts: PatientMonthFacts, rules: RuleBook) -> list[Decision]:
    """Every decision for every enrollment and code of the patient-month, with reasons."""
    if counts_once(rules.for_date(facts.month.end)):
        facts = trim_overlaps(facts)
    year_for = _year_for(rules)
    static: list[list[Decision]] = []
    cache: dict[tuple[str, tuple[str, ...]], list[Decision]] = {}
    scores: dict[frozenset[tuple[str, str]], Decimal] = {}

    def score(assignment: Mapping[str, str]) -> Decimal:
        # Device and set-up decisions do not depend on the allocation: made once, and only
        # for the patients whose untagged time needs a search at all. The search asks for
        # some assignments twice (the best one again, to explain it): answered once.
        key = frozenset(assignment.items())
        known = scores.get(key)
        if known is not None:
            return known
        if not static:
            static.append(month.static_decisions(facts, year_for))
        trial = Allocation(enrollment_of=dict(assignment), program_of={})
        scores[key] = value = total(month.decide(facts, year_for, trial, static[0], cache, payment_only=True))
        return value

    allocation = allocate(facts, rules.for_date(facts.month.end), score)
    return month.decide(facts, year_for, allocation, made_static=static[0] if static else None)


def _year_for(rules: RuleBook) -> Callable[[date], RuleYear]:
    """``rules.for_date`` remembered per day for one patient-month (asked ~100 times a patient)."""
    known: dict[date, RuleYear] = {}

    def year_for(day: date) -> RuleYear:
        year = known.get(day)
        if year is None:
            year = known[day] = rules.for_date(day)
        return year

    return year_for

"""Scoring trial allocations without their explanations changes no score and no decision.

The allocation search sums expected payments over every trial allocation; it builds
those trial decisions ``payment_only`` (no notes, parameters or measures). For generated
patient-months with untagged time that several programs could take, every trial the
search asks for must score the same both ways, every decision of the trial must keep
its status, units, date of service and payment, and the engine must return exactly the
decisions an engine scoring with full decisions returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal

from hypothesis import HealthCheck, assume, given, settings

from caretally.model import Decision, PatientMonthFacts, Status
from caretally.rules.allocation import Allocation, _candidates, _order, allocate, total
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.families import month
from caretally.rules.intervals import counts_once, trim_overlaps
from caretally.rules.params import RuleBook, RuleYear
from tests.rules.test_engine_properties import BOOK, patient_months

Outcome = tuple[str, str, date, Status, int, date | None, Decimal | None]


def _outcomes(decisions: Sequence[Decision]) -> list[Outcome]:
    return sorted(
        (d.enrollment_id, d.code, d.period.start, d.status, d.units, d.date_of_service, d.expected_payment)
        for d in decisions
    )


def _prepared(facts: PatientMonthFacts, book: RuleBook) -> PatientMonthFacts:
    return trim_overlaps(facts) if counts_once(book.for_date(facts.month.end)) else facts


def _searched(facts: PatientMonthFacts) -> bool:
    """Whether the month has untagged time of its own that two or more programs could take."""
    year = BOOK.for_date(facts.month.end)
    programs = _order(facts.programs)
    return any(
        t.program is None and facts.month.contains(t.local_date) and len(_candidates(t, programs, year)) >= 2
        for t in facts.time
    )


def _full_engine(facts: PatientMonthFacts, book: RuleBook) -> list[Decision]:
    """The engine as it was before: every trial scored with full decisions."""
    facts = _prepared(facts, book)

    def year_for(day: date) -> RuleYear:
        return book.for_date(day)

    static = month.static_decisions(facts, year_for)
    cache: dict[tuple[str, tuple[str, ...]], list[Decision]] = {}

    def score(assignment: Mapping[str, str]) -> Decimal:
        trial = Allocation(enrollment_of=dict(assignment), program_of={})
        return total(month.decide(facts, year_for, trial, static, cache))

    allocation = allocate(facts, book.for_date(facts.month.end), score)
    return month.decide(facts, year_for, allocation, made_static=static)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(patient_months())
def test_every_trial_scores_the_same_without_explanations(facts: PatientMonthFacts) -> None:
    assume(_searched(facts))
    facts = _prepared(facts, BOOK)

    def year_for(day: date) -> RuleYear:
        return BOOK.for_date(day)

    static = month.static_decisions(facts, year_for)
    quick_cache: dict[tuple[str, tuple[str, ...]], list[Decision]] = {}
    trials: list[Decimal] = []

    def score(assignment: Mapping[str, str]) -> Decimal:
        trial = Allocation(enrollment_of=dict(assignment), program_of={})
        full = month.decide(facts, year_for, trial, static)
        quick = month.decide(facts, year_for, trial, static, quick_cache, payment_only=True)
        assert _outcomes(quick) == _outcomes(full)
        assert total(quick) == total(full)
        trials.append(total(full))
        return total(full)

    allocate(facts, BOOK.for_date(facts.month.end), score)
    assert len(trials) >= 3  # the month without the untagged time, then at least two trials


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(patient_months())
def test_the_engine_decides_as_with_full_trial_decisions(facts: PatientMonthFacts) -> None:
    assume(_searched(facts))
    assert evaluate_patient_month(facts, BOOK) == _full_engine(facts, BOOK)

"""Compare the columnar pass with ``evaluate_patient_month`` on the fields it decides."""

from __future__ import annotations

from caretally.billing.run import WARNING_RULES
from caretally.columnar.decide import Outcome, decide_months
from caretally.columnar.facts import overlap_warnings
from caretally.model import Decision, PatientMonthFacts
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.families.common import service_parts
from caretally.rules.params import RuleBook


def engine_outcomes(facts: PatientMonthFacts, book: RuleBook) -> list[Outcome]:
    return outcomes_of(facts, evaluate_patient_month(facts, book), book)


def outcomes_of(facts: PatientMonthFacts, ds: list[Decision], book: RuleBook) -> list[Outcome]:
    """The engine's decisions reduced to what the columnar pass gives (claim-line parts too)."""
    return sorted(
        (_outcome(d, service_parts(d, ds, facts, book.for_date(d.period.end))) for d in ds),
        key=lambda o: (o.enrollment_id, o.code, o.period_start),
    )


def _outcome(d: Decision, parts: tuple[str, ...]) -> Outcome:
    return Outcome(
        d.enrollment_id,
        d.code,
        d.period.start,
        d.period.end,
        d.status,
        d.units,
        d.date_of_service,
        d.expected_payment,
        d.rendering_practitioner_id,
        parts,
        tuple(r.rule_id for r in d.reasons if r.blocking),
    )


def check_agreement(facts: PatientMonthFacts, book: RuleBook) -> str | None:
    """Assert both paths agree on an unflagged month; return the flag of a flagged one."""
    result = decide_months([(facts, book)])
    if facts.patient_id in result.flagged:
        return result.flagged[facts.patient_id]
    mine = result.decided[facts.patient_id]
    decisions = evaluate_patient_month(facts, book)
    theirs = outcomes_of(facts, decisions, book)
    assert mine == theirs, diff(mine, theirs)
    assert overlap_warnings(facts, book) == engine_warnings(decisions)
    return None


def engine_warnings(decisions: list[Decision]) -> list[tuple[str, str, str]]:
    """The run summary's warnings as ``billing.run._summarise`` collects them from reasons."""
    out: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for d in decisions:
        for r in d.reasons:
            entry = dict(r.evidence.values).get("entry", "")
            if r.rule_id in WARNING_RULES and (r.rule_id, entry) not in seen:
                seen.add((r.rule_id, entry))
                out.append((r.rule_id, r.message, entry))
    return out


def diff(mine: list[Outcome], theirs: list[Outcome]) -> str:
    a, b = set(mine), set(theirs)
    lines = ["columnar ≠ engine"]
    lines += [f"  columnar only: {o}" for o in sorted(a - b, key=repr)]
    lines += [f"  engine only:   {o}" for o in sorted(b - a, key=repr)]
    return "\n".join(lines)

"""The one place where stored facts meet the rules.

Ingest never calls rules and rules never touch the database; this module reads the
rule-year options that shape the facts, builds the facts in SQL and hands each
patient-month to the pure engine. ``explain``, the month run, worklists and the scenario
tests all come through here, so there is exactly one path from data to decisions.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

from sqlalchemy import Engine

from caretally.billing.payers import PayerRules
from caretally.facts import FactsOptions, build_month_facts
from caretally.model import Decision, PatientMonthFacts, Period
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.params import RuleBook


def facts_options(rules: RuleBook, month: Period) -> FactsOptions:
    """The options that change which days count, read from the rule-year of the month."""
    year = rules.for_date(month.end)
    anchor = year.options["device_period_anchor"].value if "device_period_anchor" in year.options else None
    manual = (
        year.options["rtm_count_manual_readings"].value
        if "rtm_count_manual_readings" in year.options
        else None
    )
    return FactsOptions(
        anchor=anchor or "enrollment_start",
        rtm_count_manual=True if manual is None else bool(manual),
    )


def evaluate_month(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: RuleBook | PayerRules,
    *,
    as_of: date | None = None,
    patients: set[str] | None = None,
    id_range: tuple[str, str] | None = None,
) -> Iterator[tuple[PatientMonthFacts, list[Decision]]]:
    """Facts and decisions for every patient-month, in patient order.

    With ``PayerRules`` each patient is judged by the rules of their payer; the options
    that shape the facts (period anchor, patient-reported RTM data) come from Medicare's.
    """
    payer_rules = rules if isinstance(rules, PayerRules) else PayerRules(rules)
    options = facts_options(payer_rules.base, month)
    facts_stream = build_month_facts(
        engine, org_id, month, as_of=as_of, options=options, patients=patients, id_range=id_range
    )
    for facts in facts_stream:
        yield facts, evaluate_patient_month(facts, payer_rules.for_payer(facts.payer))

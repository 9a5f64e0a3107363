"""What a stored month would earn under another rule-year: ``bill --what-if-rules``.

A practice facing a new rule-year (CY2027, proposed) wants to know what it means in
money before 1 January: the month's current run stays what it is, and the same month
is judged again — same data, same settings the run recorded — by the chosen year,
re-dated to cover the month. Nothing is stored: no run, no lines, no lock is taken. The
result is the revenue per code of the stored run beside the what-if, and their
difference, with the what-if year's status (a proposed year says so).

The what-if reads the month's data as it is stored now. If data arrived after the run
was made, the difference includes it: bill the month first (nothing is stored when
nothing changed), or compare with ``--what-if-rules`` of the run's own year, which
shows exactly what the new data alone would change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from caretally.billing.evaluate import map_month
from caretally.billing.payers import PayerRules
from caretally.billing.pricing import Pricing
from caretally.billing.run import (
    BillingSettings,
    RunError,
    _directory,
    claim_lines_for,
    current_run,
    run_problem,
    stored_lines,
)
from caretally.errors import Problem
from caretally.model import ClaimLine, Decision, PatientMonthFacts, Period
from caretally.rules.params import MissingParameter, RuleBook, RuleYear
from caretally.store import schema

ZERO = Decimal("0.00")


@dataclass(frozen=True)
class CodeTotals:
    lines: int = 0
    units: int = 0
    payment: Decimal = ZERO

    def plus(self, line: ClaimLine) -> CodeTotals:
        return CodeTotals(self.lines + 1, self.units + line.units, self.payment + line.expected_payment)

    def to_json(self) -> dict[str, Any]:
        return {"lines": self.lines, "units": self.units, "expected_payment": str(self.payment)}


@dataclass(frozen=True)
class WhatIfYear:
    """The rule-year the month was judged by in the what-if, as a reader needs it."""

    year: int
    layers: str
    status: str
    citation: str


@dataclass
class WhatIf:
    month: str
    run_id: str
    run_status: str
    year: WhatIfYear
    current: dict[str, CodeTotals] = field(default_factory=dict)
    what_if: dict[str, CodeTotals] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: Proposed rule-years that judged the what-if's decisions (layers → citation).
    provisional: dict[str, str] = field(default_factory=dict)

    @property
    def codes(self) -> list[str]:
        return sorted(self.current.keys() | self.what_if.keys())

    def pair(self, code: str) -> tuple[CodeTotals, CodeTotals]:
        return self.current.get(code, CodeTotals()), self.what_if.get(code, CodeTotals())

    @property
    def current_total(self) -> Decimal:
        return sum((t.payment for t in self.current.values()), ZERO)

    @property
    def what_if_total(self) -> Decimal:
        return sum((t.payment for t in self.what_if.values()), ZERO)

    def to_json(self) -> dict[str, Any]:
        by_code = {}
        for code in self.codes:
            now, then = self.pair(code)
            by_code[code] = {
                "current": now.to_json(),
                "what_if": then.to_json(),
                "difference": str(then.payment - now.payment),
            }
        return {
            "month": self.month,
            "run_id": self.run_id,
            "run_status": self.run_status,
            "stored": False,
            "what_if_rules": {
                "year": self.year.year,
                "rule_year": self.year.layers,
                "status": self.year.status,
                "citation": self.year.citation,
            },
            "provisional": bool(self.provisional),
            "current_revenue": str(self.current_total),
            "what_if_revenue": str(self.what_if_total),
            "difference": str(self.what_if_total - self.current_total),
            "by_code": by_code,
            "problems": [p.to_json() for p in self.problems],
        }


def redated(book: RuleBook, number: int) -> RuleBook:
    """``book`` with its rule-year ``number`` in force on every date (test of a month only).

    Of a year a payer overlay splits, the layered part is taken, so a commercial payer's
    month is judged by its overlay on that year where the overlay covers it.
    """
    year = book.for_year(number)
    always = replace(year, effective_from=date.min, effective_to=date.max)
    return RuleBook(name=book.name, years=(always,))


def what_if_rules(rules: PayerRules, number: int) -> PayerRules:
    """Every payer's rules replaced by their rule-year ``number``."""
    return PayerRules(redated(rules.base, number), {p: redated(b, number) for p, b in rules.overlays.items()})


def settings_of(settings_json: Mapping[str, Any] | None) -> BillingSettings:
    """The settings the stored run recorded, so the what-if differs only by its rules."""
    s = settings_json or {}
    fees = {str(k): Decimal(str(v)) for k, v in (s.get("fee_schedule") or {}).items()}
    pricing = Pricing(
        locality=s.get("locality") or None,
        qualifying_apm=bool(s.get("qualifying_apm")),
        fee_schedule=fees,
    )
    return BillingSettings(
        place_of_service=str(s.get("place_of_service") or "11"),
        pricing=pricing,
        payer_overlays={str(k): str(v) for k, v in (s.get("payer_overlays") or {}).items()},
    )


def _year_summary(year: RuleYear) -> WhatIfYear:
    return WhatIfYear(year.year, year.label, year.status, year.status_citation)


@dataclass(frozen=True)
class _Part:
    """One patient's share of the what-if, made where the patient was evaluated."""

    by_code: dict[str, CodeTotals]
    provisional: dict[str, str]


def what_if_month(
    engine: Engine,
    org_id: str,
    month: Period,
    number: int,
    *,
    gpci_path: Path | None = None,
    load: Callable[[dict[str, str]], PayerRules] = PayerRules.load,
) -> WhatIf:
    """The month's current run beside the same month judged by rule-year ``number``.

    Refused (``RunError``) when the month has no run (``no_run``) or no rule-year
    ``number`` exists (``unknown_rule_year``). Settings come from the stored run
    (locality, QP factor, fee schedule, place of service, payer overlays); ``gpci_path``
    may name a GPCI file for a locality year not shipped or imported.
    """
    text = month.start.strftime("%Y-%m")
    run = current_run(engine, org_id, text)
    if run is None:
        raise RunError(
            run_problem(
                "no_run",
                f"{text} has no stored run to compare with",
                month=text,
                hint=f"bill it first: caretally bill --month {text}",
            )
        )
    r = schema.billing_runs
    with engine.connect() as conn:
        stored_settings = conn.execute(select(r.c.settings).where(r.c.run_id == run.run_id)).scalar()
    settings = settings_of(stored_settings)
    if gpci_path is not None:
        settings = replace(settings, pricing=replace(settings.pricing, gpci_path=gpci_path))
    rules = load(dict(settings.payer_overlays))
    try:
        chosen = what_if_rules(rules, number)
    except MissingParameter as exc:
        raise RunError(
            run_problem(
                "unknown_rule_year",
                str(exc.args[0]) if exc.args else f"no rule-year {number}",
                month=text,
                run_id=run.run_id,
                hint="caretally rules show --date YYYY-MM-DD lists the rule-year in force on a date",
            )
        ) from None
    directory = _directory(engine, org_id)
    out = WhatIf(text, run.run_id, run.status, _year_summary(chosen.base.years[0]))
    for line in stored_lines(engine, run.run_id):
        out.current[line.code] = out.current.get(line.code, CodeTotals()).plus(line)

    def judge(facts: PatientMonthFacts, decisions: list[Decision]) -> _Part:
        lines = claim_lines_for(facts, decisions, chosen, settings, directory, "what-if")
        by_code: dict[str, CodeTotals] = {}
        for line in lines:
            by_code[line.code] = by_code.get(line.code, CodeTotals()).plus(line)
        flagged = {d.rule_year: _citation(d) for d in decisions if d.provisional}
        return _Part(by_code, flagged)

    for part in map_month(engine, org_id, month, chosen, judge, problems=out.problems):
        for code, totals in part.by_code.items():
            have = out.what_if.get(code, CodeTotals())
            out.what_if[code] = CodeTotals(
                have.lines + totals.lines, have.units + totals.units, have.payment + totals.payment
            )
        for layers, citation in part.provisional.items():
            out.provisional.setdefault(layers, citation)
    return out


def _citation(d: Decision) -> str:
    return next((r.citation for r in d.reasons if r.rule_id == "rules.provisional"), "")

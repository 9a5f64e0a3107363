"""Probe for dead values: changing any parameter of any code should change some decision.

NOT YET PART OF THE SUITE (the file name keeps pytest from collecting it): run it with
``python -m pytest tests/rules/dead_values_probe.py -q`` (about 4 minutes). On
2026-12-01 it still reports parameters that no decision reads — add-on codes'
``max_minutes``, ``requires_interactive``, ``interactive_modalities``, ``performers`` and
``exclusive_with`` (their base's values decide) — and cases its battery does not reach
yet (complex CCM with two conditions, RTM set-up). Issue 9 item 8 is done when this
passes and is renamed ``test_no_dead_values.py``.

For every code of every Medicare rule-year, each parameter is perturbed in the engine's
own rule-year (up, down, cleared, flipped — whatever its type allows) and a battery of
patient-months built to exercise that code's program is judged before and after. A
parameter whose every perturbation leaves every decision (status, units, date of
service, payment) as it was is a value a reviewer could edit without effect: the test
names it. ``descriptor`` is text for people and ``rvu`` feeds locality pricing, which is
checked separately below.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from caretally.billing.pricing import Pricing, price
from caretally.model import Decision, PatientMonthFacts, Program
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.params import MissingParameter, RuleBook
from tests.rules.factories import combine, device, make_facts, medicare, with_param

BOOK = medicare()
MONTHS = {2025: "2025-03", 2026: "2026-03"}
MINUTES = (5, 10, 12, 19, 20, 21, 25, 30, 31, 35, 39, 40, 41, 45, 55, 59, 60, 61, 65, 80, 89, 90, 95, 125)
DAYS = (1, 2, 3, 10, 15, 16, 17, 20, 30)
UNREAD = {"descriptor", "rvu"}


def battery(program: Program, month: str) -> Iterator[PatientMonthFacts]:
    """Patient-months on both sides of every threshold of the program's codes."""
    performers = {
        Program.RPM: ("staff", "practitioner"),
        Program.RTM: ("staff", "therapist"),
        Program.CCM: ("staff", "practitioner"),
        Program.PCM: ("staff", "practitioner"),
    }[program]
    kinds = ("respiratory", "musculoskeletal", "cognitive_behavioral") if program is Program.RTM else (None,)
    for kind in kinds:
        devices = [device(program, kind=kind, setup=date(2025, 1, 1))] if kind else None
        for n in DAYS:
            yield make_facts(program, month=month, days=range(1, n + 1), devices=devices)
    for who in performers:
        for m in MINUTES:
            for modality in ("phone", "text", None):
                call = modality is not None
                yield make_facts(program, month=month, time=[(m, 0, who, call, modality)])
            yield make_facts(
                program,
                month=month,
                time=[(m, 0, who, True, "phone")],
                complexity="complex",
                diagnoses=("I50.22",),
            )
    if program is Program.CCM:  # another program's code excluded by one of this program's
        pcm = make_facts(Program.PCM, month=month, eid="E-PCM", time=[(40, 0, "staff", True, "phone")])
        yield combine(make_facts(program, month=month, time=[(40, 0, "staff", True, "phone")]), pcm)


def outcome(facts: list[PatientMonthFacts], book: RuleBook) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for f in facts:
        try:
            ds: list[Decision] = evaluate_patient_month(f, book)
        except MissingParameter as exc:  # a perturbation the engine refuses is a change too
            out.append(("refused", str(exc)))
            continue
        out.append(
            tuple(
                (d.code, d.period.start, d.status, d.units, d.date_of_service, d.expected_payment) for d in ds
            )
        )
    return out


def perturbations(name: str, value: Any) -> list[Any]:
    if name == "exclusive_with":
        return [[]]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, 1 if value > 1 else 2]
    if value is None:
        return {"amount": ["1.00"], "requires_complexity": ["complex"]}.get(name, [1, 25, 45])
    if name == "amount":
        return [str(Decimal(str(value)) + 1)]
    if name in ("performers", "interactive_modalities"):
        items = list(value)
        return [items[1:], items[:-1], [*items, "text"], ["therapist"]]
    if name == "rtm_kind":
        return [k for k in ("respiratory", "musculoskeletal", "cognitive_behavioral") if k != value]
    if name == "lane":
        return [f"{value}_split"]
    if name == "requires_complexity":
        return [None]
    if name == "add_on_to":
        return [None]
    raise AssertionError(f"no perturbation for {name}={value!r}")


CASES = [
    (year, code, name)
    for year, y in ((2025, BOOK.for_date(date(2025, 6, 1))), (2026, BOOK.for_date(date(2026, 6, 1))))
    for code, rule in sorted(y.codes.items())
    for name in sorted(rule.params)
    if name not in UNREAD
]


@pytest.mark.parametrize(("year", "code", "name"), CASES, ids=[f"{y}-{c}-{n}" for y, c, n in CASES])
def test_every_parameter_changes_some_decision(year: int, code: str, name: str) -> None:
    ry = BOOK.for_date(date(year, 6, 1))
    rule = ry.code(code)
    facts = list(battery(rule.program, MONTHS[year]))
    before = outcome(facts, BOOK)
    value = rule.params[name].value
    tried = []
    for new in perturbations(name, value):
        changed = with_param(BOOK, code, name, new)
        if name == "exclusive_with":  # the loader keeps exclusions symmetric: clear both sides
            for other in value or ():
                if other in ry.codes:
                    rest = [c for c in ry.code(other).get("exclusive_with") or () if c != code]
                    changed = with_param(changed, other, "exclusive_with", rest)
        if outcome(facts, changed) != before:
            return
        tried.append(new)
    pytest.fail(f"{year} {code}.{name}={value!r}: no decision changed for {tried}")


@pytest.mark.parametrize("year", [2025, 2026])
def test_rvu_values_change_a_price(year: int, tmp_path: Path) -> None:
    """RVU parts feed locality pricing; the RVU total feeds qualifying-APM pricing."""
    ry = BOOK.for_date(date(year, 6, 1))
    gpci = tmp_path / "gpci.csv"
    gpci.write_text("mac,state,locality,name,work,pe,mp\n99999,TS,01,TEST,1.000,1.500,0.500\n")
    local = Pricing(locality="TS-01", gpci_path=gpci)
    qp = Pricing(qualifying_apm=True)
    checked = 0
    for rule in ry.codes.values():
        rvu = rule.get("rvu")
        if not rvu:
            continue
        parts = dict(rvu)
        for key, pricing in (("pe_nonfacility", local), ("total", qp)):
            if key not in parts:
                continue
            bumped = {**parts, key: str(Decimal(parts[key]) + 1)}
            other = with_param(BOOK, rule.code, "rvu", bumped).for_date(date(year, 6, 1))
            before = price(rule, ry, 1, pricing).expected_payment
            after = price(other.code(rule.code), other, 1, pricing).expected_payment
            assert before != after, (rule.code, key)
            checked += 1
    assert checked

"""CY2027 as a provisional rule-year: "2026 + these differences", flagged wherever it judges.

The 2027 file is a diff on 2026 (``extends: 2026``): these tests hold it to that — every
value it does not name is 2026's, with 2026's file and line — and check what it does
name: the proposed conversion factors, derived amounts, the three proposals as options
that are off by default but change decisions when on, and the provisional flag on every
decision it judges.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from caretally.model import PatientMonthFacts, Program, ReasonKind, Status, TimeFact
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.loader import RULESETS_ROOT, load_rulebook, rvu_total
from caretally.rules.params import RuleBook, RuleYear
from tests.rules.factories import make_facts, medicare, with_option

CF_2026, CF_2027 = Decimal("33.4009"), Decimal("32.8409")
PROPOSALS = ("initiating_visit_required", "rtm_requires_established_patient", "staff_minutes_employed_only")


@pytest.fixture(scope="module")
def book() -> RuleBook:
    return medicare()


def _years(book: RuleBook) -> tuple[RuleYear, RuleYear]:
    return book.for_year(2026), book.for_year(2027)


def _cents(x: Decimal) -> Decimal:
    return x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def test_2027_is_proposed_and_cites_the_proposal(book: RuleBook) -> None:
    y26, y27 = _years(book)
    assert (y26.status, y26.provisional) == ("final", False)
    assert (y27.status, y27.provisional) == ("proposed", True)
    assert y27.layers == ("medicare/2026", "medicare/2027")
    keys = [k.strip() for k in y27.status_citation.split(",")]
    assert "cms-2027-pfs-proposed" in keys and all(k in y27.sources for k in keys)
    assert "CMS-1848-P" in y27.sources["cms-2027-pfs-proposed"]
    assert "91 FR 43842" in y27.sources["cms-2027-pfs-proposed"]
    assert book.for_date(date(2027, 1, 15)) is y27
    cf = y27.globals["conversion_factor"]
    assert (cf.value, cf.layer) == (CF_2027, "medicare/2027")
    assert y27.globals["conversion_factor_qp"].value == Decimal("33.1693")


def test_every_value_2027_does_not_name_is_2026s(book: RuleBook) -> None:
    """Same value, same citation, same file and line: a reviewer reads 2027 as a diff."""
    y26, y27 = _years(book)
    assert set(y27.codes) == set(y26.codes)
    for code, rule in y26.codes.items():
        mine = y27.codes[code]
        assert (mine.family, mine.program, mine.period_kind) == (rule.family, rule.program, rule.period_kind)
        for name, p in rule.params.items():
            if name == "amount":
                continue
            q = mine.params[name]
            assert (q.value, q.citation, q.layer, q.source) == (p.value, p.citation, p.layer, p.source)
    for name, p in y26.options.items():
        q = y27.options[name]
        assert (q.value, q.layer, q.source) == (p.value, p.layer, p.source), name
    changed = {n for n in y26.globals if y27.globals[n].value != y26.globals[n].value}
    assert changed == {"conversion_factor", "conversion_factor_qp"}
    assert y27.modifiers.keys() == y26.modifiers.keys()
    assert {n for n in y27.options if n not in y26.options} == set(PROPOSALS)


def test_2027_amounts_are_derived_from_2026_and_say_so(book: RuleBook) -> None:
    y26, y27 = _years(book)
    seen = {"rvu": 0, "amount": 0, "unpriced": 0}
    for code, rule in y26.codes.items():
        p = y27.codes[code].params["amount"]
        assert p.layer == "medicare/2027" and p.derivation, code
        assert "caretally-derivation" in p.citation and "cms-2027-pfs-proposed" in p.citation
        total = rvu_total(rule.get("rvu"))
        if total is not None:
            assert p.value == _cents(total * CF_2027), code
            seen["rvu"] += 1
        elif rule.amount is not None:
            assert p.value == _cents(rule.amount * CF_2027 / CF_2026), code
            seen["amount"] += 1
        else:
            assert p.value is None, code  # unpriced in 2026 stays unpriced
            seen["unpriced"] += 1
    assert all(seen.values()), seen
    assert y27.code("99454").amount == Decimal("51.23")  # 1.56 × 32.8409
    assert "1.56 total RVU × CF 32.8409" in (y27.code("99454").params["amount"].derivation or "")


def test_an_edit_of_2026_flows_into_2027(tmp_path: Path) -> None:
    root = tmp_path / "rulesets"
    shutil.copytree(RULESETS_ROOT, root)
    path = root / "medicare" / "2026.yaml"
    text = path.read_text()
    before = load_rulebook(root=root).for_year(2027)
    old = 'rvu: {value: {work: "1.10", pe_nonfacility: "0.49", mp: "0.07", total: "1.66"}'
    assert old in text
    path.write_text(text.replace(old, old.replace('total: "1.66"', 'total: "1.70"')))
    load_rulebook.cache_clear()  # type: ignore[attr-defined]  # shipped files never change in a process
    after = load_rulebook(root=root).for_year(2027)
    assert after.code("99091").amount == _cents(Decimal("1.70") * CF_2027)
    assert after.content_hash != before.content_hash


# --------------------------------------------------------------------------------------
# Decisions judged by 2027
# --------------------------------------------------------------------------------------


def _device_month(month: str, **kw: object) -> PatientMonthFacts:
    return make_facts(Program.RPM, month=month, days=range(1, 21), **kw)  # type: ignore[arg-type]


def test_every_decision_of_2027_is_flagged_and_no_2026_one_is(book: RuleBook) -> None:
    for month, flagged in (("2026-03", False), ("2027-03", True)):
        decisions = evaluate_patient_month(_device_month(month, time=[(25, 0, "staff", True, "phone")]), book)
        assert decisions
        for d in decisions:
            assert d.provisional is flagged, (month, d.code)
            notes = [r for r in d.reasons if r.rule_id == "rules.provisional"]
            if not flagged:
                assert not notes
                continue
            (note,) = notes
            assert note.kind is ReasonKind.ADVISORY and not note.blocking
            assert "CMS-1848-P" in note.citation and "proposed rule-year medicare 2027" in note.message
    billable = {d.code: d for d in evaluate_patient_month(_device_month("2027-03"), book)}
    assert billable["99454"].status is Status.BILLABLE
    assert billable["99454"].expected_payment == Decimal("51.23")
    assert "derived" in next(r.message for r in billable["99454"].reasons if r.rule_id == "rules.provisional")


def _outcome(facts: PatientMonthFacts, book: RuleBook) -> dict[str, tuple[Status, int, tuple[str, ...]]]:
    return {
        d.code: (d.status, d.units, tuple(r.rule_id for r in d.reasons if r.blocking))
        for d in evaluate_patient_month(facts, book)
    }


def _contracted(facts: PatientMonthFacts) -> PatientMonthFacts:
    return replace(facts, time=tuple(replace(t, employment="contractor") for t in facts.time))


#: Per proposal: a patient-month it would block, the rule id that blocks it, and one it lets be.
CASES = {
    "initiating_visit_required": (
        lambda: _device_month("2027-03", initiating_visit=None),
        "99454",
        "rpm.initiating_visit",
        lambda: _device_month("2027-03"),
    ),
    "rtm_requires_established_patient": (
        lambda: make_facts(Program.RTM, month="2027-03", days=range(1, 21), established=False),
        "98977",
        "rtm.established_patient",
        lambda: make_facts(Program.RTM, month="2027-03", days=range(1, 21), established=True),
    ),
    "staff_minutes_employed_only": (
        lambda: _contracted(make_facts(Program.RPM, month="2027-03", time=[(25, 0, "staff", True, "phone")])),
        "99457",
        "rpm.tm.min_minutes",
        lambda: make_facts(Program.RPM, month="2027-03", time=[(25, 0, "staff", True, "phone")]),
    ),
}


@pytest.mark.parametrize("name", PROPOSALS)
def test_each_proposal_is_off_by_default_and_changes_decisions_when_on(book: RuleBook, name: str) -> None:
    y27 = book.for_year(2027)
    option = y27.option(name)
    assert option.value is False and option.layer == "medicare/2027" and option.citation
    blocked, code, rule_id, fine = CASES[name]
    on = with_option(book, name, True)
    off = _outcome(blocked(), book)
    assert off[code][0] is Status.BILLABLE, off[code]
    got = _outcome(blocked(), on)
    assert got[code][0] is Status.NOT_BILLABLE and rule_id in got[code][2], got[code]
    assert _outcome(fine(), on)[code][0] is Status.BILLABLE
    # The option is read (and shown) wherever it applies, on or off.
    d = next(d for d in evaluate_patient_month(fine(), book) if d.code == code)
    assert any(p.name == name and p.layer == "medicare/2027" for p in d.parameters)


def test_proposals_leave_care_management_and_2026_alone(book: RuleBook) -> None:
    on = book
    for name in PROPOSALS:
        on = with_option(on, name, True)
    ccm = _contracted(make_facts(Program.CCM, month="2027-03", time=[(25, 0, "staff", True, "phone")]))
    assert _outcome(ccm, on)["99490"][0] is Status.BILLABLE  # contracted staff still count for CCM
    # 2026 has no such options: a patient without an initiating visit bills RPM there.
    assert _outcome(_device_month("2026-03", initiating_visit=None), on)["99454"][0] is Status.BILLABLE


def test_a_visit_after_the_period_did_not_initiate_it(book: RuleBook) -> None:
    on = with_option(book, "initiating_visit_required", True)
    late = _device_month("2027-03", initiating_visit=date(2027, 4, 2))
    got = _outcome(late, on)["99454"]
    assert got[0] is Status.NOT_BILLABLE and "rpm.initiating_visit" in got[2]


def test_every_performer_is_employed_until_the_field_exists() -> None:
    fact = make_facts(Program.RPM, month="2027-03", time=[(25, 0, "staff", True, "phone")]).time[0]
    assert isinstance(fact, TimeFact) and fact.employment == "employee"

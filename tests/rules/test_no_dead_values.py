"""No dead values: every parameter of every code of every Medicare rule-year changes a decision.

For each code, a handful of patient-months is built around that code's own values (each
threshold and one short of it, each accepted and one refused performer, a call by each
modality, a rival enrollment for each code it excludes …). Each parameter is then
perturbed in the engine's own rule-book (up, down, cleared, flipped, merged into another
lane — whatever its type allows) and the patient-months are judged before and after. A
decision "changes" when its status, units, date of service, expected payment or the rule
ids that failed change. A parameter whose every perturbation leaves every decision as it
was is a value a reviewer could edit without effect: the test names it.

The loader is the other half (tests/rules/broken/unread_*.yaml): a value a family never
reads on that kind of code (an add-on's ``performers``, a base's ``step_minutes`` …) is
refused with its file and line, so it never reaches this test.

``descriptor`` is text for people; ``rvu`` feeds locality and qualifying-APM pricing,
checked at the end. The modifier rules are checked the same way against claim-line
credentials.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from typer.testing import CliRunner

from caretally.billing.pricing import Pricing, price
from caretally.cli.main import build_app
from caretally.dates import parse_month
from caretally.model import PatientMonthFacts, Program, Status
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.loader import RULESETS_ROOT
from caretally.rules.params import CodeRule, RuleBook, RuleYear
from tests.rules.factories import combine, device, entries, make_facts, medicare, with_param

BOOK = medicare()
#: Every Medicare rule-year, 2027 (proposed, "2026 + differences") included.
MONTHS = {2025: "2025-03", 2026: "2026-03", 2027: "2027-03"}
UNREAD = {"descriptor", "rvu"}
#: A large amount: enough to win any comparison by payment (lanes, exclusions, RPM vs RTM).
WINNING = "500.00"

#: Values that can only act once another value of the year allows their code to bill; the
#: test judges them in a rule-book with that other value set (both before and after).
#: In 2026 Medicare has no national amount for 99491, so the practitioner CCM lane never
#: goes before a priced lane (docs/rules.md, "CCM lanes"): 99491 and 99437 never bill, and
#: their exclusions, cap and amount are judged as if 99491 had its 2025 amount.
PRICED_99491 = {("99491", "amount"): Decimal("82.16")}
CONTEXT: dict[tuple[int, str], dict[tuple[str, str], Any]] = {
    (2026, "99491"): PRICED_99491,
    (2026, "99437"): PRICED_99491,
    (2027, "99491"): PRICED_99491,  # 2027 inherits 2026's unpriced 99491
    (2027, "99437"): PRICED_99491,
}


def _year(year: int) -> RuleYear:
    return BOOK.for_date(date(year, 6, 1))


CASES = [
    (year, code, name)
    for year in MONTHS
    for code, rule in sorted(_year(year).codes.items())
    for name in sorted(rule.params)
    if name not in UNREAD
]


# --------------------------------------------------------------------------------------
# Patient-months built around one code's values
# --------------------------------------------------------------------------------------

OTHER_PERFORMER = {"staff": "practitioner", "practitioner": "staff", "therapist": "staff"}
KIND = {Program.RPM: "blood_pressure", Program.RTM: "musculoskeletal"}


def _kind(year: RuleYear, rule: CodeRule) -> str:
    kind = rule.get("rtm_kind")
    return str(kind) if kind else KIND.get(rule.program, "blood_pressure")


def _performers(year: RuleYear, code: str) -> list[str]:
    base = year.code(year.base_of(code))
    return [str(p) for p in base.get("performers") or ("staff",)]


def _days(month: str, program: Program, n: int, kind: str, **kw: Any) -> PatientMonthFacts:
    m = parse_month(month)
    return make_facts(
        program,
        month=month,
        days=range(1, n + 1),
        devices=[device(program, kind=kind, setup=kw.pop("setup", m.start - timedelta(days=30)))],
        **kw,
    )


def _time(month: str, program: Program, specs: list[tuple[Any, ...]], **kw: Any) -> PatientMonthFacts:
    days = kw.pop("days", 0)
    kind = kw.pop("kind", KIND.get(program))
    devices = [device(program, kind=kind)] if program in KIND else None
    return make_facts(program, month=month, time=specs, days=range(1, days + 1), devices=devices, **kw)


def _two_enrollments(
    month: str, program: Program, first: dict[str, Any], second: dict[str, Any]
) -> PatientMonthFacts:
    """Two enrollments of one program: E-A (earlier, billed by P1) and E-B (P2).

    Each side gives ``days`` (and a device ``kind``) and/or ``time`` specs; time entries of
    E-B are logged by P2, so they are credited to E-B (its own billing practitioner).
    """
    m = parse_month(month)
    made = []
    specs = []
    for eid, side, start, who in (
        ("E-A", first, m.start - timedelta(days=30), "P1"),
        ("E-B", second, m.start - timedelta(days=29), "P2"),
    ):
        kind = side.get("kind", KIND.get(program))
        n = side.get("days", 0)
        offset = 0 if eid == "E-A" else 1  # E-B's 30-day period starts a day later
        made.append(
            make_facts(
                program,
                month=month,
                eid=eid,
                start=start,
                practitioner=who,
                days=range(1 + offset, n + 1 + offset),
                devices=[device(program, did=f"D{eid}", kind=kind, setup=start)] if program in KIND else None,
                complexity=side.get("complexity"),
            )
        )
        specs.append([(*s[:5], None, program, who) for s in side.get("time", ())])
    time = entries(specs[0], m, program, prefix="a") + entries(specs[1], m, program, prefix="b")
    return combine(*made, time=time)


def _rival(year: RuleYear, month: str, code: str, other: str) -> PatientMonthFacts | None:
    """E-A qualifies for ``other``, the later E-B for ``code``: the exclusion decides."""
    mine, theirs = year.code(code), year.code(other)
    if mine.program != theirs.program:
        return None
    if mine.family == "apcm":
        m = parse_month(month)
        return combine(
            _apcm(month, theirs, eid="E-A", start=m.start - timedelta(days=30)),
            _apcm(month, mine, eid="E-B", start=m.start - timedelta(days=29), practitioner="P2"),
        )
    if "behavioral_health" in (mine.family, theirs.family):
        return None  # exclusions bind one practitioner: see _handover
    return _two_enrollments(month, mine.program, _qualifying(year, theirs), _qualifying(year, mine))


APCM_DX = {1: ("I10",), 2: ("I10", "E11.9"), 3: ("I10", "E11.9", "N18.30")}


def _apcm(month: str, rule: CodeRule, **kw: Any) -> PatientMonthFacts:
    """An APCM enrollment whose patient qualifies for ``rule``'s level (and no higher-paying one)."""
    n = int(rule.get("max_chronic_conditions") or rule.get("min_chronic_conditions") or 1)
    qmb = bool(rule.get("requires_qmb"))
    return make_facts(Program.APCM, month=month, diagnoses=APCM_DX[max(1, n)], qmb=qmb, **kw)


def _handover(year: RuleYear, month: str, code: str, other: str) -> PatientMonthFacts | None:
    """One practitioner's two enrollments in the month: E-A (until the 14th) qualifies for
    ``other``, E-B (from the 15th) for ``code``. ``exclusive_with`` binds one practitioner
    across enrollments; between practitioners the one-practitioner rule decides instead."""
    mine, theirs = year.code(code), year.code(other)
    if mine.program != theirs.program or mine.family in ("device_supply", "setup"):
        return None
    m = parse_month(month)
    a_start, a_end, b_start = (
        m.start - timedelta(days=30),
        m.start + timedelta(days=13),
        m.start + timedelta(days=14),
    )
    if mine.family == "apcm":
        return combine(
            _apcm(month, theirs, eid="E-A", start=a_start, end=a_end),
            _apcm(month, mine, eid="E-B", start=b_start),
        )
    made, time = [], []
    for eid, rule, start, end, day in (
        ("E-A", theirs, a_start, a_end, m.start + timedelta(days=2)),
        ("E-B", mine, b_start, None, m.start + timedelta(days=19)),
    ):
        side = _qualifying(year, rule)
        made.append(
            make_facts(
                mine.program,
                month=month,
                eid=eid,
                start=start,
                end=end,
                complexity=side.get("complexity"),
                first_activity=side.get("first_activity"),
                diagnoses=("F32.1",) if rule.family == "behavioral_health" else ("I10", "E11.9"),
            )
        )
        specs = [(*spec[:5], day, mine.program) for spec in side.get("time", ())]
        time.extend(entries(specs, m, mine.program, prefix=eid.lower()))
    if any(year.rides_on(r.code) for r in (mine, theirs)):
        made.append(_apcm(month, year.code("G0558"), eid="E-AP"))
    return combine(*made, time=time)


def _qualifying(year: RuleYear, rule: CodeRule) -> dict[str, Any]:
    """One enrollment's data that meets ``rule`` (days, or minutes by its first performer)."""
    if rule.family in ("device_supply", "setup"):
        need = int(rule.value("min_days"))
        return {"days": max(need, 2), "kind": _kind(year, rule)}
    base = year.code(year.base_of(rule.code))
    bh = rule.family == "behavioral_health"
    minutes = int(base.value("min_minutes") if bh else rule.value("min_minutes"))
    performer = _performers(year, rule.code)[-1]  # practitioner/therapist where allowed: own id
    out: dict[str, Any] = {"time": [(minutes, 0, performer, True, "phone")]}
    if base.get("requires_complexity"):
        out["complexity"] = "complex"
    if base.get("episode_month") == "later":
        out["first_activity"] = date(1999, 1, 1)  # activity long before: a later month of the episode
    return out


def _cross_period(month: str, program: Program, staff_minutes: int) -> PatientMonthFacts:
    """99091's 30-day period reaching back into the previous month beside a management month.

    The enrollment starts mid-February, so the device period ending in March starts in
    February: practitioner time there counts for 99091 only, staff time in March for the
    calendar-month code — two separate pools that only an exclusion keeps apart.
    """
    m = parse_month(month)
    start = m.start - timedelta(days=14)
    return make_facts(
        program,
        month=month,
        start=start,
        time=[
            (35, 0, "practitioner", False, None, start + timedelta(days=2)),
            (staff_minutes, 0, "staff", True, "phone", m.start + timedelta(days=19)),
        ],
        devices=[device(program, setup=start)],
    )


@functools.cache
def fixtures(year_n: int, code: str) -> tuple[PatientMonthFacts, ...]:
    year, month = _year(year_n), MONTHS[year_n]
    rule = year.code(code)
    program = rule.program
    out: list[PatientMonthFacts | None] = []
    if rule.family in ("device_supply", "setup"):
        lo = int(rule.value("min_days"))
        hi = rule.get("max_days")
        counts = {lo - 1, lo, lo + 1, 30, 16, 15, 2}
        if hi is not None:
            counts |= {int(hi), int(hi) + 1}
        kind = _kind(year, rule)
        m = parse_month(month)
        for n in sorted(c for c in counts if 0 < c <= 30):
            out.append(_days(month, program, n, kind))
            out.append(_days(month, program, n, kind, start=m.start, setup=m.start))
    elif rule.family in ("treatment_management", "data_interpretation", "care_management"):
        out.extend(_time_fixtures(year, month, rule))
    elif rule.family == "behavioral_health":
        out.extend(_bh_fixtures(year, month, rule))
    elif rule.family == "apcm":
        out.extend(_apcm_fixtures(month, program))
    for other in sorted(year.excludes(code)):
        if not year.is_add_on(other):
            out.append(_rival(year, month, year.base_of(code), other))
            out.append(_handover(year, month, year.base_of(code), other))
    if program is Program.RPM and rule.family in ("treatment_management", "data_interpretation"):
        for minutes in (12, 25, 45):
            out.append(_cross_period(month, program, minutes))
    out.extend(_rich(month, program, _kind(year, rule)))
    return tuple(f for f in out if f is not None)


def _time_fixtures(year: RuleYear, month: str, rule: CodeRule) -> Iterator[PatientMonthFacts]:
    program = rule.program
    base = year.code(year.base_of(rule.code))
    base_min = int(base.value("min_minutes"))
    performers = _performers(year, rule.code)
    if year.is_add_on(rule.code):
        step = int(rule.value("step_minutes"))
        minutes = {base_min + k * step + d for k in (1, 2, 3, 4) for d in (-1, 0)}
    else:
        hi = rule.get("max_minutes")
        minutes = {base_min - 1, base_min, base_min + 1, base_min + 25}
        if hi is not None:
            minutes |= {int(hi), int(hi) + 1}
    complex_ = "complex" if base.get("requires_complexity") else None
    for m in sorted(minutes):
        for who in {*performers, OTHER_PERFORMER[performers[0]], "therapist"}:
            yield _time(month, program, [(m, 0, who, True, "phone")], complexity=complex_)
    # The call: none, another modality, not marked interactive.
    for spec in ((base_min, 0, performers[0], False, None), (base_min, 0, performers[0], True, "text")):
        yield _time(month, program, [spec], complexity=complex_)
    yield _time(month, program, [(base_min, 0, performers[0], True, "video")], complexity=complex_)
    if rule.family == "care_management":
        need = int(base.value("min_chronic_conditions"))
        for n in {need - 1, need, need + 1} - {-1}:
            dx = ("I10", "E11.9", "I50.22", "N18.3")[:n]
            for m in sorted(minutes):
                yield _time(month, program, [(m, 0, performers[0], True, "phone")], diagnoses=dx)
        # Lanes: a complex patient with staff time, practitioner time, both kinds.
        for spec in (
            [(60, 0, "staff", True, "phone")],
            [(95, 0, "staff", True, "phone")],
            [(35, 0, "practitioner", True, "phone")],
            [(95, 0, "practitioner", True, "phone")],
            [(30, 0, "staff", True, "phone"), (30, 0, "practitioner", True, "phone")],
        ):
            for complexity in ("complex", None):
                yield _time(month, program, spec, complexity=complexity)


def _apcm_fixtures(month: str, program: Program) -> Iterator[PatientMonthFacts]:
    """Each number of chronic conditions with and without QMB status (and unrecorded)."""
    for n in (1, 2, 3):
        for qmb in (True, False, None):
            yield make_facts(program, month=month, diagnoses=APCM_DX[n], qmb=qmb)


def _bh_fixtures(year: RuleYear, month: str, rule: CodeRule) -> Iterator[PatientMonthFacts]:
    """Minutes around each base's thresholds (and, for 99494, around each unit's), in the
    episode's first month and in a later one, with and without the same practitioner's APCM."""
    program = rule.program
    bases = [year.code(b) for b in year.bases_of(rule.code)]
    minutes: set[int] = set()
    for b in bases:
        low = int(b.value("min_minutes"))
        minutes |= {low - 1, low, low + 1, low + 25}
        if year.is_add_on(rule.code):
            full, step = int(b.value("full_minutes")), int(rule.value("step_minutes"))
            part = int(rule.value("min_step_minutes"))
            minutes |= {full + part + k * step + d for k in (0, 1, 2) for d in (-1, 0)}
    performers = _performers(year, rule.code)
    for first_activity in (None, date(1999, 1, 1)):
        for m in sorted(x for x in minutes if x > 0):
            for who in {*performers, OTHER_PERFORMER[performers[0]]}:
                bh = _time(
                    month,
                    program,
                    [(m, 0, who, False, None)],
                    diagnoses=("F32.1",),
                    first_activity=first_activity,
                )
                yield bh
                yield combine(bh, _apcm(month, year.code("G0558"), eid="E-AP"))
                yield combine(bh, _apcm(month, year.code("G0558"), eid="E-AP", practitioner="P2"))


def _rich(month: str, program: Program, kind: str) -> Iterator[PatientMonthFacts]:
    """Everything the program can bill at once, so an exclusion added anywhere bites."""
    if program in KIND:
        who = "therapist" if program is Program.RTM else "staff"
        yield _time(month, program, [(25, 0, who, True, "phone")], days=20, kind=kind)
        yield _time(month, program, [(25, 0, "practitioner", True, "phone")], days=20, kind=kind)


# --------------------------------------------------------------------------------------
# Judging and perturbing
# --------------------------------------------------------------------------------------


def outcome(facts: PatientMonthFacts, book: RuleBook) -> tuple[Any, ...]:
    try:
        decisions = evaluate_patient_month(facts, book)
    except Exception as exc:  # a perturbation the engine cannot apply still proves the value is read
        return ("raised", type(exc).__name__)
    return tuple(
        (
            d.code,
            d.enrollment_id,
            d.period.start,
            d.status,
            d.units,
            d.date_of_service,
            d.expected_payment,
            tuple(r.rule_id for r in d.reasons if r.blocking),
        )
        for d in decisions
    )


def edit(book: RuleBook, changes: Mapping[tuple[str, str], Any]) -> RuleBook:
    for (code, name), value in changes.items():
        book = with_param(book, code, name, value)
    return book


def perturbations(year: RuleYear, rule: CodeRule, name: str) -> Iterator[dict[tuple[str, str], Any]]:
    """Each a set of edits ``(code, param) → value``; most touch only the value itself."""
    code, value = rule.code, rule.params[name].value
    me = (code, name)
    if name == "exclusive_with":
        if value:  # clear it, and the other side of each pair (the loader keeps them mutual)
            changes: dict[tuple[str, str], Any] = {me: ()}
            for other in value:
                rest = tuple(c for c in year.code(other).get("exclusive_with") or () if c != code)
                changes[(other, "exclusive_with")] = rest
            yield changes
        else:  # exclude a code of another family of the program (and back)
            for other in _partners(year, rule):
                mine = tuple(year.code(other).get("exclusive_with") or ())
                yield {me: (other,), (other, "exclusive_with"): (*mine, code)}
        return
    if name == "amount":
        yield {me: WINNING if value is None else Decimal(str(value)) + 1}
        if value is not None:
            yield {me: Decimal(WINNING)}
        return
    if name == "add_on_to":
        yield {me: None}
        return
    if name == "lane":
        for other in sorted({str(c.get("lane")) for c in year.codes_for(rule.program) if c.get("lane")}):
            if other != value:
                yield {me: other}
        return
    if name in ("performers", "interactive_modalities"):
        items = tuple(value)
        for new in (items[1:], items[:-1], (*items, "text"), ("therapist",), ("staff",)):
            if new and new != items:
                yield {me: new}
        return
    if name == "rtm_kind":
        for k in ("respiratory", "musculoskeletal", "cognitive_behavioral"):
            if k != value:
                yield {me: k}
        return
    if name == "requires_complexity":
        yield {me: None if value else "complex"}
        return
    if name == "episode_month":
        yield {me: "later" if value == "first" else "first"}
        return
    if name == "with_base":
        yield {me: ()}
        return
    if isinstance(value, bool):
        yield {me: not value}
        return
    if isinstance(value, int):
        for new in (value + 1, value - 1, 1 if value > 1 else 3):
            if new >= 0:
                yield {me: new}
        return
    if value is None:  # an open ceiling or an uncapped count
        for new in (1, 2, 25, 45):
            yield {me: new}
        return
    raise AssertionError(f"no perturbation for {name}={value!r}")


def _partners(year: RuleYear, rule: CodeRule) -> list[str]:
    return [
        c.code
        for c in sorted(year.codes_for(rule.program), key=lambda c: c.code)
        if c.family != rule.family and not year.is_add_on(c.code) and "exclusive_with" in c.params
    ][:2]


@pytest.mark.parametrize(("year", "code", "name"), CASES, ids=[f"{y}-{c}-{n}" for y, c, n in CASES])
def test_every_parameter_changes_some_decision(year: int, code: str, name: str) -> None:
    ry = _year(year)
    rule = ry.code(code)
    context = CONTEXT.get((year, code), {})
    book = edit(BOOK, context)
    facts = fixtures(year, code)
    before = [outcome(f, book) for f in facts]
    assert not any(b and b[0] == "raised" for b in before), f"the fixtures of {code} do not judge cleanly"
    tried = []
    for changes in perturbations(ry, rule, name):
        changed = edit(book, changes)
        if any(outcome(f, changed) != b for f, b in zip(facts, before, strict=True)):
            return
        tried.append(changes)
    pytest.fail(f"{year} {code}.{name}={rule.params[name].value!r}: no decision changed for {tried}")


def test_every_code_of_every_year_is_probed() -> None:
    """Complex CCM with two conditions, RTM set-up and every add-on are among the cases."""
    probed = {(y, c) for y, c, _ in CASES}
    for year in MONTHS:
        assert {(year, c) for c in _year(year).codes} <= probed
    complex_ccm = [f for f in fixtures(2026, "99487") if f.programs[0].enrollment.complexity == "complex"]
    assert any(len(f.programs[0].enrollment.diagnoses) == 2 for f in complex_ccm)
    billed = {
        d.code
        for y in MONTHS
        for code in ("98975", "99487", "99489")
        for f in fixtures(y, code)
        for d in evaluate_patient_month(f, BOOK)
        if d.status is Status.BILLABLE
    }
    assert {"98975", "99487", "99489"} <= billed


# --------------------------------------------------------------------------------------
# RVUs and modifier rules
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("year", list(MONTHS))
def test_rvu_values_change_a_price(year: int, tmp_path: Path) -> None:
    """RVU parts feed locality pricing; the RVU total feeds qualifying-APM pricing."""
    ry = _year(year)
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


CREDENTIALS = ("", "MD", "NP", "RN", "PT", "PTA", "OT", "OTA", "SLP", "SLPA")


#: Who else furnished a counted minute of the line's service (read by ``when: any_part``).
PARTS = ((), ("PTA",), ("OTA",), ("PT", "PTA"))


def _line_modifiers(year: RuleYear) -> list[tuple[str, ...]]:
    return [
        year.modifiers_for(rule.program, rule.code, {"rendering": rendering, "billing": billing}, parts)
        for rule in sorted(year.codes.values(), key=lambda r: r.code)
        for rendering in CREDENTIALS
        for billing in CREDENTIALS[1:]
        for parts in PARTS
    ]


def _modifier_perturbations(year: RuleYear) -> Iterator[tuple[str, str, Any]]:
    for name, rule in year.modifiers.items():
        yield name, "programs", ()
        yield name, "codes", (None if rule.codes is not None else (sorted(year.codes)[0],))
        if rule.codes is not None and len(rule.codes) > 1:
            yield name, "codes", rule.codes[1:]
        people = rule.credential_of
        if len(people) > 1:
            yield name, "credential_of", tuple(reversed(people))
            yield name, "credential_of", people[:1]
        else:
            yield name, "credential_of", ("billing",) if people == ("rendering",) else ("rendering",)
        if "rendering" in people:
            yield name, "when", "rendering" if rule.when == "any_part" else "any_part"
        for modifier, creds in rule.add.items():
            others = {m: c for m, c in rule.add.items() if m != modifier}
            yield name, "add", others or {"ZZ": creds}
            if len(creds) > 1:
                yield name, "add", {**rule.add, modifier: creds[1:]}


def _with_modifier(year: RuleYear, name: str, field: str, value: Any) -> RuleYear:
    rules = dict(year.modifiers)
    rules[name] = replace(rules[name], **{field: MappingProxyType(value) if field == "add" else value})
    return replace(year, modifiers=MappingProxyType(rules))


@pytest.mark.parametrize("year", list(MONTHS))
def test_every_modifier_value_changes_a_claim_line(year: int) -> None:
    """Programs, codes, whose credential and which modifier: each edit changes some line."""
    ry = _year(year)
    assert ry.modifiers, "the rule-year states which lines carry modifiers"
    before = _line_modifiers(ry)
    dead = [
        (name, field, value)
        for name, field, value in _modifier_perturbations(ry)
        if _line_modifiers(_with_modifier(ry, name, field, value)) == before
    ]
    assert not dead, dead


# --------------------------------------------------------------------------------------
# The loader's half, through the command a rule author runs
# --------------------------------------------------------------------------------------


def test_rules_check_rejects_a_rule_year_with_an_unread_value(tmp_path: Path) -> None:
    """An add-on given its own performers: ``caretally rules check`` names file, line and why."""
    root = tmp_path / "rulesets"
    shutil.copytree(RULESETS_ROOT, root)
    path = root / "medicare" / "2026.yaml"
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if '"99458"' in line)
    at = next(i for i in range(at, len(lines)) if "step_minutes:" in lines[i])
    lines.insert(at + 1, "      performers: {value: [staff], cite: rvudoc-99458}")
    path.write_text("\n".join(lines) + "\n")

    done = CliRunner().invoke(build_app(), ["rules", "check", "--root", str(root), "--json"])
    assert done.exit_code == 1
    problems = json.loads(done.stdout)
    assert [(p["code"], p["line"], p["field"]) for p in problems] == [
        ("unread_value", at + 2, "codes.99458.params.performers")
    ]
    assert "base's performers apply" in problems[0]["message"]

"""Care management (CCM 99490/99439, 99491/99437, 99487/99489; PCM 99424–99427), per month.

Codes are grouped in lanes (the ``lane`` param): a base code and its add-on. Each lane is
judged on its own — minutes of the performers it accepts (staff lanes take staff *and*
practitioner minutes, because the billing practitioner's time may count as clinical-staff
time; practitioner lanes take only practitioner minutes), ``min_chronic_conditions``
diagnoses, and ``requires_complexity`` — and then only one lane per program and month is
billed: the one with the highest expected payment (base + add-on units). Ties go to the
lane whose base code sorts first, so reruns agree.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from caretally.model import Decision, Evidence, ProgramFacts, Reason, Status
from caretally.rules.families.common import (
    Check,
    EnrollmentView,
    TimePool,
    Verdict,
    _remember,
    as_int,
    cite,
    codes_of,
    counts,
    demote,
    money,
)
from caretally.rules.families.ladder import addon_decision, base_decision, bases_and_addons
from caretally.rules.params import CodeRule, Param, RuleYear

FAMILY = "care_management"


def decide(view: EnrollmentView) -> list[Decision]:
    month = view.facts.month
    year = view.year_for(month.end)
    rules = codes_of(year, view.enrollment.program, FAMILY)
    if not rules:
        return []
    program = view.enrollment.program
    prefix = f"{program.lower()}.time"
    lanes: dict[str, list[CodeRule]] = {}
    for r in rules:  # an add-on belongs to its base's lane
        lanes.setdefault(str(year.code(year.base_of(r.code)).value("lane")), []).append(r)

    per_lane: dict[str, list[Decision]] = {}
    for lane, lane_rules in sorted(lanes.items(), key=lambda kv: min(r.code for r in kv[1])):
        bases, addons = bases_and_addons(year, lane_rules)
        decisions: list[Decision] = []
        made: dict[str, tuple[Decision, TimePool]] = {}
        for rule in bases:
            extra, params = eligibility(view, year, rule, program.lower())
            d, p = base_decision(view, year, rule, bases, month, prefix, extra, [rule.param("lane"), *params])
            made[rule.code] = (d, p)
            decisions.append(d)
        for rule in addons:
            base_code = year.base_of(rule.code)
            base, base_pool = made[base_code]
            extra, _ = eligibility(view, year, rule, program.lower())
            decisions.append(
                addon_decision(
                    view, year, rule, year.code(base_code), base, base_pool, month, prefix, "max_units", extra
                )
            )
        per_lane[lane] = decisions
    return _one_lane(year, program.lower(), per_lane)


def eligibility(
    view: EnrollmentView, year: RuleYear, rule: CodeRule, program: str
) -> tuple[list[Check], list[Param]]:
    """Diagnosis count and complexity: what makes the patient eligible for this lane.

    They depend on the enrollment, the code and the rule-year only, and the allocation
    search asks again for every trial: made once per enrollment and code, and replayed.
    """
    key = (id(view.program), id(rule), id(year), program)
    hit = _ELIGIBLE.get(key)
    if hit is None or hit[0] is not view.program or hit[1] is not rule or hit[2] is not year:
        checks, params = _eligibility(view, year, rule, program)
        hit = (view.program, rule, year, tuple(checks), tuple(params))
        _remember(_ELIGIBLE, key, hit)
    return list(hit[3]), list(hit[4])


#: Keyed by object ids; each value holds the keyed objects, so an id is never reused while it lives.
_ELIGIBLE: dict[
    tuple[int, int, int, str], tuple[ProgramFacts, CodeRule, RuleYear, tuple[Check, ...], tuple[Param, ...]]
] = {}


def _eligibility(
    view: EnrollmentView, year: RuleYear, rule: CodeRule, program: str
) -> tuple[list[Check], list[Param]]:
    e = view.enrollment
    checks: list[Check] = []
    params: list[Param] = []
    if "min_chronic_conditions" in rule.params:
        p = rule.param("min_chronic_conditions")
        params.append(p)
        need = as_int(p.value, f"{rule.code} min_chronic_conditions")
        dx = tuple(dict.fromkeys(e.diagnoses))
        ev = Evidence(values=(("diagnoses", ", ".join(dx) or "none"), ("required", str(need))))
        if len(dx) >= need:
            msg = f"{len(dx)} chronic condition diagnoses ({', '.join(dx)}); {need} required"
            checks.append(Check.of(f"{program}.chronic_conditions", Verdict.PASS, msg, cite(year, p), ev))
        else:
            msg = f"{len(dx)} of {need} required chronic condition diagnoses on the enrollment"
            checks.append(Check.of(f"{program}.chronic_conditions", Verdict.FAIL, msg, cite(year, p), ev))
    if rule.has("requires_complexity"):
        p = rule.param("requires_complexity")
        params.append(p)
        ev = Evidence(values=(("complexity", e.complexity or "none"),))
        if (e.complexity or "") == str(p.value):
            msg = f"complexity recorded as {e.complexity}"
            checks.append(Check.of(f"{program}.complexity", Verdict.PASS, msg, cite(year, p), ev))
        else:
            msg = f"needs complexity {p.value}; the enrollment records {e.complexity or 'none'}"
            checks.append(Check.of(f"{program}.complexity", Verdict.FAIL, msg, cite(year, p), ev))
    return checks, params


def _lane_pay(decisions: list[Decision]) -> Decimal:
    return sum((d.expected_payment or Decimal(0) for d in decisions if counts(d)), Decimal(0))


def _lane_param(year: RuleYear, ds: list[Decision]) -> Param | None:
    """The lanes exclude each other through ``exclusive_with``: the first base that says so."""
    for d in ds:
        p = year.exclusion(d.code)
        if p is not None:
            return p
    return None


def _lane_cite(year: RuleYear, ds: list[Decision]) -> str:
    p = _lane_param(year, ds)
    return "" if p is None else cite(year, p)


def _kind(year: RuleYear, lane: str) -> int:
    """Rank of a lane in the option ``ccm_lane_order`` (by the last word of its name).

    Used only when money cannot decide; the practitioner's own time is valued above
    clinical-staff time in every year we have figures for, hence the default order.
    """
    order = [str(w) for w in year.option("ccm_lane_order").value]
    return next((rank for rank, word in enumerate(order) if lane.endswith(word)), len(order))


def _unpriced(ds: list[Decision]) -> bool:
    return any(r.rule_id == "pricing.amount" for d in ds if counts(d) for r in d.reasons)


def _choose_lane(
    year: RuleYear, live: dict[str, list[Decision]], order: list[str]
) -> tuple[str, Callable[[list[Decision]], str]]:
    """Which lane bills, and how to say why to the lanes that lose.

    1. A complex lane that is met wins: the enrollment attests complex care management
       (moderate or high decision-making, a substantially revised care plan), and the
       claim should describe the service the record documents, not the one that pays more.
    2. Otherwise the lane that pays more, when every candidate has a national amount.
    3. When some lanes have no national amount, a priced lane goes before an unpriced one
       (an unpriced line bills $0.00): the best-paying priced lane wins.
    4. When no lane is priced, money cannot decide: practitioner before staff.
    """
    complex_lanes = [
        lane
        for lane in order
        if lane in live
        and any(
            (year.codes[d.code].get("requires_complexity") if d.code in year.codes else None)
            for d in live[lane]
        )
    ]
    if complex_lanes:
        best = complex_lanes[0]
        return (
            best,
            lambda ds: "is billed: the enrollment documents complex care management and its time is met",
        )
    priced = [lane for lane in live if not _unpriced(live[lane])]
    if len(priced) == len(live):
        best = min(live, key=lambda lane: (-_lane_pay(live[lane]), order.index(lane)))
        return best, lambda ds: f"pays more ({money(_lane_pay(live[best]))} vs {money(_lane_pay(ds))})"
    if priced:
        best = min(priced, key=lambda lane: (-_lane_pay(live[lane]), order.index(lane)))
        return (
            best,
            lambda ds: (
                f"has a national amount ({money(_lane_pay(live[best]))}); a lane without one "
                "would bill $0.00, so the priced lane goes first"
            ),
        )
    best = min(live, key=lambda lane: (_kind(year, lane), order.index(lane)))
    return (
        best,
        lambda ds: (
            "is preferred: no lane has a national amount this year, so lanes follow the option "
            f"ccm_lane_order ({', '.join(str(w) for w in year.option('ccm_lane_order').value)})"
        ),
    )


def _one_lane(year: RuleYear, program: str, per_lane: dict[str, list[Decision]]) -> list[Decision]:
    live = {lane: ds for lane, ds in per_lane.items() if any(counts(d) for d in ds)}
    if len(live) <= 1:
        return [d for ds in per_lane.values() for d in ds]
    best, why = _choose_lane(year, live, list(per_lane))
    final = all(d.status is Status.BILLABLE for d in live[best] if counts(d))
    out: list[Decision] = []
    for lane, ds in per_lane.items():
        if lane == best or lane not in live:
            out.extend(ds)
            continue
        msg = f"one {program.upper()} lane per month: {best} {why(ds)}"
        r = Reason(
            f"{program}.lane", False, msg, _lane_cite(year, ds), Evidence(values=(("chosen_lane", best),))
        )
        deciding = [
            _lane_param(year, ds),
            year.option("ccm_lane_order") if "ccm_lane_order" in why(ds) else None,
        ]
        out.extend(demote(d, r, final, deciding) if counts(d) else d for d in ds)
    return out

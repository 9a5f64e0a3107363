"""Advanced primary care management (APCM, G0556–G0558), per calendar month.

APCM is not time-based: the practice bills a monthly level for each consented patient it is
the primary-care focal point for. The level follows the patient, not the minutes — G0556
for one chronic condition or none (``max_chronic_conditions``), G0557 for two or more
(``min_chronic_conditions``), G0558 for two or more and a Qualified Medicare Beneficiary
(``requires_qmb``, read from the enrollment's ``qmb``). One level is billed per month: the
one that pays most among those the patient qualifies for (ties: the lowest code).

Chronic conditions are the enrollment's distinct diagnoses, as for CCM. Consent and the
enrollment are checked like every program (:func:`common.common_checks`); the initiating
visit is a documentation note. The date of service follows the option ``time_dos``:
``month_end`` (the month's last day, or the enrollment's) or ``threshold_day`` — for a
service without a threshold, the first day of the month on which the patient was enrolled
and consented.
"""

from __future__ import annotations

from decimal import Decimal

from caretally.model import Decision, Evidence, Reason, Status
from caretally.rules.families.common import (
    Check,
    Draft,
    EnrollmentView,
    Used,
    Verdict,
    as_int,
    cite,
    clamp_to_enrollment,
    codes_of,
    common_checks,
    counts,
    demote,
    finish,
    money,
    option_value,
    window,
)
from caretally.rules.params import CodeRule, Param, RuleYear

FAMILY = "apcm"
DOS = ("month_end", "threshold_day")


def decide(view: EnrollmentView) -> list[Decision]:
    month = view.facts.month
    year = view.year_for(month.end)
    rules = codes_of(year, view.enrollment.program, FAMILY)
    if not rules:
        return []
    return _one_level(year, [_level(view, year, rule) for rule in rules])


def _level(view: EnrollmentView, year: RuleYear, rule: CodeRule) -> Decision:
    month = view.facts.month
    used = Used(year)
    draft = Draft(view, year, rule, month, used)
    draft.checks.extend(common_checks(view, year, month, used))
    draft.checks.extend(eligibility(view, year, rule, used))
    draft.units = as_int(used.code(rule, "max_units"), f"{rule.code} max_units")
    if "exclusive_with" in rule.params:
        used.add(rule.params["exclusive_with"])
    choice = option_value(year, "time_dos", DOS)
    used.add(year.option("time_dos"))
    if choice == "month_end":
        draft.dos = clamp_to_enrollment(view, month.end)
    else:
        draft.dos = window(view, month).first
    draft.open_note = "a monthly service: billed once the month closes"
    return finish(draft)


def eligibility(view: EnrollmentView, year: RuleYear, rule: CodeRule, used: Used) -> list[Check]:
    """The level's criteria: how many chronic conditions, and QMB status where it counts."""
    e = view.enrollment
    dx = tuple(dict.fromkeys(e.diagnoses))
    out: list[Check] = []
    listed = ", ".join(dx) or "none"
    low = rule.params.get("min_chronic_conditions")
    if low is not None:
        used.add(low)
        need = as_int(low.value, f"{rule.code} min_chronic_conditions")
        ev = Evidence(values=(("diagnoses", listed), ("required", f"at least {need}")))
        if len(dx) >= need:
            msg = f"{len(dx)} chronic condition diagnoses ({listed}); {rule.code} needs at least {need}"
            out.append(Check.of("apcm.chronic_conditions", Verdict.PASS, msg, cite(year, low), ev))
        else:
            msg = f"{len(dx)} chronic condition diagnoses ({listed}); {rule.code} needs at least {need}"
            out.append(Check.of("apcm.chronic_conditions", Verdict.FAIL, msg, cite(year, low), ev))
    high = rule.params.get("max_chronic_conditions")
    if high is not None:
        used.add(high)
        most = as_int(high.value, f"{rule.code} max_chronic_conditions")
        ev = Evidence(values=(("diagnoses", listed), ("required", f"at most {most}")))
        verdict = Verdict.PASS if len(dx) <= most else Verdict.FAIL
        msg = f"{len(dx)} chronic condition diagnoses ({listed}); {rule.code} is for at most {most}"
        out.append(Check.of("apcm.chronic_conditions", verdict, msg, cite(year, high), ev))
    qmb = rule.params.get("requires_qmb")
    if qmb is not None:
        used.add(qmb)
        out.append(_qmb(view, year, rule, qmb))
    return out


def _qmb(view: EnrollmentView, year: RuleYear, rule: CodeRule, p: Param) -> Check:
    status = view.enrollment.qmb
    ev = Evidence(values=(("qmb", "not recorded" if status is None else str(status).lower()),))
    c = cite(year, p)
    if not p.value:
        msg = f"{rule.code} does not depend on Qualified Medicare Beneficiary status"
        return Check.of("apcm.qmb", Verdict.PASS, msg, c, ev)
    if status:
        msg = "Qualified Medicare Beneficiary (enrollment qmb)"
        return Check.of("apcm.qmb", Verdict.PASS, msg, c, ev)
    if status is None:
        msg = f"{rule.code} is for Qualified Medicare Beneficiaries; the enrollment does not record qmb"
        return Check.of("apcm.qmb", Verdict.FAIL, msg, c, ev)
    msg = f"{rule.code} is for Qualified Medicare Beneficiaries; the enrollment records qmb false"
    return Check.of("apcm.qmb", Verdict.FAIL, msg, c, ev)


def _pay(d: Decision) -> Decimal:
    return d.expected_payment or Decimal(0)


def _one_level(year: RuleYear, levels: list[Decision]) -> list[Decision]:
    """One APCM level per month: the best-paying one the patient qualifies for.

    An unpriced level bills $0.00, so a priced one goes first; among equals the lowest code.
    """
    live = [d for d in levels if counts(d)]
    if len(live) <= 1:
        return levels
    best = min(
        live,
        key=lambda d: (
            d.expected_payment is None or any(r.rule_id == "pricing.amount" for r in d.reasons),
            -_pay(d),
            d.code,
        ),
    )
    final = best.status is Status.BILLABLE
    out = []
    for d in levels:
        if d is best or not counts(d):
            out.append(d)
            continue
        p = year.exclusion(d.code)
        msg = (
            f"one APCM level per month: {best.code} is billed ({money(best.expected_payment)} vs "
            f"{money(d.expected_payment)})"
        )
        r = Reason(
            "apcm.level",
            False,
            msg,
            "" if p is None else cite(year, p),
            Evidence(values=(("kept", best.code),)),
        )
        out.append(demote(d, r, final, [p]))
    return out

"""Payer coverage policies: covered diagnoses, prior authorization, units per year.

A payer overlay's ``coverage:`` rules (``RuleYear.coverage``) govern some programs and
codes. Each limit is a requirement of every decision it governs:

* ``coverage.diagnoses`` — one of the enrollment's diagnoses starts with one of the
  policy's ICD-10-CM prefixes (a named set stands for its prefixes; dots are ignored);
* ``coverage.prior_authorization`` — the enrollment records an authorization number, and
  its span (``authorization_start``/``authorization_end``, the enrollment's own dates when
  left out) covers the day the service is billed for: the period's last day, or the
  enrollment's when it ends first;
* ``coverage.max_units_per_year`` — units of the code billed for the patient in the
  calendar year (earlier months' current runs, then this month's periods in order) stay
  within the cap: a line is cut to the units left, or not billed once none are left. This
  one is settled after the concurrency pass, on the lines that survived it.

The first two are checked inside each decision (:func:`coverage_checks`, called by
:func:`common.finish`), so a code the payer does not cover never displaces another.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from caretally.model import Decision, Evidence, PatientMonthFacts, Period, Reason, Status
from caretally.rules.families.common import (
    Check,
    EnrollmentView,
    Used,
    Verdict,
    YearFor,
    cite,
    counts,
    demote,
    with_reason,
)
from caretally.rules.params import CodeRule, CoverageRule, RuleYear


def coverage_checks(
    view: EnrollmentView, year: RuleYear, rule: CodeRule, period: Period, used: Used
) -> list[Check]:
    out: list[Check] = []
    for policy in year.coverage_for(rule.program, rule.code):
        if policy.diagnoses is not None:
            out.append(_diagnoses(view, year, policy, used))
        if policy.prior_authorization is not None:
            out.append(_authorization(view, year, policy, period, used))
    return out


def _bare(code: str) -> str:
    return code.replace(".", "").upper()


def _diagnoses(view: EnrollmentView, year: RuleYear, policy: CoverageRule, used: Used) -> Check:
    assert policy.diagnoses is not None
    used.add(policy.diagnoses)
    for p in policy.sets.values():
        used.add(p)
    dx = tuple(dict.fromkeys(view.enrollment.diagnoses))
    pairs = policy.prefixes()
    named = ", ".join(dict.fromkeys(label for label, _ in pairs))
    citation = "; ".join(
        t for t in (cite(year, policy.diagnoses), *(cite(year, p) for p in policy.sets.values())) if t
    )
    matches = [
        (d, label, prefix) for d in dx for label, prefix in pairs if _bare(d).startswith(_bare(prefix))
    ]
    values = (("diagnoses", ", ".join(dx) or "none"), ("covered", named), ("policy", policy.name))
    if matches:
        d, label, prefix = matches[0]
        how = label if label == prefix else f"{label} ({prefix})"
        msg = f"payer policy {policy.name}: diagnosis {d} is covered ({how})"
        ev = Evidence(values=(*values, ("matched", d)))
        return Check.of("coverage.diagnoses", Verdict.PASS, msg, citation, ev)
    msg = (
        f"payer policy {policy.name} covers {view.enrollment.program} only for {named}; "
        f"the enrollment's diagnoses ({', '.join(dx) or 'none'}) match none"
    )
    return Check.of("coverage.diagnoses", Verdict.FAIL, msg, citation, Evidence(values=values))


def _authorization(
    view: EnrollmentView, year: RuleYear, policy: CoverageRule, period: Period, used: Used
) -> Check:
    p = policy.prior_authorization
    assert p is not None
    used.add(p)
    c = cite(year, p)
    e = view.enrollment
    if not p.value:
        return Check.of(
            "coverage.prior_authorization",
            Verdict.PASS,
            f"payer policy {policy.name}: no prior authorization needed",
            c,
        )
    day = period.end if e.end_date is None else min(period.end, e.end_date)
    if not e.authorization_id:
        msg = (
            f"payer policy {policy.name} needs a prior authorization for {e.program}; "
            "the enrollment records none"
        )
        return Check.of("coverage.prior_authorization", Verdict.FAIL, msg, c, Evidence(dates=(day,)))
    first = e.authorization_start or e.start_date
    last = e.authorization_end or e.end_date
    span = f"{first}..{last or 'open'}"
    ev = Evidence(dates=(day,), values=(("authorization", e.authorization_id), ("covers", span)))
    if first <= day and (last is None or day <= last):
        msg = f"prior authorization {e.authorization_id} ({span}) covers {day}"
        return Check.of("coverage.prior_authorization", Verdict.PASS, msg, c, ev)
    msg = (
        f"prior authorization {e.authorization_id} covers {span}, not {day}, "
        "the day this service is billed for"
    )
    return Check.of("coverage.prior_authorization", Verdict.FAIL, msg, c, ev)


# --------------------------------------------------------------------------------------
# Units per calendar year, after the concurrency pass
# --------------------------------------------------------------------------------------


def year_caps(facts: PatientMonthFacts, ds: list[Decision], year_for: YearFor) -> list[Decision]:
    out = list(ds)
    spent: dict[tuple[str, int], int] = {}
    for b in facts.billed_history:
        key = (b.code, b.date_of_service.year)
        spent[key] = spent.get(key, 0) + b.units
    order = sorted(range(len(out)), key=lambda i: (out[i].period.end, out[i].enrollment_id, out[i].code))
    for i in order:
        d = out[i]
        if not counts(d):
            continue
        year = year_for(d.period.end)
        for policy in year.coverage_for(d.program, d.code):
            p = policy.max_units_per_year
            if p is None or d.code not in p.value:
                continue
            cap = int(p.value[d.code])
            on = (d.date_of_service or d.period.end).year
            key = (d.code, on)
            already = spent.get(key, 0)
            left = max(0, cap - already)
            values = (("cap", str(cap)), ("billed_this_year", str(already)), ("policy", policy.name))
            c = cite(year, p)
            if left <= 0:
                msg = (
                    f"payer policy {policy.name} pays {cap} unit(s) of {d.code} per calendar year; "
                    f"{already} already billed in {on}"
                )
                out[i] = demote(
                    d,
                    Reason("coverage.max_units_per_year", False, msg, c, Evidence(values=values)),
                    True,
                    [p],
                )
                d = out[i]
                break
            if d.units > left:
                msg = (
                    f"payer policy {policy.name} pays {cap} unit(s) of {d.code} per calendar year; {already} "
                    f"already billed in {on}, so {left} of {d.units} unit(s) are billed"
                )
                d = _cut(d, left, year)
            else:
                msg = f"payer policy {policy.name}: {already + d.units} of {cap} unit(s) of {d.code} in {on}"
            out[i] = d = with_reason(
                d, Reason("coverage.max_units_per_year", True, msg, c, Evidence(values=values))
            )
        if counts(out[i]):
            key = (out[i].code, (out[i].date_of_service or out[i].period.end).year)
            spent[key] = spent.get(key, 0) + out[i].units
    return out


def _cut(d: Decision, units: int, year: RuleYear) -> Decision:
    """The decision with fewer units, its expected payment following (an unpriced code stays $0.00)."""
    amount = year.code(d.code).amount
    pay = Decimal("0.00") if amount is None else amount * units
    if d.status is not Status.BILLABLE and d.status is not Status.REACHABLE:
        return d
    return replace(d, units=units, expected_payment=pay)

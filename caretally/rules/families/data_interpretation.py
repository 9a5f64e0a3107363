"""Data collection and interpretation (99091), per 30-day period.

At least ``min_minutes`` of time by the accepted performers (practitioners) in the
period. It is never billed in the same month as the codes in ``exclusive_with``
(99457/99458/99470): when both are possible the concurrency pass keeps the one that pays
more. Because a 30-day period can reach back into the previous month, entries dated in a
month for which ``billed_history`` already holds one of those codes are left out — their
minutes may have been used there.
"""

from __future__ import annotations

from datetime import date

from caretally.model import Decision, Evidence, Period, TimeFact
from caretally.rules.families.common import (
    Check,
    Draft,
    EnrollmentView,
    Used,
    Verdict,
    as_int,
    cite,
    codes_of,
    common_checks,
    employed_staff_only,
    finish,
    option_value,
    performers_of,
    pool,
    rendering_of,
    same_day_em,
    threshold_day,
    window,
)
from caretally.rules.families.device_supply import DOS_CHOICES
from caretally.rules.families.ladder import minutes_check, rung
from caretally.rules.params import CodeRule, RuleYear

FAMILY = "data_interpretation"


def decide(view: EnrollmentView) -> list[Decision]:
    out: list[Decision] = []
    for period in sorted(view.program.device_periods, key=lambda p: p.start):
        year = view.year_for(period.end)
        for rule in codes_of(year, view.enrollment.program, FAMILY):
            out.append(_decide(view, year, period, rule))
    return out


def _billed_months(view: EnrollmentView, codes: tuple[str, ...]) -> set[tuple[int, int]]:
    e = view.enrollment
    return {
        (b.date_of_service.year, b.date_of_service.month)
        for b in view.facts.billed_history
        if b.enrollment_id == e.enrollment_id and b.code in codes
    }


def _decide(view: EnrollmentView, year: RuleYear, period: Period, rule: CodeRule) -> Decision:
    used = Used(year)
    prefix = f"{view.enrollment.program.lower()}.interpretation"
    draft = Draft(view, year, rule, period, used, time_based=True)
    draft.checks.extend(common_checks(view, year, period, used))
    performers = performers_of(used.code(rule, "performers"))
    used.code_opt(rule, "exclusive_with")
    months = _billed_months(view, tuple(sorted(year.excludes(rule.code))))
    skip = frozenset(e.entry_id for e in view.entries if (e.local_date.year, e.local_date.month) in months)
    employed = employed_staff_only(year, rule.program, used)
    barred = same_day_em(view, year, rule, used)
    p = pool(view.entries, period, window(view, period), performers, skip, employed, barred)
    on_em_days = [e for e, _ in p.excluded if e.entry_id in barred]
    if on_em_days:
        c = cite(year, year.rule_global("em_same_day_excludes"))
        names = ", ".join(f"{e.entry_id} ({e.local_date})" for e in on_em_days)
        msg = f"not counted, logged on a day the same practitioner billed an E/M with the patient: {names}"
        ev = Evidence(
            dates=tuple(sorted({e.local_date for e in on_em_days})),
            values=(("excluded_entries", ",".join(e.entry_id for e in on_em_days)),),
        )
        draft.checks.append(Check.of(f"{prefix}.same_day_em", Verdict.PASS, msg, c, ev))
    me = rung(rule)
    used.add(rule.param("min_minutes"))
    check = minutes_check(
        f"{prefix}.min_minutes", view, period, p, me, cite(year, rule.param("min_minutes")), ""
    )
    draft.checks.append(check)
    per_period = as_int(used.code(rule, "max_units"), f"{rule.code} max_units")
    draft.units = per_period if me.holds(p.minutes) else 0
    draft.dos = _dos(view, year, used, period, p.counted, me.min_minutes)
    draft.rendering = rendering_of(view, p.counted)
    if check.verdict is Verdict.PASS:
        draft.open_note = "the period's time is final only when it closes"
    return finish(draft)


def _dos(
    view: EnrollmentView,
    year: RuleYear,
    used: Used,
    period: Period,
    counted: tuple[TimeFact, ...],
    need: int,
) -> date | None:
    """Dated like device supply: a per-30-day service follows the ``device_dos`` option."""
    choice = option_value(year, "device_dos", DOS_CHOICES)
    used.add(year.option("device_dos"))
    if choice == "period_end":
        return period.end  # a 30-day service, dated like device supply (see device_dos)
    return threshold_day(counted, need)

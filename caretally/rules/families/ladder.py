"""The time ladder shared by treatment management and care management.

A base code counts a pool of minutes (``floor(total seconds / 60)``, never rounded up)
from the entries of the performers it accepts, inside its period, the enrollment and
after consent; it qualifies when ``min_minutes <= minutes <= max_minutes`` (``null`` max
= no ceiling). A count above the ceiling belongs to the next base up (99470 → 99457).

An add-on reuses its base's pool: units are
``floor((minutes − base min_minutes) / step_minutes)``, capped by ``max_units`` (``null`` =
uncapped), and only while the base itself is billable. The add-on lists no entries of its
own (the base decision lists the pool), so no entry is counted by two billable lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from caretally.model import Decision, Evidence, Measures, Period, Status
from caretally.rules.families.common import (
    Check,
    Draft,
    EnrollmentView,
    TimePool,
    Used,
    Verdict,
    as_int,
    cite,
    clamp_to_enrollment,
    clock,
    common_checks,
    employed_staff_only,
    finish,
    ids,
    is_open,
    minutes_phrase,
    option_value,
    performers_of,
    plural,
    pool,
    rendering_of,
    threshold_day,
    window,
)
from caretally.rules.params import CodeRule, Param, RuleYear

TIME_DOS = ("month_end", "threshold_day")


@dataclass(frozen=True, slots=True)
class Rung:
    rule: CodeRule
    min_minutes: int
    max_minutes: int | None

    def holds(self, m: int) -> bool:
        return m >= self.min_minutes and (self.max_minutes is None or m <= self.max_minutes)


def rung(rule: CodeRule) -> Rung:
    hi = rule.get("max_minutes")
    return Rung(
        rule,
        as_int(rule.value("min_minutes"), f"{rule.code} min_minutes"),
        None if hi is None else as_int(hi, f"{rule.code} max_minutes"),
    )


def bases_and_addons(year: RuleYear, rules: Sequence[CodeRule]) -> tuple[list[CodeRule], list[CodeRule]]:
    bases = [r for r in rules if not year.is_add_on(r.code)]
    addons = [r for r in rules if year.is_add_on(r.code)]
    return bases, addons


def code_pool(
    view: EnrollmentView, used: Used, rule: CodeRule, period: Period, skip: frozenset[str] = frozenset()
) -> TimePool:
    performers = performers_of(used.code(rule, "performers"))
    employed = employed_staff_only(used.year, rule.program, used)
    return pool(view.entries, period, window(view, period), performers, skip, employed)


def time_dos(
    view: EnrollmentView, year: RuleYear, used: Used, period: Period, p: TimePool, need: int
) -> date | None:
    choice = option_value(year, "time_dos", TIME_DOS)
    used.add(year.option("time_dos"))
    if choice == "month_end":
        return clamp_to_enrollment(view, period.end)
    return threshold_day(p.counted, need)


def time_left(view: EnrollmentView, period: Period) -> int:
    return window(view, period).days_left(view.facts.as_of) if is_open(view, period) else 0


def minutes_check(
    rule_id: str,
    view: EnrollmentView,
    period: Period,
    p: TimePool,
    r: Rung,
    citation: str,
    instead: str,
) -> Check:
    m, s = p.minutes, p.seconds
    left = time_left(view, period)
    over = r.max_minutes is not None and m > r.max_minutes
    if over:
        rule_id, verdict = rule_id.replace("min_minutes", "max_minutes"), Verdict.FAIL
    elif m >= r.min_minutes:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.PENDING if left else Verdict.FAIL
    if view.payment_only:  # the counted entries stay: the concurrency pass reads them
        return Check.of(rule_id, verdict, "", "", Evidence(time_entry_ids=ids(p.counted)))
    values = (
        ("minutes", str(m)),
        ("seconds", str(s)),
        ("min_minutes", str(r.min_minutes)),
        *p.excluded_value(),
    )
    ev = Evidence(time_entry_ids=ids(p.counted), values=values)
    ms = Measures(
        minutes=m,
        seconds=s,
        min_minutes=r.min_minutes,
        max_minutes=r.max_minutes,
        days_left=left,
        entry_ids=ids(p.counted),
    )
    excl = f"; {plural(len(p.excluded), 'entry')} did not count" if p.excluded else ""
    if over:
        msg = f"{minutes_phrase(m, s)}: more than the {r.max_minutes} this code covers{excl}"
        msg += f"; {instead}" if instead else ""
    elif verdict is Verdict.PASS:
        msg = f"{minutes_phrase(m, s)}; {r.min_minutes} required{excl}"
    else:
        short = f": {clock(s)} is not {r.min_minutes}" if m == r.min_minutes - 1 else ""
        msg = f"{minutes_phrase(m, s)} of {r.min_minutes} required{short}{excl}"
        if left:
            so_far = f" (so far {instead})" if instead else ""
            msg += f"; {plural(left, 'day')} left in {period_label(period)}{so_far}"
        elif instead:
            msg += f"; {instead}"
    return Check.of(rule_id, verdict, msg, citation, ev, ms)


def period_label(period: Period) -> str:
    return (
        f"{period.start:%Y-%m}"
        if period.start.day == 1 and period.days >= 28
        else f"{period.start}..{period.end}"
    )


def base_decision(
    view: EnrollmentView,
    year: RuleYear,
    rule: CodeRule,
    bases: Sequence[CodeRule],
    period: Period,
    prefix: str,
    extra: Sequence[Check] = (),
    extra_params: Sequence[Param] = (),
) -> tuple[Decision, TimePool]:
    used = Used(year)
    for param in extra_params:
        used.add(param)
    draft = Draft(view, year, rule, period, used, time_based=True)
    draft.checks.extend(common_checks(view, year, period, used))
    p = code_pool(view, used, rule, period)
    me = rung(rule)
    used.add(rule.param("min_minutes"))
    if "max_minutes" in rule.params:
        used.add(rule.params["max_minutes"])
    if "exclusive_with" in rule.params:
        used.add(rule.params["exclusive_with"])
    others = [rung(b) for b in bases if b is not rule]
    better = [o for o in others if o.holds(p.minutes)]
    instead = f"the month qualifies for {better[0].rule.code} instead" if better else ""
    cite_param = (
        rule.param("max_minutes")
        if me.max_minutes is not None and p.minutes > me.max_minutes
        else rule.param("min_minutes")
    )
    check = minutes_check(f"{prefix}.min_minutes", view, period, p, me, cite(year, cite_param), instead)
    draft.checks.append(check)
    draft.checks.extend(extra)
    per_month = as_int(used.code(rule, "max_units"), f"{rule.code} max_units")
    draft.units = per_month if me.holds(p.minutes) else 0
    draft.dos = time_dos(view, year, used, period, p, me.min_minutes)
    draft.rendering = rendering_of(view, p.counted)
    if check.verdict is Verdict.PASS:
        higher = [o for o in others if o.min_minutes > p.minutes]
        draft.open_note = (
            f"more minutes may move it to {higher[0].rule.code} or add units"
            if higher
            else "more minutes may add add-on units"
        )
    return finish(draft), p


def addon_decision(
    view: EnrollmentView,
    year: RuleYear,
    rule: CodeRule,
    base_rule: CodeRule,
    base: Decision,
    base_pool: TimePool,
    period: Period,
    prefix: str,
    cap_label: str = "",
    extra: Sequence[Check] = (),
) -> Decision:
    used = Used(year)
    draft = Draft(view, year, rule, period, used, time_based=True)
    draft.checks.extend(common_checks(view, year, period, used))
    draft.checks.extend(extra)
    used.add(rule.param("add_on_to"))
    base_min = as_int(used.add(base_rule.param("min_minutes")).value, f"{base_rule.code} min_minutes")
    step = as_int(used.code(rule, "step_minutes"), f"{rule.code} step_minutes")
    first = base_min + step
    if "min_minutes" in rule.params:
        first = max(first, as_int(used.code(rule, "min_minutes"), f"{rule.code} min_minutes"))
    cap_p = rule.params.get("max_units")
    cap = None
    if cap_p is not None:
        used.add(cap_p)
        cap = None if cap_p.value is None else as_int(cap_p.value, f"{rule.code} max_units")
    m, s = base_pool.minutes, base_pool.seconds
    supported = (m - base_min) // step if m >= first else 0
    units = supported if cap is None else min(supported, cap)
    left = time_left(view, period)
    minutes_verdict = Verdict.PASS if supported > 0 else Verdict.PENDING if left else Verdict.FAIL
    if base.status is Status.BILLABLE or (base.status is Status.REACHABLE and base.units > 0):
        base_verdict = Verdict.PASS
    else:
        base_verdict = Verdict.PENDING if base.status is Status.REACHABLE else Verdict.FAIL
    if view.payment_only:
        draft.checks.append(Check.of(f"{prefix}.add_on_minutes", minutes_verdict, "", ""))
        draft.checks.append(Check.of(f"{prefix}.add_on_base", base_verdict, "", ""))
    else:
        values = (
            ("minutes", str(m)),
            ("base_code", base_rule.code),
            ("base_minutes", str(base_min)),
            ("step_minutes", str(step)),
            ("units_supported", str(supported)),
            ("max_units", "none" if cap is None else str(cap)),
            ("minutes_used", str(units * step)),
        )
        ev = Evidence(values=values)
        capped = cap is not None and supported >= cap
        ms = Measures(
            minutes=m,
            seconds=s,
            min_minutes=first,
            next_unit_minutes=None if capped else base_min + step * (supported + 1),
            days_left=left,
        )
        c = cite(year, rule.param("step_minutes"))
        pool_note = f"counted on {base_rule.code}"
        if supported > 0:
            msg = (
                f"{minutes_phrase(m, s)} {pool_note}: {plural(supported, 'full additional block')} of {step} "
                f"beyond {base_rule.code}'s {base_min}"
            )
            if cap is not None and supported > cap:
                label = cap_label or "max_units"
                msg += f", capped at {cap} ({label})"
        else:
            beyond = max(0, m - base_min)
            msg = (
                f"{minutes_phrase(m, s)} {pool_note}: {beyond} beyond {base_rule.code}'s {base_min}; "
                f"a full {step} is needed (at least {first} in total)"
            )
            if left:
                msg += f"; {plural(left, 'day')} left in {period_label(period)}"
        draft.checks.append(Check.of(f"{prefix}.add_on_minutes", minutes_verdict, msg, c, ev, ms))
        base_ev = Evidence(values=(("base_code", base_rule.code), ("base_status", str(base.status))))
        add_on_cite = cite(year, rule.param("add_on_to"))
        if base_verdict is Verdict.PASS:
            msg = f"add-on to {base_rule.code}, which is {base.status.value.replace('_', ' ')}"
        else:
            failed = next((r.message for r in base.reasons if r.blocking), "")
            why = f" ({failed})" if failed else ""
            msg = f"an add-on needs a billable {base_rule.code}{why}"
        draft.checks.append(Check.of(f"{prefix}.add_on_base", base_verdict, msg, add_on_cite, base_ev))
    draft.units = units
    # An add-on rides on its base's claim line, so it takes the base's date of service.
    draft.dos = base.date_of_service or time_dos(view, year, used, period, base_pool, base_min)
    draft.rendering = base.rendering_practitioner_id
    draft.open_note = "more minutes may add units"
    return finish(draft)

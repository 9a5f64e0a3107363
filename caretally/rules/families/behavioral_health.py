"""Behavioral health integration, per calendar month: general BHI and collaborative care.

Both programs count care-management minutes of the performers each base code accepts (the
ladder of :mod:`ladder`):

* ``BHI`` — 99484, general BHI: at least 20 minutes of clinical staff time (the billing
  practitioner's own time counts too);
* ``COCM`` — the psychiatric collaborative care model: 99492 in the first calendar month of
  behavioral-health care-manager activity of the episode (``episode_month: first``), 99493
  in later months (``later``), each billable from just over half its time (36 of 70, 31 of
  60 minutes: the CPT time rule), and 99494 for each further 30 minutes beyond the full
  time (``full_minutes``), each unit billable from 16 of them (``min_step_minutes``).

The APCM behavioral-health add-ons (2026: G0570 mirroring 99484, G0568/G0569 mirroring
99492/99493) are codes of these programs with ``with_base``: they ride on an APCM code of
another enrollment. One is judged only when the patient has an enrollment of that program
by the same billing practitioner in the month, and the concurrency pass keeps it only
beside a billed base. An add-on and the CPT code it mirrors exclude each other
(``exclusive_with``): the one that pays more is billed for the minutes — so the add-on
bills when the CPT code's time is not met, and CMS's "not both for the same
patient-month" holds (medicare-rules.md §2.5–§2.6).

The first month: the episode's first care-manager activity is the earliest time entry
logged for the program inside the enrollment (``ProgramFacts.first_activity``); a month
after it, or after an initial- or later-month code billed for the enrollment in an earlier
run, is a later month.
"""

from __future__ import annotations

from collections.abc import Sequence

from caretally.model import Decision, Evidence, Measures, Period, ProgramFacts, Status
from caretally.rules.families.common import (
    Check,
    Draft,
    EnrollmentView,
    TimePool,
    Used,
    Verdict,
    as_int,
    cite,
    codes_of,
    common_checks,
    counts,
    finish,
    minutes_phrase,
    plural,
)
from caretally.rules.families.ladder import base_decision, bases_and_addons, period_label, time_dos, time_left
from caretally.rules.params import CodeRule, Param, RuleYear

FAMILY = "behavioral_health"


def decide(view: EnrollmentView) -> list[Decision]:
    month = view.facts.month
    year = view.year_for(month.end)
    program = view.enrollment.program
    rules = codes_of(year, program, FAMILY)
    if not rules:
        return []
    prefix = program.lower()
    first, why_not_first = first_month(view, year)
    bases, addons = bases_and_addons(year, rules)
    applicable = [b for b in bases if _month_fits(b, first)]
    made: dict[str, tuple[Decision, TimePool]] = {}
    out: list[Decision] = []
    for rule in bases:
        extra: list[Check] = []
        params: list[Param] = []
        partner = _partner(view, year, rule)
        if partner is False:
            continue  # rides on a program this practitioner does not bill for the patient
        if "episode_month" in rule.params:
            extra.append(_episode_check(year, rule, first, why_not_first, prefix))
            params.append(rule.param("episode_month"))
        if isinstance(partner, ProgramFacts):
            extra.append(_partner_check(year, rule, partner, prefix))
            params.append(rule.param("with_base"))
        # Ladder neighbours: the codes this month can bill (so a message can say "99493
        # applies instead"), never a code riding on another program.
        others = [b for b in applicable if not year.rides_on(b.code)]
        if rule not in others:
            others = [rule, *others]
        d, pool = base_decision(view, year, rule, others, month, f"{prefix}.time", extra, params)
        made[rule.code] = (d, pool)
        out.append(d)
    for rule in addons:
        if not any(b in made for b in year.bases_of(rule.code)):
            continue
        base_code = _billed_base(year, rule, made, applicable)
        base, base_pool = made[base_code]
        out.append(midpoint_addon(view, year, rule, year.code(base_code), base, base_pool, month, prefix))
    return out


# --------------------------------------------------------------------------------------
# The episode's first month
# --------------------------------------------------------------------------------------


def first_month(view: EnrollmentView, year: RuleYear) -> tuple[bool, str]:
    """Whether this is the first calendar month of care-manager activity, and if not, why."""
    e = view.enrollment
    month = view.facts.month
    episode = {c.code for c in year.codes.values() if c.program == e.program and "episode_month" in c.params}
    billed = sorted(
        (b for b in view.facts.billed_history if b.enrollment_id == e.enrollment_id and b.code in episode),
        key=lambda b: b.date_of_service,
    )
    if billed:
        b = billed[0]
        return False, f"{b.code} was billed for {b.month or b.date_of_service} (run {b.run_id})"
    started = view.program.first_activity
    if started is not None and started < month.start:
        return False, f"care-manager activity for the episode began on {started}"
    return True, ""


def _month_fits(rule: CodeRule, first: bool) -> bool:
    wanted = rule.get("episode_month")
    return wanted is None or (wanted == "first") == first


def _episode_check(year: RuleYear, rule: CodeRule, first: bool, why_not: str, prefix: str) -> Check:
    p = rule.param("episode_month")
    c = cite(year, p)
    ev = Evidence(values=(("episode_month", "first" if first else "later"),))
    if p.value == "first":
        if first:
            msg = f"first calendar month of care-manager activity in enrollment: {rule.code} applies"
            return Check.of(f"{prefix}.episode_month", Verdict.PASS, msg, c, ev)
        msg = f"{rule.code} is for the episode's first month only: {why_not}"
        return Check.of(f"{prefix}.episode_month", Verdict.FAIL, msg, c, ev)
    if first:
        msg = f"{rule.code} is for the months after the first; this is the episode's first month of activity"
        return Check.of(f"{prefix}.episode_month", Verdict.FAIL, msg, c, ev)
    return Check.of(
        f"{prefix}.episode_month", Verdict.PASS, f"a later month of the episode ({why_not})", c, ev
    )


# --------------------------------------------------------------------------------------
# Codes that ride on another program's code (APCM behavioral-health add-ons)
# --------------------------------------------------------------------------------------


def _partner(view: EnrollmentView, year: RuleYear, rule: CodeRule) -> ProgramFacts | bool | None:
    """The enrollment a ``with_base`` code rides on; None when it rides on nothing, False
    when it would but the patient has no such enrollment of this practitioner this month."""
    rides = year.rides_on(rule.code)
    if not rides:
        return None
    programs = {year.code(c).program for c in rides if c in year.codes}
    month = view.facts.month
    me = view.enrollment
    for p in view.facts.programs:
        e = p.enrollment
        if (
            e.program in programs
            and e.billing_practitioner_id == me.billing_practitioner_id
            and e.start_date <= month.end
            and (e.end_date is None or e.end_date >= month.start)
        ):
            return p
    return False


def _partner_check(year: RuleYear, rule: CodeRule, partner: ProgramFacts, prefix: str) -> Check:
    p = rule.param("with_base")
    e = partner.enrollment
    msg = (
        f"{rule.code} rides on {', '.join(year.rides_on(rule.code))}: the same practitioner "
        f"({e.billing_practitioner_id}) holds {e.program} enrollment {e.enrollment_id} this month"
    )
    ev = Evidence(values=(("base_enrollment", e.enrollment_id),))
    return Check.of(f"{prefix}.with_base", Verdict.PASS, msg, cite(year, p), ev)


# --------------------------------------------------------------------------------------
# 99494: further 30-minute units beyond the full time, each from more than half of it
# --------------------------------------------------------------------------------------


def _billed_base(
    year: RuleYear, rule: CodeRule, made: dict[str, tuple[Decision, TimePool]], applicable: Sequence[CodeRule]
) -> str:
    """Which of an add-on's bases it rides on this month: the one that counts, else the one
    the month fits (99492 in the first month, 99493 after), else the first listed."""
    bases = [b for b in year.bases_of(rule.code) if b in made]
    counting = [b for b in bases if counts(made[b][0])]
    fitting = [b for b in bases if any(a.code == b for a in applicable)]
    return (counting or fitting or bases)[0]


def midpoint_addon(
    view: EnrollmentView,
    year: RuleYear,
    rule: CodeRule,
    base_rule: CodeRule,
    base: Decision,
    base_pool: TimePool,
    period: Period,
    prefix: str,
) -> Decision:
    used = Used(year)
    draft = Draft(view, year, rule, period, used, time_based=True)
    draft.checks.extend(common_checks(view, year, period, used))
    used.add(rule.param("add_on_to"))
    full = as_int(used.add(base_rule.param("full_minutes")).value, f"{base_rule.code} full_minutes")
    step = as_int(used.code(rule, "step_minutes"), f"{rule.code} step_minutes")
    part = as_int(used.code(rule, "min_step_minutes"), f"{rule.code} min_step_minutes")
    cap_p = rule.params.get("max_units")
    cap = None
    if cap_p is not None:
        used.add(cap_p)
        cap = None if cap_p.value is None else as_int(cap_p.value, f"{rule.code} max_units")
    m, s = base_pool.minutes, base_pool.seconds
    first = full + part
    supported = 0 if m < first else (m - first) // step + 1
    units = supported if cap is None else min(supported, cap)
    capped = cap is not None and supported >= cap
    ms = Measures(
        minutes=m,
        seconds=s,
        min_minutes=first,
        next_unit_minutes=None if capped else first + step * supported,
        days_left=time_left(view, period),
    )
    values = (
        ("minutes", str(m)),
        ("base_code", base_rule.code),
        ("full_minutes", str(full)),
        ("step_minutes", str(step)),
        ("min_step_minutes", str(part)),
        ("units_supported", str(supported)),
        ("max_units", "none" if cap is None else str(cap)),
    )
    ev = Evidence(values=values)
    c = cite(year, rule.param("min_step_minutes"))
    beyond = max(0, m - full)
    if supported > 0:
        msg = (
            f"{minutes_phrase(m, s)} counted on {base_rule.code}: {beyond} beyond its full {full}, "
            f"{plural(supported, 'unit')} of {step} (each billable from {part} minutes)"
        )
        if cap is not None and supported > cap:
            msg += f", capped at {cap} (max_units)"
        draft.checks.append(Check.of(f"{prefix}.time.add_on_minutes", Verdict.PASS, msg, c, ev, ms))
    else:
        msg = (
            f"{minutes_phrase(m, s)} counted on {base_rule.code}: {beyond} beyond its full {full}; "
            f"a unit needs {part} of a further {step} (at least {first} in total)"
        )
        left = time_left(view, period)
        if left:
            msg += f"; {plural(left, 'day')} left in {period_label(period)}"
        verdict = Verdict.PENDING if left else Verdict.FAIL
        draft.checks.append(Check.of(f"{prefix}.time.add_on_minutes", verdict, msg, c, ev, ms))
    base_ev = Evidence(values=(("base_code", base_rule.code), ("base_status", str(base.status))))
    add_on_cite = cite(year, rule.param("add_on_to"))
    if counts(base):
        msg = f"add-on to {base_rule.code}, which is {base.status.value.replace('_', ' ')}"
        draft.checks.append(Check.of(f"{prefix}.time.add_on_base", Verdict.PASS, msg, add_on_cite, base_ev))
    else:
        failed = next((r.message for r in base.reasons if r.blocking), "")
        why = f" ({failed})" if failed else ""
        verdict = Verdict.PENDING if base.status is Status.REACHABLE else Verdict.FAIL
        msg = f"an add-on needs a billable {base_rule.code}{why}"
        draft.checks.append(Check.of(f"{prefix}.time.add_on_base", verdict, msg, add_on_cite, base_ev))
    draft.units = units
    draft.dos = base.date_of_service or time_dos(view, year, used, period, base_pool, first)
    draft.rendering = base.rendering_practitioner_id
    draft.open_note = "more minutes may add units"
    return finish(draft)

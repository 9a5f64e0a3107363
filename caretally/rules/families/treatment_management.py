"""Treatment management (RPM 99470/99457/99458; RTM 98979/98980/98981), per calendar month.

Minutes come from the enrollment's time entries in the month by the performers each code
accepts; the ladder (see :mod:`ladder`) picks the base code and the add-on units. A base
code that ``requires_interactive`` needs at least one counted entry in the month marked
interactive whose modality is one of ``interactive_modalities`` — the call's own minutes
count toward the total. The day-count rule of device supply does not apply here.
"""

from __future__ import annotations

from collections import Counter

from caretally.model import Decision, Evidence, Measures, Period, Program, TimeFact
from caretally.rules.families.common import (
    Check,
    EnrollmentView,
    TimePool,
    Used,
    Verdict,
    cite,
    codes_of,
    employed_staff_only,
    ids,
    performers_of,
    plural,
    pool,
    strings,
    window,
)
from caretally.rules.families.ladder import addon_decision, base_decision, bases_and_addons, time_left
from caretally.rules.params import CodeRule, Param, RuleYear

FAMILY = "treatment_management"
ADDON_CAP_OPTION = {Program.RPM: "rpm_addon_max_units", Program.RTM: "rtm_addon_max_units"}


def decide(view: EnrollmentView) -> list[Decision]:
    month = view.facts.month
    year = view.year_for(month.end)
    rules = codes_of(year, view.enrollment.program, FAMILY)
    if not rules:
        return []
    prefix = f"{view.enrollment.program.lower()}.tm"
    bases, addons = bases_and_addons(year, rules)
    out: list[Decision] = []
    made: dict[str, tuple[Decision, TimePool]] = {}
    for rule in bases:
        extra, params = interactive(view, year, rule, month, prefix)
        made[rule.code] = base_decision(view, year, rule, bases, month, prefix, extra, params)
        out.append(made[rule.code][0])
    for rule in addons:
        base_code = year.base_of(rule.code)
        base_rule = year.code(base_code)
        base, base_pool = made[base_code]
        cap_p = rule.params.get("max_units")
        label = f"option {cap_p.option}" if cap_p is not None and cap_p.option else "max_units"
        out.append(addon_decision(view, year, rule, base_rule, base, base_pool, month, prefix, label))
    return out


def interactive(
    view: EnrollmentView, year: RuleYear, rule: CodeRule, period: Period, prefix: str
) -> tuple[list[Check], list[Param]]:
    """The real-time interactive communication check for one base code (if it needs one)."""
    if "requires_interactive" not in rule.params:
        return [], []
    req = rule.param("requires_interactive")
    if not req.value:
        return [], [req]
    mod_p = rule.param("interactive_modalities")
    allowed = strings(mod_p.value)
    # A contracted staff member's call does not qualify where their minutes do not count
    # (CY2027 proposal staff_minutes_employed_only; the base decision records the option).
    employed = employed_staff_only(year, rule.program, Used(year))
    performers = performers_of(rule.value("performers"))
    p = pool(view.entries, period, window(view, period), performers, frozenset(), employed)
    calls = [e for e in p.counted if e.interactive and e.modality is not None and str(e.modality) in allowed]
    if view.payment_only:
        verdict = Verdict.PASS if calls else Verdict.PENDING if time_left(view, period) else Verdict.FAIL
        return [Check.of(f"{prefix}.interactive", verdict, "", "")], [req, mod_p]
    c = cite(year, mod_p) or cite(year, req)
    listed = ", ".join(allowed)
    if calls:
        first = calls[0]
        msg = (
            f"real-time interactive communication on {first.local_date} by {first.modality} "
            f"(entry {first.entry_id}; {plural(len(calls), 'qualifying contact')} this month)"
        )
        ev = Evidence(
            dates=tuple(e.local_date for e in calls),
            interactive_entry_ids=ids(calls),
            values=(("modalities", listed),),
        )
        return [Check.of(f"{prefix}.interactive", Verdict.PASS, msg, c, ev, Measures(interactive=True))], [
            req,
            mod_p,
        ]
    msg = f"no real-time interactive communication this month{_near_misses(p.counted, allowed)}"
    left = time_left(view, period)
    verdict = Verdict.PENDING if left else Verdict.FAIL
    if left:
        msg += f"; {plural(left, 'day')} left for a call"
    ev = Evidence(values=(("modalities", listed),))
    return [Check.of(f"{prefix}.interactive", verdict, msg, c, ev, Measures(interactive=False))], [req, mod_p]


_NOUN = {
    "portal": "portal message",
    "text": "text message",
    "other": "other contact",
    "in_person": "in-person contact",
}


def _near_misses(counted: tuple[TimeFact, ...], allowed: tuple[str, ...]) -> str:
    """Name the contacts that look like communication but do not qualify, so a biller sees why."""
    wrong_mode = Counter(
        str(e.modality)
        for e in counted
        if e.modality is not None and str(e.modality) not in allowed and e.interactive
    )
    passive = [
        e for e in counted if not e.interactive and e.modality is not None and str(e.modality) in allowed
    ]
    parts: list[str] = []
    for mode, n in sorted(wrong_mode.items()):
        noun = _NOUN.get(mode, f"{mode} contact")
        parts.append(
            f"{plural(n, noun)} {'does' if n == 1 else 'do'} not count: "
            f"modality {mode} is not one of {', '.join(allowed)}"
        )
    if passive:
        parts.append(
            f"{plural(len(passive), 'entry')} by {'/'.join(sorted({str(e.modality) for e in passive}))} "
            "not marked interactive"
        )
    return f" ({'; '.join(parts)})" if parts else ""

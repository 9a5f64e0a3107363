"""Device supply (99445/99454; RTM 98976–98978, 98984–98986): one code per 30-day period.

Each code of the program is judged for every device period whose date of service falls
in the month. The day count decides the tier: a count inside a code's
``[min_days, max_days]`` qualifies it, a count above ``max_days`` sends the period to the
higher tier ("qualifies for 99454 instead"), a count below ``min_days`` leaves it short.
RTM codes are split by device kind (``rtm_kind``): only days reported by devices of that
kind count, and when several kinds report in one period the option
``rtm_multiple_kinds`` picks the one kind to bill.

Which enrollment bills when two enrollments of the same program overlap a period is the
concurrency pass's job (``concurrency.one_practitioner``), not this module's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from caretally.model import Decision, Evidence, Measures, Period, Program
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
    finish,
    is_open,
    option_value,
    window,
)
from caretally.rules.families.days import DayCount, count_days, days_check, nth_day
from caretally.rules.params import CodeRule, RuleYear

FAMILY = "device_supply"
DOS_CHOICES = ("period_end", "threshold_day")
KIND_CHOICES = ("highest_paying", "most_days")


@dataclass(frozen=True, slots=True)
class Tier:
    rule: CodeRule
    min_days: int
    max_days: int | None

    def holds(self, n: int) -> bool:
        return n >= self.min_days and (self.max_days is None or n <= self.max_days)


def tier_of(rule: CodeRule) -> Tier:
    max_days = rule.get("max_days")
    return Tier(
        rule,
        as_int(rule.value("min_days"), f"{rule.code} min_days"),
        None if max_days is None else as_int(max_days, f"{rule.code} max_days"),
    )


def device_dos(
    view: EnrollmentView, year: RuleYear, used: Used, period: Period, count: DayCount, need: int
) -> date | None:
    """Date of service per the ``device_dos`` option (also used by set-up and 99091).

    ``period_end`` is the period's last day even when the enrollment ended earlier: device
    supply is paid per 30-day period, and a claim dated on the enrollment's last day would
    sit less than 30 days after the previous period's (a frequency denial, and the OIG's
    "wrong date of service" indicator).
    """
    choice = option_value(year, "device_dos", DOS_CHOICES)
    used.add(year.option("device_dos"))
    if choice == "period_end":
        return period.end
    return nth_day(count, need)


def decide(view: EnrollmentView) -> list[Decision]:
    out: list[Decision] = []
    for period in view.program.device_periods:
        year = view.year_for(period.end)
        rules = codes_of(year, view.enrollment.program, FAMILY)
        if rules:
            out.extend(_period(view, year, period, rules))
    return out


def _period(view: EnrollmentView, year: RuleYear, period: Period, rules: list[CodeRule]) -> list[Decision]:
    win = window(view, period)
    if view.enrollment.program != Program.RTM:
        count = count_days(view, period, win)
        return [
            _code(view, year, period, t, [tier_of(r) for r in rules], count, None)
            for t in map(tier_of, rules)
        ]

    kinds: dict[str, list[CodeRule]] = {}
    for r in rules:
        kinds.setdefault(str(r.value("rtm_kind")), []).append(r)
    by_kind = {
        k: [d.device_id for d in view.program.devices if d.program == Program.RTM and d.kind == k]
        for k in kinds
    }
    counts = {k: count_days(view, period, win, by_kind[k]) for k in kinds}
    chosen, kind_reason = _choose_kind(year, kinds, counts)
    out: list[Decision] = []
    for kind, kind_rules in sorted(kinds.items()):
        tiers = [tier_of(r) for r in kind_rules]
        for t in tiers:
            extra = _kind_check(view, year, period, kind, by_kind[kind], counts, chosen, kind_reason)
            out.append(_code(view, year, period, t, tiers, counts[kind], extra))
    return out


def _best_payment(tiers: list[Tier], n: int) -> Decimal:
    for t in tiers:
        if t.holds(n):
            return t.rule.amount or Decimal(0)
    return Decimal(-1)


def _choose_kind(
    year: RuleYear, kinds: dict[str, list[CodeRule]], counts: dict[str, DayCount]
) -> tuple[str | None, str]:
    reporting = [k for k in kinds if counts[k].n > 0]
    if len(reporting) <= 1:
        return (reporting[0] if reporting else None), ""
    choice = option_value(year, "rtm_multiple_kinds", KIND_CHOICES)
    pays = {k: _best_payment([tier_of(r) for r in kinds[k]], counts[k].n) for k in reporting}
    if choice == "highest_paying":
        best = min(reporting, key=lambda k: (-pays[k], -counts[k].n, k))
        why = f"{best} pays most"
    else:
        best = min(reporting, key=lambda k: (-counts[k].n, -pays[k], k))
        why = f"{best} has the most days"
    listing = ", ".join(f"{k} {counts[k].n} days" for k in sorted(reporting))
    return best, f"devices of several kinds reported ({listing}); {why} (option rtm_multiple_kinds: {choice})"


def _kind_check(
    view: EnrollmentView,
    year: RuleYear,
    period: Period,
    kind: str,
    devices: list[str],
    counts: dict[str, DayCount],
    chosen: str | None,
    why: str,
) -> tuple[Check, bool]:
    """Returns the kind check and whether the multiple-kinds option was consulted."""
    option = year.option("rtm_multiple_kinds")
    c = cite(year, option)
    ev = Evidence(device_ids=tuple(sorted(devices)), values=(("kind", kind),))
    if not devices:
        msg = f"no {kind} device assigned to this enrollment"
        kind_rule = next(r for r in year.codes_for(Program.RTM) if r.get("rtm_kind") == kind)
        return Check.of(
            "rtm.device.kind", Verdict.FAIL, msg, cite(year, kind_rule.param("rtm_kind")), ev
        ), False
    if chosen is None or chosen == kind:
        msg = f"{kind} device(s) {', '.join(sorted(devices))}" + (f": {why}" if why else "")
        if not why:
            kind_rule = next(r for r in year.codes_for(Program.RTM) if r.get("rtm_kind") == kind)
            c = cite(year, kind_rule.param("rtm_kind"))
        return Check.of("rtm.device.kind", Verdict.PASS, msg, c, ev), bool(why)
    verdict = Verdict.PENDING if is_open(view, period) else Verdict.FAIL
    return Check.of("rtm.device.kind", verdict, why, c, ev), True


def _code(
    view: EnrollmentView,
    year: RuleYear,
    period: Period,
    tier: Tier,
    tiers: list[Tier],
    count: DayCount,
    kind: tuple[Check, bool] | None,
) -> Decision:
    rule = tier.rule
    used = Used(year)
    prefix = view.enrollment.program.lower()
    draft = Draft(view, year, rule, period, used, time_based=False)
    draft.checks.extend(common_checks(view, year, period, used))
    if kind is not None:
        draft.checks.append(kind[0])
        if kind[1]:
            used.add(year.option("rtm_multiple_kinds"))
    min_p = used.add(rule.param("min_days"))
    if count.manual:  # the rule that left those days out is part of the evidence
        used.add(year.rule_global("manual_readings_count"))
    if "max_days" in rule.params:
        used.add(rule.params["max_days"])
    if "exclusive_with" in rule.params:
        used.add(rule.params["exclusive_with"])
    others = [t for t in tiers if t.rule.code != tier.rule.code and t.holds(count.n)]
    instead = f"the period qualifies for {others[0].rule.code} instead" if others else ""
    if tier.max_days is not None and count.n > tier.max_days:
        max_p = rule.param("max_days")
        msg = f"{count.n} days with data: more than the {tier.max_days} this code allows" + (
            f"; {instead}" if instead else ""
        )
        ev = Evidence(dates=count.days, device_ids=count.devices, values=(("days", str(count.n)),))
        ms = Measures(days=count.n, min_days=tier.min_days, days_left=count.left, dates=count.days)
        draft.checks.append(
            Check.of(f"{prefix}.device.max_days", Verdict.FAIL, msg, cite(year, max_p), ev, ms)
        )
    else:
        also = "" if count.n >= tier.min_days else instead
        check = days_check(f"{prefix}.device.min_days", count, period, tier.min_days, cite(year, min_p), also)
        draft.checks.append(check)
        if check.verdict is Verdict.PASS:
            higher = [t for t in tiers if t.min_days > count.n and count.n + count.left >= t.min_days]
            if higher and is_open(view, period):
                draft.open_note = f"more days may upgrade {rule.code} → {higher[0].rule.code}"
            elif is_open(view, period):
                draft.open_note = "the day count is final only when the period closes"
    per_period = as_int(used.code(rule, "max_units"), f"{rule.code} max_units")
    draft.units = per_period if count.n >= tier.min_days else 0
    draft.dos = device_dos(view, year, used, period, count, tier.min_days)
    return finish(draft)

"""The final pass over all decisions of a patient-month: services that exclude each other.

Only decisions that currently claim money (billable, or reachable with units) take part.
Every conflict keeps the side that pays more; the other side is demoted with a reason
naming the winner (see :func:`common.demote` for what "demoted" means while a period is
still open). The passes run in a fixed order:

1. ``concurrency.one_practitioner`` — a device window that overlaps a window already
   billed in an earlier month's stored run bills no device-supply or set-up line; two
   enrollments of one program (RPM, RTM, CCM) overlapping a period in this month: only the
   earliest-starting enrollment bills (ties: lowest id).
   CMS allows one practitioner per device period and per CCM month. PCM is exempt:
   several practitioners may each manage a different condition.
2. ``concurrency.exclusive_with`` — codes listed in each other's ``exclusive_with`` are
   never both billed for overlapping periods (99091 vs 99457/99458/99470, device tiers,
   CCM lanes …) within one enrollment, or across enrollments of the same billing
   practitioner; enrollments of different practitioners are left to the one-practitioner
   rule (two PCM practitioners may each bill their own lane). Tiers are either/or per
   30-day period: a month that closes two periods of one enrollment bills a tier for each.
   A base code and its add-ons are one service and win or lose together.
3. ``concurrency.never_together`` — program pairs from the rule-year (RPM and RTM) with
   counting decisions in overlapping periods: the program with the higher total stays.
4. ``concurrency.not_same_practitioner`` — program pairs billed by the same practitioner
   in the month (CCM and PCM; APCM and the CCM/PCM it bundles; BHI and CoCM): the higher
   total stays. With different practitioners the option the pair names decides
   (``allowed`` or ``blocked``; e.g. ``ccm_pcm_different_practitioners``); a pair that
   names none leaves different practitioners free.
5. ``concurrency.with_base`` — a code that rides on another program's code (the APCM
   behavioral-health add-ons on APCM) needs that code billed for the patient by the same
   practitioner in an overlapping period. Checked before the exclusions (so an add-on
   without any base never displaces the CPT code it mirrors), after the bundles (a base
   may lose to CCM there) and once more at the end.
6. ``concurrency.add_on_base`` — an add-on whose base no longer counts is demoted too.
7. ``time.no_double_count`` — every entry a billable decision lists is claimed by no
   other billable decision. (Open, ``reachable`` lines may share entries: they are
   alternatives still waiting on each other.) Allocation and the exclusions above already
   guarantee it;
   the pass records the check on each time-based line and, should the guarantee ever
   break, keeps the better-paying line and demotes the other rather than bill a minute
   twice.
8. ``coverage.max_units_per_year`` — a payer overlay's yearly unit caps, on what survived
   the passes above (see :mod:`coverage`); an add-on whose base is cut off follows it.

Ties keep the earliest-starting enrollment, then the lowest enrollment id, then the code,
so every rerun gives the same answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from caretally.model import Decision, Evidence, PatientMonthFacts, Period, Program, Reason, Status
from caretally.rules.families.common import (
    YearFor,
    cite,
    counts,
    demote,
    money,
    option_value,
    strings,
    with_reason,
)
from caretally.rules.families.coverage import year_caps
from caretally.rules.params import Param, RuleYear

DIFFERENT_PRACTITIONERS = ("allowed", "blocked")


def overlaps(a: Period, b: Period) -> bool:
    return a.start <= b.end and b.start <= a.end


def _payment(ds: Sequence[Decision]) -> Decimal:
    return sum((d.expected_payment or Decimal(0) for d in ds if counts(d)), Decimal(0))


def _final(ds: Sequence[Decision]) -> bool:
    return all(d.status is Status.BILLABLE for d in ds if counts(d))


def resolve(facts: PatientMonthFacts, decisions: list[Decision], year_for: YearFor) -> list[Decision]:
    if not decisions:
        return []
    year = year_for(facts.month.end)
    starts = {
        p.enrollment.enrollment_id: (p.enrollment.start_date, p.enrollment.enrollment_id)
        for p in facts.programs
    }
    ds = list(decisions)
    ds = billed_windows(facts, ds, year_for)
    ds = one_practitioner(facts, ds, starts, year_for)
    ds = with_base(ds, year_for)
    ds = exclusive_with(ds, year_for, starts)
    ds = never_together(ds, year, starts)
    ds = not_same_practitioner(ds, year, starts)
    ds = with_base(ds, year_for)
    ds = add_on_base(ds, year_for)
    ds = no_double_count(ds, year)
    ds = add_on_base(with_base(ds, year_for), year_for)
    if any(year_for(d.period.end).coverage for d in ds):
        ds = add_on_base(year_caps(facts, ds, year_for), year_for)
    return ds


# --------------------------------------------------------------------------------------


def _one_practitioner_programs(year: RuleYear) -> frozenset[Program]:
    """The programs the rule-year's ``one_practitioner`` rule covers (none if it has none)."""
    p = year.globals.get("one_practitioner")
    if p is None:
        return frozenset()
    return frozenset(Program(str(x)) for group in p.value for x in group)


def _one_practitioner_cite(year: RuleYear) -> str:
    p = year.globals.get("one_practitioner")
    return "" if p is None else cite(year, p)


DEVICE_WINDOW_FAMILIES = ("device_supply", "setup")


def _family(year_for: YearFor, code: str, day: date) -> str | None:
    rule = year_for(day).codes.get(code)
    return None if rule is None else rule.family


def billed_windows(facts: PatientMonthFacts, ds: list[Decision], year_for: YearFor) -> list[Decision]:
    """A device window that overlaps one already billed in an earlier month bills nothing.

    CMS pays one practitioner per 30-day device window. Within a month the rivals are in
    the same run; across months the earlier window is a line of that month's stored run
    (``billed_history``), billed under any enrollment or practitioner of the organization.
    Device-supply and set-up lines of the new window are demoted, naming that run and line.
    """
    earlier = [
        b
        for b in facts.billed_history
        if b.period_start is not None
        and b.period_end is not None
        and _family(year_for, b.code, b.period_end) == "device_supply"
    ]
    if not earlier:
        return ds
    out = list(ds)
    for i, d in enumerate(out):
        year = year_for(d.period.end)
        if not counts(d) or d.program not in _one_practitioner_programs(year):
            continue
        if _family(year_for, d.code, d.period.end) not in DEVICE_WINDOW_FAMILIES:
            continue
        hits = [
            b
            for b in earlier
            if year_for(b.period_end).codes[b.code].program == d.program
            and b.period_start <= d.period.end  # type: ignore[operator]
            and d.period.start <= b.period_end  # type: ignore[operator]
        ]
        if not hits:
            continue
        b = min(hits, key=lambda h: (h.period_start, h.run_id))
        msg = (
            f"one {d.program} practitioner per 30-day device window: {b.code} for "
            f"{b.period_start}..{b.period_end} (enrollment {b.enrollment_id}) is already billed in "
            f"run {b.run_id} of {b.month}, line {b.line_key}; this window overlaps it"
        )
        ev = Evidence(
            dates=(b.period_start, b.period_end),  # type: ignore[arg-type]
            values=(("run_id", b.run_id), ("line", b.line_key), ("billed_code", b.code)),
        )
        r = Reason("concurrency.one_practitioner", False, msg, _one_practitioner_cite(year), ev)
        out[i] = demote(d, r, True, [year.globals.get("one_practitioner")])
    return out


def one_practitioner(
    facts: PatientMonthFacts, ds: list[Decision], starts: dict[str, tuple[date, str]], year_for: YearFor
) -> list[Decision]:
    """Two enrollments of one program may not both bill the same service for one period.

    Rivals are lines of the same either/or group (device supply against device supply,
    management against management) whose periods overlap: an old episode's last device
    window reaching into the month does not stop the new episode's management codes.
    """
    out = list(ds)
    for i, d in enumerate(out):
        if not counts(d) or d.program not in _one_practitioner_programs(year_for(d.period.end)):
            continue
        group = year_for(d.period.end).either_or_group(d.code)
        rivals = [
            o
            for o in out
            if o.program == d.program
            and o.enrollment_id != d.enrollment_id
            and o.code in group
            and counts(o)
            and starts[o.enrollment_id] < starts[d.enrollment_id]
            and overlaps(o.period, d.period)
        ]
        if not rivals:
            continue
        keeper = min(rivals, key=lambda o: starts[o.enrollment_id])
        if keeper.billing_practitioner_id != d.billing_practitioner_id:
            msg = (
                f"one {d.program} practitioner per period: enrollment {keeper.enrollment_id} "
                f"(practitioner {keeper.billing_practitioner_id}, started earlier) bills "
                f"{keeper.period.start}..{keeper.period.end}"
            )
        else:
            msg = (
                f"two {d.program} enrollments of the same practitioner overlap: "
                f"enrollment {keeper.enrollment_id} (started earlier) bills this period"
            )
        ev = Evidence(values=(("kept_enrollment", keeper.enrollment_id), ("kept_code", keeper.code)))
        r = Reason(
            "concurrency.one_practitioner", False, msg, _one_practitioner_cite(year_for(d.period.end)), ev
        )
        p = year_for(d.period.end).globals.get("one_practitioner")
        out[i] = demote(d, r, keeper.status is Status.BILLABLE, [p])
    return out


# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Service:
    """A base code and its add-ons for one enrollment and period: billed or not together."""

    key: tuple[str, str, date]  # enrollment, base code, period start
    members: tuple[int, ...]  # indexes into the decision list


def _base_of(d: Decision, ds: Sequence[Decision], year_for: YearFor) -> str:
    """The base code ``d`` is billed with this period: an add-on that may ride on several
    bases (99494 on 99492 or 99493) goes with the one the enrollment bills."""
    bases = year_for(d.period.end).bases_of(d.code)
    if len(bases) == 1:
        return bases[0]
    mates = [o for o in ds if o.code in bases and o.enrollment_id == d.enrollment_id and o.period == d.period]
    counting = [o.code for o in mates if counts(o)]
    return (counting or [o.code for o in mates] or list(bases))[0]


def _services(ds: list[Decision], year_for: YearFor) -> list[Service]:
    groups: dict[tuple[str, str, date], list[int]] = {}
    for i, d in enumerate(ds):
        groups.setdefault((d.enrollment_id, _base_of(d, ds, year_for), d.period.start), []).append(i)
    return [Service(k, tuple(v)) for k, v in groups.items()]


def _exclusions(d: Decision, year_for: YearFor) -> tuple[frozenset[str], Param | None]:
    """What ``d``'s service excludes, and the value that says so (an add-on follows its base)."""
    year = year_for(d.period.end)
    return year.excludes(d.code), year.exclusion(d.code)


def with_base(ds: list[Decision], year_for: YearFor) -> list[Decision]:
    """A code whose ``with_base`` names another program's codes (the APCM behavioral-health
    add-ons G0568–G0570) bills only beside one of them, billed for the patient by the same
    practitioner in an overlapping period (medicare-rules.md §2.6). Still open: it waits."""
    out = list(ds)
    for i, d in enumerate(out):
        year = year_for(d.period.end)
        bases = year.rides_on(d.code)
        if not bases or not counts(d):
            continue
        mine = [
            o
            for o in out
            if o.code in bases
            and o.billing_practitioner_id == d.billing_practitioner_id
            and overlaps(o.period, d.period)
        ]
        if any(counts(o) for o in mine):
            continue
        p = year.code(d.code).param("with_base")
        waiting = any(o.status is Status.REACHABLE for o in mine)
        named = ", ".join(bases)
        msg = (
            f"{d.code} is billed only with {named} by the same practitioner "
            f"({d.billing_practitioner_id}) in the month, and none is billed"
        )
        if waiting:
            msg = f"{d.code} waits for {named} by the same practitioner, which is not met yet"
        r = Reason("concurrency.with_base", False, msg, cite(year, p), Evidence(values=(("bases", named),)))
        out[i] = demote(d, r, not waiting, [p])
    return out


def exclusive_with(
    ds: list[Decision], year_for: YearFor, starts: dict[str, tuple[date, str]]
) -> list[Decision]:
    out = list(ds)
    services = [s for s in _services(out, year_for) if any(counts(out[i]) for i in s.members)]

    def pay(s: Service) -> Decimal:
        return _payment([out[i] for i in s.members])

    ranked = sorted(services, key=lambda s: (-pay(s), starts[s.key[0]], s.key[1], s.key[2]))
    kept: list[Service] = []
    for s in ranked:
        conflict = _conflict(out, s, kept, year_for)
        if conflict is None:
            kept.append(s)
            continue
        winner, param, year = conflict
        win_ds = [out[i] for i in winner.members]
        lose_ds = [out[i] for i in s.members]
        codes_w = "+".join(sorted(d.code for d in win_ds if counts(d)))
        codes_l = "+".join(sorted(d.code for d in lose_ds if counts(d)))
        msg = (
            f"{codes_l} and {codes_w} are never billed for the same period: "
            f"{codes_w} pays more ({money(pay(winner))} vs {money(pay(s))})"
        )
        ev = Evidence(values=(("kept", codes_w), ("kept_enrollment", winner.key[0])))
        r = Reason("concurrency.exclusive_with", False, msg, cite(year, param) if param else "", ev)
        for i in s.members:
            if counts(out[i]):
                out[i] = demote(out[i], r, _final(win_ds), [param])
    return out


def _same_biller(a: Decision, b: Decision) -> bool:
    """Whether an exclusion between two decisions applies: one enrollment, or one practitioner.

    ``exclusive_with`` says what one practitioner never bills together for a patient. Two
    enrollments of *different* practitioners are the one-practitioner rule's business
    (``concurrency.one_practitioner`` for the programs it lists); PCM is not listed because
    two practitioners managing different conditions may each bill it (medicare-rules.md §3,
    "PCM + PCM (different conditions)"), so one's practitioner lane must not exclude the
    other's staff lane.
    """
    return a.enrollment_id == b.enrollment_id or a.billing_practitioner_id == b.billing_practitioner_id


def _conflict(
    ds: list[Decision], s: Service, kept: list[Service], year_for: YearFor
) -> tuple[Service, Param | None, RuleYear] | None:
    mine = [ds[i] for i in s.members if counts(ds[i])]
    for k in kept:
        theirs = [ds[i] for i in k.members if counts(ds[i])]
        for a in mine:
            ex_a, pa = _exclusions(a, year_for)
            for b in theirs:
                if not overlaps(a.period, b.period):
                    continue  # either/or holds per period: two 30-day periods each get a tier
                if not _same_biller(a, b):
                    continue  # another practitioner's enrollment: the one-practitioner rule decides
                ex_b, pb = _exclusions(b, year_for)
                if b.code in ex_a:
                    return k, pa, year_for(a.period.end)
                if a.code in ex_b:
                    return k, pb, year_for(b.period.end)
    return None


# --------------------------------------------------------------------------------------


def program_groups(year: RuleYear, name: str) -> list[tuple[tuple[Program, ...], Param]]:
    """Program groups a concurrency rule names, wherever the loader put them.

    The rule-file contract has a ``concurrency:`` section; the loaded ``RuleYear`` carries
    it as globals named ``never_together`` / ``not_same_practitioner`` (or with a
    ``concurrency.`` prefix, or one entry per list item with an index suffix).
    """
    memo = (id(year), name)
    hit = _GROUPS.get(memo)
    if hit is not None and hit[0] is year:
        return list(hit[1])
    found: list[tuple[tuple[Program, ...], Param]] = []
    for key, p in sorted(year.globals.items()):
        bare = key.removeprefix("concurrency.")
        if bare != name and not bare.startswith((f"{name}.", f"{name}[", f"{name}#")):
            continue
        value = p.value
        if value and all(isinstance(v, list | tuple) for v in value):
            groups = [tuple(Program(str(x)) for x in v) for v in value]
        else:
            groups = [tuple(Program(str(x)) for x in strings(value))]
        found.extend((g, p) for g in groups if len(g) >= 2)
    if len(_GROUPS) >= 256:
        _GROUPS.clear()
    _GROUPS[memo] = (year, tuple(found))
    return found


#: (id(RuleYear), rule name) → (RuleYear, groups): read for every patient, made once per year.
_GROUPS: dict[tuple[int, str], tuple[RuleYear, tuple[tuple[tuple[Program, ...], Param], ...]]] = {}


def _by_program(ds: list[Decision], program: Program, keep: Callable[[Decision], bool]) -> list[int]:
    return [i for i, d in enumerate(ds) if d.program == program and counts(d) and keep(d)]


def _earliest(ds: list[Decision], idx: list[int], starts: dict[str, tuple[date, str]]) -> tuple[date, str]:
    return min((starts[ds[i].enrollment_id] for i in idx), default=(date.max, ""))


def never_together(ds: list[Decision], year: RuleYear, starts: dict[str, tuple[date, str]]) -> list[Decision]:
    out = list(ds)
    for group, param in program_groups(year, "never_together"):
        for a_i, a in enumerate(group):
            for b in group[a_i + 1 :]:
                out = _settle(out, a, b, param, year, starts, "concurrency.never_together", lambda x, y: True)
    return out


def not_same_practitioner(
    ds: list[Decision], year: RuleYear, starts: dict[str, tuple[date, str]]
) -> list[Decision]:
    out = list(ds)
    groups = program_groups(year, "not_same_practitioner")
    if not groups:
        return out

    def same(x: Decision, y: Decision) -> bool:
        return x.billing_practitioner_id == y.billing_practitioner_id

    for group, param in groups:
        # The pair's own option (e.g. ccm_pcm_different_practitioners) rules on different
        # practitioners; a pair that names none leaves them free.
        blocked = False
        if param.option is not None:
            blocked = option_value(year, param.option, DIFFERENT_PRACTITIONERS) == "blocked"
        for a_i, a in enumerate(group):
            for b in group[a_i + 1 :]:
                out = _settle(out, a, b, param, year, starts, "concurrency.not_same_practitioner", same)
                if blocked:
                    opt = year.option(param.option)  # type: ignore[arg-type]
                    out = _settle(
                        out, a, b, opt, year, starts, "concurrency.not_same_practitioner", lambda x, y: True
                    )
    return out


def _settle(
    ds: list[Decision],
    a: Program,
    b: Program,
    param: Param,
    year: RuleYear,
    starts: dict[str, tuple[date, str]],
    rule_id: str,
    related: Callable[[Decision, Decision], bool],
) -> list[Decision]:
    """Keep the program that pays more where two programs' counting decisions clash."""
    ia = _by_program(ds, a, lambda d: True)
    ib = _by_program(ds, b, lambda d: True)
    clash = [(i, j) for i in ia for j in ib if overlaps(ds[i].period, ds[j].period) and related(ds[i], ds[j])]
    if not clash:
        return ds
    side_a = sorted({i for i, _ in clash})
    side_b = sorted({j for _, j in clash})
    pay_a, pay_b = _payment([ds[i] for i in ia]), _payment([ds[j] for j in ib])
    a_wins = (-pay_a, _earliest(ds, ia, starts)) <= (-pay_b, _earliest(ds, ib, starts))
    win, lose = (a, b) if a_wins else (b, a)
    win_idx, lose_idx = (ia, side_b) if a_wins else (ib, side_a)
    win_pay, lose_pay = (pay_a, pay_b) if a_wins else (pay_b, pay_a)
    win_ds = [ds[i] for i in win_idx]
    if rule_id.endswith("never_together"):
        head = f"{a} and {b} are never billed together for a patient in overlapping periods"
    elif param.name.endswith("_different_practitioners"):
        head = (
            f"{a} and {b} are not billed in one month, even by different practitioners (option {param.name})"
        )
    else:
        head = f"{a} and {b} are not billed in one month by the same practitioner"
    msg = f"{head}: {win} pays more ({money(win_pay)} vs {money(lose_pay)})"
    ev = Evidence(values=(("kept_program", str(win)), ("dropped_program", str(lose))))
    r = Reason(rule_id, False, msg, cite(year, param), ev)
    out = list(ds)
    for i in lose_idx:
        out[i] = demote(out[i], r, _final(win_ds), [param])
    return out


# --------------------------------------------------------------------------------------


def add_on_base(ds: list[Decision], year_for: YearFor) -> list[Decision]:
    out = list(ds)
    for i, d in enumerate(out):
        bases = year_for(d.period.end).bases_of(d.code)
        if bases == (d.code,) or not counts(d):
            continue
        base = _base_of(d, out, year_for)
        mates = [
            o
            for o in out
            if o.code in bases and o.enrollment_id == d.enrollment_id and o.period == d.period and counts(o)
        ]
        if mates:
            continue
        msg = f"{d.code} is an add-on and its base code {base} is not billed"
        year = year_for(d.period.end)
        c = cite(year, year.code(d.code).param("add_on_to"))
        r = Reason("concurrency.add_on_base", False, msg, c, Evidence(values=(("base_code", base),)))
        out[i] = demote(d, r, True, [year.code(d.code).param("add_on_to")])
    return out


# --------------------------------------------------------------------------------------


def _counted(d: Decision) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for r in d.reasons for i in r.evidence.time_entry_ids))


def no_double_count(ds: list[Decision], year: RuleYear) -> list[Decision]:
    out = list(ds)
    p = year.rule_global("time_counts_once")
    c = cite(year, p)
    order = sorted(
        (i for i, d in enumerate(out) if d.status is Status.BILLABLE and _counted(d)),
        key=lambda i: (-(out[i].expected_payment or Decimal(0)), out[i].enrollment_id, out[i].code),
    )
    claimed: dict[str, str] = {}
    for i in order:
        d = out[i]
        mine = _counted(d)
        taken = [e for e in mine if e in claimed]
        if taken:
            holders = sorted({claimed[e] for e in taken})
            msg = (
                f"entries {', '.join(taken)} are already counted by {', '.join(holders)}: "
                "a minute counts once"
            )
            ev = Evidence(time_entry_ids=(), values=(("entries", ", ".join(taken)),))
            out[i] = demote(d, Reason("time.no_double_count", False, msg, c, ev), True, [p])
            continue
        for e in mine:
            claimed[e] = d.code
        msg = f"none of the {len(mine)} counted entries is counted by another line this month"
        out[i] = with_reason(d, Reason("time.no_double_count", True, msg, c))
    return out

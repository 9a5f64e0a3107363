"""Which enrollment each time entry is credited to, including entries with no program.

An entry that names a program stays in that program. When the patient has several
enrollments of that program active on the entry's date, the entry goes to the one whose
billing practitioner logged it, else to the earliest-starting one (then lowest id): the
entry is credited once, so two overlapping enrollments can never both count it.

An entry with no program (``TimeFact.program is None``) dated inside the month is handled
by the option ``allocate_unassigned_time`` (one dated earlier — the facts carry entries
of device periods that reach back into the previous month — was that month's to
allocate, so it is left unused here rather than risk counting it twice):

* ``false`` — the entry is not used; every time-based decision says so.
* ``true`` — the entry is credited to one enrollment so that the patient-month's total
  expected payment (billable lines plus lines already met in an open period) is as high
  as possible. Candidates are the enrollments active (and consented) on the entry's date
  whose program has a time-based code accepting the entry's performer. The search is
  exact — every combination is scored with the same family code that bills — when there
  are at most ``EXACT_MAX_ENTRIES`` entries and ``EXACT_MAX_COMBINATIONS`` combinations:
  every patient-month with up to 12 untagged entries that could each go to one of two
  programs (2^12), or up to 7 with three (3^7).
  Beyond that it is greedy: entries in time order each go where they raise the total
  most, then single-entry moves are tried until none improves the total (at most
  ``IMPROVE_ROUNDS`` rounds). Because a threshold not reached yet pays nothing, many
  steps tie; the greedy pass is run once per tie policy (first candidate, fewest minutes
  so far, last candidate, best total if the rest followed) and the best result is kept.
  Among equal totals the first combination (exact) or first policy (greedy) wins, so the
  result is deterministic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

from caretally.model import (
    Decision,
    Evidence,
    PatientMonthFacts,
    Program,
    ProgramFacts,
    Reason,
    TimeFact,
)
from caretally.rules.families.common import cite, counts, ids, money, plural, strings, time_order
from caretally.rules.params import Param, RuleYear

EXACT_MAX_ENTRIES = 12
EXACT_MAX_COMBINATIONS = 4096  # 12 entries with two candidate programs each
IMPROVE_ROUNDS = 2
TIME_FAMILIES = ("treatment_management", "data_interpretation", "care_management", "behavioral_health")

Assignment = dict[str, str]  # entry id → enrollment id
Score = Callable[[Mapping[str, str]], Decimal]


@dataclass(frozen=True, slots=True)
class Allocation:
    """Entry → enrollment for every entry the month may use, with the reasons why.

    ``reasons`` are keyed by enrollment id and attached to that enrollment's time-based
    decisions; ``params`` are the rule values the allocation read (the option).
    """

    enrollment_of: Mapping[str, str]
    program_of: Mapping[str, Program]
    reasons: Mapping[str, tuple[Reason, ...]] = field(default_factory=dict)
    unused: tuple[str, ...] = ()
    method: str = "none"  # none | exact | greedy | off
    params: tuple[Param, ...] = ()


def _once(year: RuleYear) -> str:
    """Entries left unused are the no-minute-twice rule at work: cite it."""
    return cite(year, year.rule_global("time_counts_once"))


def _active(p: ProgramFacts, day: date) -> bool:
    e = p.enrollment
    return e.start_date <= day and (e.end_date is None or day <= e.end_date)


def _order(programs: Sequence[ProgramFacts]) -> list[ProgramFacts]:
    return sorted(programs, key=lambda p: (p.enrollment.start_date, p.enrollment.enrollment_id))


def _home(entry: TimeFact, same_program: list[ProgramFacts]) -> ProgramFacts:
    """The enrollment of the entry's program that the entry belongs to."""
    active = [p for p in same_program if _active(p, entry.local_date)] or same_program
    own = [p for p in active if p.enrollment.billing_practitioner_id == entry.practitioner_id]
    return (own or active)[0]


def _accepts(year: RuleYear, program: Program, entry: TimeFact) -> bool:
    return any(
        rule.family in TIME_FAMILIES and str(entry.performer) in strings(rule.get("performers"))
        for rule in year.codes_for(program)
    )


def _candidates(entry: TimeFact, programs: list[ProgramFacts], year: RuleYear) -> list[ProgramFacts]:
    out: list[ProgramFacts] = []
    seen: set[Program] = set()
    for p in programs:
        e = p.enrollment
        if e.program in seen or not _active(p, entry.local_date):
            continue
        if e.consent_date is None or e.consent_date > entry.local_date:
            continue
        if not _accepts(year, e.program, entry):
            continue
        same = [q for q in programs if q.enrollment.program == e.program]
        out.append(_home(entry, same))
        seen.add(e.program)
    return out


def allocate(facts: PatientMonthFacts, rule_year: RuleYear, score: Score | None = None) -> Allocation:
    """Credit every time entry to one enrollment; see the module docstring for the rules.

    ``score`` maps a full entry → enrollment assignment to the month's expected payment;
    the engine passes one that judges each period by its own rule-year. The default scores
    with ``rule_year`` for every period.
    """
    programs = _order(facts.programs)
    by_id = {p.enrollment.enrollment_id: p for p in programs}
    fixed: Assignment = {}
    open_entries: list[TimeFact] = []
    orphans: list[TimeFact] = []
    earlier: list[TimeFact] = []
    for entry in sorted(facts.time, key=time_order):
        if entry.program is None and not facts.month.contains(entry.local_date):
            earlier.append(entry)  # its own month's run allocates it; never twice
            continue
        if entry.program is None:
            open_entries.append(entry)
            continue
        same = [p for p in programs if p.enrollment.program == entry.program]
        if same:
            fixed[entry.entry_id] = _home(entry, same).enrollment.enrollment_id
        else:
            orphans.append(entry)

    reasons: dict[str, list[Reason]] = {eid: [] for eid in by_id}
    _explain_homes(facts, programs, fixed, reasons)
    time_enrollments = [
        p.enrollment.enrollment_id
        for p in programs
        if any(r.family in TIME_FAMILIES for r in rule_year.codes_for(p.enrollment.program))
    ]
    for entry in orphans:
        if not facts.month.contains(entry.local_date):
            continue  # an earlier month's entry: that month's run reported it
        msg = (
            f"entry {entry.entry_id} names {entry.program}, but the patient has no {entry.program} enrollment"
        )
        ev = Evidence(dates=(entry.local_date,), values=(("entry", entry.entry_id),))
        for eid in time_enrollments:
            reasons[eid].append(Reason("time.unassigned", False, msg, _once(rule_year), ev))

    if earlier:
        # Untagged entries from before the month (fetched for 30-day periods reaching back)
        # are the earlier month's to allocate. The note carries their dates, so only a
        # decision whose period covers them (99091's 30 days) repeats it.
        listing = ", ".join(e.entry_id for e in earlier)
        msg = (
            f"{plural(len(earlier), 'time entry')} without a program dated before "
            f"{facts.month.start:%Y-%m} ({listing}) belong to that month's allocation and are not used here"
        )
        ev = Evidence(dates=tuple(e.local_date for e in earlier), values=(("entries", listing),))
        for eid in time_enrollments:
            reasons[eid].append(Reason("time.unassigned", False, msg, _once(rule_year), ev))
    orphans += earlier
    if not open_entries:
        return _result(facts, by_id, fixed, reasons, [e.entry_id for e in orphans], "none", ())

    option = rule_year.option("allocate_unassigned_time")
    c = cite(rule_year, option)
    listing = ", ".join(e.entry_id for e in open_entries)
    if not option.value:
        msg = (
            f"{plural(len(open_entries), 'time entry')} without a program ({listing}) not used: "
            "option allocate_unassigned_time is false"
        )
        ev = Evidence(values=(("unused_entries", listing),))
        for eid in time_enrollments:
            reasons[eid].append(Reason("time.unassigned", False, msg, c, ev))
        unused = [e.entry_id for e in orphans + open_entries]
        return _result(facts, by_id, fixed, reasons, unused, "off", (option,))

    cands = {e.entry_id: _candidates(e, programs, rule_year) for e in open_entries}
    stuck = [e for e in open_entries if not cands[e.entry_id]]
    movable = [e for e in open_entries if cands[e.entry_id]]
    if score is None:
        score = default_score(facts, rule_year)

    before = score(fixed)
    seconds_of = {e.entry_id: e.seconds for e in facts.time}
    assignment, method, tried = _search(movable, cands, fixed, score, seconds_of)
    after = score(assignment)
    _explain_allocation(movable, cands, assignment, by_id, reasons, method, tried, before, after, c)
    if stuck:
        msg = (
            f"{plural(len(stuck), 'time entry')} without a program ({', '.join(e.entry_id for e in stuck)}) "
            "fit no enrollment (none active and consented that day accepts the performer): not used"
        )
        ev = Evidence(values=(("unused_entries", ", ".join(e.entry_id for e in stuck)),))
        for eid in time_enrollments:
            reasons[eid].append(Reason("time.unassigned", False, msg, c, ev))
    unused = [e.entry_id for e in orphans + stuck]
    return _result(facts, by_id, assignment, reasons, unused, method, (option,))


def default_score(facts: PatientMonthFacts, rule_year: RuleYear) -> Score:
    from caretally.rules.families import month

    def year_for(_day: date) -> RuleYear:
        return rule_year

    static = month.static_decisions(facts, year_for)
    cache: dict[tuple[str, tuple[str, ...]], list[Decision]] = {}

    def score(assignment: Mapping[str, str]) -> Decimal:
        trial = Allocation(enrollment_of=dict(assignment), program_of={})
        return total(month.decide(facts, year_for, trial, static, cache, payment_only=True))

    return score


def total(decisions: Sequence[Decision]) -> Decimal:
    return sum((d.expected_payment or Decimal(0) for d in decisions if counts(d)), Decimal(0))


def _search(
    movable: list[TimeFact],
    cands: dict[str, list[ProgramFacts]],
    fixed: Assignment,
    score: Score,
    seconds_of: Mapping[str, int],
) -> tuple[Assignment, str, int]:
    options = [[p.enrollment.enrollment_id for p in cands[e.entry_id]] for e in movable]
    combos = 1
    for o in options:
        combos *= len(o)
    if len(movable) <= EXACT_MAX_ENTRIES and combos <= EXACT_MAX_COMBINATIONS:
        best: Assignment = dict(fixed)
        best_score: Decimal | None = None
        for choice in itertools.product(*options):
            trial = dict(fixed)
            trial.update({e.entry_id: eid for e, eid in zip(movable, choice, strict=True)})
            s = score(trial)
            if best_score is None or s > best_score:
                best, best_score = trial, s
        return best, "exact", combos

    policies = ["first", "fewest_seconds", "last", "potential"]
    best_run: tuple[Decimal, Assignment] | None = None
    tried = 0
    for policy in policies:
        current, n = _greedy(movable, options, fixed, score, policy, seconds_of)
        current, current_score, m = _improve(movable, options, current, score)
        tried += n + m
        if best_run is None or current_score > best_run[0]:
            best_run = (current_score, current)
    assert best_run is not None
    return best_run[1], "greedy", tried


def _greedy(
    movable: list[TimeFact],
    options: list[list[str]],
    fixed: Assignment,
    score: Score,
    policy: str,
    seconds_of: Mapping[str, int],
) -> tuple[Assignment, int]:
    """Entries in time order, each to the candidate that raises the total most.

    Equal totals are common (a threshold not reached yet pays nothing either way), so the
    ``policy`` breaks ties: ``first`` candidate listed, ``last`` candidate listed (together
    they pile time on one program), ``fewest_seconds`` so far (spreads time so several
    programs can reach their thresholds), or ``potential`` — the total if this entry and
    every later one went to the candidate (looks past a threshold not yet reached).
    """
    current: Assignment = dict(fixed)
    seconds: dict[str, int] = {}
    for entry_id, eid in fixed.items():
        seconds[eid] = seconds.get(eid, 0) + seconds_of.get(entry_id, 0)
    tried = 0
    for at, (e, opts) in enumerate(zip(movable, options, strict=True)):
        scored: list[tuple[Decimal, Decimal, int, str]] = []
        for rank, eid in enumerate(opts):
            trial = dict(current)
            trial[e.entry_id] = eid
            if policy == "fewest_seconds":
                tie = Decimal(-seconds.get(eid, 0))
            elif policy == "last":
                tie = Decimal(rank)
            elif policy == "potential":
                ahead = dict(trial)
                ahead.update(
                    {m.entry_id: eid for m, o in zip(movable[at:], options[at:], strict=True) if eid in o}
                )
                tie = score(ahead)
                tried += 1
            else:
                tie = Decimal(0)
            scored.append((score(trial), tie, -rank, eid))
            tried += 1
        choice = max(scored)[3]
        current[e.entry_id] = choice
        seconds[choice] = seconds.get(choice, 0) + e.seconds
    return current, tried


def _improve(
    movable: list[TimeFact], options: list[list[str]], current: Assignment, score: Score
) -> tuple[Assignment, Decimal, int]:
    """Single-entry moves while one raises the total (at most ``IMPROVE_ROUNDS`` rounds)."""
    current_score = score(current)
    tried = 1
    for _ in range(IMPROVE_ROUNDS):
        improved = False
        for e, opts in zip(movable, options, strict=True):
            for eid in opts:
                if eid == current[e.entry_id]:
                    continue
                trial = dict(current)
                trial[e.entry_id] = eid
                s = score(trial)
                tried += 1
                if s > current_score:
                    current, current_score, improved = trial, s, True
        if not improved:
            break
    return current, current_score, tried


def _explain_homes(
    facts: PatientMonthFacts,
    programs: list[ProgramFacts],
    fixed: Assignment,
    reasons: dict[str, list[Reason]],
) -> None:
    """Say where entries went when one program has several enrollments."""
    multi = {
        p.enrollment.program
        for p in programs
        if sum(q.enrollment.program == p.enrollment.program for q in programs) > 1
    }
    if not multi:
        return
    for p in programs:
        if p.enrollment.program not in multi:
            continue
        eid = p.enrollment.enrollment_id
        mine = [e for e in facts.time if fixed.get(e.entry_id) == eid]
        msg = (
            f"the patient has several {p.enrollment.program} enrollments; {plural(len(mine), 'entry')} "
            f"credited to {eid} (logged by its billing practitioner, or it was the earliest active that day)"
        )
        reasons[eid].append(
            Reason("time.enrollment", True, msg, "", Evidence(values=(("entries", ", ".join(ids(mine))),)))
        )


def _explain_allocation(
    movable: list[TimeFact],
    cands: dict[str, list[ProgramFacts]],
    assignment: Assignment,
    by_id: dict[str, ProgramFacts],
    reasons: dict[str, list[Reason]],
    method: str,
    tried: int,
    before: Decimal,
    after: Decimal,
    citation: str,
) -> None:
    how = (
        f"exact search over {plural(tried, 'combination')}"
        if method == "exact"
        else f"greedy search with single-entry improvements ({tried} trials)"
    )
    for eid, p in by_id.items():
        got = [e for e in movable if assignment.get(e.entry_id) == eid]
        if not got:
            continue
        seconds = sum(e.seconds for e in got)
        alternatives = sorted(
            {q.enrollment.program for e in got for q in cands[e.entry_id]} - {p.enrollment.program}
        )
        other = f"; also eligible: {', '.join(alternatives)}" if alternatives else ""
        msg = (
            f"{plural(len(got), 'entry')} without a program ({', '.join(ids(got))}; "
            f"{seconds // 60} min) credited to "
            f"{p.enrollment.program} enrollment {eid}: the month's expected payment is {money(after)} "
            f"with it (was {money(before)} without the unassigned time; {how}){other}"
        )
        ev = Evidence(
            values=(
                ("allocated_entries", ", ".join(ids(got))),
                ("method", method),
                ("combinations_tried", str(tried)),
                ("total_before", str(before)),
                ("total_after", str(after)),
            )
        )
        reasons[eid].append(Reason("time.allocation", True, msg, citation, ev))


def _result(
    facts: PatientMonthFacts,
    by_id: dict[str, ProgramFacts],
    assignment: Assignment,
    reasons: dict[str, list[Reason]],
    unused: list[str],
    method: str,
    params: tuple[Param, ...],
) -> Allocation:
    program_of = {entry: by_id[eid].enrollment.program for entry, eid in assignment.items()}
    return Allocation(
        enrollment_of=dict(assignment),
        program_of=program_of,
        reasons={eid: tuple(rs) for eid, rs in reasons.items() if rs},
        unused=tuple(unused),
        method=method,
        params=params,
    )

"""Patient-months as columns: the tables the columnar pass joins, and why a month is flagged.

Each ``PatientMonthFacts`` becomes rows of six tables (patient-months, enrollments,
periods, data days, devices, credited time entries). A patient-month the pass cannot
decide exactly gets a flag instead — the reason, in words — and goes to
``evaluate_patient_month``:

* two enrollments of one program (which one bills a period, and where its tagged time
  goes); enrollments of different programs are decided, their concurrency settled over
  the typed outcomes (``decide.settle``);
* a program other than RPM or RTM, or a rule-year with codes of another family;
* billing history (once-per-episode set-up, billed device windows, 99091's months);
* a rule-year the compiler could not read, or several rule-years for the month's periods;
* a payer coverage overlay (covered diagnoses, prior authorization, yearly caps);
* untagged time with several candidate programs while the rule-year allocates it (one
  candidate: the entry is credited to it, as the allocation would);
* the CY2027 proposal that counts only employed staff (the engine, not the facts, knows
  who is employed), and any proposed rule-year (its advisory rides on every decision);

Time entries that overlap (cut to the minutes counted once, or another patient's) are
decided: the pass counts the same trimmed seconds as the engine, and
:func:`overlap_warnings` gives the run summary the notes the engine's decisions carry.

A flag decided later, in SQL, because it needs counts: several RTM device kinds
reporting in one period. 99091 claiming money is decided: its exclusion of the
management codes is settled over the typed outcomes (``decide.settle``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from caretally.columnar.codes import PROGRAMS as DECIDED
from caretally.columnar.codes import CodeRow, NotCompilable, RequirementRow, YearRow, compile_year
from caretally.model import PatientMonthFacts, ProgramFacts
from caretally.rules.allocation import _candidates
from caretally.rules.families.common import _entry_notes, time_order
from caretally.rules.intervals import counts_once, trim_overlaps
from caretally.rules.params import MissingParameter, RuleBook, RuleYear

PROGRAMS = frozenset(DECIDED)


@dataclass
class Compiled:
    """Rule-years compiled so far, keyed by identity (rule-years are cached objects)."""

    ids: dict[int, int | None] = field(default_factory=dict)
    years: list[RuleYear] = field(default_factory=list)
    codes: list[CodeRow] = field(default_factory=list)
    options: dict[int, YearRow] = field(default_factory=dict)
    requirements: list[RequirementRow] = field(default_factory=list)

    def year_id(self, year: RuleYear) -> int | None:
        key = id(year)
        if key in self.ids:
            return self.ids[key]
        number = len(self.years)
        self.years.append(year)  # held, so the id is never reused
        try:
            codes, options, reqs = compile_year(number, year)
        except NotCompilable:
            self.ids[key] = None
            return None
        self.codes.extend(codes)
        self.options[number] = options
        self.requirements.extend(reqs)
        self.ids[key] = number
        return number


@dataclass
class Columns:
    """The six tables as Python lists of columns (turned into Arrow tables by ``decide``)."""

    pm: dict[str, list[Any]] = field(
        default_factory=lambda: _cols("pm patient_id month_start month_end as_of y")
    )
    enr: dict[str, list[Any]] = field(
        default_factory=lambda: _cols(
            "pm eid program e_start e_end consent bp est visit data_from setup_day first_setup ndx complexity"
        )
    )
    per: dict[str, list[Any]] = field(default_factory=lambda: _cols("pm eid p_start p_end prior y"))
    day: dict[str, list[Any]] = field(default_factory=lambda: _cols("pm eid d prior dev"))
    dev: dict[str, list[Any]] = field(
        default_factory=lambda: _cols("pm eid device_id program kind setup_date")
    )
    ent: dict[str, list[Any]] = field(
        default_factory=lambda: _cols(
            "pm eid entry_id d seconds performer interactive modality ord"
            " practitioner_id credential raw_seconds"
        )
    )


def _cols(names: str) -> dict[str, list[Any]]:
    return {n: [] for n in names.split()}


def _append(table: dict[str, list[Any]], *values: Any) -> None:
    for column, value in zip(table.values(), values, strict=True):
        column.append(value)


def flag_of(facts: PatientMonthFacts, book: RuleBook, compiled: Compiled) -> str | None:
    """Why the columnar pass cannot decide this patient-month exactly (None: it can)."""
    programs = [p.enrollment.program for p in facts.programs]
    if len(set(programs)) < len(programs):
        return "two enrollments of one program"  # which one bills, and where tagged time goes
    if any(p.enrollment.program not in PROGRAMS for p in facts.programs):
        return "program not decided by the columnar pass"
    if facts.billed_history:
        return "billing history"
    if facts.death_date is not None:
        return "date of death"  # patient.death: nothing dated after it is billed
    if facts.visits:
        return "visits"  # initiating visit from visits, 99091 on an E/M day
    try:
        year = book.for_date(facts.month.end)
        periods = [d for p in facts.programs for d in p.device_periods]
        years = {id(book.for_date(d.end)) for d in periods} | {id(year)}
    except MissingParameter:
        return "no rule-year"
    if len(years) > 1:
        return "several rule-years"
    for p in facts.programs:
        for prior in p.prior_periods:
            try:
                earlier = book.for_date(prior.end)
            except MissingParameter:
                continue  # the engine cannot judge that period either: "before the data"
            if compiled.year_id(earlier) is None:
                return "rule-year not compilable"
    y = compiled.year_id(year)
    if y is None:
        return "rule-year not compilable"
    options = compiled.options[y]
    if options.coverage:
        return "payer coverage overlay"
    if year.provisional:
        return "proposed rule-year"  # every decision carries the provisional advisory
    if any(not year.codes_for(p.enrollment.program) for p in facts.programs):
        return "program without codes in the rule-year"
    if options.employed_only and facts.time:
        return "employed-staff proposal"
    if options.allocate_unassigned:
        ordered = _ordered(facts)
        untagged = [t for t in facts.time if t.program is None and facts.month.contains(t.local_date)]
        if any(len(_candidates(t, ordered, year)) > 1 for t in untagged):
            return "untagged time with several candidate programs"
    return None


def _ordered(facts: PatientMonthFacts) -> list[ProgramFacts]:
    return sorted(facts.programs, key=lambda p: (p.enrollment.start_date, p.enrollment.enrollment_id))


def credited(facts: PatientMonthFacts, year: RuleYear) -> dict[str, str]:
    """Entry → enrollment, as ``allocation.allocate`` credits them in an unflagged month.

    A tagged entry goes to its program's one enrollment; an untagged entry of the month,
    when the rule-year allocates untagged time, to its one candidate (months where an
    entry has several are flagged, since only the search can say where it goes). Entries
    crediting nothing (no enrollment of their program, no candidate) count nowhere.
    """
    by_program = {p.enrollment.program: p.enrollment.enrollment_id for p in facts.programs}
    allocate = bool(year.option("allocate_unassigned_time").value)
    ordered = _ordered(facts)
    out: dict[str, str] = {}
    for t in facts.time:
        if t.program is not None:
            if t.program in by_program:
                out[t.entry_id] = by_program[t.program]
        elif allocate and facts.month.contains(t.local_date):
            candidates = _candidates(t, ordered, year)
            if len(candidates) == 1:
                out[t.entry_id] = candidates[0].enrollment.enrollment_id
    return out


def add(columns: Columns, pm: int, facts: PatientMonthFacts, book: RuleBook, compiled: Compiled) -> None:
    """Rows of one unflagged patient-month (see :func:`flag_of`)."""
    year = book.for_date(facts.month.end)
    y = compiled.year_id(year)
    raw = {t.entry_id: t.seconds for t in facts.time}  # claim lines read the logged seconds
    if counts_once(year):
        facts = trim_overlaps(facts)  # pure: the same seconds the engine counts
    home = credited(facts, year)
    _append(columns.pm, pm, facts.patient_id, facts.month.start, facts.month.end, facts.as_of, y)
    for program in facts.programs:
        e = program.enrollment
        eid = e.enrollment_id
        setup = sorted(
            d.setup_date
            for d in program.devices
            if d.program == e.program
            and d.setup_date is not None
            and d.setup_date >= e.start_date
            and (e.end_date is None or d.setup_date <= e.end_date)
        )
        _append(
            columns.enr,
            pm,
            eid,
            str(e.program),
            e.start_date,
            e.end_date,
            e.consent_date,
            e.billing_practitioner_id,
            e.established_patient,
            e.initiating_visit_date,
            program.data_from,
            setup[0] if setup else None,
            setup[0] if setup else None,
            len(dict.fromkeys(e.diagnoses)),
            e.complexity,
        )
        current = set(program.device_periods)
        for p in program.device_periods:
            _append(columns.per, pm, eid, p.start, p.end, False, _year(book, p.end, compiled))
        for p in program.prior_periods:
            if p not in current:
                _append(columns.per, pm, eid, p.start, p.end, True, _year(book, p.end, compiled))
        for d, devices in program.data_days.items():
            for device in devices or (None,):
                _append(columns.day, pm, eid, d, False, device)
        for d in set(program.prior_days):
            _append(columns.day, pm, eid, d, True, None)
        for device in program.devices:
            _append(
                columns.dev, pm, eid, device.device_id, str(device.program), device.kind, device.setup_date
            )
        for n, t in enumerate(sorted(facts.time, key=time_order)):
            if home.get(t.entry_id) != eid:
                continue
            _append(
                columns.ent,
                pm,
                eid,
                t.entry_id,
                t.local_date,
                t.seconds,
                str(t.performer),
                t.interactive,
                None if t.modality is None else str(t.modality),
                n,
                t.practitioner_id,
                t.credential.upper(),
                raw[t.entry_id],
            )


def _year(book: RuleBook, day: date, compiled: Compiled) -> int | None:
    try:
        return compiled.year_id(book.for_date(day))
    except MissingParameter:
        return None


#: The families whose decisions carry the overlap notes (``common.finish``, ``time_based``).
TIMED_FAMILIES = frozenset({"treatment_management", "data_interpretation", "care_management"})


def overlap_warnings(facts: PatientMonthFacts, book: RuleBook) -> list[tuple[str, str, str]]:
    """The run summary's warnings of a month the pass decided: (rule id, message, entry).

    The engine attaches an entry's overlap notes to every time-based decision whose period
    holds it, and the summary lists each note once, in the order of the sorted decisions
    (enrollment, code, period start); this walks the same order without making decisions.
    """
    year = book.for_date(facts.month.end)
    if counts_once(year):
        facts = trim_overlaps(facts)
    if not any(t.logged_seconds is not None or t.other_patient_overlaps for t in facts.time):
        return []
    home = credited(facts, year)
    spans: list[tuple[str, str, date, date]] = []
    for p in facts.programs:
        e = p.enrollment
        for period in [facts.month, *p.device_periods]:
            span_year = book.for_date(period.end)
            for rule in span_year.codes_for(e.program):
                monthly = rule.family in ("treatment_management", "care_management")
                if rule.family not in TIMED_FAMILIES or monthly != (period is facts.month):
                    continue
                spans.append((e.enrollment_id, rule.code, period.start, period.end))
    out: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()
    entries = sorted(facts.time, key=time_order)
    for eid, _code, start, end in sorted(spans):
        for t in entries:
            if home.get(t.entry_id) != eid or not start <= t.local_date <= end:
                continue
            for r in _entry_notes(t, ""):
                if (r.rule_id, t.entry_id) not in seen:
                    seen.add((r.rule_id, t.entry_id))
                    out.append((r.rule_id, r.message, t.entry_id))
    return out

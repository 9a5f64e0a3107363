"""Mid-period worklists: who is short of days, minutes or the live call, and what it is worth.

The worklist asks the same engine the month run uses, with ``as_of`` set to today: a
code whose period is still open comes back ``reachable`` with the days or minutes still
missing in its evidence. This module only reads those decisions and ranks them — there is
no second copy of any threshold here.

Ranking: the value of the next step divided by the staff minutes it needs, then the
deadline. Minutes needed are the minutes still missing for a time code (at least the
length of a short call when the month's live call is missing) and a short reminder call
for days of data, since staff cannot take readings for the patient.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import Engine

from caretally.billing.evaluate import Progress, map_month
from caretally.billing.payers import PayerRules
from caretally.dates import add_months, month_of
from caretally.facts.build import DEVICE_PROGRAMS
from caretally.model import Decision, PatientMonthFacts, Period, PeriodKind, Program, ReasonKind, Status
from caretally.rules.families.common import counts
from caretally.rules.params import RuleYear

#: Staff minutes a reminder call takes when the patient, not staff, must produce the data.
REMINDER_MINUTES = 5
#: Staff minutes of a short live call when the month's interactive communication is missing.
CALL_MINUTES = 5
ZERO = Decimal("0.00")


@dataclass(frozen=True)
class Step:
    """One code still within reach and what it takes."""

    code: str
    value: Decimal  # what billing it adds (net of a cheaper code it would replace)
    days_needed: int = 0
    minutes_needed: int = 0
    call_needed: bool = False
    days_left: int = 0
    other: str = ""  # a non-numeric gap, in the engine's words (e.g. no set-up date recorded)

    @property
    def staff_minutes(self) -> int:
        if self.minutes_needed or self.call_needed:
            return max(self.minutes_needed, CALL_MINUTES if self.call_needed else 0)
        return REMINDER_MINUTES if self.days_needed or self.other else 0


@dataclass
class WorklistRow:
    patient_id: str
    program: Program
    enrollment_id: str
    period: Period
    days_so_far: int | None = None
    days_left: int | None = None
    minutes_so_far: int | None = None
    interactive_done: bool | None = None
    secured: list[str] = field(default_factory=list)  # codes met so far (period still open)
    steps: list[Step] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # codes out of reach, with the first reason
    base_of: dict[str, str] = field(default_factory=dict)  # add-on code → its base code
    counts_from: date | None = None  # first day new data would count (enrollment start, consent)

    @property
    def next_step(self) -> Step | None:
        worth = [s for s in self.steps if s.value > 0]
        if not worth:
            return None
        return min(worth, key=lambda s: (s.staff_minutes, -s.value, s.code))

    @property
    def value_at_stake(self) -> Decimal:
        return sum((s.value for s in self.steps), ZERO)

    @property
    def value_per_minute(self) -> Decimal:
        step = self.next_step
        if step is None:
            return ZERO
        return (step.value / max(step.staff_minutes, 1)).quantize(Decimal("0.01"))

    @property
    def action(self) -> str:
        step = self.next_step
        if step is None:
            if self.secured:
                return f"Nothing more to gain this period; {', '.join(self.secured)} already met."
            return "Nothing reachable before the period ends."
        worth = f"worth ${step.value:,.2f}"
        parts = []
        if step.minutes_needed:
            parts.append(f"{step.minutes_needed} more minute{'s' if step.minutes_needed != 1 else ''}")
        if step.call_needed:
            parts.append("a live call (phone or video)")
        if step.days_needed:
            parts.append(
                f"{step.days_needed} more day{'s' if step.days_needed != 1 else ''} of readings "
                f"in the {step.days_left} days left"
            )
        if not parts:
            return f"Resolve: {step.other} — then {step.code} is billable, {worth}."
        need = " and ".join(parts)
        return f"{need[0].upper()}{need[1:]} complete{'s' if len(parts) == 1 else ''} {step.code}, {worth}."

    def to_json(self) -> dict[str, object]:
        step = self.next_step
        return {
            "patient_id": self.patient_id,
            "program": self.program.value,
            "enrollment_id": self.enrollment_id,
            "period": {
                "kind": self.period.kind.value,
                "start": str(self.period.start),
                "end": str(self.period.end),
            },
            "deadline": str(self.period.end),
            "counts_from": None if self.counts_from is None else str(self.counts_from),
            "days_so_far": self.days_so_far,
            "days_left": self.days_left,
            "minutes_so_far": self.minutes_so_far,
            "interactive_done": self.interactive_done,
            "secured": self.secured,
            "reachable": [
                {
                    "code": s.code,
                    "value": str(s.value),
                    "days_needed": s.days_needed,
                    "minutes_needed": s.minutes_needed,
                    "call_needed": s.call_needed,
                }
                for s in self.steps
            ],
            "next_step": None if step is None else step.code,
            "days_needed": None if step is None else step.days_needed,
            "minutes_needed": None if step is None else step.minutes_needed,
            "value_at_stake": str(self.value_at_stake),
            "value_per_staff_minute": str(self.value_per_minute),
            "action": self.action,
            "blocked": self.blocked,
        }


def _threshold(d: Decision) -> int | None:
    """Minutes the next billable unit needs: an add-on's next unit, else the code's minimum."""
    m = d.measures
    if m.next_unit_minutes is not None:
        return m.next_unit_minutes
    return m.min_minutes


def _amount(year: RuleYear, code: str) -> Decimal:
    rule = year.codes.get(code)
    return ZERO if rule is None or rule.amount is None else rule.amount


def _paid(d: Decision) -> Decimal:
    return (d.expected_payment or ZERO) if counts(d) else ZERO


def step_value(year: RuleYear, d: Decision, period_ds: list[Decision], all_ds: list[Decision]) -> Decimal:
    """What completing ``d`` adds to the month's payment, as the month run would settle it.

    A code and its add-ons are one service: the step's worth is the service's payment after
    the step minus what it already counts — an add-on earns its own unit, not its base's
    again (unless the base is still to be met on the way). A service that excludes the step
    (a tier already met, 99091 in an overlapping period, another lane) stays when it pays
    at least as much, and the step is then worth nothing; otherwise its payment is lost.
    """
    bases = year.bases_of(d.code)  # an add-on may ride on several bases (99494: 99492 or 99493)
    base_code = next((x.code for x in period_ds if x.code in bases and counts(x)), bases[0])
    service = [x for x in period_ds if x.code == base_code or base_code in year.bases_of(x.code)]
    now = sum((_paid(x) for x in service), ZERO)
    if d.code == base_code:
        after = _amount(year, d.code)
    else:
        base = next((x for x in service if x.code == base_code), None)
        base_pay = _paid(base) if base is not None and counts(base) else _amount(year, base_code)
        after = base_pay + _amount(year, d.code) * (d.units + 1)
    excluded = year.excludes(base_code)
    rival = sum(
        (
            _paid(x)
            for x in all_ds
            if x not in service
            and x.enrollment_id == d.enrollment_id
            and x.code in excluded
            and x.period.start <= d.period.end
            and d.period.start <= x.period.end
        ),
        ZERO,
    )
    if after <= rival:
        return ZERO
    return max(ZERO, after - now - rival)


def _pending(d: Decision) -> bool:
    return any(r.blocking for r in d.reasons)


def rows_for(
    facts: PatientMonthFacts, decisions: list[Decision], year_for: PayerRules, as_of: date
) -> list[WorklistRow]:
    """Worklist rows for the periods of this patient that are open on ``as_of``."""
    groups: dict[tuple[str, Period], list[Decision]] = defaultdict(list)
    for d in decisions:
        if d.period.start <= as_of < d.period.end:
            groups[(d.enrollment_id, d.period)].append(d)
    rows = []
    for (enrollment_id, period), ds in sorted(groups.items(), key=lambda kv: (kv[0][1].end, kv[0][0])):
        year = year_for.for_payer(facts.payer).for_date(period.end)
        row = WorklistRow(facts.patient_id, ds[0].program, enrollment_id, period)
        enrollment = next(p.enrollment for p in facts.programs if p.enrollment.enrollment_id == enrollment_id)
        starts = [
            as_of + timedelta(days=1),
            enrollment.start_date,
            enrollment.consent_date or enrollment.start_date,
        ]
        row.counts_from = max(starts)
        secured = [d for d in ds if d.status is Status.REACHABLE and not _pending(d)]
        row.secured = sorted(d.code for d in secured)
        for d in sorted(ds, key=lambda d: d.code):
            m = d.measures
            days, min_days, min_minutes = m.days, m.min_days, _threshold(d)
            if days is not None:
                row.days_so_far = days
                row.days_left = m.days_left
            if m.minutes is not None:
                row.minutes_so_far = max(row.minutes_so_far or 0, m.minutes)
            if m.interactive is not None:
                row.interactive_done = m.interactive if row.interactive_done is None else row.interactive_done
            if d.status is Status.NOT_BILLABLE:
                first = next((r for r in d.reasons if r.blocking), None)
                row.blocked.append(f"{d.code}: {first.message}" if first else d.code)
                continue
            if d.status is not Status.REACHABLE or not _pending(d):
                continue
            failed = list(d.blocking)
            if any(r.kind is ReasonKind.CONFLICT for r in failed):
                continue  # another code (or lane) wins the period; more work would not bill this one
            if year.is_add_on(d.code):
                bases = year.bases_of(d.code)
                live = [x.code for x in ds if x.code in bases and x.status is not Status.NOT_BILLABLE]
                row.base_of[d.code] = live[0] if live else bases[0]
            # What this step itself earns: an add-on's own unit, net of a code it would replace.
            row.steps.append(
                Step(
                    code=d.code,
                    value=step_value(year, d, ds, decisions),
                    days_needed=max(0, min_days - (days or 0)) if min_days is not None else 0,
                    minutes_needed=max(0, min_minutes - (m.minutes or 0)) if min_minutes is not None else 0,
                    call_needed=m.interactive is False,
                    days_left=m.days_left or 0,
                    other=failed[0].message if failed else "",
                )
            )
        _inherit_base_needs(row)
        rows.append(row)
    _drop_steps_excluded_elsewhere(rows, facts, year_for)
    return rows


def _drop_steps_excluded_elsewhere(
    rows: list[WorklistRow], facts: PatientMonthFacts, year_for: PayerRules
) -> None:
    """A code barred by one already met in another period of the enrollment is no step.

    99091 runs on 30-day periods and 99457 on the calendar month: once 99457 is met this
    month, minutes toward 99091 only grow the 99457 ladder, so proposing 99091 would be
    advice the month run cannot follow.
    """
    for row in rows:
        year = year_for.for_payer(facts.payer).for_date(row.period.end)
        elsewhere = {
            c
            for other in rows
            if other is not row and other.enrollment_id == row.enrollment_id
            for c in other.secured
        }
        kept = []
        for step in row.steps:
            barred = year.excludes(step.code)
            if barred & elsewhere:
                row.blocked.append(
                    f"{step.code}: not with {', '.join(sorted(barred & elsewhere))}, already met"
                )
            else:
                kept.append(step)
        row.steps = kept


def _inherit_base_needs(row: WorklistRow) -> None:
    """An add-on is only billable with its base: its step also needs what the base still needs.

    Its value stays its own: the base's payment is the base's step, not the add-on's.
    """
    by_code = {s.code: s for s in row.steps}
    for i, step in enumerate(row.steps):
        base = by_code.get(row.base_of.get(step.code, ""))
        if base is None:
            continue
        row.steps[i] = replace(
            step,
            call_needed=step.call_needed or base.call_needed,
            minutes_needed=max(step.minutes_needed, base.minutes_needed),
            other=step.other if step.minutes_needed or step.call_needed else base.other,
        )


def build_worklist(
    engine: Engine,
    org_id: str,
    as_of: date,
    rules: PayerRules,
    *,
    program: Program | None = None,
    patients: set[str] | None = None,
    progress: Progress | None = None,
) -> list[WorklistRow]:
    """Every open period on ``as_of`` for every enrolled patient, ranked.

    The calendar month of ``as_of`` is evaluated, and so is the next month, because a
    30-day device period open today may close next month. ``progress(done, total)``
    counts the patients of both passes (the second one's join the total when it starts).
    """
    rows = [
        row
        for found in rows_by_patient(
            engine, org_id, as_of, rules, program=program, patients=patients, progress=progress
        ).values()
        for row in found
    ]
    rows.sort(key=rank_key)
    return rows


def rank_key(row: WorklistRow) -> tuple[Decimal, date, Decimal, str, str]:
    """The worklist's order: value per staff minute, deadline, value at stake; the sort is
    stable, so rows of one patient and enrollment with equal keys keep the order
    ``rows_by_patient`` gives them."""
    return (-row.value_per_minute, row.period.end, -row.value_at_stake, row.patient_id, row.enrollment_id)


def rows_by_patient(
    engine: Engine,
    org_id: str,
    as_of: date,
    rules: PayerRules,
    *,
    program: Program | None = None,
    patients: set[str] | None = None,
    progress: Progress | None = None,
) -> dict[str, list[WorklistRow]]:
    """Each evaluated patient's worklist rows (possibly none), unranked: this month's, then
    the next month's device periods. ``build_worklist`` ranks their union; the kept
    worklist (``caretally.worklist_state``) stores them a patient at a time."""
    this_month = month_of(as_of)
    found_rows: dict[str, list[WorklistRow]] = {}
    with_devices: set[str] = set()

    def this(facts: PatientMonthFacts, decisions: list[Decision]) -> tuple[str, bool, list[WorklistRow]]:
        device_patient = any(p.enrollment.program in DEVICE_PROGRAMS for p in facts.programs)
        chosen = [d for d in decisions if program is None or d.program is program]
        return facts.patient_id, device_patient, rows_for(facts, chosen, rules, as_of)

    def following(facts: PatientMonthFacts, decisions: list[Decision]) -> tuple[str, list[WorklistRow]]:
        chosen = [
            d
            for d in decisions
            if (program is None or d.program is program) and d.period.kind is not PeriodKind.CALENDAR_MONTH
        ]
        return facts.patient_id, rows_for(facts, chosen, rules, as_of)

    first_total = [0]

    def first(done: int, total: int) -> None:
        first_total[0] = total
        if progress is not None:
            progress(done, total)

    def second(done: int, total: int) -> None:
        if progress is not None:
            progress(first_total[0] + done, first_total[0] + total)

    for patient_id, device_patient, found in map_month(
        engine, org_id, this_month, rules, this, as_of=as_of, patients=patients, progress=first
    ):
        found_rows[patient_id] = found
        if device_patient:
            with_devices.add(patient_id)
    # Next month only matters for 30-day device periods open today that close after this
    # month: evaluate just the patients with a device program, and keep just those periods.
    if with_devices:
        next_month = month_of(add_months(as_of, 1))
        for patient_id, found in map_month(
            engine, org_id, next_month, rules, following, as_of=as_of, patients=with_devices, progress=second
        ):
            found_rows.setdefault(patient_id, []).extend(found)
    return found_rows

"""Set-up and education (99453, 98975): once per episode, with the first qualifying period.

An episode is an enrollment. The code is billed with the first device period of the
episode that reaches the set-up day minimum (option ``setup_min_days`` through the code's
``min_days``); a later period in the same month is judged too, so every period has a
decision, but it is not billable once an earlier one carries the set-up. A code already
in ``billed_history`` for the enrollment is never billed again.

The set-up itself must be on record: a device of the program with a set-up date inside
the enrollment, on or before the date of service.
"""

from __future__ import annotations

from datetime import date

from caretally.model import Decision, DeviceFact, Evidence, Period, Status
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
from caretally.rules.families.days import count_days, days_check
from caretally.rules.families.device_supply import device_dos
from caretally.rules.params import CodeRule, RuleYear

FAMILY = "setup"
SETUP_DOS = ("with_device_period", "setup_date")


def decide(view: EnrollmentView) -> list[Decision]:
    out: list[Decision] = []
    carried: Decision | None = None
    for period in sorted(view.program.device_periods, key=lambda p: p.start):
        year = view.year_for(period.end)
        for rule in codes_of(year, view.enrollment.program, FAMILY):
            d = _decide(view, year, period, rule, carried)
            if carried is None and d.status is not Status.NOT_BILLABLE:
                carried = d
            out.append(d)
    return out


def _setup_devices(view: EnrollmentView) -> list[DeviceFact]:
    e = view.enrollment
    return sorted(
        (
            d
            for d in view.program.devices
            if d.program == e.program
            and d.setup_date is not None
            and d.setup_date >= e.start_date
            and (e.end_date is None or d.setup_date <= e.end_date)
        ),
        key=lambda d: (d.setup_date or date.min, d.device_id),
    )


def _decide(
    view: EnrollmentView, year: RuleYear, period: Period, rule: CodeRule, carried: Decision | None
) -> Decision:
    used = Used(year)
    e = view.enrollment
    prefix = e.program.lower()
    draft = Draft(view, year, rule, period, used)
    draft.checks.extend(common_checks(view, year, period, used))
    episode_cite = cite(year, rule.param("max_units")) if "max_units" in rule.params else ""
    if "max_units" in rule.params:
        used.add(rule.params["max_units"])

    before = sorted(
        (b for b in view.facts.billed_history if b.code == rule.code and b.enrollment_id == e.enrollment_id),
        key=lambda b: b.date_of_service,
    )
    if before:
        b = before[0]
        msg = (
            f"{rule.code} already billed for this episode on {b.date_of_service} "
            f"(run {b.run_id}): once per episode"
        )
        ev = Evidence(dates=(b.date_of_service,), values=(("run_id", b.run_id),))
        draft.checks.append(Check.of(f"{prefix}.setup.once_per_episode", Verdict.FAIL, msg, episode_cite, ev))
    elif carried is not None and carried.code == rule.code:
        msg = (
            f"once per episode: set-up goes with the earlier period "
            f"{carried.period.start}..{carried.period.end}"
        )
        ev = Evidence(dates=(carried.period.start, carried.period.end))
        draft.checks.append(Check.of(f"{prefix}.setup.once_per_episode", Verdict.FAIL, msg, episode_cite, ev))
    else:
        msg = f"{rule.code} not billed before for enrollment {e.enrollment_id}"
        draft.checks.append(Check.of(f"{prefix}.setup.once_per_episode", Verdict.PASS, msg, episode_cite))

    win = window(view, period)
    count = count_days(view, period, win)
    min_p = used.add(rule.param("min_days"))
    need = as_int(min_p.value, f"{rule.code} min_days")
    days = days_check(f"{prefix}.setup.min_days", count, period, need, cite(year, min_p))
    draft.checks.append(days)

    dos_choice = option_value(year, "setup_dos", SETUP_DOS)
    used.add(year.option("setup_dos"))
    devices = _setup_devices(view)
    if dos_choice == "setup_date":
        dos = devices[0].setup_date if devices else None
    else:
        dos = device_dos(view, year, used, period, count, need)
    limit = dos or period.end
    ready = [d for d in devices if d.setup_date is not None and d.setup_date <= limit]
    setup_cite = episode_cite
    if ready:
        first = ready[0]
        msg = f"device {first.device_id} ({first.kind}) set up on {first.setup_date}"
        ev = Evidence(
            dates=tuple(d.setup_date for d in ready if d.setup_date),
            device_ids=tuple(d.device_id for d in ready),
        )
        draft.checks.append(Check.of(f"{prefix}.setup.device", Verdict.PASS, msg, setup_cite, ev))
    else:
        verdict = Verdict.PENDING if is_open(view, period) else Verdict.FAIL
        msg = f"no {e.program} device with a set-up date inside the enrollment on or before {limit}"
        draft.checks.append(Check.of(f"{prefix}.setup.device", verdict, msg, setup_cite))

    draft.units = 1 if count.n >= need else 0
    draft.dos = dos
    if is_open(view, period) and days.verdict is Verdict.PASS:
        draft.open_note = "set-up is billed with this period once it closes"
    return finish(draft)

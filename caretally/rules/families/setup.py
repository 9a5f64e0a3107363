"""Set-up and education (99453, 98975): once per episode, with the episode's first qualifying period.

An episode is an enrollment. The set-up is billed with the first 30-day period of the
episode that reaches the set-up day minimum (option ``setup_min_days`` through the code's
``min_days``) counting only days on or after the device set-up — not with whichever
period caretally happens to bill first. So:

* when that period is an earlier month's, this month bills no set-up
  (``<program>.setup.first_period``), billed then or not;
* when the search reaches a period that ended before the data the organization holds
  begins (``ProgramFacts.data_from``), that period cannot be judged, and no set-up is
  billed now (``<program>.setup.before_data``): a practice imported in October must not
  bill 99453 for every long-running patient, the pattern the OIG counts. A period that
  straddles the start of the data is judged on the days held;
* a code already in ``billed_history`` for the enrollment is never billed again.

The set-up itself must be on record: a device of the program with a set-up date inside
the enrollment, on or before the date of service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from caretally.model import Decision, DeviceFact, Evidence, Period
from caretally.rules.families.common import (
    Check,
    Draft,
    EnrollmentView,
    Used,
    Verdict,
    Window,
    as_int,
    cite,
    codes_of,
    common_checks,
    finish,
    is_open,
    option_value,
    span,
    window,
)
from caretally.rules.families.days import count_days, days_check
from caretally.rules.families.device_supply import device_dos
from caretally.rules.params import CodeRule, MissingParameter, RuleYear

FAMILY = "setup"
SETUP_DOS = ("with_device_period", "setup_date")


def decide(view: EnrollmentView) -> list[Decision]:
    out: list[Decision] = []
    episode: Episode | None = None
    for period in sorted(view.program.device_periods, key=lambda p: p.start):
        year = view.year_for(period.end)
        for rule in codes_of(year, view.enrollment.program, FAMILY):
            if episode is None:
                episode = first_period(view, rule.code)
            out.append(_decide(view, year, period, rule, episode))
    return out


@dataclass(frozen=True, slots=True)
class Episode:
    """Where the episode's set-up period lies, as far as the data shows.

    ``period`` is the first period reaching the minimum (``None`` while none has);
    ``before_data`` is set when the search reached a period the organization holds no
    data for, so the answer is unknown.
    """

    setup_day: date | None
    period: Period | None = None
    before_data: Period | None = None


def first_period(view: EnrollmentView, code: str) -> Episode:
    """Walk the episode's periods from the set-up on and find the one that carries the set-up."""
    devices = _setup_devices(view)
    if not devices or devices[0].setup_date is None:
        return Episode(None)
    setup_day = devices[0].setup_date
    program = view.program
    prior = set(program.prior_periods)
    periods = sorted({*program.prior_periods, *program.device_periods}, key=lambda p: p.start)
    data_from = program.data_from
    for p in periods:
        if p.end < setup_day:
            continue
        if data_from is not None and p.end < data_from:  # None: no horizon known (all data held)
            return Episode(setup_day, before_data=p)
        try:
            need = as_int(view.year_for(p.end).code(code).value("min_days"), f"{code} min_days")
        except MissingParameter:  # no rule-year (or no such code) for that period: cannot judge it
            return Episode(setup_day, before_data=p)
        win = window(view, p)
        first = max(win.first, setup_day)
        days = program.prior_days if p in prior else tuple(program.data_days)
        n = sum(1 for d in days if p.contains(d) and first <= d <= win.last)
        if n >= need:
            return Episode(setup_day, period=p)
        if p.end > view.facts.as_of:
            return Episode(setup_day)  # still open: this period may yet carry it
    return Episode(setup_day)


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
    view: EnrollmentView, year: RuleYear, period: Period, rule: CodeRule, episode: Episode
) -> Decision:
    used = Used(year)
    e = view.enrollment
    prefix = e.program.lower()
    draft = Draft(view, year, rule, period, used)
    draft.checks.extend(common_checks(view, year, period, used))
    episode_cite = cite(year, used.add(rule.param("max_units")))
    once = as_int(rule.value("max_units"), f"{rule.code} max_units")

    before = sorted(
        (b for b in view.facts.billed_history if b.code == rule.code and b.enrollment_id == e.enrollment_id),
        key=lambda b: b.date_of_service,
    )
    if len(before) >= once:
        b = before[0]
        msg = (
            f"{rule.code} already billed for this episode on {b.date_of_service} "
            f"(run {b.run_id}): {once} per episode"
        )
        ev = Evidence(dates=(b.date_of_service,), values=(("run_id", b.run_id),))
        draft.checks.append(Check.of(f"{prefix}.setup.once_per_episode", Verdict.FAIL, msg, episode_cite, ev))
    else:
        msg = f"{rule.code} not billed before for enrollment {e.enrollment_id}"
        draft.checks.append(Check.of(f"{prefix}.setup.once_per_episode", Verdict.PASS, msg, episode_cite))
    draft.checks.extend(_episode_check(view, year, rule, period, episode, prefix, episode_cite))

    win = window(view, period)
    if episode.setup_day is not None and episode.setup_day > win.first:
        win = Window(episode.setup_day, win.last)  # days before the set-up do not count toward it
    count = count_days(view, period, win)
    min_p = used.add(rule.param("min_days"))
    if count.manual:
        used.add(year.rule_global("manual_readings_count"))
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
    if ready:
        first = ready[0]
        msg = f"device {first.device_id} ({first.kind}) set up on {first.setup_date}"
        ev = Evidence(
            dates=tuple(d.setup_date for d in ready if d.setup_date),
            device_ids=tuple(d.device_id for d in ready),
        )
        draft.checks.append(Check.of(f"{prefix}.setup.device", Verdict.PASS, msg, episode_cite, ev))
    else:
        verdict = Verdict.PENDING if is_open(view, period) else Verdict.FAIL
        msg = f"no {e.program} device with a set-up date inside the enrollment on or before {limit}"
        draft.checks.append(Check.of(f"{prefix}.setup.device", verdict, msg, episode_cite))

    draft.units = once if count.n >= need else 0
    draft.dos = dos
    if is_open(view, period) and days.verdict is Verdict.PASS:
        draft.open_note = "set-up is billed with this period once it closes"
    return finish(draft)


def _episode_check(
    view: EnrollmentView,
    year: RuleYear,
    rule: CodeRule,
    period: Period,
    episode: Episode,
    prefix: str,
    citation: str,
) -> list[Check]:
    """Whether ``period`` is the episode's set-up period (no check without a set-up date)."""
    if episode.setup_day is None:
        return []
    ev = Evidence(dates=(episode.setup_day,))
    if episode.before_data is not None:
        p = episode.before_data
        held = view.program.data_from
        since = f"from {held}" if held else "none at all"
        msg = (
            f"the set-up on {episode.setup_day} belongs to the period {span(p.start, p.end)}, which lies "
            f"before the data caretally holds ({since}): its set-up period cannot be judged, so "
            f"{rule.code} is not billed now"
        )
        return [Check.of(f"{prefix}.setup.before_data", Verdict.FAIL, msg, citation, ev)]
    found = episode.period
    if found is not None and found != period:
        where = "an earlier" if found.start < period.start else "a later"
        msg = (
            f"set-up goes with the episode's first period that reached the minimum after the set-up "
            f"on {episode.setup_day}: {span(found.start, found.end)} ({where} period)"
        )
        ev = Evidence(dates=(episode.setup_day, found.start, found.end))
        return [Check.of(f"{prefix}.setup.first_period", Verdict.FAIL, msg, citation, ev)]
    if period.end < episode.setup_day:
        msg = f"the device was set up on {episode.setup_day}, after this period ended"
        return [Check.of(f"{prefix}.setup.first_period", Verdict.FAIL, msg, citation, ev)]
    msg = f"first period of the episode to reach the minimum after the set-up on {episode.setup_day}"
    if found is None:
        msg = f"no earlier period of the episode reached the minimum after the set-up on {episode.setup_day}"
    return [Check.of(f"{prefix}.setup.first_period", Verdict.PASS, msg, citation, ev)]

"""Small builders for hand-made patient-months, and rule-book variants for option tests.

Rule values always come from the shipped rule-year files (``load_rulebook``); a test that
needs another value (a cap, an option) derives a variant with :func:`with_option` or
:func:`with_param`, which replace one value and mark the layer ``test``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date, timedelta
from types import MappingProxyType
from typing import Any

from caretally.dates import parse_month, periods_ending_in
from caretally.model import (
    BilledCode,
    Decision,
    DeviceFact,
    EnrollmentFact,
    Modality,
    PatientMonthFacts,
    Payer,
    PerformerClass,
    Period,
    Program,
    ProgramFacts,
    Status,
    TimeFact,
)
from caretally.rules.loader import load_rulebook
from caretally.rules.params import Param, RuleBook, RuleYear

P = PerformerClass
M = Modality

DEFAULT_KIND = {Program.RPM: "blood_pressure", Program.RTM: "musculoskeletal"}


def medicare() -> RuleBook:
    return load_rulebook("medicare")


def _map_years(book: RuleBook, fn: Any) -> RuleBook:
    return replace(book, years=tuple(fn(y) for y in book.years))


def with_option(book: RuleBook, name: str, value: Any) -> RuleBook:
    """The same rules with one option changed, including code params that point at it.

    Years that do not define the option (the CY2027 proposals before 2027) are left alone.
    """

    def change(year: RuleYear) -> RuleYear:
        if name not in year.options:
            return year
        options = dict(year.options)
        options[name] = replace(options[name], value=value, layer="test")
        codes = {}
        for code, rule in year.codes.items():
            params = {
                n: (replace(p, value=value, layer="test") if p.option == name else p)
                for n, p in rule.params.items()
            }
            codes[code] = replace(rule, params=MappingProxyType(params))
        return replace(year, options=MappingProxyType(options), codes=MappingProxyType(codes))

    return _map_years(book, change)


def with_param(book: RuleBook, code: str, name: str, value: Any) -> RuleBook:
    def change(year: RuleYear) -> RuleYear:
        if code not in year.codes:
            return year
        rule = year.codes[code]
        params = dict(rule.params)
        old = params.get(name) or Param(name, None, "test", "test", "test")
        params[name] = replace(old, value=value, layer="test", option=None)
        codes = dict(year.codes)
        codes[code] = replace(rule, params=MappingProxyType(params))
        return replace(year, codes=MappingProxyType(codes))

    return _map_years(book, change)


def with_global(book: RuleBook, name: str, value: Any) -> RuleBook:
    """The same rules with a requirement global set (e.g. a payer waiving a rule)."""

    def change(year: RuleYear) -> RuleYear:
        globals_ = dict(year.globals)
        globals_[name] = Param(name, value, "test", "test", "test")
        return replace(year, globals=MappingProxyType(globals_))

    return _map_years(book, change)


# --------------------------------------------------------------------------------------


def enrollment(
    program: Program = Program.RPM,
    *,
    eid: str | None = None,
    start: date = date(2026, 1, 1),
    end: date | None = None,
    consent: date | str | None = "start",
    practitioner: str = "P1",
    credential: str = "MD",
    diagnoses: Sequence[str] = ("I10", "E11.9"),
    complexity: str | None = None,
    order: date | str | None = "start",
    established: bool | None = True,
    initiating_visit: date | str | None = "start",
    qmb: bool | None = None,
    authorization_id: str | None = None,
    authorization_start: date | None = None,
    authorization_end: date | None = None,
) -> EnrollmentFact:
    def at(v: date | str | None) -> date | None:
        return start if v == "start" else v  # type: ignore[return-value]

    return EnrollmentFact(
        enrollment_id=eid or f"E-{program}",
        patient_id="PT1",
        program=program,
        start_date=start,
        end_date=end,
        consent_date=at(consent),
        billing_practitioner_id=practitioner,
        billing_npi="1234567893",
        billing_credential=credential,
        diagnoses=tuple(diagnoses),
        complexity=complexity,
        order_date=at(order),
        established_patient=established,
        initiating_visit_date=at(initiating_visit),
        qmb=qmb,
        authorization_id=authorization_id,
        authorization_start=authorization_start,
        authorization_end=authorization_end,
    )


TimeSpec = tuple[Any, ...]  # (minutes, seconds, performer, interactive, modality[, day[, program[, who]]])


def entries(
    specs: Iterable[TimeSpec], month: Period, program: Program | None = Program.RPM, prefix: str = "t"
) -> tuple[TimeFact, ...]:
    """Time entries from short tuples; without a day they fall on successive days of the month."""
    out: list[TimeFact] = []
    for i, spec in enumerate(specs):
        minutes, seconds, performer, interactive, modality, *rest = spec
        day = rest[0] if rest and rest[0] is not None else month.start + timedelta(days=i % month.days)
        if isinstance(day, int):
            day = month.start.replace(day=day)
        prog = rest[1] if len(rest) > 1 else program
        who = rest[2] if len(rest) > 2 else ("P1" if performer == P.PRACTITIONER else "S1")
        out.append(
            TimeFact(
                entry_id=f"{prefix}{i + 1}",
                local_date=day,
                seconds=minutes * 60 + seconds,
                practitioner_id=who,
                performer=P(performer),
                credential={"practitioner": "MD", "staff": "RN", "therapist": "PT"}[str(performer)],
                program=prog,
                interactive=interactive,
                modality=None if modality is None else M(modality),
            )
        )
    return tuple(out)


def device(
    program: Program = Program.RPM,
    *,
    did: str = "D1",
    kind: str | None = None,
    setup: date | None = date(2026, 1, 1),
) -> DeviceFact:
    return DeviceFact(
        device_id=did,
        program=program,
        kind=kind or DEFAULT_KIND[program],
        medical_device=True,
        setup_date=setup,
        assigned_date=setup or date(2026, 1, 1),
        returned_date=None,
    )


def program_facts(
    enr: EnrollmentFact,
    month: Period,
    *,
    days: Iterable[date | int] = (),
    devices: Sequence[DeviceFact] | None = None,
    periods: Sequence[Period] | None = None,
    data_days: dict[date, tuple[str, ...]] | None = None,
    first_activity: date | None = None,
) -> ProgramFacts:
    if devices is None:
        devices = (device(enr.program, setup=enr.start_date),) if enr.program in DEFAULT_KIND else ()
    if periods is None:
        periods = periods_ending_in(enr.start_date, month) if enr.program in DEFAULT_KIND else ()
    if data_days is None:
        first = devices[0].device_id if devices else "D1"
        data_days = {}
        for d in days:
            day = month.start.replace(day=d) if isinstance(d, int) else d
            data_days[day] = (first,)
    return ProgramFacts(
        enrollment=enr,
        device_periods=tuple(periods),
        data_days=data_days,
        devices=tuple(devices),
        first_activity=first_activity,
    )


def make_facts(
    program: Program = Program.RPM,
    *,
    month: str = "2026-03",
    as_of: date | None = None,
    days: Iterable[date | int] = (),
    time: Iterable[TimeSpec] = (),
    billed: Sequence[BilledCode] = (),
    devices: Sequence[DeviceFact] | None = None,
    periods: Sequence[Period] | None = None,
    first_activity: date | None = None,
    **enrollment_kw: Any,
) -> PatientMonthFacts:
    """One enrollment's patient-month. Enrollment keywords go to :func:`enrollment`.

    Without ``start`` the enrollment starts 30 days before the month, so exactly one
    30-day device period (the month's first 30 days) ends inside it. Consent, order and
    initiating visit default to the start date.
    """
    m = parse_month(month)
    enrollment_kw.setdefault("start", _default_start(m))
    enr = enrollment(program, **enrollment_kw)
    pf = program_facts(enr, m, days=days, devices=devices, periods=periods, first_activity=first_activity)
    return PatientMonthFacts(
        patient_id="PT1",
        payer=Payer.MEDICARE,
        timezone="America/New_York",
        month=m,
        as_of=as_of or m.end,
        programs=(pf,),
        time=entries(time, m, program),
        billed_history=tuple(billed),
    )


def _default_start(month: Period) -> date:
    """30 days before the month: exactly one device period, the month's first 30 days."""
    return month.start - timedelta(days=30)


def combine(*facts: PatientMonthFacts, time: Iterable[TimeFact] = ()) -> PatientMonthFacts:
    """Several single-enrollment facts of one patient-month as one."""
    first = facts[0]
    return replace(
        first,
        programs=tuple(p for f in facts for p in f.programs),
        time=tuple(t for f in facts for t in f.time) + tuple(time),
        billed_history=tuple(b for f in facts for b in f.billed_history),
    )


def one(decisions: Sequence[Decision], code: str, *, enrollment_id: str | None = None) -> Decision:
    found = [
        d for d in decisions if d.code == code and (enrollment_id is None or d.enrollment_id == enrollment_id)
    ]
    assert len(found) == 1, f"expected one {code} decision, got {[(d.code, d.period) for d in found]}"
    return found[0]


def billable(decisions: Sequence[Decision]) -> dict[str, int]:
    return {d.code: d.units for d in decisions if d.status is Status.BILLABLE}


def reason(decision: Decision, rule_id: str) -> Any:
    found = [r for r in decision.reasons if r.rule_id == rule_id]
    assert found, f"{decision.code} has no reason {rule_id}: {[r.rule_id for r in decision.reasons]}"
    return found[-1]

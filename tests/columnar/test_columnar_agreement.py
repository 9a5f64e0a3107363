"""The columnar pass agrees with ``evaluate_patient_month`` on every code it decides.

Two generators: the engine's own patient-month generator (tests/rules), whose months
mostly have several enrollments and so are mostly flagged, and one aimed at what the
columnar pass decides — one RPM or RTM enrollment with earlier periods of its episode,
set-up dates, data horizons, several devices and kinds, tagged and untagged time. For
every unflagged month each code's status, units, date of service and payment must be
equal; the flag rate of each generator is measured and printed, and must leave enough
decided months for the property to mean something.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretally.columnar.decide import decide_months
from caretally.dates import parse_month, periods_ending_in
from caretally.model import (
    DeviceFact,
    Modality,
    PatientMonthFacts,
    Payer,
    PerformerClass,
    Period,
    PeriodKind,
    Program,
    ProgramFacts,
    TimeFact,
)
from tests.columnar.agreement import check_agreement, engine_outcomes
from tests.rules.factories import enrollment, medicare
from tests.rules.test_engine_properties import patient_months

BOOK = medicare()
KINDS = {Program.RPM: ("blood_pressure", "glucose"), Program.RTM: ("respiratory", "musculoskeletal", "cognitive_behavioral")}


@st.composite
def simple_months(draw: st.DrawFn) -> PatientMonthFacts:
    """One RPM or RTM enrollment, as the columnar pass decides them (and some it must flag)."""
    month = parse_month(draw(st.sampled_from(["2025-06", "2026-02", "2026-03", "2026-07", "2027-03"])))
    program = draw(st.sampled_from([Program.RPM, Program.RTM]))
    start = month.start - timedelta(days=draw(st.integers(0, 120)))
    end = draw(st.none() | st.integers(0, 150).map(lambda n: start + timedelta(days=n)))
    consent = draw(
        st.sampled_from(["start", "start", None, "late", "mid"])
    )
    consent_day = {
        "start": "start",
        None: None,
        "late": month.end + timedelta(days=3),
        "mid": month.start + timedelta(days=draw(st.integers(0, 27))),
    }[consent]
    enr = enrollment(
        program,
        eid="E0",
        start=start,
        end=end,
        consent=consent_day,
        practitioner=draw(st.sampled_from(["P1", "P2", ""])) if draw(st.integers(0, 9)) == 0 else "P1",
        established=draw(st.sampled_from([True, True, False, None])),
        initiating_visit=draw(st.sampled_from(["start", None, month.end])),
    )
    all_periods = []
    p_start = start
    while p_start <= month.end:
        all_periods.append(Period(PeriodKind.THIRTY_DAY, p_start, p_start + timedelta(days=29)))
        p_start += timedelta(days=30)
    current = periods_ending_in(start, month)
    n_devices = draw(st.integers(0, 3))
    devices = []
    for i in range(n_devices):
        setup = draw(
            st.none()
            | st.just(start)
            | st.integers(-5, 90).map(lambda n: start + timedelta(days=n))
        )
        devices.append(
            DeviceFact(
                device_id=f"D{i}",
                program=program,
                kind=draw(st.sampled_from(KINDS[program])),
                medical_device=True,
                setup_date=setup,
                assigned_date=setup or start,
                returned_date=None,
            )
        )
    ids = [d.device_id for d in devices] or ["D0"]
    data_days: dict[date, tuple[str, ...]] = {}
    if current:
        first, last = current[0].start, current[-1].end
        span = (last - first).days + 1
        for o in draw(st.lists(st.integers(0, span - 1), max_size=31, unique=True)):
            who = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=len(ids), unique=True))
            data_days[first + timedelta(days=o)] = tuple(sorted(who))
    prior = tuple(p for p in all_periods if p.end < (current[0].start if current else month.start))
    prior_days: list[date] = []
    if prior and draw(st.booleans()):
        first, last = prior[0].start, prior[-1].end
        span = (last - first).days + 1
        prior_days = sorted(
            first + timedelta(days=o)
            for o in draw(st.lists(st.integers(0, span - 1), max_size=40, unique=True))
        )
    data_from = draw(st.none() | st.integers(-150, 20).map(lambda n: month.start + timedelta(days=n)))
    program_facts = ProgramFacts(
        enrollment=enr,
        device_periods=tuple(current),
        data_days=data_days,
        devices=tuple(devices),
        prior_periods=prior,
        prior_days=tuple(prior_days),
        data_from=data_from,
    )
    time = []
    first_day = current[0].start if current else month.start
    for n in range(draw(st.integers(0, 8))):
        performer = draw(st.sampled_from(list(PerformerClass)))
        when = draw(st.integers(0, (month.end - first_day).days))
        time.append(
            TimeFact(
                entry_id=f"t{n}",
                local_date=first_day + timedelta(days=when),
                seconds=draw(st.integers(0, 30 * 60)),
                practitioner_id=draw(st.sampled_from(["P1", "P2", "S1", "T1"])),
                performer=performer,
                credential="RN",
                program=draw(st.sampled_from([program, program, program, Program.CCM, None])),
                interactive=draw(st.booleans()),
                modality=draw(st.none() | st.sampled_from(list(Modality))),
            )
        )
    as_of = draw(
        st.just(month.end)
        | st.just(month.end + timedelta(days=5))
        | st.integers(0, month.days - 1).map(lambda n: month.start + timedelta(days=n))
    )
    return PatientMonthFacts(
        patient_id="PT1",
        payer=Payer.MEDICARE,
        timezone="America/Chicago",
        month=month,
        as_of=as_of,
        programs=(program_facts,),
        time=tuple(time),
        billed_history=(),
    )


FLAGS: dict[str, Counter[str]] = {"simple": Counter(), "engine": Counter()}


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(simple_months())
def test_columnar_agrees_with_the_engine_on_simple_months(facts: PatientMonthFacts) -> None:
    FLAGS["simple"][check_agreement(facts, BOOK) or "decided"] += 1


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(patient_months())
def test_columnar_agrees_with_the_engine_on_the_engine_generator(facts: PatientMonthFacts) -> None:
    FLAGS["engine"][check_agreement(facts, BOOK) or "decided"] += 1


def test_flag_rates_are_reported_and_leave_decided_months() -> None:
    """Runs after the properties (file order): prints each generator's flag rate."""
    for name, counts in FLAGS.items():
        total = sum(counts.values())
        if not total:
            pytest.skip("run with the properties above")
        decided = counts["decided"]
        rate = 1 - decided / total
        print(f"\n{name} generator: {total} months, {decided} decided, flag rate {rate:.0%}: {dict(counts)}")
    simple = FLAGS["simple"]
    assert simple["decided"] >= sum(simple.values()) // 3, "the focused generator must mostly be decided"
    assert FLAGS["engine"]["decided"] > 0


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(simple_months(), min_size=2, max_size=8))
def test_one_pass_over_many_months_equals_each_alone(months: list[PatientMonthFacts]) -> None:
    """Deciding many patient-months in one pass gives each the answer it gets alone."""
    months = [replace(f, patient_id=f"PT{i}") for i, f in enumerate(months)]
    together = decide_months([(f, BOOK) for f in months])
    for f in months:
        alone = decide_months([(f, BOOK)])
        assert together.flagged.get(f.patient_id) == alone.flagged.get(f.patient_id)
        assert together.decided.get(f.patient_id) == alone.decided.get(f.patient_id)


def test_a_known_month_bills_device_supply_and_set_up() -> None:
    """A non-vacuous example: 18 days and 25 minutes with a call bill 99453, 99454, 99457."""
    month = parse_month("2026-03")
    start = date(2026, 3, 1)
    enr = enrollment(Program.RPM, eid="E0", start=start)
    facts = PatientMonthFacts(
        patient_id="PT1",
        payer=Payer.MEDICARE,
        timezone="America/Chicago",
        month=month,
        as_of=month.end,
        programs=(
            ProgramFacts(
                enrollment=enr,
                device_periods=tuple(periods_ending_in(start, month)),
                data_days={start + timedelta(days=i): ("D0",) for i in range(18)},
                devices=(
                    DeviceFact("D0", Program.RPM, "blood_pressure", True, start, start, None),
                ),
            ),
        ),
        time=(
            TimeFact("t1", date(2026, 3, 5), 25 * 60, "S1", PerformerClass.STAFF, "RN", Program.RPM, True, Modality.PHONE),
        ),
        billed_history=(),
    )
    result = decide_months([(facts, BOOK)])
    billed = {o.code: o.units for o in result.decided["PT1"] if o.status == "billable"}
    assert billed == {"99453": 1, "99454": 1, "99457": 1}
    assert result.decided["PT1"] == engine_outcomes(facts, BOOK)

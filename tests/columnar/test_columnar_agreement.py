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
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretally.columnar.decide import decide_months
from caretally.columnar.facts import overlap_warnings
from caretally.columnar.rule_ids import decided_pattern
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
from caretally.rules.engine import evaluate_patient_month
from tests.columnar.agreement import diff, engine_outcomes, engine_warnings, outcomes_of
from tests.rules.factories import enrollment, medicare
from tests.rules.test_engine_properties import patient_months

BOOK = medicare()
#: Seconds at and around the minute thresholds (10, 20, 30, 40, 60 minutes), so ties are met.
NEAR = (0, 59, 60, 300, 540, 599, 600, 601, 1140, 1199, 1200, 1201, 1800, 2399, 2400, 1799, 3599, 3600)
KINDS = {
    Program.CCM: ("none",),
    Program.PCM: ("none",),
    Program.RPM: ("blood_pressure", "glucose"),
    Program.RTM: ("respiratory", "musculoskeletal", "cognitive_behavioral"),
}


@st.composite
def simple_months(
    draw: st.DrawFn, month_text: str | None = None, program: Program | None = None, eid: str = "E0"
) -> PatientMonthFacts:
    """One RPM, RTM, CCM or PCM enrollment, as the columnar pass decides them (and some it must flag)."""
    month = parse_month(month_text or draw(st.sampled_from(MONTHS)))
    if program is None:
        program = draw(st.sampled_from([Program.RPM, Program.RTM, Program.CCM, Program.PCM]))
    start = month.start - timedelta(days=draw(st.integers(0, 120)))
    end = draw(st.none() | st.integers(0, 150).map(lambda n: start + timedelta(days=n)))
    # Half the months are typical (consented, established, a closed month, dense data, calls),
    # so billable lines are common; the other half explore every corner.
    typical = draw(st.booleans())
    consent = "start" if typical else draw(st.sampled_from(["start", "start", None, "late", "mid"]))
    consent_day = {
        "start": "start",
        None: None,
        "late": month.end + timedelta(days=3),
        "mid": month.start + timedelta(days=draw(st.integers(0, 27))),
    }[consent]
    enr = enrollment(
        program,
        eid=eid,
        start=start,
        end=end,
        consent=consent_day,
        practitioner=draw(st.sampled_from(["P1", "P2", ""])) if draw(st.integers(0, 9)) == 0 else "P1",
        established=True if typical else draw(st.sampled_from([True, True, False, None])),
        initiating_visit="start" if typical else draw(st.sampled_from(["start", None, month.end])),
        # Care management reads the diagnoses (chronic conditions) and the documented complexity.
        diagnoses=draw(st.sampled_from([("I10", "E11.9"), ("I10", "E11.9", "J44.9"), ("I10",), ()])),
        complexity=draw(st.sampled_from(["complex", None] if typical else [None, "complex", "moderate"])),
    )
    all_periods = []
    p_start = start
    while p_start <= month.end:
        all_periods.append(Period(PeriodKind.THIRTY_DAY, p_start, p_start + timedelta(days=29)))
        p_start += timedelta(days=30)
    monitored = program in (Program.RPM, Program.RTM)  # care management has no device periods
    current = periods_ending_in(start, month) if monitored else []
    if not monitored:
        all_periods = []
    n_devices = draw(st.integers(0, 3)) if monitored else 0
    devices = []
    for i in range(n_devices):
        setup = draw(
            st.none() | st.just(start) | st.integers(-5, 90).map(lambda n: start + timedelta(days=n))
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
        size = st.integers(0, 31) if not typical else st.integers(2, 40)
        for o in draw(
            st.lists(st.integers(0, span - 1), min_size=min(draw(size), span), max_size=span, unique=True)
        ):
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
        performer = draw(
            st.sampled_from(list(PerformerClass))
            if monitored or not typical
            else st.sampled_from([PerformerClass.PRACTITIONER, PerformerClass.STAFF])
        )
        when = draw(st.integers(0, (month.end - first_day).days))
        time.append(
            TimeFact(
                entry_id=f"{eid}t{n}",
                local_date=first_day + timedelta(days=when),
                seconds=draw(st.sampled_from(NEAR) | st.integers(0, (30 if monitored else 50) * 60)),
                practitioner_id=draw(st.sampled_from(["P1", "P2", "S1", "T1"])),
                performer=performer,
                credential="RN",
                program=program if typical else draw(st.sampled_from([program, program, Program.CCM, None])),
                interactive=True if typical else draw(st.booleans()),
                modality=Modality.PHONE if typical else draw(st.none() | st.sampled_from(list(Modality))),
                # Entries placed in a few hours of a few days, so one performer's entries overlap
                # (cut to the minutes counted once) and some collide with another patient's.
                started_at=draw(st.none() | _starts(first_day + timedelta(days=when))),
                other_patient_overlaps=draw(st.sampled_from([(), (), (), ("X1",), ("X1", "X2")])),
            )
        )
    as_of = (
        month.end
        if typical and draw(st.booleans())
        else draw(
            st.just(month.end)
            | st.just(month.end + timedelta(days=5))
            | st.integers(1, 3).map(lambda n: month.end - timedelta(days=n))
            | st.integers(0, month.days - 1).map(lambda n: month.start + timedelta(days=n))
        )
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


def _starts(day: date) -> st.SearchStrategy[datetime]:
    return st.integers(0, 12).map(
        lambda q: datetime(day.year, day.month, day.day, 9, tzinfo=UTC) + timedelta(minutes=5 * q)
    )


MONTHS = ["2025-06", "2026-02", "2026-03", "2026-07", "2027-03"]
#: Program pairs of one patient: independent (RPM+CCM, the commonest), never together
#: (RPM+RTM), not by the same practitioner (CCM+PCM), and others.
PAIRS = [
    (Program.RPM, Program.CCM),
    (Program.RPM, Program.CCM),
    (Program.RPM, Program.RTM),
    (Program.CCM, Program.PCM),
    (Program.CCM, Program.PCM),
    (Program.RTM, Program.PCM),
]


@st.composite
def two_program_months(draw: st.DrawFn) -> PatientMonthFacts:
    """Two enrollments of different programs in one month, each drawn as :func:`simple_months`."""
    month_text = draw(st.sampled_from(MONTHS))
    a, b = draw(st.sampled_from(PAIRS))
    first = draw(simple_months(month_text, a, "E1"))
    second = draw(simple_months(month_text, b, "E2"))
    return replace(first, programs=first.programs + second.programs, time=first.time + second.time)


FLAGS: dict[str, Counter[str]] = {"simple": Counter(), "two": Counter(), "engine": Counter()}
STATUSES: Counter[tuple[str, str]] = Counter()
#: Every blocking rule id met on a decided month (the lane and exclusion passes among them).
BLOCKING: Counter[str] = Counter()
#: Decided months with and without overlap warnings (both must be compared).
WARNED: Counter[bool] = Counter()


def _agree_in_one_pass(months: list[PatientMonthFacts], name: str) -> None:
    """Decide the months in one pass (as the month run does), then compare each with the engine."""
    months = [replace(f, patient_id=f"PT{i:03d}") for i, f in enumerate(months)]
    result = decide_months([(f, BOOK) for f in months])
    for f in months:
        why = result.flagged.get(f.patient_id)
        FLAGS[name][why or "decided"] += 1
        if why is None:
            decisions = evaluate_patient_month(f, BOOK)
            mine, theirs = result.decided[f.patient_id], outcomes_of(f, decisions, BOOK)
            assert mine == theirs, diff(mine, theirs)
            assert overlap_warnings(f, BOOK) == engine_warnings(decisions)
            WARNED[bool(engine_warnings(decisions))] += 1
            for o in mine:
                STATUSES[(o.code, o.status.value)] += 1
                BLOCKING.update(o.blocking)


# Derandomized: the same months on every run, so the coverage asserted below is stable.
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(simple_months(), min_size=1, max_size=12))
def test_columnar_agrees_with_the_engine_on_simple_months(months: list[PatientMonthFacts]) -> None:
    _agree_in_one_pass(months, "simple")


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(two_program_months(), min_size=1, max_size=8))
def test_columnar_agrees_with_the_engine_on_two_programs(months: list[PatientMonthFacts]) -> None:
    _agree_in_one_pass(months, "two")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.lists(patient_months(), min_size=1, max_size=8))
def test_columnar_agrees_with_the_engine_on_the_engine_generator(months: list[PatientMonthFacts]) -> None:
    _agree_in_one_pass(months, "engine")


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
    print(f"decided outcomes by code and status: {dict(sorted(STATUSES.items()))}")
    # Not vacuous: every status of the codes the pass decides was compared.
    for code in ("99453", "99445", "99454", "99457", "98975", "98980"):
        assert STATUSES[(code, "billable")], f"{code} billable never compared"
    for code in ("99470", "99458", "99091", "98981", "98977"):
        assert STATUSES[(code, "not_billable")], f"{code} not_billable never compared"
    assert sum(n for (_, status), n in STATUSES.items() if status == "reachable") >= 20
    print(f"blocking rule ids met: {dict(BLOCKING)}")
    assert all(decided_pattern(r) for r in BLOCKING), [r for r in BLOCKING if not decided_pattern(r)]
    for code in ("99490", "99439", "99487", "99424", "99425", "99091"):
        assert STATUSES[(code, "billable")], f"{code} billable never compared"
    for rule_id in ("ccm.lane", "ccm.chronic_conditions", "ccm.complexity", "pcm.chronic_conditions"):
        assert BLOCKING[rule_id], f"{rule_id} never compared"
    assert WARNED[True] >= 10, f"decided months with overlap warnings: {WARNED[True]}"


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
                devices=(DeviceFact("D0", Program.RPM, "blood_pressure", True, start, start, None),),
            ),
        ),
        time=(
            TimeFact(
                "t1",
                date(2026, 3, 5),
                25 * 60,
                "S1",
                PerformerClass.STAFF,
                "RN",
                Program.RPM,
                True,
                Modality.PHONE,
            ),
        ),
        billed_history=(),
    )
    result = decide_months([(facts, BOOK)])
    billed = {o.code: o.units for o in result.decided["PT1"] if o.status == "billable"}
    assert billed == {"99453": 1, "99454": 1, "99457": 1}
    assert result.decided["PT1"] == engine_outcomes(facts, BOOK)


def _care_month(
    month_text: str,
    complexity: str | None,
    entries: list[tuple[PerformerClass, int]],
    as_of_day: int | None = None,
) -> PatientMonthFacts:
    month = parse_month(month_text)
    enr = enrollment(Program.CCM, eid="E0", start=month.start - timedelta(days=40), complexity=complexity)
    time = tuple(
        TimeFact(
            f"t{n}",
            month.start + timedelta(days=n),
            minutes * 60,
            "P1" if who is PerformerClass.PRACTITIONER else "S1",
            who,
            "MD" if who is PerformerClass.PRACTITIONER else "RN",
            Program.CCM,
            True,
            Modality.PHONE,
        )
        for n, (who, minutes) in enumerate(entries)
    )
    return PatientMonthFacts(
        patient_id="PT1",
        payer=Payer.MEDICARE,
        timezone="America/Chicago",
        month=month,
        as_of=month.end if as_of_day is None else month.start + timedelta(days=as_of_day),
        programs=(ProgramFacts(enrollment=enr, device_periods=(), data_days={}, devices=()),),
        time=time,
        billed_history=(),
    )


P, S = PerformerClass.PRACTITIONER, PerformerClass.STAFF


@pytest.mark.parametrize(
    ("facts", "billed"),
    [
        # 2025: 35 practitioner minutes pay more on 99491 than on 99490; the staff lane loses.
        (_care_month("2025-06", None, [(P, 35)]), {"99491": 1}),
        # Complex care documented and 95 minutes: 99487 and one 99489 win over the other lanes.
        (_care_month("2026-03", "complex", [(S, 50), (P, 45)]), {"99487": 1, "99489": 1}),
        # 2026: 99491 has no national amount, so the priced staff lane (99490 + 99439) bills.
        (_care_month("2026-03", None, [(P, 45)]), {"99490": 1, "99439": 1}),
        # Mid-month, both lanes met so far: each stays reachable, the exclusion says which leads.
        (_care_month("2025-06", None, [(P, 35)], as_of_day=15), {}),
    ],
)
def test_known_care_management_months_agree(facts: PatientMonthFacts, billed: dict[str, int]) -> None:
    """Lane choice and the exclusions between lanes, on months the generator meets rarely."""
    result = decide_months([(facts, BOOK)])
    assert "PT1" in result.decided, result.flagged
    mine = result.decided["PT1"]
    assert mine == engine_outcomes(facts, BOOK), diff(mine, engine_outcomes(facts, BOOK))
    assert {o.code: o.units for o in mine if o.status == "billable"} == billed
    if not billed:
        assert any("concurrency.exclusive_with" in o.blocking for o in mine)


def _pair(
    month_text: str, as_of_day: int | None = None, other_practitioner: bool = False
) -> PatientMonthFacts:
    """CCM (35 practitioner minutes) beside PCM (40 practitioner minutes) of one or two practitioners."""
    ccm = _care_month(month_text, None, [(P, 35)], as_of_day)
    pcm = _care_month(month_text, None, [(P, 40)], as_of_day)
    enr = replace(
        pcm.programs[0].enrollment,
        enrollment_id="E1",
        program=Program.PCM,
        billing_practitioner_id="P2" if other_practitioner else "P1",
        diagnoses=("I10",),
    )
    time = tuple(
        replace(
            t, entry_id=f"u{t.entry_id}", program=Program.PCM, local_date=t.local_date + timedelta(days=3)
        )
        for t in pcm.time
    )
    return replace(
        ccm, programs=(*ccm.programs, replace(pcm.programs[0], enrollment=enr)), time=ccm.time + time
    )


def _rpm_rtm() -> PatientMonthFacts:
    """RPM and RTM both met in March 2026: never billed together, the better-paying stays."""
    month = parse_month("2026-03")
    start = date(2026, 3, 1)
    programs = []
    for program, kind, eid in ((Program.RPM, "blood_pressure", "E0"), (Program.RTM, "musculoskeletal", "E1")):
        enr = enrollment(program, eid=eid, start=start)
        programs.append(
            ProgramFacts(
                enrollment=enr,
                device_periods=tuple(periods_ending_in(start, month)),
                data_days={start + timedelta(days=i): (f"D{eid}",) for i in range(18)},
                devices=(DeviceFact(f"D{eid}", program, kind, True, start, start, None),),
            )
        )
    time = tuple(
        TimeFact(
            f"t{program}",
            date(2026, 3, 5 + n),
            25 * 60,
            "S1",
            PerformerClass.STAFF,
            "RN",
            program,
            True,
            Modality.PHONE,
        )
        for n, program in enumerate((Program.RPM, Program.RTM))
    )
    return PatientMonthFacts(
        patient_id="PT1",
        payer=Payer.MEDICARE,
        timezone="America/Chicago",
        month=month,
        as_of=month.end,
        programs=tuple(programs),
        time=time,
        billed_history=(),
    )


@pytest.mark.parametrize(
    ("facts", "rule_id"),
    [
        (_rpm_rtm(), "concurrency.never_together"),
        (_pair("2025-06"), "concurrency.not_same_practitioner"),
        (_pair("2026-03"), "concurrency.not_same_practitioner"),
        (_pair("2025-06", as_of_day=20), "concurrency.not_same_practitioner"),
        (_pair("2026-03", other_practitioner=True), None),
    ],
)
def test_known_two_program_months_agree(facts: PatientMonthFacts, rule_id: str | None) -> None:
    """Program pairs the rule-year keeps apart: both met, one stays (the property meets them rarely)."""
    result = decide_months([(facts, BOOK)])
    assert "PT1" in result.decided, result.flagged
    mine, theirs = result.decided["PT1"], engine_outcomes(facts, BOOK)
    assert mine == theirs, diff(mine, theirs)
    met = {r for o in mine for r in o.blocking}
    if rule_id is None:
        assert not any(r.startswith("concurrency.n") for r in met)
    else:
        assert rule_id in met

"""Properties over random patient-months: no minute counted twice, and status invariants."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from caretally.dates import parse_month, periods_ending_in
from caretally.model import (
    Decision,
    Modality,
    PatientMonthFacts,
    Payer,
    PerformerClass,
    Program,
    ReasonKind,
    Status,
    TimeFact,
)
from caretally.rules.engine import evaluate_patient_month
from tests.rules.factories import device, enrollment, medicare, program_facts, with_option

BOOK = medicare()
BOOK_NO_ALLOC = with_option(BOOK, "allocate_unassigned_time", False)
WHO = {
    PerformerClass.PRACTITIONER: ("P1", "P2"),
    PerformerClass.STAFF: ("S1", "S2"),
    PerformerClass.THERAPIST: ("T1",),
}


@st.composite
def patient_months(draw: st.DrawFn) -> PatientMonthFacts:
    month = parse_month(draw(st.sampled_from(["2025-06", "2026-03", "2026-02"])))
    programs = draw(st.lists(st.sampled_from(list(Program)[:4]), min_size=1, max_size=4, unique=True))
    if Program.RPM in programs and draw(st.booleans()):
        programs.append(Program.RPM)  # a second RPM enrollment, maybe another practitioner
    facts_programs = []
    for i, program in enumerate(programs):
        start = month.start - timedelta(days=draw(st.integers(0, 45)))
        end = draw(st.none() | st.integers(5, 40).map(lambda n, s=start: s + timedelta(days=n + 30)))
        consent = draw(
            st.sampled_from(["start", None, "late"]) if i == 0 else st.sampled_from(["start", "start", None])
        )
        enr = enrollment(
            program,
            eid=f"E{i}",
            start=start,
            end=end,
            consent=month.start + timedelta(days=10) if consent == "late" else consent,
            practitioner=draw(st.sampled_from(["P1", "P2"])),
            diagnoses=("I10", "E11.9")[: draw(st.integers(1, 2))],
            complexity=draw(st.sampled_from([None, "complex"])),
            established=draw(st.booleans()) or draw(st.booleans()),
        )
        periods = periods_ending_in(start, month) if program in (Program.RPM, Program.RTM) else []
        days = []
        if periods:
            span = (periods[-1].end - periods[0].start).days + 1
            offsets = draw(st.lists(st.integers(0, span - 1), max_size=30, unique=True))
            days = [periods[0].start + timedelta(days=o) for o in offsets]
        devices = (device(program, setup=start),) if periods else ()
        facts_programs.append(program_facts(enr, month, days=days, devices=devices, periods=periods))
    time = []
    for n in range(draw(st.integers(0, 10))):
        performer = draw(st.sampled_from(list(PerformerClass)))
        time.append(
            TimeFact(
                entry_id=f"t{n}",
                local_date=month.start + timedelta(days=draw(st.integers(0, month.days - 1))),
                seconds=draw(st.integers(0, 45 * 60)),
                practitioner_id=draw(st.sampled_from(WHO[performer])),
                performer=performer,
                credential="MD",
                program=draw(st.none() | st.sampled_from(programs)),
                interactive=draw(st.booleans()),
                modality=draw(st.none() | st.sampled_from(list(Modality))),
            )
        )
    as_of = draw(
        st.just(month.end) | st.integers(0, month.days - 1).map(lambda n: month.start + timedelta(days=n))
    )
    return PatientMonthFacts(
        patient_id="PT1",
        payer=Payer.MEDICARE,
        timezone="America/Chicago",
        month=month,
        as_of=as_of,
        programs=tuple(facts_programs),
        time=tuple(time),
        billed_history=(),
    )


def counted_entries(d: Decision) -> set[str]:
    return {i for r in d.reasons for i in r.evidence.time_entry_ids}


def value(d: Decision, name: str) -> str | None:
    for r in d.reasons:
        for k, v in r.evidence.values:
            if k == name:
                return v
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient_months(), st.booleans())
def test_no_minute_counted_twice_and_never_more_than_logged(facts: PatientMonthFacts, allocate: bool) -> None:
    check_minutes(facts, allocate)


def check_minutes(facts: PatientMonthFacts, allocate: bool) -> None:
    book = BOOK if allocate else BOOK_NO_ALLOC
    ds = evaluate_patient_month(facts, book)
    billed = [d for d in ds if d.status is Status.BILLABLE]
    seconds = {t.entry_id: t.seconds for t in facts.time}

    # The concurrency pass has a safety net that demotes a line re-counting an entry; the
    # allocation must make it unnecessary, so the net must never fire.
    assert not [r for d in ds for r in d.reasons if r.rule_id == "time.no_double_count" and not r.passed]
    seen: dict[str, str] = {}
    used_minutes = 0
    for d in billed:
        mine = counted_entries(d)
        for entry in mine:
            assert entry not in seen, f"{entry} counted by {seen[entry]} and {d.code}"
            seen[entry] = d.code
        if mine:
            minutes = int(value(d, "minutes") or 0)
            assert minutes == sum(seconds[e] for e in mine) // 60
            used_minutes += minutes
        if value(d, "minutes_used") is not None:  # an add-on: inside its base's pool
            assert int(value(d, "base_minutes")) + int(value(d, "minutes_used")) <= int(value(d, "minutes"))
    assert used_minutes <= sum(seconds.values()) // 60


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patient_months())
def test_status_invariants_and_exclusions(facts: PatientMonthFacts) -> None:
    check_invariants(facts)


def check_invariants(facts: PatientMonthFacts) -> None:
    ds = evaluate_patient_month(facts, BOOK)
    assert ds == evaluate_patient_month(facts, BOOK)
    keys = [(d.enrollment_id, d.code, d.period.start) for d in ds]
    assert keys == sorted(keys)
    for d in ds:
        assert d.reasons and all(p.layer for p in d.parameters)
        if d.status is Status.BILLABLE:
            assert d.units > 0 and d.date_of_service is not None and d.expected_payment is not None
            assert d.expected_payment >= Decimal(0)
            assert all(r.passed for r in d.reasons if r.kind is not ReasonKind.ADVISORY)
        elif d.status is Status.NOT_BILLABLE:
            assert d.units == 0 and d.date_of_service is None and d.expected_payment is None
            assert any(not r.passed for r in d.reasons)
        else:
            waits = any(r.rule_id.startswith("concurrency.") for r in d.reasons)
            assert d.period.end > facts.as_of or waits
            assert d.date_of_service is None
    billed = [d for d in ds if d.status is Status.BILLABLE]
    for a in billed:
        rule = BOOK.for_date(a.period.end).code(a.code)
        excluded = set(rule.get("exclusive_with") or ())
        assert not [b for b in billed if b.code in excluded], f"{a.code} billed with an excluded code"
    programs = {d.program for d in billed}
    assert not {Program.RPM, Program.RTM} <= programs
    for a in billed:
        base = BOOK.for_date(a.period.end).code(a.code).get("add_on_to")
        if base is not None:
            assert any(b.code == base and b.enrollment_id == a.enrollment_id for b in billed)
    device_lines = [d for d in billed if d.code in {"99445", "99454"}]
    for a in device_lines:
        clash = [
            b
            for b in device_lines
            if b is not a and b.period.start <= a.period.end and a.period.start <= b.period.end
        ]
        assert not clash, "two device-supply lines in overlapping periods"


def test_generator_reaches_billable_time_codes() -> None:
    """Guard against a vacuous property: the strategy must produce billed time codes."""
    found = find(
        patient_months(),
        lambda f: any(
            d.status is Status.BILLABLE and counted_entries(d) for d in evaluate_patient_month(f, BOOK)
        ),
        settings=settings(max_examples=400, deadline=None, database=None, phases=[Phase.generate]),
    )
    assert found.time

"""Builders from engine values to view-models, on the real engine's output."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

from caretally.billing.serialize import decision_to_json
from caretally.model import Program
from caretally.rules.engine import evaluate_patient_month
from caretally.web import views
from caretally.web.viewmodels import DayMark, DayThreshold, Tier, Tone
from tests.rules.factories import make_facts, medicare

BOOK = medicare()
YEAR = BOOK.for_date(date(2026, 3, 31))


def test_calendar_days_say_why_each_day_did_or_did_not_count() -> None:
    facts = make_facts(Program.RPM, days=[2, 3, 4], consent=date(2026, 3, 3))
    p = facts.programs[0]
    period = p.device_periods[0]
    p = replace(
        p,
        excluded_days={
            "manual": (date(2026, 3, 5),),
            "non_medical_device": (date(2026, 3, 6),),
            "device_not_with_patient": (date(2026, 3, 7),),
            "outside_enrollment": (date(2026, 3, 8),),
        },
    )
    days = {d.day: d for d in views.calendar_days(p, period.start, period.end, today=date(2026, 3, 12))}
    assert len(days) == 30
    assert days[date(2026, 3, 2)].mark is DayMark.BEFORE_CONSENT
    assert days[date(2026, 3, 3)].mark is DayMark.COUNTED
    assert days[date(2026, 3, 3)].devices == ("D1",)
    assert days[date(2026, 3, 5)].mark is DayMark.MANUAL
    assert days[date(2026, 3, 6)].mark is DayMark.NON_MEDICAL
    assert days[date(2026, 3, 7)].mark is DayMark.OUTSIDE_ASSIGNMENT
    assert days[date(2026, 3, 8)].mark is DayMark.OUTSIDE_ENROLLMENT
    assert days[date(2026, 3, 9)].mark is DayMark.NO_DATA
    assert days[date(2026, 3, 12)].mark is DayMark.NO_DATA  # today, nothing yet
    assert days[date(2026, 3, 13)].mark is DayMark.TO_COME


def test_days_after_the_enrollment_ends_are_not_to_come() -> None:
    facts = make_facts(Program.RPM, days=[2, 3], end=date(2026, 3, 20))
    p = facts.programs[0]
    period = p.device_periods[0]
    days = {d.day: d.mark for d in views.calendar_days(p, period.start, period.end, today=date(2026, 3, 10))}
    assert days[date(2026, 3, 20)] is DayMark.TO_COME
    assert days[date(2026, 3, 21)] is DayMark.OUTSIDE_ENROLLMENT


def test_the_calendar_counts_what_the_engine_counts() -> None:
    facts = make_facts(Program.RPM, days=range(1, 20), consent=date(2026, 3, 5))
    decisions = evaluate_patient_month(facts, BOOK)
    p = facts.programs[0]
    period = p.device_periods[0]
    marks = views.calendar_days(p, period.start, period.end, today=period.end)
    counted = sorted(d.day for d in marks if d.mark is DayMark.COUNTED)
    d99454 = next(d for d in decisions if d.code == "99454")
    assert counted == sorted(d99454.measures.dates)
    assert len(counted) == d99454.measures.days == 15


def test_day_thresholds_are_the_rule_years_and_share_a_tick_when_equal() -> None:
    facts = make_facts(Program.RPM, days=range(1, 5))
    decisions = evaluate_patient_month(facts, BOOK)
    period = facts.programs[0].device_periods[0]
    got = views.day_thresholds(decisions, facts.programs[0].enrollment.enrollment_id, period.end)
    codes_by_days = {t.days: t.codes for t in got}
    assert codes_by_days[YEAR.codes["99454"].get("min_days")] == ("99454",)
    assert "99445" in codes_by_days[YEAR.codes["99445"].get("min_days")]
    assert all(isinstance(t, DayThreshold) for t in got)


def test_minute_tiers_are_read_from_the_rule_year() -> None:
    tiers = views.minute_tiers(YEAR, ["99457", "99458", "99470"])
    base = YEAR.codes["99457"].get("min_minutes")
    step = YEAR.codes["99458"].get("step_minutes")
    first_addon = YEAR.codes["99458"].get("min_minutes")
    assert tiers == [
        Tier(YEAR.codes["99470"].get("min_minutes"), "99470"),
        Tier(base, "99457"),
        Tier(first_addon, "99458"),
        Tier(first_addon + step, "99458 ×2"),
    ]
    assert [t.minutes for t in tiers] == [10, 20, 40, 60]  # what 2026 says, as the issue reads


def test_an_uncapped_add_on_shows_the_unit_after_the_minutes_so_far() -> None:
    tiers = views.minute_tiers(YEAR, ["99457", "99458"], minutes=75)
    assert tiers[-1] == Tier(80, "99458 ×3")


def test_a_capped_add_on_stops_at_its_cap() -> None:
    cap = YEAR.codes["99439"].get("max_units")
    tiers = views.minute_tiers(YEAR, ["99490", "99439"], minutes=200)
    assert len([t for t in tiers if t.code.startswith("99439")]) == cap
    assert [t.minutes for t in tiers] == [20, 40, 60]


def test_ladder_codes_leave_out_a_lane_that_lost() -> None:
    facts = make_facts(Program.RPM, days=range(1, 20), time=[(25, 0, "staff", True, "phone")])
    decisions = evaluate_patient_month(facts, BOOK)
    codes = views.ladder_codes(decisions, facts.programs[0].enrollment.enrollment_id)
    assert "99457" in codes and "99458" in codes
    assert "99454" not in codes  # a device code has no minutes


def test_blood_pressure_is_split_into_its_two_measures() -> None:
    at = datetime(2026, 3, 2, 8, 0)
    rows = [
        views.ReadingRow("r1", at, "blood_pressure", "142/91", "mmHg", False),
        views.ReadingRow("r2", at + timedelta(hours=3), "blood_pressure", "128/80", "mmHg", True),
        views.ReadingRow("r3", at, "glucose", "110", "mg/dL", False),
        views.ReadingRow("r4", at, "glucose", "high", "mg/dL", False),  # not a number: not drawn
        views.ReadingRow("r5", at, "blood_pressure", "142", "mmHg", False),  # half a pressure: not drawn
    ]
    points = views.reading_points(rows)
    assert set(points) == {"blood_pressure.systolic", "blood_pressure.diastolic", "glucose"}
    assert [p.value for p in points["blood_pressure.systolic"]] == [142.0, 128.0]
    assert [p.manual for p in points["blood_pressure.diastolic"]] == [False, True]
    assert points["glucose"][0].series == "glucose"
    assert views.measure_words("blood_pressure.systolic") == "Blood pressure, systolic"


def test_decision_views_show_reasons_with_typed_verdicts_and_citations() -> None:
    facts = make_facts(Program.RPM, days=range(1, 5), time=[(12, 0, "staff", False, None)])
    decisions = evaluate_patient_month(facts, BOOK)
    shown = views.decision_views([decision_to_json(d) for d in decisions])
    by_code = {v.code: v for v in shown}
    d99454 = next(d for d in decisions if d.code == "99454")
    view = by_code["99454"]
    assert view.status.text == "Not billable" and view.status.tone is Tone.BAD
    assert [r.message for r in view.reasons] == [r.message for r in d99454.reasons]
    assert all(r.citation for r in view.reasons)
    failed = [r for r in view.reasons if r.verdict.text == "Failed"]
    assert failed and all(r.verdict.tone is Tone.BAD for r in failed)
    assert any(line.startswith("4 days:") for r in view.reasons for line in r.evidence)
    statuses = [v.status.text for v in shown]
    assert statuses.index("Billable") < statuses.index("Not billable")

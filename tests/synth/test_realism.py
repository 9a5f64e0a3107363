"""The panel looks like a real practice: proportions, diagnoses, devices, clocks and minutes.

Tolerances are several standard deviations wide for 1,500 patients, so the checks hold for
any seed while still catching a generator that drifts away from the intended mix.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import simple_icd_10_cm as icd

from caretally.model import CREDENTIAL_CLASS, PerformerClass
from caretally.synth import catalog
from tests.synth.bundle import Bundle, day, instant
from tests.synth.conftest import PANEL

WINDOW_FIRST = PANEL.start
WINDOW_LAST = date(2026, 4, 30)
US_ZONES = {
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
}


def share(count: int, total: int) -> float:
    return count / total if total else 0.0


def zones(panel: Bundle) -> dict[str, ZoneInfo]:
    return {r["patient_id"]: ZoneInfo(r["timezone"]) for r in panel.rows["patients"]}


# --------------------------------------------------------------------------------------
# Patients
# --------------------------------------------------------------------------------------


def test_demographics_look_like_a_medicare_panel(panel: Bundle) -> None:
    patients = panel.rows["patients"]
    n = len(patients)
    assert n == PANEL.patients
    assert len({p["patient_id"] for p in patients}) == n
    assert all(p["family_name"].strip() and p["given_name"].strip() for p in patients)
    assert {p["sex"] for p in patients} <= {"F", "M", "U"}
    born = [date.fromisoformat(p["birth_date"]) for p in patients]
    assert share(sum(1935 <= b.year <= 1960 for b in born), n) > 0.8
    assert min(born).year >= 1935 and max(born) < WINDOW_FIRST
    payers = Counter(p["payer"] for p in patients)
    assert share(payers["medicare"], n) > 0.65
    assert payers["medicare_advantage"] > 0 and payers["commercial"] > 0
    assert {p["timezone"] for p in patients} == US_ZONES
    for p in patients:
        if p["state"]:
            assert len(p["state"]) == 2 and p["postal_code"].isdigit() and len(p["postal_code"]) in (5, 9)


# --------------------------------------------------------------------------------------
# Enrollments
# --------------------------------------------------------------------------------------


def test_program_mix_is_within_tolerance(panel: Bundle) -> None:
    programs: dict[str, set[str]] = defaultdict(set)
    for e in panel.rows["enrollments"]:
        programs[e["patient_id"]].add(e["program"])
    mix = Counter("+".join(sorted(p)) for p in programs.values())
    n = len(programs)
    assert n == PANEL.patients
    expected = {"RPM": 0.40, "CCM+RPM": 0.25, "RTM": 0.10, "CCM": 0.15, "PCM": 0.10}
    assert set(mix) == set(expected)
    for combo, target in expected.items():
        assert abs(share(mix[combo], n) - target) < 0.05, (combo, mix[combo])


def test_every_diagnosis_is_a_billable_icd10cm_code(panel: Bundle) -> None:
    for code in catalog.all_diagnosis_codes():
        assert icd.is_valid_item(code) and icd.is_leaf(code), code
    used: set[str] = set()
    for e in panel.rows["enrollments"]:
        codes = e["diagnoses"].split(";")
        assert codes and len(codes) == len(set(codes))
        used.update(codes)
        if e["program"] == "CCM":
            assert len(codes) >= 2, e
    assert all(icd.is_valid_item(c) and icd.is_leaf(c) for c in used)
    assert {"I10", "E11.9", "J44.9", "M17.11"} <= used


def test_diagnoses_fit_the_program(panel: Bundle) -> None:
    rtm = {c for _k, _w, codes in catalog.RTM_KINDS for c in codes} | set(catalog.RTM_SECONDARY)
    rpm = {c for _w, codes, _k in catalog.RPM_CONDITIONS for c in codes}
    for e in panel.rows["enrollments"]:
        codes = set(e["diagnoses"].split(";"))
        if e["program"] == "RTM":
            assert codes <= rtm, e
        elif e["program"] == "RPM":
            assert codes <= rpm, e


def test_enrollment_dates_consent_and_prerequisites_vary_realistically(panel: Bundle) -> None:
    rows = panel.rows["enrollments"]
    n = len(rows)
    people = panel.by_id("practitioners", "practitioner_id")
    starts = [date.fromisoformat(e["start_date"]) for e in rows]
    assert share(sum(s < WINDOW_FIRST for s in starts), n) > 0.5
    assert any(WINDOW_FIRST <= s <= WINDOW_LAST for s in starts)
    ends = [(day(e["end_date"]), date.fromisoformat(e["start_date"])) for e in rows if e["end_date"]]
    assert ends and all(end >= start and WINDOW_FIRST <= end <= WINDOW_LAST for end, start in ends)
    missing = sum(not e["consent_date"] for e in rows)
    late = sum(bool(e["consent_date"]) and e["consent_date"] > e["start_date"] for e in rows)
    assert 0.02 < share(missing, n) < 0.09
    assert 0.003 < share(late, n) < 0.05
    assert any(not e["order_date"] for e in rows if e["program"] == "RPM")
    assert any(not e["initiating_visit_date"] for e in rows)
    assert 0 < sum(e["established_patient"] == "false" for e in rows) < 0.1 * n
    assert {e["established_patient"] for e in rows} == {"true", "false"}
    complex_ccm = [e for e in rows if e["complexity"] == "complex"]
    assert complex_ccm and all(e["program"] == "CCM" for e in complex_ccm)
    assert len(complex_ccm) < 0.3 * sum(e["program"] == "CCM" for e in rows)
    for e in rows:
        biller = CREDENTIAL_CLASS[people[e["billing_practitioner_id"]]["credential"]]
        if e["program"] == "RTM":
            assert biller in (PerformerClass.PRACTITIONER, PerformerClass.THERAPIST)
        else:
            assert biller is PerformerClass.PRACTITIONER
    assert any(
        CREDENTIAL_CLASS[people[e["billing_practitioner_id"]]["credential"]] is PerformerClass.THERAPIST
        for e in rows
    )


# --------------------------------------------------------------------------------------
# Devices and readings
# --------------------------------------------------------------------------------------


def test_devices_match_their_program(panel: Bundle) -> None:
    devices = panel.rows["devices"]
    enrolled = {(e["patient_id"], e["program"]): e for e in panel.rows["enrollments"]}
    kinds = defaultdict(set)
    for d in devices:
        kinds[d["program"]].add(d["kind"])
        enrollment = enrolled[(d["patient_id"], d["program"])]
        assigned = date.fromisoformat(d["assigned_date"])
        assert abs((assigned - date.fromisoformat(enrollment["start_date"])).days) <= 7
        if d["setup_date"]:
            assert 0 <= (date.fromisoformat(d["setup_date"]) - assigned).days <= 5
        if d["returned_date"]:
            assert date.fromisoformat(d["returned_date"]) >= assigned
    assert kinds["RPM"] == {"blood_pressure", "weight", "glucose", "pulse_oximetry"}
    assert kinds["RTM"] == {"respiratory", "musculoskeletal", "cognitive_behavioral"}
    assert any(d["medical_device"] == "false" for d in devices)
    assert share(sum(d["medical_device"] == "false" for d in devices), len(devices)) < 0.1
    assert any(not d["setup_date"] for d in devices)


def test_adherence_profiles_are_mixed_as_intended(panel: Bundle) -> None:
    """Days of data per 30, for first devices in use through all of March."""
    devices = {
        d["device_id"]: d
        for d in panel.rows["devices"]
        if d["device_id"].endswith("-1")
        and date.fromisoformat(d["setup_date"] or d["assigned_date"]) < WINDOW_FIRST
        and not d["returned_date"]
    }
    tz = zones(panel)
    march_days: dict[str, set[date]] = {d: set() for d in devices}
    for r in panel.rows["readings"]:
        if r["device_id"] in march_days:
            local = instant(r["measured_at"]).astimezone(tz[r["patient_id"]]).date()
            if local.month == 3:
                march_days[r["device_id"]].add(local)
    rates = [len(days) * 30 / 31 for days in march_days.values()]
    n = len(rates)
    assert n > 500
    none = share(sum(r < 1.5 for r in rates), n)
    low = share(sum(1.5 <= r < 15.75 for r in rates), n)
    high = share(sum(r >= 15.75 for r in rates), n)
    assert abs(none - 0.08) < 0.04, none
    assert abs(low - 0.22) < 0.06, low
    assert abs(high - 0.70) < 0.06, high
    assert any(len(days) == 16 for days in march_days.values())  # right on the threshold


def _plausible(kind: str, value: str) -> bool:
    if kind == "blood_pressure":
        systolic, diastolic = (int(v) for v in value.split("/"))
        return 80 <= systolic <= 200 and 40 <= diastolic <= 125 and diastolic < systolic
    bounds = {
        "heart_rate": (40, 120),
        "weight": (100, 330),
        "glucose": (45, 320),
        "spo2": (85, 100),
        "pain_score": (0, 10),
        "symptom_score": (0, 10),
        "mood_score": (0, 10),
        "exercise_minutes": (1, 120),
        "inhaler_actuations": (0, 12),
        "cbt_exercise_completed": (1, 1),
    }
    low, high = bounds[kind]
    return low <= float(value) <= high


def test_readings_have_plausible_values_units_and_transmission(panel: Bundle) -> None:
    units = {
        "blood_pressure": "mmHg",
        "heart_rate": "bpm",
        "weight": "lbs",
        "glucose": "mg/dL",
        "spo2": "%",
    }
    devices = panel.by_id("devices", "device_id")
    readings = panel.rows["readings"]
    assert len({r["reading_id"] for r in readings}) == len(readings)
    for r in readings:
        assert devices[r["device_id"]]["patient_id"] == r["patient_id"]
        assert _plausible(r["type"], r["value"]), r
        if r["type"] in units:
            assert r["unit"] == units[r["type"]], r
    transmission = Counter(r["transmission"] for r in readings)
    assert set(transmission) == {"auto", "manual"}
    assert 0.005 < share(transmission["manual"], len(readings)) < 0.1


def test_readings_happen_at_plausible_local_hours_across_the_dst_change(panel: Bundle) -> None:
    """Local times come from zoneinfo, not from the generator, so a DST slip shows up here."""
    tz = zones(panel)
    allowed = [
        (0, 3720),
        (6 * 3600, 10 * 3600 + 120),
        (12 * 3600, 14 * 3600 + 120),
        (18 * 3600, 22 * 3600 + 120),
        (23 * 3600, 24 * 3600),
    ]
    near_midnight = date_differs = 0
    seen_offsets: dict[bool, set[timedelta]] = {True: set(), False: set()}
    for r in panel.rows["readings"]:
        utc = instant(r["measured_at"])
        assert utc.utcoffset() == timedelta(0)
        local = utc.astimezone(tz[r["patient_id"]])
        assert WINDOW_FIRST <= local.date() <= WINDOW_LAST
        seconds = local.hour * 3600 + local.minute * 60 + local.second
        assert any(lo <= seconds < hi for lo, hi in allowed), (r, local)
        if local.hour in (23, 0):
            near_midnight += 1
            date_differs += local.date() != utc.date()
        # New York springs forward on 2026-03-08; skip that day, whose small hours are still -5.
        if str(tz[r["patient_id"]]) == "America/New_York" and local.date() != date(2026, 3, 8):
            seen_offsets[local.date() > date(2026, 3, 8)].add(local.utcoffset() or timedelta(0))
    assert near_midnight > 100 and date_differs > 50
    assert seen_offsets == {False: {timedelta(hours=-5)}, True: {timedelta(hours=-4)}}


def test_readings_stay_inside_the_device_life(panel: Bundle) -> None:
    tz = zones(panel)
    devices = panel.by_id("devices", "device_id")
    for r in panel.rows["readings"]:
        d = devices[r["device_id"]]
        local = instant(r["measured_at"]).astimezone(tz[r["patient_id"]]).date()
        assert local >= date.fromisoformat(d["setup_date"] or d["assigned_date"])
        if d["returned_date"]:
            assert local <= date.fromisoformat(d["returned_date"])


# --------------------------------------------------------------------------------------
# Time entries
# --------------------------------------------------------------------------------------


def test_time_entries_are_valid_and_never_overlap(panel: Bundle) -> None:
    people = panel.by_id("practitioners", "practitioner_id")
    enrolled = defaultdict(dict)
    for e in panel.rows["enrollments"]:
        enrolled[e["patient_id"]][e["program"]] = e
    tz = zones(panel)
    entries = panel.rows["time_entries"]
    assert len({e["entry_id"] for e in entries}) == len(entries)
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for e in entries:
        started = instant(e["started_at"])
        zone = tz[e["patient_id"]]
        # The written offset is the one the patient's zone had at that wall-clock time.
        wall = started.replace(tzinfo=None)
        assert wall.replace(tzinfo=zone).utcoffset() == started.utcoffset(), e
        seconds = int(e["seconds"])
        assert 0 < seconds <= 12 * 3600
        assert e["interactive"] in ("true", "false")
        if e["interactive"] == "true":
            assert e["modality"] in ("phone", "video", "portal", "text"), e
        assert e["practitioner_id"] in people
        if e["program"]:
            enrollment = enrolled[e["patient_id"]][e["program"]]
            local = started.astimezone(zone).date()
            assert local >= date.fromisoformat(enrollment["start_date"])
            assert enrollment["end_date"] == "" or local <= date.fromisoformat(enrollment["end_date"])
            performer = CREDENTIAL_CLASS[people[e["practitioner_id"]]["credential"]]
            if e["program"] != "RTM":
                assert performer is not PerformerClass.THERAPIST, e
        spans[e["patient_id"]].append((started, started + timedelta(seconds=seconds)))
    for intervals in spans.values():
        intervals.sort()
        for (_s1, end), (start, _e2) in pairwise(intervals):
            assert start >= end


def test_no_clinician_is_booked_for_two_patients_at_once(panel: Bundle) -> None:
    booked: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for e in panel.rows["time_entries"]:
        started = instant(e["started_at"])
        booked[e["practitioner_id"]].append(
            (started, started + timedelta(seconds=int(e["seconds"])), e["patient_id"])
        )
    clashes = []
    for who, intervals in booked.items():
        intervals.sort()
        for (_s1, end, p1), (start, _e2, p2) in pairwise(intervals):
            if start < end and p1 != p2:
                clashes.append((who, p1, p2, start))
    assert clashes == []


def _monthly_totals(panel: Bundle) -> dict[tuple[str, str, str], list[dict[str, str]]]:
    tz = zones(panel)
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = defaultdict(list)
    for e in panel.rows["time_entries"]:
        month = instant(e["started_at"]).astimezone(tz[e["patient_id"]]).strftime("%Y-%m")
        groups[(e["patient_id"], month, e["program"])].append(e)
    return groups


def test_monthly_minutes_pile_up_around_the_billing_thresholds(panel: Bundle) -> None:
    groups = _monthly_totals(panel)
    totals = Counter()
    for (_p, _m, program), entries in groups.items():
        total = sum(int(e["seconds"]) for e in entries)
        for name, low, high in (
            ("8-9", 480, 599),
            ("19:xx", 1140, 1199),
            ("20-25", 1200, 1559),
            ("38-45", 2280, 2759),
            ("60+", 3600, 10**6),
        ):
            if program and low <= total <= high:
                totals[name] += 1
        if program and 1190 <= total <= 1199:
            totals["19:5x"] += 1  # shows as 19:5x on a timesheet, and is still not 20 minutes
    assert all(totals[name] >= 10 for name in ("8-9", "19:xx", "20-25", "38-45", "60+")), totals
    assert totals["19:5x"] >= 1
    # Seconds-level durations: most entries are not whole minutes.
    entries = panel.rows["time_entries"]
    assert share(sum(int(e["seconds"]) % 60 != 0 for e in entries), len(entries)) > 0.5


def test_interactive_contact_is_mostly_live_and_sometimes_missing(panel: Bundle) -> None:
    groups = _monthly_totals(panel)
    monitored = {k: v for k, v in groups.items() if k[2] in ("RPM", "RTM")}
    live = sum(
        any(e["interactive"] == "true" and e["modality"] in ("phone", "video") for e in v)
        for v in monitored.values()
    )
    asynchronous_only = sum(
        any(e["interactive"] == "true" for e in v)
        and not any(e["interactive"] == "true" and e["modality"] in ("phone", "video") for e in v)
        for v in monitored.values()
    )
    none = sum(not any(e["interactive"] == "true" for e in v) for v in monitored.values())
    n = len(monitored)
    assert share(live, n) > 0.6
    assert asynchronous_only > 0.03 * n
    assert none > 0.05 * n


def test_practitioner_time_and_unassigned_time_exist(panel: Bundle) -> None:
    people = panel.by_id("practitioners", "practitioner_id")
    by_program = defaultdict(Counter)
    for e in panel.rows["time_entries"]:
        performer = CREDENTIAL_CLASS[people[e["practitioner_id"]]["credential"]]
        by_program[e["program"]][performer] += 1
    for program in ("RPM", "CCM", "PCM"):
        assert by_program[program][PerformerClass.PRACTITIONER] > 0, program
        assert by_program[program][PerformerClass.STAFF] > 0, program
    assert by_program["RTM"][PerformerClass.THERAPIST] > 0
    assert sum(by_program[""].values()) > 0
    assert any(e["activity"] == catalog.INTERPRETATION_ACTIVITY for e in panel.rows["time_entries"])

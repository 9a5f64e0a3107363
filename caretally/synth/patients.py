"""One synthetic patient: demographics, program enrollments and devices.

The plan is pure data drawn from the patient's own random stream, so a patient looks the
same whatever else is generated and however the work is split. The proportions (program
mix, missing consent, late set-up …) are chosen to put every billing edge case into a
bundle of a few dozen patients while keeping the bulk ordinary.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from caretally.synth import catalog
from caretally.synth.config import Window
from caretally.synth.identifiers import make_mbi
from caretally.synth.practice import Clinician, Practice

#: Program combinations and their share of the panel (percent).
PROGRAM_MIX: tuple[tuple[tuple[str, ...], int], ...] = (
    (("RPM",), 40),
    (("RPM", "CCM"), 25),
    (("RTM",), 10),
    (("CCM",), 15),
    (("PCM",), 10),
)

#: Adherence profile → share of monitored patients; targets are days of data per 30 days.
ADHERENCE: tuple[tuple[str, int], ...] = (("none", 8), ("low", 22), ("high", 70))

COMPLEX_CCM_SHARE = 0.12


@dataclass(slots=True)
class EnrollmentPlan:
    enrollment_id: str
    program: str
    start: date
    end: date | None
    consent: date | None
    billing: Clinician
    diagnoses: tuple[str, ...]
    complex: bool
    order_date: date | None
    established: bool
    initiating_visit: date | None


@dataclass(slots=True)
class DevicePlan:
    device_id: str
    program: str
    kind: str
    model: str
    medical: bool
    setup: date | None
    assigned: date
    returned: date | None
    target_days: int  # days of data per 30 the patient aims at with this device


@dataclass(slots=True)
class PatientPlan:
    index: int
    patient_id: str
    family: str
    given: str
    sex: str
    birth: date
    timezone: str
    payer: str
    member_id: str
    address_line: str
    city: str
    state: str
    postal_code: str
    programs: tuple[str, ...]
    adherence: str
    readings_per_day: tuple[int, int, int]  # weights for 1, 2, 3 readings on a day of data
    night_owl: bool  # takes readings close to local midnight
    paired_bp: bool  # follows the "two cuff readings a minute apart" advice
    manual_only: bool  # types values in instead of letting the device transmit
    care_team: tuple[Clinician, ...]  # staff who log most of this patient's time
    enrollments: list[EnrollmentPlan] = field(default_factory=list)
    devices: list[DevicePlan] = field(default_factory=list)


def patient_id_for(index: int) -> str:
    return f"P{index:06d}"


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([k for k, _ in table], weights=[w for _, w in table])[0]


def _birth_date(rng: random.Random, payer: str) -> date:
    if payer in ("medicare", "medicare_advantage"):
        # Mostly 65+; a few younger beneficiaries entitled through disability or ESRD.
        year = rng.randint(1935, 1960) if rng.random() < 0.93 else rng.randint(1961, 1985)
    elif payer == "commercial":
        year = rng.randint(1950, 1990)
    else:
        year = rng.randint(1945, 1995)
    return date(year, 1, 1) + timedelta(days=rng.randrange(365))


def _member_id(rng: random.Random, payer: str, index: int, salt: int) -> str:
    digits = "0123456789"
    if payer == "medicare":
        return make_mbi(rng, index, salt)
    if payer == "medicare_advantage":
        return rng.choice(("XJH", "UHC", "HUM", "WCG")) + "".join(rng.choices(digits, k=9))
    if payer == "commercial":
        return rng.choice(("BCB", "AET", "CGN")) + "".join(rng.choices(digits, k=10))
    return "".join(rng.choices(digits, k=9)) + rng.choice(("A", "B", "C"))


def _enrollment_dates(rng: random.Random, window: Window) -> tuple[date, date | None]:
    """Most episodes began well before the window; a third start inside it; a few end in it."""
    if rng.random() < 0.68:
        start = window.first - timedelta(days=rng.randint(10, 540))
    else:
        start = window.first + timedelta(days=rng.randrange(window.days))
    end: date | None = None
    earliest_end = max(start, window.first) + timedelta(days=2)
    if rng.random() < 0.05 and earliest_end < window.last:
        end = earliest_end + timedelta(days=rng.randrange((window.last - earliest_end).days))
    return start, end


def _consent(rng: random.Random, start: date) -> date | None:
    roll = rng.random()
    if roll < 0.05:
        return None  # never documented
    if roll < 0.07:
        return start + timedelta(days=rng.randint(1, 20))  # documented after services began
    return start if rng.random() < 0.35 else start - timedelta(days=rng.randint(1, 21))


def _optional_before(rng: random.Random, start: date, present: float, max_days: int) -> date | None:
    return start - timedelta(days=rng.randint(0, max_days)) if rng.random() < present else None


def _chronic_codes(rng: random.Random, count: int, first: tuple[str, ...] = ()) -> tuple[str, ...]:
    codes = list(first)
    names = [c for c, _ in catalog.CHRONIC]
    weights = [w for _, w in catalog.CHRONIC]
    while len(codes) < count:
        code = rng.choices(names, weights=weights)[0]
        if code not in codes:
            codes.append(code)
    return tuple(codes)


def plan_patient(
    rng: random.Random, index: int, window: Window, practice: Practice, salt: int
) -> PatientPlan:
    """Patient ``index`` without readings or time, which are drawn next from the same stream."""
    sex = rng.choices(("F", "M", "U"), weights=(54, 45, 1))[0]
    given_pool = (
        catalog.FEMALE_GIVEN if sex == "F" or (sex == "U" and rng.random() < 0.5) else catalog.MALE_GIVEN
    )
    zone_name, _w, places = rng.choices(catalog.ZONES, weights=[w for _, w, _ in catalog.ZONES])[0]
    place = rng.choice(places)
    payer = _weighted(rng, catalog.PAYERS)
    has_address = rng.random() < 0.92
    postal = place.zip_prefix + f"{rng.randrange(100):02d}"
    if rng.random() < 0.1:
        postal += f"{rng.randrange(10000):04d}"
    programs = rng.choices([p for p, _ in PROGRAM_MIX], weights=[w for _, w in PROGRAM_MIX])[0]
    patient = PatientPlan(
        index=index,
        patient_id=patient_id_for(index),
        family=rng.choice(catalog.FAMILY),
        given=rng.choice(given_pool),
        sex=sex,
        birth=_birth_date(rng, payer),
        timezone=zone_name,
        payer=payer,
        member_id=_member_id(rng, payer, index, salt),
        address_line=f"{rng.randint(1, 9899)} {rng.choice(catalog.STREETS)}" if has_address else "",
        city=place.city if has_address else "",
        state=place.state if has_address else "",
        postal_code=postal if has_address else "",
        programs=programs,
        adherence=_weighted(rng, ADHERENCE),
        readings_per_day=rng.choice(((25, 50, 25), (45, 35, 20), (15, 50, 35))),
        night_owl=rng.random() < 0.12,
        paired_bp=rng.random() < 0.45,
        manual_only=rng.random() < 0.02,
        care_team=tuple(rng.sample(practice.staff, k=min(2, len(practice.staff)))),
    )
    primary = rng.choice(practice.billing)
    for program in programs:
        _add_program(rng, patient, program, window, practice, primary)
    return patient


def _add_program(
    rng: random.Random,
    patient: PatientPlan,
    program: str,
    window: Window,
    practice: Practice,
    primary: Clinician,
) -> None:
    start, end = _enrollment_dates(rng, window)
    billing = primary
    complex_ccm = False
    kinds: tuple[str, ...] = ()
    if program == "RPM":
        _w, diagnoses, kinds = rng.choices(
            catalog.RPM_CONDITIONS, weights=[w for w, _, _ in catalog.RPM_CONDITIONS]
        )[0]
        # Extra devices only for some patients whose condition calls for more than one.
        kinds = kinds if rng.random() < 0.6 else kinds[:1]
    elif program == "RTM":
        kind, _w, options = rng.choices(catalog.RTM_KINDS, weights=[w for _, w, _ in catalog.RTM_KINDS])[0]
        kinds = (kind,)
        diagnoses = (rng.choice(options),)
        if kind == "musculoskeletal" and rng.random() < 0.4:
            diagnoses += (rng.choice(catalog.RTM_SECONDARY),)
        if rng.random() < 0.7 and practice.rtm_billers:
            billing = rng.choice(practice.rtm_billers)
    elif program == "CCM":
        complex_ccm = rng.random() < COMPLEX_CCM_SHARE
        # A patient also on RPM has the monitored condition at the top of the care plan.
        monitored_dx = tuple(c for e in patient.enrollments if e.program == "RPM" for c in e.diagnoses)
        count = max(len(monitored_dx), rng.choice((2, 2, 3, 3, 4, 5)) + (1 if complex_ccm else 0))
        diagnoses = _chronic_codes(rng, count, monitored_dx)
    else:  # PCM: one serious condition leads, comorbidities may follow
        names = [c for c, _ in catalog.PCM_PRIMARY]
        lead = rng.choices(names, weights=[w for _, w in catalog.PCM_PRIMARY])[0]
        diagnoses = (lead,) + (_chronic_codes(rng, 2, (lead,))[1:] if rng.random() < 0.5 else ())
    monitored = program in ("RPM", "RTM")
    enrollment = EnrollmentPlan(
        enrollment_id=f"E{patient.index:06d}-{program}",
        program=program,
        start=start,
        end=end,
        consent=_consent(rng, start),
        billing=billing,
        diagnoses=diagnoses,
        complex=complex_ccm,
        order_date=_optional_before(rng, start, 0.9 if monitored else 0.2, 30),
        established=rng.random() >= 0.04,
        initiating_visit=_optional_before(rng, start, 0.6 if monitored else 0.85, 300),
    )
    patient.enrollments.append(enrollment)
    for number, kind in enumerate(kinds, start=len(patient.devices) + 1):
        patient.devices.append(_device(rng, patient, enrollment, kind, number))


def _target_days(rng: random.Random, adherence: str) -> int:
    if adherence == "none":
        return rng.choice((0, 0, 1))
    if adherence == "low":
        return rng.randint(2, 15)
    # Skewed towards good adherence, with 16 (the threshold itself) well represented.
    return min(30, 16 + int(15 * rng.random() ** 1.4))


def _device(
    rng: random.Random, patient: PatientPlan, enrollment: EnrollmentPlan, kind: str, number: int
) -> DevicePlan:
    medical = rng.random() >= 0.03
    model = rng.choice(catalog.DEVICE_MODELS[kind] if medical else catalog.NON_MEDICAL_MODELS)
    if rng.random() < 0.04:
        # Shipped before the episode began: its first days fall outside the enrollment.
        assigned = enrollment.start - timedelta(days=rng.randint(2, 6))
    else:
        assigned = enrollment.start + timedelta(days=rng.choice((0, 0, 1, 2, 3, 5)))
    if enrollment.end is not None and assigned > enrollment.end:
        assigned = enrollment.start  # a short episode: the device went out on day one
    setup = assigned + timedelta(days=rng.choice((0, 0, 0, 1, 2, 3))) if rng.random() >= 0.06 else None
    returned = enrollment.end + timedelta(days=rng.randint(0, 4)) if enrollment.end else None
    target = _target_days(rng, patient.adherence)
    if number > 1:
        target = max(0, target - rng.randint(0, 8))  # the second device is used less faithfully
    return DevicePlan(
        device_id=f"D{patient.index:06d}-{number}",
        program=enrollment.program,
        kind=kind,
        model=model,
        medical=medical,
        setup=setup,
        assigned=assigned,
        returned=returned,
        target_days=target,
    )

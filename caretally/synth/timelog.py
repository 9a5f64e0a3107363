"""Care-management time for one patient, month by month.

Each program gets a monthly total drawn from a distribution that deliberately piles up
around the billing thresholds (8–9, 19:xx, 20–25, 38–45, 60+ minutes) with seconds-level
durations, then the total is split into entries: a live call (or only an asynchronous
message, or nothing), review work, practitioner time for 99091/99491/99424, and some time
nobody assigned to a program. Entries of a patient never overlap in time, and no
clinician is booked for two patients at once: a ``StaffCalendar`` shared by every patient
of the practice moves an entry to the next free slot of its day (a double-booked nurse is
exactly what an auditor flags, so a realistic practice must not do it by accident).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from caretally.synth import catalog
from caretally.synth.clock import local_text, utc_offset_seconds
from caretally.synth.config import Window
from caretally.synth.patients import EnrollmentPlan, PatientPlan
from caretally.synth.practice import Clinician, Practice

TimeRow = tuple[str, str, str, str, str, str, str, str, str, str]

#: (weight, low seconds, high seconds) of a month's total. Zero means no time that month.
Buckets = tuple[tuple[int, int, int], ...]

MONITORING_MINUTES: Buckets = (
    (8, 0, 0),
    (6, 180, 479),
    (5, 480, 599),  # 8–9 minutes: just short of the 10-minute tier
    (18, 600, 1139),
    (7, 1140, 1199),  # 19:00–19:59: one second short of 20 minutes is still 19
    (28, 1200, 1559),
    (10, 1560, 2279),
    (8, 2280, 2759),  # 38–45: around the second 20-minute block
    (4, 2760, 3599),
    (6, 3600, 4500),
)
CCM_STAFF_MINUTES: Buckets = (
    (5, 0, 0),
    (6, 300, 899),
    (8, 900, 1139),
    (6, 1140, 1199),
    (30, 1200, 1559),
    (15, 1560, 2279),
    (12, 2280, 2759),
    (6, 2760, 3599),
    (7, 3600, 4800),
)
CCM_COMPLEX_MINUTES: Buckets = ((12, 2400, 3599), (58, 3600, 5399), (30, 5400, 7800))
PRACTITIONER_CCM_MINUTES: Buckets = ((25, 1200, 1799), (60, 1800, 2699), (15, 3600, 4200))
PCM_MINUTES: Buckets = (
    (8, 0, 0),
    (10, 900, 1679),
    (10, 1680, 1799),  # 28–29:59: just short of 30
    (50, 1800, 2699),
    (12, 2700, 3599),
    (10, 3600, 5400),
)
INTERPRETATION_MINUTES: Buckets = ((30, 1200, 1799), (70, 1800, 2700))

#: A crowded day is repacked from 07:00 if it would run past 23:00.
EARLIEST_START = 7 * 3600
LATEST_END = 23 * 3600

SHARE_99091 = 0.12
SHARE_PRACTITIONER_CCM = 0.12
SHARE_PRACTITIONER_PCM = 0.6
SHARE_UNASSIGNED = 0.08
#: Patient-months in two or more programs where some routine time is logged untagged.
SHARE_UNTAGGED_MULTI = 0.4


@dataclass(slots=True)
class Entry:
    day: date
    start: int  # seconds after local midnight
    seconds: int
    program: str
    clinician: Clinician
    activity: str
    interactive: bool
    modality: str


def _draw(rng: random.Random, buckets: Buckets) -> int:
    _w, low, high = rng.choices(buckets, weights=[b[0] for b in buckets])[0]
    return rng.randint(low, high)


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """``total`` seconds in ``parts`` pieces of at least a minute each (fewer if short)."""
    parts = max(1, min(parts, total // 60))
    if parts == 1:
        return [total]
    # Every piece gets its minute first; what is left is shared out at random.
    spare = total - 60 * parts
    weights = [0.3 + rng.random() for _ in range(parts)]
    scale = spare / sum(weights)
    pieces = [60 + int(w * scale) for w in weights[:-1]]
    pieces.append(total - sum(pieces))
    return pieces


class MonthPlanner:
    """Entries of one patient in one calendar-month segment."""

    def __init__(self, rng: random.Random, patient: PatientPlan, practice: Practice, seg: tuple[date, date]):
        self.rng = rng
        self.patient = patient
        self.practice = practice
        self.seg = seg
        self.entries: list[Entry] = []

    def active_days(self, enrollment: EnrollmentPlan) -> tuple[date, int] | None:
        first = max(self.seg[0], enrollment.start)
        last = self.seg[1] if enrollment.end is None else min(self.seg[1], enrollment.end)
        return (first, (last - first).days + 1) if first <= last else None

    def add(
        self,
        span: tuple[date, int],
        seconds: int,
        program: str,
        who: Clinician,
        activity: str,
        interactive: bool = False,
        modality: str = "",
    ) -> Entry:
        rng = self.rng
        day = span[0] + timedelta(days=rng.randrange(span[1]))
        start = 8 * 3600 + 60 * rng.randrange(9 * 60 + 30)  # office hours, whole minutes
        entry = Entry(day, start, seconds, program, who, activity, interactive, modality)
        self.entries.append(entry)
        return entry

    def staff(self) -> Clinician:
        team = self.patient.care_team
        return team[0] if self.rng.random() < 0.75 or len(team) == 1 else team[1]

    def work(
        self, span: tuple[date, int], total: int, program: str, performers: list[Clinician], live_call: bool
    ) -> None:
        """Split ``total`` into a call (when asked) and review entries by ``performers``."""
        rng = self.rng
        if total <= 0:
            return
        call_entry: Entry | None = None
        if live_call:
            roll = rng.random()
            call = min(total, 120 + int(rng.random() * 840))
            if roll < 0.76:
                modality = "phone" if rng.random() < 0.72 else "video"
            elif roll < 0.88:
                modality = "portal" if rng.random() < 0.6 else "text"  # asynchronous: not real time
            else:
                modality = ""  # no interactive contact at all this month
            if modality:
                call_entry = self.add(
                    span, call, program, performers[0], catalog.CALL_ACTIVITY, True, modality
                )
                total -= call
        if total < 60:
            if total > 0 and call_entry is not None:
                call_entry.seconds += total  # a few seconds left over: the call ran longer
            elif total > 0:
                self.add(span, total, program, performers[0], rng.choice(catalog.ACTIVITIES[program]))
            return
        for piece in _split(rng, total, 1 + total // 720 + rng.randint(-1, 1)):
            who = performers[0] if len(performers) == 1 or rng.random() < 0.8 else rng.choice(performers[1:])
            modality = "portal" if rng.random() < 0.08 else ""
            self.add(span, piece, program, who, rng.choice(catalog.ACTIVITIES[program]), False, modality)

    def plan(self) -> list[Entry]:
        rng = self.rng
        for enrollment in self.patient.enrollments:
            span = self.active_days(enrollment)
            if span is None:
                continue
            program = enrollment.program
            billing = enrollment.billing
            if program in ("RPM", "RTM"):
                if program == "RTM" and billing.performer == "therapist":
                    assistants = [t for t in self.practice.therapists if t.credential.endswith("A")]
                    performers = [billing, *assistants[:1]]
                else:
                    performers = [self.staff(), billing]
                self.work(span, _draw(rng, MONITORING_MINUTES), program, performers, live_call=True)
                if program == "RPM" and rng.random() < SHARE_99091:
                    total = _draw(rng, INTERPRETATION_MINUTES)
                    for piece in _split(rng, total, rng.randint(1, 3)):
                        self.add(span, piece, program, billing, catalog.INTERPRETATION_ACTIVITY)
            elif program == "CCM":
                if not enrollment.complex and rng.random() < SHARE_PRACTITIONER_CCM:
                    self.work(span, _draw(rng, PRACTITIONER_CCM_MINUTES), program, [billing], live_call=True)
                    self.work(span, rng.randint(0, 600), program, [self.staff()], live_call=False)
                else:
                    buckets = CCM_COMPLEX_MINUTES if enrollment.complex else CCM_STAFF_MINUTES
                    self.work(
                        span, _draw(rng, buckets), program, [self.staff(), self.staff()], live_call=True
                    )
            else:  # PCM
                who = billing if rng.random() < SHARE_PRACTITIONER_PCM else self.staff()
                self.work(span, _draw(rng, PCM_MINUTES), program, [who], live_call=True)
        programs = {e.program for e in self.patient.enrollments}
        if len(programs) >= 2 and rng.random() < SHARE_UNTAGGED_MULTI:
            # Staff serving a patient in two programs often log time without picking one:
            # the case where allocating it well matters.
            plain = [e for e in self.entries if e.program and not e.interactive]
            for entry in rng.sample(plain, min(len(plain), rng.randint(1, 3))):
                entry.program = ""
        if self.entries and rng.random() < SHARE_UNASSIGNED:
            # Time someone logged without saying which program it served.
            first = min(e.day for e in self.entries)
            self.add((first, 1), rng.randint(120, 900), "", self.staff(), rng.choice(catalog.ACTIVITIES[""]))
        return self._without_overlaps()

    def _without_overlaps(self) -> list[Entry]:
        """Pushes colliding entries later the same day; repacks a day that would run late.

        Entries stay on their planned local date (and so inside their enrollment), and no
        start lands in the small hours, where DST makes wall-clock times ambiguous.
        """
        ordered = sorted(self.entries, key=lambda e: (e.day, e.start, e.program, e.clinician.practitioner_id))
        by_day: dict[date, list[Entry]] = {}
        for entry in ordered:
            by_day.setdefault(entry.day, []).append(entry)
        for entries in by_day.values():
            end = 0
            for entry in entries:
                if entry.start < end:
                    entry.start = end + 60 * self.rng.randint(1, 15)
                end = entry.start + entry.seconds
            if end > LATEST_END:
                cursor = EARLIEST_START
                for entry in entries:
                    entry.start = cursor
                    cursor += entry.seconds + 60
        return ordered


#: Slots tried when an entry's planned time is taken: every 5 minutes of the working day.
SLOT_STEP = 300


class StaffCalendar:
    """Which UTC minutes each clinician is already booked, across every patient.

    One byte per minute of the bundle's window (plus a day each side for time zones) per
    clinician: about 130 KB per clinician for three months, checked with C-speed slices.
    Minutes an entry only partly covers count as busy, so two entries never share one.
    """

    def __init__(self, window: Window):
        self.origin = window.first.toordinal() - 2  # local dates east/west of UTC fit inside
        self.minutes = (window.days + 4) * 1440
        self.busy: dict[str, bytearray] = {}

    def _span(self, tz: str, day: date, start: int, seconds: int) -> tuple[int, int]:
        offset = utc_offset_seconds(tz, day, min(start // 3600, 23))
        first = (day.toordinal() - self.origin) * 86400 + start - offset
        return first // 60, -(-(first + seconds) // 60)

    def free(self, who: str, tz: str, day: date, start: int, seconds: int) -> bool:
        a, b = self._span(tz, day, start, seconds)
        booked = self.busy.get(who)
        return booked is None or booked.find(1, max(a, 0), min(b, self.minutes)) < 0

    def book(self, who: str, tz: str, day: date, start: int, seconds: int) -> None:
        a, b = self._span(tz, day, start, seconds)
        a, b = max(a, 0), min(b, self.minutes)
        booked = self.busy.setdefault(who, bytearray(self.minutes))
        booked[a:b] = b"\x01" * (b - a)

    def place(self, entries: list[Entry], tz: str) -> None:
        """Book each entry, moving it within its local day when its clinician is taken.

        Candidate starts run from the planned one to the end of the working day, then from
        its beginning; a start must also leave the patient's own other entries alone. In the
        rare case no slot is free the entry keeps its time (and the import's overlap
        warning will say so).
        """
        taken: dict[date, list[tuple[int, int]]] = {}
        for entry in entries:
            own = taken.setdefault(entry.day, [])
            who = entry.clinician.practitioner_id
            latest = LATEST_END - entry.seconds
            starts = [entry.start, *range(entry.start + SLOT_STEP, latest + 1, SLOT_STEP)]
            starts += range(EARLIEST_START, min(entry.start, latest + 1), SLOT_STEP)
            for start in starts:
                end = start + entry.seconds
                if all(end <= s or start >= e for s, e in own) and self.free(
                    who, tz, entry.day, start, entry.seconds
                ):
                    entry.start = start
                    break
            own.append((entry.start, entry.start + entry.seconds))
            self.book(who, tz, entry.day, entry.start, entry.seconds)


def time_entries_for(
    rng: random.Random,
    patient: PatientPlan,
    practice: Practice,
    window: Window,
    calendar: StaffCalendar | None = None,
) -> list[TimeRow]:
    rows: list[TimeRow] = []
    tz = patient.timezone
    for seg in window.segments:
        entries = MonthPlanner(rng, patient, practice, seg).plan()
        if calendar is not None:
            calendar.place(entries, tz)
        stamp = f"{seg[0].year}{seg[0].month:02d}"
        for number, e in enumerate(entries, start=1):
            rows.append(
                (
                    f"{patient.patient_id}-{stamp}-{number:02d}",
                    patient.patient_id,
                    e.clinician.practitioner_id,
                    e.program,
                    local_text(tz, e.day, e.start),
                    str(e.seconds),
                    e.activity,
                    "true" if e.interactive else "false",
                    e.modality,
                    rng.choice(catalog.CALL_NOTES if e.interactive else catalog.REVIEW_NOTES),
                )
            )
    return rows

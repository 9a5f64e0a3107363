"""Device readings for one patient: which days, what local times, what values.

This is the hot loop of the generator (millions of rows), so it draws with
``rng.random()`` rather than the slower helpers and formats text directly. Days of data
are sampled exactly per calendar-month segment from the device's target rate, so an
"adherent" patient really lands on 16+ days per 30 and a "low" one on 2–15.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date, timedelta

from caretally.synth.clock import utc_text
from caretally.synth.config import Window
from caretally.synth.patients import DevicePlan, PatientPlan

ReadingRow = tuple[str, str, str, str, str, str, str, str]

MORNING, MIDDAY, EVENING, NIGHT = 0, 1, 2, 3

#: Share of readings keyed in by hand even by patients whose device transmits.
STRAY_MANUAL = 0.02


def _slot_seconds(rng: random.Random, slot: int) -> int:
    r = rng.random()
    if slot == MORNING:
        return 21600 + int(r * 14400)  # 06:00–09:59
    if slot == MIDDAY:
        return 43200 + int(r * 7200)  # 12:00–13:59
    if slot == EVENING:
        return 64800 + int(r * 14400)  # 18:00–21:59
    # Within an hour of local midnight, either side: the UTC date differs from the local one.
    return 82800 + int(r * 3600) if r < 0.5 else int(rng.random() * 3600)


def _day_times(rng: random.Random, patient: PatientPlan) -> list[tuple[int, int]]:
    """(slot, seconds after local midnight) for one day of data, in clock order."""
    w1, w2, _w3 = patient.readings_per_day
    roll = rng.random() * 100
    count = 1 if roll < w1 else 2 if roll < w1 + w2 else 3
    slots = (MORNING, EVENING, MIDDAY)[:count]
    if patient.night_owl and rng.random() < 0.5:
        slots = (NIGHT, *slots[1:]) if count == 1 else (slots[0], NIGHT, *slots[2:])
    times = sorted((_slot_seconds(rng, s), s) for s in slots)
    return [(s, t) for t, s in times]


def _available(device: DevicePlan, seg_start: date, seg_end: date) -> tuple[date, date] | None:
    first = max(seg_start, device.setup or device.assigned)
    last = seg_end if device.returned is None else min(seg_end, device.returned)
    return (first, last) if first <= last else None


def data_days(rng: random.Random, device: DevicePlan, window: Window) -> list[date]:
    """The local dates on which ``device`` sends something, sorted."""
    days: list[date] = []
    for seg_start, seg_end in window.segments:
        span = _available(device, seg_start, seg_end)
        if span is None:
            continue
        available = (span[1] - span[0]).days + 1
        count = min(available, round(device.target_days * available / 30))
        if device.target_days and count == 0 and available >= 15:
            count = 1  # a "0–1 day" patient still sends the odd reading
        for offset in sorted(rng.sample(range(available), count)):
            days.append(span[0] + timedelta(days=offset))
    return days


class ValueModel:
    """A patient's physiology for one device: a baseline plus day-to-day noise.

    Trends (weight drift, improving scores) level off after 90 days of monitoring."""

    __slots__ = ("a", "b", "c", "kind", "rng")

    def __init__(self, rng: random.Random, kind: str):
        self.rng = rng
        self.kind = kind
        if kind == "blood_pressure":
            self.a, self.b, self.c = rng.uniform(112, 162), rng.uniform(66, 96), rng.uniform(60, 88)
        elif kind == "weight":
            self.a, self.b, self.c = rng.uniform(118, 310), rng.uniform(-0.08, 0.08), 0.0
        elif kind == "glucose":
            self.a, self.b, self.c = rng.uniform(92, 205), 0.0, 0.0
        elif kind == "pulse_oximetry":
            self.a, self.b, self.c = rng.uniform(91, 98), rng.uniform(62, 92), 0.0
        else:  # RTM: a symptom or engagement score that slowly improves
            self.a, self.b, self.c = rng.uniform(3, 8), rng.uniform(-0.05, 0.0), 0.0

    def noise(self, sd: float) -> float:
        """Gaussian noise cut at three standard deviations: no absurd outliers."""
        return max(-3 * sd, min(3 * sd, self.rng.gauss(0, sd)))

    def values(self, day_index: int, slot: int) -> list[tuple[str, str, str]]:
        """(type, value, unit) rows measured at one instant."""
        g = self.noise
        kind = self.kind
        if kind == "blood_pressure":
            systolic = int(self.a + g(8) - (4 if slot == EVENING else 0))
            diastolic = min(int(self.b + g(5)), systolic - 25)
            return [
                ("blood_pressure", f"{systolic}/{diastolic}", "mmHg"),
                ("heart_rate", str(int(self.c + g(6))), "bpm"),
            ]
        if kind == "weight":
            return [("weight", f"{self.a + self.b * min(day_index, 90) + g(0.7):.1f}", "lbs")]
        if kind == "glucose":
            meal = 0 if slot in (MORNING, NIGHT) else 38
            return [("glucose", str(max(45, int(self.a + meal + g(22)))), "mg/dL")]
        if kind == "pulse_oximetry":
            return [
                ("spo2", str(min(100, int(self.a + g(1.4)))), "%"),
                ("heart_rate", str(int(self.b + g(7))), "bpm"),
            ]
        score = min(10, max(0, round(self.a + self.b * min(day_index, 90) + g(1.1))))
        if kind == "musculoskeletal":
            return [
                ("pain_score", str(score), "score"),
                ("exercise_minutes", str(5 + int(self.rng.random() * 40)), "min"),
            ]
        if kind == "respiratory":
            return [
                ("inhaler_actuations", str(int(self.rng.random() * 6)), "puffs"),
                ("symptom_score", str(score), "score"),
            ]
        return [("mood_score", str(10 - score), "score"), ("cbt_exercise_completed", "1", "count")]


def readings_for(rng: random.Random, patient: PatientPlan, window: Window) -> Iterator[ReadingRow]:
    """Every reading of the patient in the window, device by device, in time order."""
    tz = patient.timezone
    pid = patient.patient_id
    manual_only = patient.manual_only
    for device in patient.devices:
        model = ValueModel(rng, device.kind)
        did = device.device_id
        anchor = device.setup or device.assigned
        paired = patient.paired_bp and device.kind == "blood_pressure"
        sequence = 0
        for day in data_days(rng, device, window):
            day_index = (day - anchor).days
            for slot, seconds in _day_times(rng, patient):
                transmission = "manual" if manual_only or rng.random() < STRAY_MANUAL else "auto"
                repeats = 2 if paired and rng.random() < 0.85 else 1
                for repeat in range(repeats):
                    # The second cuff reading follows the first by a minute or so.
                    at = seconds + repeat * (60 + int(rng.random() * 40))
                    measured = utc_text(tz, day, min(at, 86399))
                    for kind, value, unit in model.values(day_index, slot):
                        sequence += 1
                        yield (f"{did}-{sequence:05d}", pid, did, measured, kind, value, unit, transmission)

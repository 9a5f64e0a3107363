"""Writes a whole bundle, one patient at a time, straight to disk.

Determinism: the practice comes from a stream seeded with the run's seed, and each patient
draws from its own stream seeded with (seed, patient number). Nothing reads the clock,
``uuid4`` or the global ``random``; rows leave in patient order, and within a patient in
device and time order, so equal seeds give byte-identical files.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date
from pathlib import Path

from caretally.synth.config import SynthConfig, window_for, with_lead_in
from caretally.synth.identifiers import MBI_UNIQUE_SPACE, hardware_id
from caretally.synth.patients import PatientPlan, plan_patient
from caretally.synth.practice import Practice, build_practice
from caretally.synth.readings import readings_for
from caretally.synth.sink import BundleWriter
from caretally.synth.timelog import StaffCalendar, time_entries_for

Progress = Callable[[int], None]


def _iso(day: date | None) -> str:
    return "" if day is None else day.isoformat()


def practitioner_rows(practice: Practice) -> list[tuple[str, ...]]:
    return [(c.practitioner_id, c.npi, c.name, c.credential) for c in practice.everyone]


def patient_row(p: PatientPlan) -> tuple[str, ...]:
    return (
        p.patient_id,
        p.family,
        p.given,
        p.sex,
        p.birth.isoformat(),
        p.timezone,
        p.payer,
        p.member_id,
        p.address_line,
        p.city,
        p.state,
        p.postal_code,
    )


def enrollment_rows(p: PatientPlan) -> list[tuple[str, ...]]:
    return [
        (
            e.enrollment_id,
            p.patient_id,
            e.program,
            e.start.isoformat(),
            _iso(e.end),
            _iso(e.consent),
            e.billing.practitioner_id,
            ";".join(e.diagnoses),
            "complex" if e.complex else "",
            _iso(e.order_date),
            "true" if e.established else "false",
            _iso(e.initiating_visit),
        )
        for e in p.enrollments
    ]


def device_rows(p: PatientPlan, seed: int) -> list[tuple[str, ...]]:
    return [
        (
            d.device_id,
            p.patient_id,
            d.program,
            d.kind,
            "true" if d.medical else "false",
            _iso(d.setup),
            d.assigned.isoformat(),
            _iso(d.returned),
            hardware_id(seed, d.device_id, d.model),
            d.model,
        )
        for d in p.devices
    ]


def patient_stream(seed: int, index: int) -> random.Random:
    """The patient's own random stream: independent of every other patient's."""
    return random.Random(f"caretally-synth/{seed}/patient/{index}")


def synthesize(config: SynthConfig, out: Path, progress: Progress | None = None) -> dict[str, int]:
    """Writes the bundle into ``out`` and returns the number of data rows per file stem.

    ``progress`` (if given) is called with the number of patients finished, every 1,000.
    """
    window = window_for(config.start, config.months)
    reading_window = with_lead_in(window, config.lead_in_days)
    master = random.Random(f"caretally-synth/{config.seed}/practice")
    practice = build_practice(master, config.patients)
    mbi_salt = master.randrange(MBI_UNIQUE_SPACE)
    calendar = StaffCalendar(window)
    with BundleWriter(Path(out), config.fmt) as writer:
        writer.write("practitioners", practitioner_rows(practice))
        for index in range(1, config.patients + 1):
            rng = patient_stream(config.seed, index)
            patient = plan_patient(rng, index, window, practice, mbi_salt)
            writer.write("patients", [patient_row(patient)])
            writer.write("enrollments", enrollment_rows(patient))
            writer.write("devices", device_rows(patient, config.seed))
            writer.write("readings", list(readings_for(rng, patient, reading_window)))
            writer.write("time_entries", time_entries_for(rng, patient, practice, window, calendar))
            if progress is not None and index % 1000 == 0:
                progress(index)
        if progress is not None:
            progress(config.patients)
        return dict(writer.counts)

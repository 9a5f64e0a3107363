"""Worklist predictions against the month run, and allocation against fixed priority rules.

The data is a synthetic practice imported through the real importer. As of the 20th the
worklist says what each open period still needs; the test then supplies exactly that
(the days of readings, the minutes, the call) and bills the month: every predicted code
must come out billable. Nothing is assumed about which patients are short — the worklist
finds them.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.dates import parse_month
from caretally.ingest import import_bundle, import_records
from caretally.model import PatientMonthFacts, Program, Status
from caretally.rules.engine import evaluate_patient_month
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize
from caretally.worklist import build_worklist

MONTH = parse_month("2026-03")
AS_OF = date(2026, 3, 20)
ORG = "default"


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        yield from csv.DictReader(handle)


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("practice")
    synthesize(SynthConfig(patients=120, start=date(2026, 3, 1), months=1, seed=11, lead_in_days=29), out)
    return out


def _import_until(engine: object, bundle: Path, last_utc_day: str) -> None:
    """The bundle as it stood on the 20th: readings and time only up to that day."""
    records: dict[str, list[dict[str, str]]] = {}
    for stem in ("patients", "practitioners", "enrollments", "devices"):
        records[stem] = list(_rows(bundle / f"{stem}.csv"))
    records["readings"] = [r for r in _rows(bundle / "readings.csv") if r["measured_at"][:10] < last_utc_day]
    records["time_entries"] = [
        r for r in _rows(bundle / "time_entries.csv") if r["started_at"][:10] < last_utc_day
    ]
    report = import_records(engine, ORG, records)  # type: ignore[arg-type]
    assert report.ok(), report.problems[:5]


def test_reachable_predictions_come_true_when_the_data_arrives(practice: Path, sqlite_url: str) -> None:
    engine = open_database(sqlite_url)
    _import_until(engine, practice, "2026-03-20")
    rules = PayerRules.load()
    rows = build_worklist(engine, ORG, AS_OF, rules)
    assert rows, "a 120-patient practice has open periods on the 20th"

    zones = {r["patient_id"]: ZoneInfo(r["timezone"]) for r in _rows(practice / "patients.csv")}
    devices = {}
    for d in _rows(practice / "devices.csv"):
        if d["medical_device"] == "true":
            devices.setdefault((d["patient_id"], d["program"]), d["device_id"])
    readings: list[dict[str, str]] = []
    entries: list[dict[str, str]] = []
    predicted: list[tuple[str, str, date, str]] = []
    done: set[str] = set()
    for row in rows:  # ranked: each patient gets the top item of their own list, as staff would work it
        if row.patient_id in done:
            continue
        step = row.next_step
        if step is None or row.period.end > MONTH.end:
            continue  # periods closing next month are not billed in the March run
        if not (step.days_needed or step.minutes_needed or step.call_needed):
            continue  # a paperwork gap (no set-up date recorded) is not data arriving
        tz = zones[row.patient_id]
        if step.days_needed:
            device = devices.get((row.patient_id, row.program.value))
            if device is None:
                continue
            assert row.counts_from is not None
            for n in range(step.days_needed):
                day = row.counts_from + timedelta(days=n)
                assert day <= row.period.end, "the worklist promised the days fit in the period"
                readings.append(
                    {"patient_id": row.patient_id, "device_id": device, "type": "check",
                     "measured_at": datetime.combine(day, time(9), tzinfo=tz).isoformat(), "value": "1",
                     "unit": "u", "transmission": "auto"}
                )  # fmt: skip
        if step.minutes_needed or step.call_needed:
            performer = (
                "PRV001"
                if row.program is Program.PCM or step.code in {"99491", "99437", "99424", "99425", "99091"}
                else "STF001"
            )
            entries.append(
                {"entry_id": f"late-{row.patient_id}-{step.code}", "patient_id": row.patient_id,
                 "practitioner_id": performer, "program": row.program.value,
                 "started_at": datetime.combine(row.counts_from, time(11), tzinfo=tz).isoformat(),
                 "seconds": str(max(step.minutes_needed, 1) * 60), "activity": "follow-up",
                 "interactive": "true" if step.call_needed else "false",
                 "modality": "phone" if step.call_needed else "", "note": ""}
            )  # fmt: skip
        predicted.append((row.patient_id, row.enrollment_id, row.period.end, step.code))
        done.add(row.patient_id)
    assert predicted, "the worklist found something to do"
    report = import_records(engine, ORG, {"readings": readings, "time_entries": entries})
    assert report.ok(), report.problems[:5]

    result = bill_month(engine, ORG, MONTH, rules)
    billed = {(line.patient_id, line.enrollment_id, line.period_end, line.code) for line in result.lines}
    missed = [p for p in predicted if p not in billed]
    assert not missed, f"{len(missed)} of {len(predicted)} predictions did not come true: {missed[:5]}"


def _fixed(facts: PatientMonthFacts, order: tuple[Program, ...]) -> PatientMonthFacts:
    """The same month with every unassigned entry given to the first enrolled program in ``order``."""
    enrolled = [p.enrollment.program for p in facts.programs]
    target = next((p for p in order if p in enrolled), None)
    if target is None:
        return facts
    return replace(facts, time=tuple(t if t.program else replace(t, program=target) for t in facts.time))


def _revenue(decisions: list) -> Decimal:  # type: ignore[type-arg]
    return sum(
        (d.expected_payment or Decimal(0) for d in decisions if d.status is Status.BILLABLE), Decimal(0)
    )


@pytest.fixture(scope="module")
def demo_practice_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The practice ``caretally demo`` synthesizes (200 patients, 3 months, seed 7), ending in March."""
    out = tmp_path_factory.mktemp("demo")
    synthesize(SynthConfig(patients=200, start=date(2026, 1, 1), months=3, seed=7), out)
    return out


def test_allocation_beats_every_fixed_priority_and_never_counts_an_entry_twice(
    demo_practice_bundle: Path, sqlite_url: str
) -> None:
    engine = open_database(sqlite_url)
    assert import_bundle(engine, ORG, demo_practice_bundle).ok()
    rules = PayerRules.load()
    orders = [
        (Program.RPM, Program.RTM, Program.CCM, Program.PCM),
        (Program.CCM, Program.PCM, Program.RPM, Program.RTM),
        (Program.PCM, Program.CCM, Program.RTM, Program.RPM),
    ]
    optimal = Decimal(0)
    fixed = [Decimal(0)] * len(orders)
    with_unassigned = 0
    for facts, decisions in evaluate_month(engine, ORG, MONTH, rules):
        counted: dict[str, str] = {}
        for d in decisions:
            if d.status is not Status.BILLABLE:
                continue
            for r in d.reasons:
                for entry in r.evidence.time_entry_ids if r.passed else ():
                    owner = counted.setdefault(entry, f"{d.enrollment_id}/{d.code}/{d.period.start}")
                    assert owner.split("/")[0] == d.enrollment_id, f"entry {entry} counted twice"
        mine = _revenue(decisions)
        optimal += mine
        if any(t.program is None and MONTH.contains(t.local_date) for t in facts.time):
            with_unassigned += 1
        for i, order in enumerate(orders):
            theirs = _revenue(evaluate_patient_month(_fixed(facts, order), rules.base))
            assert mine >= theirs, f"{facts.patient_id}: allocation {mine} < fixed {order[0]}-first {theirs}"
            fixed[i] += theirs
    assert with_unassigned > 0, "the synthetic practice logs some unassigned time"
    assert all(optimal >= f for f in fixed)
    assert any(optimal > f for f in fixed), "optimal allocation should beat at least one fixed rule"

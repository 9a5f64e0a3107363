"""One patient's facts, asked for alone, are that patient's facts from the whole month.

A patient page or ``explain`` builds facts for one patient with queries narrowed to that
patient (its deaths, first readings and cross-patient overlaps read by the patient and
the entries near theirs). Those narrowings must not change an answer, so every patient
of a generated practice is compared with the organization-wide build, on both databases.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from caretally.dates import parse_month
from caretally.facts import build
from caretally.facts.build import FactsOptions, build_month_facts
from caretally.ingest import import_bundle
from caretally.ingest.values import MAX_SECONDS
from caretally.model import PatientMonthFacts
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize

ORG = "default"
MARCH = parse_month("2026-03")


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("few-patients-practice")
    synthesize(SynthConfig(patients=90, start=date(2026, 3, 1), months=1, seed=31, lead_in_days=29), out)
    return out


def _long_neighbour(engine: Engine) -> str:
    """Store another patient's 11-hour entry, by the same performer, that started 10 hours
    before one of a patient's entries: the farthest-reaching overlap the store accepts.
    Returns the patient whose entry it overlaps."""
    t = schema.time_entries
    with engine.begin() as conn:
        mine = conn.execute(
            select(t).where(t.c.org_id == ORG, t.c.local_date >= date(2026, 3, 10)).order_by(t.c.entry_id)
        ).first()
        assert mine is not None
        other = conn.execute(
            select(t.c.patient_id).where(t.c.org_id == ORG, t.c.patient_id != mine.patient_id).limit(1)
        ).scalar_one()
        started = mine.started_at - timedelta(hours=10)
        conn.execute(
            insert(t).values(
                org_id=ORG,
                entry_id="long-neighbour",
                patient_id=other,
                practitioner_id=mine.practitioner_id,
                program=mine.program,
                started_at=started,
                local_date=mine.local_date - timedelta(days=1),
                seconds=11 * 3600,
                activity="test",
                interactive=False,
            )
        )
    assert MAX_SECONDS >= 11 * 3600
    return str(mine.patient_id)


def _facts(
    engine: Engine, options: FactsOptions, patients: set[str] | None = None
) -> dict[str, PatientMonthFacts]:
    return {
        f.patient_id: f for f in build_month_facts(engine, ORG, MARCH, options=options, patients=patients)
    }


@pytest.mark.parametrize(
    ("anchor", "few_entries"),
    [("enrollment_start", build.FEW_ENTRIES), ("first_reading", build.FEW_ENTRIES), ("enrollment_start", 0)],
    ids=["by-interval", "first-reading-anchor", "by-performer"],
)
def test_each_patient_alone_equals_the_whole_month_build(
    db_url: str, practice: Path, anchor: str, few_entries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # few_entries=0 takes the other branch for a few patients: their performers' window.
    monkeypatch.setattr(build, "FEW_ENTRIES", few_entries)
    engine = open_database(db_url, ORG)
    try:
        assert import_bundle(engine, ORG, practice).ok()
        overlapped = _long_neighbour(engine)
        p = schema.patients
        with engine.begin() as conn:  # a death in the month: read by patient for one patient
            dead = conn.execute(
                select(p.c.patient_id).where(p.c.org_id == ORG).order_by(p.c.patient_id)
            ).first()
            assert dead is not None
            conn.execute(update(p).where(p.c.patient_id == dead[0]).values(death_date=date(2026, 3, 20)))
        options = FactsOptions(anchor=anchor)
        whole = _facts(engine, options)
        assert len(whole) > 50
        clashing = {pid for pid, f in whole.items() if any(t.other_patient_overlaps for t in f.time)}
        assert clashing, "the generated practice should have cross-patient overlaps to compare"
        assert any("long-neighbour" in t.other_patient_overlaps for t in whole[overlapped].time)
        assert any(f.death_date is not None for f in whole.values())
        for pid, expected in whole.items():
            alone = _facts(engine, options, {pid})
            assert alone == {pid: expected}, pid
        several = set(sorted(whole)[:7]) | {overlapped}
        assert _facts(engine, options, several) == {pid: whole[pid] for pid in several}
    finally:
        engine.dispose()


def test_many_named_patients_are_asked_for_in_slices(
    db_url: str, practice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More named patients than one statement may bind (a worklist's next-month pass names
    every device patient: 88,000 of 100,000 overflowed PostgreSQL's 65,535) are asked for
    in slices, with the answers of the whole-month build."""
    monkeypatch.setattr(build, "FEW_PATIENTS", 5)
    monkeypatch.setattr(build, "ID_SLICE", 7)
    engine = open_database(db_url, ORG)
    try:
        assert import_bundle(engine, ORG, practice).ok()
        overlapped = _long_neighbour(engine)
        options = FactsOptions()
        whole = _facts(engine, options)
        many = set(sorted(whole)[::2]) | {overlapped}
        assert len(many) > 3 * build.ID_SLICE
        assert any(t.other_patient_overlaps for pid in many for t in whole[pid].time)
        assert _facts(engine, options, many) == {pid: whole[pid] for pid in many}
    finally:
        engine.dispose()


def test_entry_windows_in_several_statements_equal_the_whole_month_build(
    db_url: str, practice: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The few patients' entry windows go to the store a chunk of bound ranges at a time,
    the last chunk padded with its last window; chunks of 4 make every set here span
    several statements, most with a padded last one."""
    monkeypatch.setattr(build, "_RANGES_PER_QUERY", 4)
    made: list[int] = []
    windows = build._entry_windows

    def counted(entries: Any) -> list[Any]:
        out = windows(entries)
        made.append(len(out))
        return out

    monkeypatch.setattr(build, "_entry_windows", counted)
    engine = open_database(db_url, ORG)
    try:
        assert import_bundle(engine, ORG, practice).ok()
        overlapped = _long_neighbour(engine)
        options = FactsOptions()
        whole = _facts(engine, options)
        ids = sorted(whole)
        for step in (2, 5, 11):
            named = set(ids[::step]) | {overlapped}
            assert any(t.other_patient_overlaps for pid in named for t in whole[pid].time)
            assert _facts(engine, options, named) == {pid: whole[pid] for pid in named}
        assert any(n > 4 and n % 4 for n in made), made
    finally:
        engine.dispose()

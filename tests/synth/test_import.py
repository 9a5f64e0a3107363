"""A generated bundle goes through the real importer without a single problem.

The importer is another helper's work; when it is not importable yet these tests skip
and say so, rather than pass vacuously.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize

SMALL = SynthConfig(patients=50, start=date(2026, 3, 1), months=2, seed=50)
TABLES = {
    "practitioners": schema.practitioners,
    "patients": schema.patients,
    "enrollments": schema.enrollments,
    "devices": schema.devices,
    "readings": schema.readings,
    "time_entries": schema.time_entries,
}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_fifty_patient_two_month_bundle_imports_cleanly(tmp_path: Path, db_url: str, fmt: str) -> None:
    ingest = pytest.importorskip("caretally.ingest", reason="caretally.ingest not written yet")
    counts = synthesize(replace(SMALL, fmt=fmt), tmp_path / "bundle")
    engine = open_database(db_url, "synth")
    try:
        report = ingest.import_bundle(engine, "synth", tmp_path / "bundle")
        assert [str(p) for p in report.problems] == []
        assert report.ok() and report.stored
        for stem, table in TABLES.items():
            assert report.counts[stem].inserted == counts[stem], stem
            assert report.counts[stem].rejected == 0, stem
            with engine.connect() as conn:
                stored = conn.execute(
                    select(func.count()).select_from(table).where(table.c.org_id == "synth")
                )
                assert stored.scalar_one() == counts[stem], stem

        # The readings planned near local midnight arrive on a different UTC date.
        with engine.connect() as conn:
            zones = dict(conn.execute(select(schema.patients.c.patient_id, schema.patients.c.timezone)).all())
            stored_days = conn.execute(
                select(
                    schema.readings.c.patient_id, schema.readings.c.measured_at, schema.readings.c.local_date
                )
            ).all()
        assert all(at.astimezone(ZoneInfo(zones[p])).date() == day for p, at, day in stored_days)
        assert any(at.date() != day for _p, at, day in stored_days)

        again = ingest.import_bundle(engine, "synth", tmp_path / "bundle")
        assert again.ok() and not again.problems
        assert all(c.inserted == 0 and c.updated == 0 for c in again.counts.values())
    finally:
        engine.dispose()


def test_bundles_from_several_seeds_and_windows_import_cleanly(tmp_path: Path) -> None:
    """Rare combinations (short episodes, late set-up, crowded days) across seeds and months."""
    ingest = pytest.importorskip("caretally.ingest", reason="caretally.ingest not written yet")
    engine = open_database(f"sqlite:///{tmp_path / 'seeds.db'}", "seeds")
    try:
        for seed, start in ((1, date(2026, 11, 1)), (2, date(2026, 1, 15)), (3, date(2025, 12, 1))):
            out = tmp_path / f"seed{seed}"
            synthesize(SynthConfig(patients=120, start=start, months=2, seed=seed), out)
            org = f"org{seed}"
            open_database(f"sqlite:///{tmp_path / 'seeds.db'}", org).dispose()
            report = ingest.import_bundle(engine, org, out)
            assert [str(p) for p in report.problems] == [], (seed, start)
    finally:
        engine.dispose()

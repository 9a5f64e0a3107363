"""A generated practice as it stood on the 20th of March, for the kept-worklist tests."""

from __future__ import annotations

import csv
import shutil
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from caretally.ingest import import_records
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize

ORG = "default"
AS_OF = date(2026, 3, 20)


def import_until(engine: Engine, bundle: Path, last_utc_day: str) -> None:
    """The bundle's records, with readings and time only before ``last_utc_day``."""

    def rows(stem: str) -> list[dict[str, str]]:
        with (bundle / f"{stem}.csv").open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    records: dict[str, list[dict[str, str]]] = {
        stem: rows(stem) for stem in ("patients", "practitioners", "enrollments", "devices")
    }
    records["readings"] = [r for r in rows("readings") if r["measured_at"][:10] < last_utc_day]
    records["time_entries"] = [r for r in rows("time_entries") if r["started_at"][:10] < last_utc_day]
    report = import_records(engine, ORG, records)  # type: ignore[arg-type]
    assert report.ok(), report.problems[:5]


def copy_database(template: Path, folder: Path) -> Engine:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "caretally.db"
    shutil.copy(template, target)
    return open_database(f"sqlite:///{target}", ORG)


@pytest.fixture(scope="module")
def kept_practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wl-practice")
    synthesize(SynthConfig(patients=60, start=date(2026, 2, 1), months=2, seed=23, lead_in_days=29), out)
    return out


@pytest.fixture(scope="module")
def kept_template(kept_practice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding the practice as of the 20th, copied for each test or example."""
    path = tmp_path_factory.mktemp("wl-template") / "caretally.db"
    engine = open_database(f"sqlite:///{path}", ORG)
    import_until(engine, kept_practice, "2026-03-20")
    with engine.connect() as conn:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    engine.dispose()
    return path

"""A month's population read as ids in one query is the one the enrollment facts define.

``patients_in_month`` (asked by every month run, and by an incremental run for the whole
practice each time) puts :func:`build._touches` into SQL. Enrollment ends are moved
around each month's edges — the day before it, the lookback's first day and the day
before that, for device and calendar programs — and the ids must be the patients of
the enrollments ``_enrollment_rows`` and ``_touches`` keep, on both databases.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from caretally.dates import parse_month
from caretally.facts import build
from caretally.facts.build import LOOKBACK, patients_in_month
from caretally.ingest import import_bundle
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize

ORG = "default"


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("population-practice")
    synthesize(SynthConfig(patients=60, start=date(2026, 3, 1), months=2, seed=5, lead_in_days=29), out)
    return out


def _defined(engine, month, lookback) -> list[str]:  # type: ignore[no-untyped-def]
    rows = build._enrollment_rows(engine, ORG, month.start - lookback, month)
    return sorted({e.patient_id for e in rows if build._touches(e, month, lookback)})


def test_population_ids_are_the_enrollment_definition(db_url: str, practice: Path) -> None:
    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, practice).ok()
    e = schema.enrollments
    with engine.connect() as conn:
        ids = list(conn.execute(select(e.c.enrollment_id).order_by(e.c.enrollment_id)).scalars())
    rng = random.Random(3)
    april = parse_month("2026-04")
    edges = [
        april.start - timedelta(days=1),
        april.start,
        april.start - LOOKBACK,
        april.start - LOOKBACK - timedelta(days=1),
        april.end,
        date(2026, 2, 27),
    ]
    with engine.begin() as conn:
        for enrollment_id in rng.sample(ids, len(ids) // 2):
            conn.execute(
                update(e).where(e.c.enrollment_id == enrollment_id).values(end_date=rng.choice(edges))
            )
    for text in ("2026-02", "2026-03", "2026-04", "2026-05"):
        month = parse_month(text)
        for lookback in (LOOKBACK, timedelta(days=0), timedelta(days=45)):
            found = patients_in_month(engine, ORG, month, lookback)
            assert found == _defined(engine, month, lookback), (text, lookback)
    # The edges reached both branches: device enrollments that ended inside the lookback.
    assert patients_in_month(engine, ORG, april, LOOKBACK) != patients_in_month(
        engine, ORG, april, timedelta(0)
    )
    engine.dispose()

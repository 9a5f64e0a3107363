"""``bill --engine columnar`` and ``--engine full`` give byte-identical claim lines.

A 500-patient synthetic practice is imported into two organizations of one database
(SQLite and PostgreSQL) and March is billed once with each engine. The claim lines must
be the same bytes, the run summaries the same (lost-revenue reasons and their example
sentences included), and the stored decisions the same once a reader asks for them: a
month the columnar pass decided is stored as typed rows, and its reasons are made on
demand by the engine, which must reproduce every stored status.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

import caretally.billing.evaluate as evaluate
from caretally.billing.integrity import verify_database
from caretally.billing.payers import PayerRules
from caretally.billing.run import (
    COLUMNAR_SHAPE,
    RunError,
    bill_month,
    line_content,
    stored_decisions,
    stored_warnings,
)
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize
from tests.billing.test_run_warnings import overlapping

MONTH = parse_month("2026-03")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engines")
    synthesize(SynthConfig(patients=500, start=date(2026, 3, 1), months=1, seed=7), out)
    return out


def _line_bytes(lines: list) -> bytes:
    """The lines as stored content, without the run id (each run has its own)."""
    rows = []
    for line in lines:
        content = line_content(line)
        content.pop("run_id", None)
        rows.append(content)
    return json.dumps(rows, sort_keys=True, default=str).encode()


def _columnar_rows(engine, run_id: str) -> int:
    d = schema.run_decisions
    with engine.connect() as conn:
        values = conn.execute(select(d.c.decisions).where(d.c.run_id == run_id)).scalars().all()
    return sum(1 for v in values if isinstance(v, dict) and v.get("shape") == COLUMNAR_SHAPE)


def test_both_engines_give_the_same_lines_summary_and_decisions(
    bundle: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate, "BATCH", 170)  # several ranges, an uneven last one
    open_database(db_url, "columnar").dispose()  # both organizations exist
    engine = open_database(db_url, "full")
    rules = PayerRules.load()
    runs = {}
    for org in ("full", "columnar"):
        assert import_bundle(engine, org, bundle).ok()
        runs[org] = bill_month(engine, org, MONTH, rules, engine_choice=org)
    full, col = runs["full"], runs["columnar"]
    assert full.lines, "the practice bills something"
    assert _line_bytes(full.lines) == _line_bytes(col.lines)
    # readings_through is where each organization's readings end in the shared table (the
    # second import's ids come after the first's): a fact of the store, not of the engines.
    full_summary, col_summary = full.summary.to_json(), col.summary.to_json()
    assert full_summary.pop("readings_through") < col_summary.pop("readings_through")
    assert full_summary == col_summary
    assert full.summary.not_billable_reasons == col.summary.not_billable_reasons
    assert full.summary.reason_examples == col.summary.reason_examples
    decided = _columnar_rows(engine, col.run_id)
    assert _columnar_rows(engine, full.run_id) == 0
    assert 100 <= decided < 500, f"the columnar pass decided {decided} of 500 patient-months"
    assert verify_database(engine, "columnar").ok, "db verify recomputes the columnar run's digests"
    mine = stored_decisions(engine, col.run_id)
    theirs = stored_decisions(engine, full.run_id)
    assert mine == theirs
    engine.dispose()


def test_both_engines_store_the_same_warnings(db_url: str, tmp_path: Path) -> None:
    """Overlap warnings of a month the columnar pass decided come from its facts, the
    engine's from its reasons: stored with each row, they are the same, in the same order."""
    out = tmp_path / "bundle"
    synthesize(SynthConfig(patients=60, start=date(2026, 3, 1), months=1, seed=7), out)
    overlapping(out, "2026-03")
    open_database(db_url, "columnar").dispose()
    engine = open_database(db_url, "full")
    runs = {}
    for org in ("full", "columnar"):
        assert import_bundle(engine, org, out).ok()
        runs[org] = bill_month(engine, org, MONTH, PayerRules.load(), engine_choice=org)
    full, col = runs["full"], runs["columnar"]
    warned = stored_warnings(engine, full.run_id)
    assert warned.total == full.summary.warnings_total > 20
    assert stored_warnings(engine, col.run_id) == warned
    assert col.summary.warnings_by_code == full.summary.warnings_by_code
    d = schema.run_decisions
    with engine.connect() as conn:
        rows = conn.execute(select(d.c.patient_id, d.c.decisions).where(d.c.run_id == col.run_id)).all()
    decided = {p for p, v in rows if isinstance(v, dict) and v.get("shape") == COLUMNAR_SHAPE}
    assert decided & {w.patient_id for w in warned.items}, "some warned months were decided by the pass"
    engine.dispose()


def test_reasons_on_demand_are_the_runs_after_the_data_changed(bundle: Path, sqlite_url: str) -> None:
    """A columnar month's reasons come from its stored facts snapshot, not today's data;
    a snapshot that no longer matches its digest is refused, never shown."""
    engine = open_database(sqlite_url)
    assert import_bundle(engine, "default", bundle).ok()
    run = bill_month(engine, "default", MONTH, PayerRules.load(), engine_choice="columnar")
    d = schema.run_decisions
    with engine.connect() as conn:
        rows = conn.execute(select(d.c.patient_id, d.c.decisions).where(d.c.run_id == run.run_id)).all()
    patient = next(
        pid
        for pid, v in rows
        if isinstance(v, dict)
        and v.get("shape") == COLUMNAR_SHAPE
        and any(x["units"] for x in v["decisions"])
    )
    before = stored_decisions(engine, run.run_id, patient)
    assert before and all(x["reasons"] for x in before)
    e = schema.enrollments
    with engine.begin() as conn:
        conn.execute(
            e.update().where(e.c.org_id == "default", e.c.patient_id == patient).values(consent_date=None)
        )
    assert stored_decisions(engine, run.run_id, patient) == before, "the run's reasons, not today's"

    value = next(v for pid, v in rows if pid == patient)
    value["facts"][4] = "2026-03-30"  # the snapshot's as_of, tampered with
    with engine.begin() as conn:
        conn.execute(
            d.update().where(d.c.run_id == run.run_id, d.c.patient_id == patient).values(decisions=value)
        )
    with pytest.raises(RunError) as caught:
        stored_decisions(engine, run.run_id, patient)
    assert caught.value.problem.code == "explain_mismatch"
    engine.dispose()

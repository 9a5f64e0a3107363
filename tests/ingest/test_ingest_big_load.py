"""What a big bulk load leaves behind: indexes in place and valid, planner statistics.

A first load into an empty readings table drops its secondary indexes (on PostgreSQL its
primary key too) and builds them again at the end; PostgreSQL gets the readings in one
COPY held open over every block.
These tests hold the result to a table that is indistinguishable from one written row by
row (every index present, valid and enforcing), to a repeated key found even when the
COPY is only ended at the close of the load, and to PostgreSQL knowing the tables' sizes
when the import commits.
"""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from caretally.ingest import import_bundle, import_records
from caretally.store import schema
from caretally.store.db import ensure_org, integrity_check, open_database
from caretally.synth import SynthConfig, synthesize

BLOCK = 64 * 1024  # several blocks per file: the open COPY spans them


def _bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    synthesize(SynthConfig(patients=40, start=date(2026, 3, 1), months=1, seed=5), bundle)
    return bundle


def _index_names(engine: Engine) -> set[str]:
    return {str(ix["name"]) for ix in inspect(engine).get_indexes("readings")}


def test_first_bulk_load_leaves_every_index_in_place_and_valid(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, "big")
    try:
        before = _index_names(engine)
        assert before == {str(ix.name) for ix in schema.readings.indexes}
        report = import_bundle(engine, "big", _bundle(tmp_path), bulk_block_bytes=BLOCK)
        assert report.ok(), report.problems[:3]
        assert report.counts["readings"].inserted > 1000
        assert _index_names(engine) == before
        # PostgreSQL's primary keys are dropped for the load too and must be back, by name.
        for table in (schema.readings, schema.time_entries):
            found = inspect(engine).get_pk_constraint(table.name)
            assert found["name"] == table.primary_key.name
            assert found["constrained_columns"] == [c.name for c in table.primary_key.columns]
        checked, findings = integrity_check(engine)
        assert findings == [], checked
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                invalid = conn.execute(
                    text(
                        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE i.indrelid = 'readings'::regclass AND NOT (i.indisvalid AND i.indisready)"
                    )
                ).all()
                assert invalid == []
            # The rebuilt unique index enforces: a stored key cannot be written again.
            key = conn.execute(text("SELECT reading_key FROM readings LIMIT 1")).scalar_one()
            with pytest.raises(IntegrityError):
                conn.execute(
                    text(
                        "INSERT INTO readings (org_id, reading_key, patient_id, measured_at, local_date,"
                        " type, value, unit, transmission) SELECT org_id, reading_key, patient_id,"
                        " measured_at, local_date, type, value, unit, transmission FROM readings"
                        " WHERE reading_key = :k"
                    ),
                    {"k": key},
                )
            conn.rollback()
            # The facts query's index is the one the planner takes for a patient's days.
            if engine.dialect.name == "sqlite":
                plan = " ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT DISTINCT local_date FROM readings "
                        "WHERE org_id = 'big' AND patient_id = 'P000001'"
                    )
                )
                assert "ix_readings_patient_day" in plan
    finally:
        engine.dispose()


@pytest.mark.parametrize("where", ["first block", "end"])
def test_a_key_repeated_in_a_direct_load_beside_another_org_is_reported(
    db_url: str, tmp_path: Path, where: str
) -> None:
    """Another organization's readings keep the indexes in place, so the repeat fails the
    COPY (or INSERT) itself, in its first block or at its end, while later blocks are still
    being sent; the load falls back to staging and reports it as the row path does."""
    bundle = _bundle(tmp_path)
    lines = (bundle / "readings.csv").read_text().splitlines(keepends=True)
    assert sum(map(len, lines)) > 2 * BLOCK  # blocks follow the one with the repeat
    at = 9 if where == "first block" else len(lines)
    (bundle / "readings.csv").write_text("".join([*lines[:at], lines[7], *lines[at:]]))  # identical repeat
    other = tmp_path / "other"
    synthesize(SynthConfig(patients=5, start=date(2026, 3, 1), months=1, seed=9), other)
    engine = open_database(db_url, "first")
    try:
        assert import_bundle(engine, "first", other, bulk_block_bytes=BLOCK).ok()
        outcomes = []
        for org, block in (("bulk", BLOCK), ("rows", 0)):
            ensure_org(engine, org)
            report = import_bundle(engine, org, bundle, bulk_block_bytes=block)
            assert report.ok(), report.problems[:3]
            outcomes.append(({k: c.to_json() for k, c in report.counts.items()}, report.problems))
        assert outcomes[0] == outcomes[1]
        assert outcomes[0][0]["readings"]["unchanged"] == 1  # the identical repeat
        assert _index_names(engine) == {str(ix.name) for ix in schema.readings.indexes}
    finally:
        engine.dispose()


@pytest.mark.parametrize("differs", [False, True])
def test_a_time_entry_repeated_in_a_first_load_is_reported(
    db_url: str, tmp_path: Path, differs: bool
) -> None:
    """A first load of time entries rebuilds the table's primary key at the end (PostgreSQL),
    so a repeated entry_id is only found then; the load falls back to staging and the
    repeat is reported exactly as the row path reports it."""
    bundle = _bundle(tmp_path)
    path = bundle / "time_entries.csv"
    lines = path.read_text().splitlines(keepends=True)
    repeat = lines[3]
    if differs:  # one second longer: same entry_id, different seconds
        cells = next(csv.reader([lines[3]]))
        at = lines[0].strip().split(",").index("seconds")
        cells[at] = str(int(cells[at]) + 1)
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(cells)
        repeat = out.getvalue()
    path.write_text("".join([*lines, repeat]))
    outcomes = []
    for name, block in (("bulk", BLOCK), ("rows", 0)):
        engine = open_database(db_url if name == "bulk" else f"sqlite:///{tmp_path / 'rows.db'}", "first")
        try:
            report = import_bundle(engine, "first", bundle, bulk_block_bytes=block, skip_invalid=True)
            assert report.stored
            counts = report.counts["time_entries"].to_json()
            outcomes.append((counts, [(p.file, p.line, p.field, p.code, p.message) for p in report.problems]))
            if name == "bulk":
                found = inspect(engine).get_pk_constraint("time_entries")
                assert found["name"] == "pk_time_entries"
        finally:
            engine.dispose()
    assert outcomes[0] == outcomes[1]
    counts, problems = outcomes[0]
    if differs:
        assert [(line, code) for _, line, _, code, _ in problems] == [(len(lines) + 1, "duplicate_id")]
    else:
        assert counts["unchanged"] == 1 and problems == []


def test_postgresql_knows_the_table_sizes_after_a_bulk_import(postgres_url: str, tmp_path: Path) -> None:
    """A bulk import ANALYZEs the tables it filled; a live request (a few records) does not."""
    engine = open_database(postgres_url, "big")
    try:
        report = import_bundle(engine, "big", _bundle(tmp_path), bulk_block_bytes=BLOCK)
        assert report.ok()
        with engine.connect() as conn:

            def believed(table: str) -> float:
                return float(
                    conn.execute(
                        text("SELECT reltuples FROM pg_class WHERE relname = :t"), {"t": table}
                    ).scalar_one()
                )

            for stem in ("time_entries", "patients", "enrollments", "readings"):
                assert believed(stem) == report.counts[stem].inserted, stem
            stats = conn.execute(
                text("SELECT count(*) FROM pg_stats WHERE tablename = 'readings' AND attname = 'patient_id'")
            ).scalar_one()
            assert stats == 1
        practitioner = {
            "practitioner_id": "DR-LIVE",
            "npi": "1234567893",
            "name": "Ann Live",
            "credential": "MD",
        }
        live = import_records(engine, "big", {"practitioners": [practitioner]}, live=True)
        assert live.ok(), live.problems
        with engine.connect() as conn:
            count = conn.execute(text("SELECT count(*) FROM practitioners")).scalar_one()
            believed_now = conn.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = 'practitioners'")
            ).scalar_one()
            assert believed_now == count - 1  # as the bulk import left it: no ANALYZE
    finally:
        engine.dispose()

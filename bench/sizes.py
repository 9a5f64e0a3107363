"""What one patient-month costs in storage, CPU and broker bytes: the inputs of docs/deploy.md.

    python bench/sizes.py --patients 2000 [--pg-url postgresql+psycopg://postgres@127.0.0.1:5432/test]

Synthesizes one month (``SynthConfig(patients=N, start=2026-03-01, months=1, seed=1,
lead_in_days=29)``), imports it and bills March 2026 once in one process, then reports per
patient-month: rows and bytes per table (SQLite: ``dbstat``, pages included; PostgreSQL:
``pg_total_relation_size``, indexes and TOAST included, in a database of its own that is
dropped afterwards), CPU seconds of ``bill_month``, and the bytes a split run stages in the
broker for it (``caretally.jobs.ranges``: pickled, zlib level 1). Figures are printed, not
written anywhere.
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
import uuid
import zlib
from datetime import date
from pathlib import Path

from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import BillingSettings, _directory, _line_row, bill_month, line_key, patient_result
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize

MONTH = "2026-03"
TABLES = (
    "readings",
    "time_entries",
    "patients",
    "enrollments",
    "devices",
    "audit_changes",
    "run_decisions",
    "claim_lines",
)


def measure(engine: Engine, patients: int, label: str) -> None:
    rules = PayerRules.load()
    cpu, wall = time.process_time(), time.perf_counter()
    result = bill_month(engine, "default", parse_month(MONTH), rules, BillingSettings())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"[{label}] bill_month: {wall:.1f} s wall, {cpu:.1f} s CPU, {len(result.lines)} claim lines")
    print(f"[{label}] CPU per patient-month: {1000 * cpu / patients:.2f} ms")
    total = 0
    with engine.connect() as conn:
        for table in TABLES:
            try:
                rows = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            except Exception:
                conn.rollback()
                continue
            if engine.dialect.name == "sqlite":
                size = conn.execute(
                    text(
                        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = :t OR name IN "
                        "(SELECT name FROM sqlite_master WHERE tbl_name = :t AND type = 'index')"
                    ),
                    {"t": table},
                ).scalar_one()
            else:
                size = conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": table}).scalar_one()
            total += size
            print(
                f"[{label}] {table:14} {rows / patients:8.1f} rows/patient-month "
                f"{size / patients / 1024:8.1f} KB/patient-month"
            )
        if engine.dialect.name == "sqlite":
            whole = conn.execute(
                text("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
            )
        else:
            whole = conn.execute(text("SELECT pg_database_size(current_database())"))
        print(
            f"[{label}] listed tables {total / patients / 1024:.1f} KB/patient-month; "
            f"whole database {whole.scalar_one() / patients / 1024:.1f} KB/patient-month"
        )


def staged_bytes(engine: Engine, patients: int) -> None:
    rules = PayerRules.load()
    directory = _directory(engine, "default")
    results = [
        patient_result(f, d, rules, BillingSettings(), directory, str(uuid.uuid4()))
        for f, d in evaluate_month(engine, "default", parse_month(MONTH), rules, problems=[])
    ]
    raw = pickle.dumps((results, []), pickle.HIGHEST_PROTOCOL)
    staged = zlib.compress(raw, 1)
    print(
        f"broker staging: {len(raw) / patients / 1024:.1f} KB/patient pickled, "
        f"{len(staged) / patients / 1024:.1f} KB/patient as staged (zlib 1)"
    )
    # The coordinator's serial share: unstage and insert the rows (rolled back).
    cpu, wall = time.process_time(), time.perf_counter()
    back, _ = pickle.loads(zlib.decompress(staged))
    with engine.connect() as conn, conn.begin() as tx:
        decisions = [
            {
                "run_id": "sizes",
                "org_id": "default",
                "patient_id": r.patient_id,
                "facts_digest": r.facts_digest,
                "billable_count": r.billable,
                "decisions": r.decisions_json,
            }
            for r in back
        ]
        lines = [_line_row("sizes", "default", line_key(x), x) for r in back for x in r.lines]
        for start in range(0, len(decisions), 1000):
            conn.execute(insert(schema.run_decisions), decisions[start : start + 1000])
        if lines:
            conn.execute(insert(schema.claim_lines), lines)
        tx.rollback()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(
        f"coordinator share (unstage + insert): {1000 * cpu / patients:.2f} ms CPU/patient-month, "
        f"{1000 * wall / patients:.2f} ms wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--pg-url", help="an admin URL; a database of its own is made and dropped")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        synthesize(
            SynthConfig(patients=args.patients, start=date(2026, 3, 1), months=1, seed=1, lead_in_days=29),
            bundle,
        )
        engine = open_database(f"sqlite:///{tmp}/sizes.db", "default")
        assert import_bundle(engine, "default", bundle).ok()
        measure(engine, args.patients, "SQLite")
        staged_bytes(engine, args.patients)
        engine.dispose()
        if args.pg_url:
            name = f"ct_sizes_{uuid.uuid4().hex[:8]}"
            admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            try:
                url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
                engine = open_database(url, "default")
                assert import_bundle(engine, "default", bundle).ok()
                with engine.connect() as conn:
                    conn.execute(text("ANALYZE"))
                measure(engine, args.patients, "PostgreSQL")
                staged_bytes(engine, args.patients)
                engine.dispose()
            finally:
                with admin.connect() as conn:
                    conn.execute(
                        text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                        {"n": name},
                    )
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                admin.dispose()


if __name__ == "__main__":
    main()

"""Cold month run against ``bill --incremental`` after 1% of patients get one more reading day.

    python bench/incremental.py --patients 10000 [--pg-url URL] [--results bench/RESULTS.md]

Synthesizes a one-month practice (``SynthConfig(patients=N, start=2026-03-01, months=1,
seed=1, lead_in_days=29)``), imports it into a fresh SQLite file (and a PostgreSQL
database with ``--pg-url``), bills March 2026 in full (the cold run, timed), posts one new
reading day for 1% of the patients through the live readings path (as the API does), and
times the incremental run; then voids it and times a full run of the same state, and checks
that the two stored the same digests. Wall-clock seconds of the billing calls only. On
PostgreSQL the database is ANALYZEd after the import (as autovacuum would).

``measure(url, org, month, fraction)`` does the billing part on a database imported
already (``bench/run.py`` calls it at 100,000 patients).
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, and_, select, text

ORG = "default"
MONTH = "2026-03"
DIGESTS = "input_digest, lines_digest, decisions_digest"


def readings_by_patient(
    conn: Connection, where: ColumnElement[bool], patients: list[str]
) -> dict[str, list[Any]]:
    """The stored readings of ``patients`` matching ``where``, per patient in time order —
    read 500 patients at a time, never the whole month (millions of rows at 100,000)."""
    from caretally.store import schema

    rd = schema.readings
    out: dict[str, list[Any]] = {}
    for start in range(0, len(patients), 500):
        rows = conn.execute(
            select(rd)
            .where(where, rd.c.patient_id.in_(patients[start : start + 500]))
            .order_by(rd.c.patient_id, rd.c.measured_at)
        ).mappings()
        for row in rows:
            out.setdefault(row["patient_id"], []).append(row)
    return out


def _one_more_day(engine: Engine, org: str, month: str, share: float, seed: int) -> int:
    """One new reading, on a day of ``month`` the patient had none, for ``share`` of its patients.

    Posted through the live readings path (as the API does), so the touches are recorded.
    Only the chosen patients' readings are read: at 100,000 patients the month holds millions.
    """
    from caretally.dates import parse_month
    from caretally.ingest.live import ingest_readings
    from caretally.store import schema

    period = parse_month(month)
    now = max(datetime.now(UTC), datetime.combine(period.end, datetime.min.time(), UTC) + timedelta(days=2))
    rd = schema.readings
    in_month = and_(rd.c.org_id == org, rd.c.local_date.between(period.start, period.end))
    with engine.connect() as conn:
        ids = sorted(conn.execute(select(rd.c.patient_id).where(in_month).distinct()).scalars())
        rng = random.Random(seed)
        chosen = sorted(rng.sample(ids, max(1, round(len(ids) * share))))
        by_patient = readings_by_patient(conn, in_month, chosen)
    items = []
    for i, patient in enumerate(chosen):
        days = {r["local_date"] for r in by_patient[patient]}
        base = by_patient[patient][0]
        for shift in range(1, 31):
            when = base["measured_at"] + timedelta(days=shift)
            day = base["local_date"] + timedelta(days=shift)
            if day not in days and day <= period.end and when < now:
                break
        items.append(
            {
                "reading_id": f"bench-incr-{seed}-{i}",
                "patient_id": patient,
                "device_id": base["device_id"],
                "measured_at": when.isoformat(),
                "type": base["type"],
                "value": str(base["value"]),
                "unit": base["unit"],
                "transmission": base["transmission"],
            }
        )
    result = ingest_readings(engine, org, items, now=now)
    assert result.ok(), [p.message for p in result.problems[:3]]
    return len(items)


def _import(url: str, bundle: Path) -> None:
    """Load ``bundle`` into ``url``; on PostgreSQL ANALYZE after, as autovacuum would."""
    from caretally.ingest import import_bundle
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    if engine.dialect.name == "postgresql":
        # A bulk load leaves PostgreSQL without statistics until autovacuum gets to it
        # (here it never did); without them the few-patient queries of the incremental
        # run were planned as scans (5.3 s instead of 2.2 s at 10,000 patients).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def measure(url: str, org: str, month: str, fraction: float = 0.01) -> dict[str, Any]:
    """Cold run, ``fraction`` of the patients touched, incremental run, then a full run of the
    same state; on a database imported already. Wall-clock seconds of the billing calls.

    ``same``: the incremental and the full run stored the same input, lines and decisions
    digests. The incremental run is voided before the full one, so the month ends billed in full.
    """
    from caretally.billing.incremental import bill_month_incremental
    from caretally.billing.payers import PayerRules
    from caretally.billing.records import void_run
    from caretally.billing.run import bill_month
    from caretally.dates import parse_month
    from caretally.store.db import open_database

    engine = open_database(url, org)
    rules = PayerRules.load()
    period = parse_month(month)
    started = time.perf_counter()
    cold = bill_month(engine, org, period, rules)
    cold_s = time.perf_counter() - started
    patients = cold.summary.patients
    del cold  # its lines and warnings would otherwise count in the next runs' peak memory
    posted = _one_more_day(engine, org, month, fraction, seed=5)
    started = time.perf_counter()
    incr, how = bill_month_incremental(engine, org, period, rules)
    incr_s = time.perf_counter() - started
    assert how.mode == "incremental", how
    void_run(engine, org, incr.run_id)
    started = time.perf_counter()
    full = bill_month(engine, org, period, rules)
    full_s = time.perf_counter() - started
    with engine.connect() as conn:
        digests = {
            run_id: tuple(
                conn.execute(
                    text(f"SELECT {DIGESTS} FROM billing_runs WHERE run_id = :r"),
                    {"r": run_id},
                ).one()
            )
            for run_id in (incr.run_id, full.run_id)
        }
    engine.dispose()
    return {
        "patients": patients,
        "posted": posted,
        "evaluated": how.evaluated,
        "cold_s": cold_s,
        "incr_s": incr_s,
        "ratio": incr_s / cold_s,
        "full_again_s": full_s,
        "same": digests[incr.run_id] == digests[full.run_id],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--pg-url", default=None, help="an empty PostgreSQL database to use as well")
    parser.add_argument("--results", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    from caretally.synth.config import SynthConfig
    from caretally.synth.generate import synthesize

    work = Path(tempfile.mkdtemp(prefix="incr-bench-"))
    bundle = work / "bundle"
    synthesize(
        SynthConfig(patients=args.patients, start=date(2026, 3, 1), months=1, seed=1, lead_in_days=29), bundle
    )
    targets = [("SQLite", f"sqlite:///{work / 'bench.db'}")]
    if args.pg_url:
        targets.append(("PostgreSQL", args.pg_url))
    rows = []
    for name, url in targets:
        _import(url, bundle)
        found = measure(url, ORG, MONTH)
        f = found
        rows.append(
            f"| {name} | {f['patients']:,} | {f['posted']} | {f['evaluated']} | {f['cold_s']:.2f} | "
            f"{f['incr_s']:.2f} | {f['incr_s'] / f['cold_s']:.1%} | {f['full_again_s']:.2f} | "
            f"{'yes' if f['same'] else 'NO'} |"
        )
        print(rows[-1], flush=True)
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    table = "\n".join(
        [
            f"\n### Incremental month run, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n",
            f"`{command}` (commit of h-incr2; 2 shared cores, other sessions running)\n",
            "| database | patients | readings posted | evaluated | cold s | incremental s | incr ÷ cold "
            "| full rerun s | same digests |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(table)
    if args.results:
        with args.results.open("a") as out:
            out.write(table)


if __name__ == "__main__":
    main()

"""Cold month run against ``bill --incremental`` after 1% of patients get one more reading day.

    python bench/incremental.py --patients 10000 [--pg-url URL] [--results bench/RESULTS.md]

Synthesizes a one-month practice (``SynthConfig(patients=N, start=2026-03-01, months=1,
seed=1, lead_in_days=29)``), imports it into a fresh SQLite file (and a PostgreSQL
database with ``--pg-url``), bills March 2026 in full (the cold run, timed), posts one new
reading day for 1% of the patients through the live readings path (as the API does), and
times the incremental run; then voids it and times a full run of the same state, and checks
that the two stored the same digests. Wall-clock seconds of the billing calls only. On
PostgreSQL the database is ANALYZEd after the import (as autovacuum would).
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

from sqlalchemy import Engine, select, text

ORG = "default"
MONTH = "2026-03"
DIGESTS = "input_digest, lines_digest, decisions_digest"
NOW = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)


def _one_more_day(engine: Engine, share: float, seed: int) -> int:
    """One new reading, on a March day the patient had none, for ``share`` of the patients."""
    from caretally.ingest.live import ingest_readings
    from caretally.store import schema

    rd = schema.readings
    with engine.connect() as conn:
        rows = conn.execute(
            select(rd)
            .where(rd.c.org_id == ORG, rd.c.local_date.between(date(2026, 3, 1), date(2026, 3, 31)))
            .order_by(rd.c.patient_id, rd.c.measured_at)
        ).mappings()
        by_patient: dict[str, list[Any]] = {}
        for row in rows:
            by_patient.setdefault(row["patient_id"], []).append(row)
    rng = random.Random(seed)
    chosen = rng.sample(sorted(by_patient), max(1, round(len(by_patient) * share)))
    items = []
    for i, patient in enumerate(chosen):
        days = {r["local_date"] for r in by_patient[patient]}
        base = by_patient[patient][0]
        for shift in range(1, 31):
            when = base["measured_at"] + timedelta(days=shift)
            if (base["local_date"] + timedelta(days=shift)) not in days and when < NOW:
                break
        items.append(
            {
                "reading_id": f"bench-incr-{i}",
                "patient_id": patient,
                "device_id": base["device_id"],
                "measured_at": when.isoformat(),
                "type": base["type"],
                "value": str(base["value"]),
                "unit": base["unit"],
                "transmission": base["transmission"],
            }
        )
    result = ingest_readings(engine, ORG, items, now=NOW)
    assert result.ok(), [p.message for p in result.problems[:3]]
    return len(items)


def measure(url: str, bundle: Path) -> dict[str, Any]:
    from caretally.billing.incremental import bill_month_incremental
    from caretally.billing.payers import PayerRules
    from caretally.billing.records import void_run
    from caretally.billing.run import bill_month
    from caretally.dates import parse_month
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
    rules = PayerRules.load()
    period = parse_month(MONTH)
    started = time.perf_counter()
    cold = bill_month(engine, ORG, period, rules)
    cold_s = time.perf_counter() - started
    posted = _one_more_day(engine, 0.01, seed=5)
    started = time.perf_counter()
    incr, how = bill_month_incremental(engine, ORG, period, rules)
    incr_s = time.perf_counter() - started
    assert how.mode == "incremental", how
    void_run(engine, ORG, incr.run_id)
    started = time.perf_counter()
    full = bill_month(engine, ORG, period, rules)
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
        "patients": cold.summary.patients,
        "posted": posted,
        "evaluated": how.evaluated,
        "cold_s": cold_s,
        "incr_s": incr_s,
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
        found = measure(url, bundle)
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
            f"`{command}` (commit of h-incr; 2 shared cores, other sessions running)\n",
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

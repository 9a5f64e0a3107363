"""The floor under a month run: storing its rows alone, beside floor (a).

    python bench/run_floor.py URL ORG MONTH [--runs 3]

Issue 13 asks a cold month run for at most 1.5× floor (a), the bare SQL that counts the
month's facts. A run cannot be cheaper than writing what it must keep: one row per
patient-month (its decisions and the fact snapshot that ``explain`` re-runs the engine
on), one per patient with warnings, and one per claim line. This reads the rows of the
month's current run, already encoded, and writes them into fresh, empty copies of the
three tables (the schema's own keys and indexes) in one transaction, with the driver's
``executemany`` on SQLite and ``COPY`` on PostgreSQL, then runs floor (a) on the same
database. No evaluation, no encoding, no digests: what remains is the least any run that
stores its explanations could take, as a multiple of floor (a). If that multiple is near
1.5, the target is out of reach for a run that keeps its evidence, whatever the engine
does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Engine, Table, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench import floors  # noqa: E402

SCRATCH = "floor_"


def _rows(engine: Engine, table: Table, run_id: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The run's rows of ``table`` as stored, JSON columns as their text (what a run writes)."""
    names = [c.name for c in table.columns if not (c.primary_key and c.autoincrement is True)]
    if table.name == "claim_lines":
        names = [n for n in names if n != "id"]
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT {', '.join(names)} FROM {table.name} WHERE run_id = :run"), {"run": run_id}
        ).all()
    json_at = [i for i, n in enumerate(names) if isinstance(table.c[n].type, JSON)]
    out = []
    for row in rows:
        values = list(row)
        for i in json_at:
            if values[i] is not None and not isinstance(values[i], str):
                values[i] = json.dumps(values[i], separators=(",", ":"))
        out.append(tuple(values))
    return names, out


def _scratch(engine: Engine, table: Table) -> str:
    """An empty table shaped like ``table`` (same columns, key and indexes), made anew."""
    from sqlalchemy import MetaData

    name = SCRATCH + table.name
    meta = MetaData()
    copy = table.to_metadata(meta, name=name)
    for named in [*copy.indexes, *copy.constraints]:  # names are per schema on PostgreSQL
        if isinstance(named.name, str):
            named.name = SCRATCH + named.name
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
        copy.create(conn)
    return name


def _store(engine: Engine, batches: list[tuple[str, list[str], list[tuple[Any, ...]]]]) -> float:
    """Seconds to write every batch in one transaction, the way the database loads fastest."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        began = time.perf_counter()
        for name, columns, rows in batches:
            if engine.dialect.name == "postgresql":
                with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                    for row in rows:
                        copy.write_row(row)
            else:
                marks = ", ".join("?" for _ in columns)
                cursor.executemany(f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})", rows)
        raw.commit()
        return time.perf_counter() - began
    finally:
        raw.close()


def store_seconds(engine: Engine, run_id: str, runs: int = 1) -> dict[str, Any]:
    """Median seconds to store run ``run_id``'s decision rows, warning rows and claim lines alone."""
    from caretally.store import schema

    batches = []
    size = 0
    for table in (schema.run_decisions, schema.run_warnings, schema.claim_lines):
        columns, rows = _rows(engine, table, run_id)
        size += sum(len(str(v)) for row in rows for v in row if v is not None)
        batches.append((table, columns, rows))
    stores = []
    try:
        for _ in range(runs):
            named = [(_scratch(engine, table), columns, rows) for table, columns, rows in batches]
            stores.append(_store(engine, named))
    finally:
        with engine.begin() as conn:
            for table, _, _ in batches:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {SCRATCH}{table.name}")
    return {
        "decision_rows": len(batches[0][2]),
        "warning_rows": len(batches[1][2]),
        "claim_lines": len(batches[2][2]),
        "stored_mb": size / 1e6,
        "store": statistics.median(stores),
    }


def measure(url: str, org: str, month: str, runs: int = 3) -> dict[str, Any]:
    from caretally.billing.run import current_run
    from caretally.dates import parse_month
    from caretally.store.db import open_database

    engine = open_database(url, org)
    try:
        run = current_run(engine, org, month)
        if run is None:
            raise SystemExit(f"no current run of {month} for {org}: bill it first")
        period = parse_month(month)
        window = floors.window_for(period.start, period.end)
        floors.sql_floor(engine, org, window)  # warm, as bench/run.py does
        floor_a = []
        for _ in range(runs):
            began = time.perf_counter()
            floors.sql_floor(engine, org, window)
            floor_a.append(time.perf_counter() - began)
        found = store_seconds(engine, run.run_id, runs)
    finally:
        engine.dispose()
    a = statistics.median(floor_a)
    return found | {"run_id": run.run_id, "floor_a": a, "store_over_floor_a": found["store"] / a}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "url", help="database with a stored run of MONTH (sqlite:///… or postgresql+psycopg://…)"
    )
    parser.add_argument("org")
    parser.add_argument("month", help="YYYY-MM")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    found = measure(args.url, args.org, args.month, args.runs)
    print(
        f"run {found['run_id']}: {found['decision_rows']:,} decision rows, "
        f"{found['warning_rows']:,} warning rows, {found['claim_lines']:,} claim lines, "
        f"{found['stored_mb']:,.1f} MB of values"
    )
    print(f"floor (a), the facts SQL:           {found['floor_a']:8.2f} s (median of {args.runs})")
    print(f"storing the run's rows alone:       {found['store']:8.2f} s (median of {args.runs})")
    ratio = found["store_over_floor_a"]
    print(f"storing alone ÷ floor (a):          {ratio:8.2f}×  (target ≤ 1.5× for the whole run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

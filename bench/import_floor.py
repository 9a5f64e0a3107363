"""The floor of a SQLite import: what storing the readings alone costs, beside the whole import.

    python bench/import_floor.py IMPORTED.db [--runs 3]

Reads the stored readings of an imported SQLite database (``caretally import`` or
``bench/import.py`` left it), then, per run, writes them into a fresh database exactly
as a first load does (``staging.write_arrow`` in 8 MB-sized blocks into the empty table
without its indexes, the three index builds with ``PRAGMA threads``, the commit) and
reports the CPU seconds of each part and the readings/s that the whole-bundle import
could reach at most if parsing, checking and every other file cost nothing. Compare it
with ``bench/import.py``'s readings/s of the same bundle in the same session: the
issue's ≥ 200,000 readings/s target is only reachable if this ceiling is above it.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

BLOCK_ROWS = 60_000  # about one 8 MB readings.csv block


def measure(imported: Path, org: str | None = None) -> dict[str, Any]:
    """CPU seconds of the load, the index builds and the commit for ``imported``'s readings
    (of ``org``, else all), and ``ceiling`` = readings / their sum."""
    import pyarrow as pa

    from caretally.ingest import staging
    from caretally.ingest.rows import FILES
    from caretally.store import schema
    from caretally.store.db import open_database

    names = ["org_id", *FILES["readings"].stored]
    source = sqlite3.connect(imported)
    where = "" if org is None else " WHERE org_id = ?"
    rows = source.execute(f"SELECT {', '.join(names)} FROM readings{where}", () if org is None else (org,))
    columns = list(zip(*rows.fetchall(), strict=False))
    source.close()
    table = pa.table({n: pa.array(c, pa.string()) for n, c in zip(names, columns, strict=True)})
    with tempfile.TemporaryDirectory() as work:
        engine = open_database(f"sqlite:///{Path(work) / 'floor.db'}", "floor")
        try:
            with engine.connect() as conn:
                for index in schema.readings.indexes:
                    index.drop(conn)
                began = time.process_time()
                for start in range(0, table.num_rows, BLOCK_ROWS):
                    staging.write_arrow(conn, "readings", names, table.slice(start, BLOCK_ROWS))
                loaded = time.process_time()
                conn.exec_driver_sql(f"PRAGMA threads = {staging.SORT_THREADS}")
                for index in sorted(schema.readings.indexes, key=lambda ix: str(ix.name)):
                    index.create(conn)
                indexed = time.process_time()
                conn.commit()
                committed = time.process_time()
        finally:
            engine.dispose()
    total = committed - began
    return {
        "readings": table.num_rows,
        "load": loaded - began,
        "indexes": indexed - loaded,
        "commit": committed - indexed,
        "total": total,
        "ceiling": table.num_rows / total,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("imported", type=Path, help="an imported SQLite database")
    parser.add_argument("--org", help="only this organization's readings")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    got = [measure(args.imported, args.org) for _ in range(args.runs)]
    for part in ("load", "indexes", "commit", "total"):
        each = ", ".join(f"{g[part]:.2f}" for g in got)
        print(f"{part:8s} CPU s {each} (median {statistics.median(g[part] for g in got):.2f})")
    ceiling = statistics.median(g["ceiling"] for g in got)
    print(f"{got[0]['readings']:,} readings: at most {ceiling:,.0f} readings/s (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Import speed, with and without the Arrow bulk path, on SQLite and PostgreSQL.

    python bench/import.py --patients 20000 [--bundle DIR] [--pairs 2] [--pg-url URL | --skip-pg]
                           [--results bench/RESULTS.md]

Synthesizes ``SynthConfig(patients=N, start=2026-03-01, months=1, seed=1)`` (as
``bench/run.py`` does) unless ``--bundle`` names one, then imports the whole bundle into
a fresh database per run: ``bulk`` (the default import, readings.csv in Arrow blocks) and
``rows`` (``bulk_block_bytes=0``, readings row by row), alternating in pairs so that the
machine's changing load falls on both alike. Each import runs in its own spawned child
(``bench.run.in_child``): seconds are ``import_bundle`` alone (the database is opened and
migrated and the ICD-10-CM tables loaded before the clock starts), peak MB is the child's
``ru_maxrss``, CPU s its user + system time during the import (the PostgreSQL server's
is not included; on a shared machine it moves less than wall time). readings/s is
readings divided by the whole import's seconds, the figure the issue's targets
(≥ 200,000/s SQLite, ≥ 100,000/s PostgreSQL) are held to.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.run import (  # noqa: E402
    DEFAULT_PG,
    ORG,
    TARGETS,
    _peak_mb,
    create_pg_database,
    drop_pg_database,
    in_child,
    machine,
    pg_version,
)


def measure(url: str, bundle: Path, org: str = ORG) -> dict[str, Any]:
    """One whole-bundle import (the default, bulk path) of ``bundle`` into the database at
    ``url`` for organization ``org``, in a spawned child as ``main`` runs it.

    Returns ``seconds`` (``import_bundle`` alone), ``readings``, ``readings_per_s``,
    ``peak_mb`` (the child's), ``cpu`` (the importing process's CPU seconds) and ``ok``;
    ``failed`` instead when the child failed. The database should be fresh: a second
    import of the same bundle measures an import that changes nothing.
    """
    from caretally.ingest.bulk import BLOCK_BYTES

    got = in_child(_child_import, url, str(bundle), BLOCK_BYTES, org)
    if "failed" not in got:
        got["readings_per_s"] = got["readings"] / got["seconds"]
    return got


def _child_import(url: str, bundle: str, block_bytes: int, org: str = ORG) -> dict[str, Any]:
    from caretally.ingest import import_bundle, values
    from caretally.store.db import open_database

    engine = open_database(url, org)
    values._icd10()  # loaded by the first diagnosis either way; kept off the clock
    began, cpu = time.perf_counter(), time.process_time()
    report = import_bundle(engine, org, Path(bundle), bulk_block_bytes=block_bytes)
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    engine.dispose()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "ok": report.ok(),
        "readings": report.counts["readings"].inserted if "readings" in report.counts else 0,
        "rows": sum(c.inserted for c in report.counts.values()),
        "peak_mb": _peak_mb(),
    }


def _child_synth(patients: int, out: str) -> dict[str, Any]:
    from caretally.synth import SynthConfig, synthesize

    synthesize(SynthConfig(patients=patients, start=date(2026, 3, 1), months=1, seed=1), Path(out))
    return {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--bundle", type=Path, help="an existing bundle folder (else one is synthesized)")
    parser.add_argument("--pairs", type=int, default=1, help="bulk/rows pairs per database")
    parser.add_argument("--pg-url", default=os.environ.get("CARETALLY_TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--skip-rows", action="store_true", help="measure the bulk path only")
    parser.add_argument("--results", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ct-bench-import-"))
    bundle = args.bundle
    if bundle is None:
        bundle = work / "bundle"
        print(f"synthesizing {args.patients:,} patients into {bundle} …", flush=True)
        in_child(_child_synth, args.patients, str(bundle))
    described = machine(None if args.skip_pg else pg_version(args.pg_url))
    modes = [("bulk", None)] + ([] if args.skip_rows else [("rows", 0)])
    backends = ["SQLite"] + ([] if args.skip_pg else ["PostgreSQL"])
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for backend in backends:
        for pair in range(args.pairs):
            for mode, block in modes:
                if backend == "SQLite":
                    url = f"sqlite:///{work / f'{mode}-{pair}.db'}"
                else:
                    url = create_pg_database(args.pg_url)
                try:
                    from caretally.ingest.bulk import BLOCK_BYTES

                    got = in_child(_child_import, url, str(bundle), BLOCK_BYTES if block is None else block)
                finally:
                    if backend == "PostgreSQL":
                        drop_pg_database(args.pg_url, url)
                    else:
                        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
                if "failed" in got or not got.get("ok"):
                    print(f"{backend} {mode}: FAILED {got}", flush=True)
                    return 1
                got["rate"] = got["readings"] / got["seconds"]
                runs.setdefault((backend, mode), []).append(got)
                print(
                    f"{backend:10s} {mode:4s} pair {pair + 1}: {got['seconds']:6.2f} s  "
                    f"{got['rate']:>9,.0f} readings/s  CPU {got['cpu']:6.2f} s  peak {got['peak_mb']:.0f} MB",
                    flush=True,
                )
    described["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = _report(args, bundle, described, runs)
    print("\n".join(lines))
    if args.results:
        with args.results.open("a") as handle:
            handle.write("\n" + "\n".join(lines) + "\n")
    return 0


def _report(
    args: argparse.Namespace, bundle: Path, described: dict[str, str], runs: dict[tuple[str, str], list[Any]]
) -> list[str]:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python bench/import.py " + shlex.join(sys.argv[1:])
    first = next(iter(runs.values()))[0]
    lines = [
        f"### Import with and without the Arrow bulk path, {stamp}",
        "",
        f"Command: `{command}`; bundle {bundle}"
        f" ({first['readings']:,} readings, {first['rows']:,} rows in all).",
        "",
        *(f"- {k}: {v}" for k, v in described.items()),
        "",
        "| database | path | runs (s) | median s | CPU s of the importing process (median)"
        " | readings/s (median) | peak MB | target | ratio to target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (backend, mode), got in runs.items():
        seconds = statistics.median(g["seconds"] for g in got)
        rate = got[0]["readings"] / seconds
        target = TARGETS[
            "import_sqlite_readings_per_s" if backend == "SQLite" else "import_pg_readings_per_s"
        ]
        each = ", ".join(f"{g['seconds']:.1f}" for g in got)
        cpu = statistics.median(g["cpu"] for g in got)
        lines.append(
            f"| {backend} | {mode} | {each} | {seconds:.2f} | {cpu:.2f} | "
            f"{rate:,.0f} | {max(g['peak_mb'] for g in got):.0f} | {target:,} | {rate / target:.2f} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())

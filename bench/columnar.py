"""Month run with each engine beside floor (a), on SQLite and PostgreSQL.

    python bench/columnar.py --patients 10000 [--pg-url URL | --skip-pg] [--results bench/RESULTS.md]

Synthesizes the same one-month practice as ``bench/run.py``, imports it into a fresh
SQLite file and a fresh PostgreSQL database, measures floor (a) (the bare SQL facts
query, warm), then bills March 2026 cold with ``--engine full`` and with ``--engine
columnar``, each in its own organization (the bundle is imported twice, so neither run
finds the other's) and in its own child process (``bench.run.in_child``: the clock
starts after the database is open and the rules are loaded). Besides the wall time, the
columnar child reports how many patient-months the pass decided and why the others were
flagged. The table is printed and appended to the results file with the command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.run import (  # noqa: E402
    DEFAULT_PG,
    MONTH,
    ORG,
    _child_sql_floor,
    _child_synth,
    _peak_mb,
    create_pg_database,
    drop_pg_database,
    in_child,
    machine,
    pg_version,
)

COLUMNAR_ORG = "bench-columnar"


def _child_bill(url: str, org: str, engine_choice: str) -> dict[str, Any]:
    from sqlalchemy import select

    from caretally.billing.payers import PayerRules
    from caretally.billing.run import COLUMNAR_SHAPE, bill_month
    from caretally.dates import parse_month
    from caretally.store import schema
    from caretally.store.db import open_database

    engine = open_database(url, org)
    rules = PayerRules.load()
    began = time.perf_counter()
    result = bill_month(engine, org, parse_month(MONTH), rules, engine_choice=engine_choice)
    seconds = time.perf_counter() - began
    d = schema.run_decisions
    with engine.connect() as conn:
        values = conn.execute(select(d.c.decisions).where(d.c.run_id == result.run_id)).scalars().all()
    decided = sum(1 for v in values if isinstance(v, dict) and v.get("shape") == COLUMNAR_SHAPE)
    engine.dispose()
    return {
        "seconds": seconds,
        "patients": result.summary.patients,
        "lines": result.summary.lines,
        "decided": decided,
        "peak_mb": _peak_mb(),
    }


def _child_flags(url: str) -> dict[str, Any]:
    """Why the columnar pass flags the months it does not decide, and how long the pass takes."""
    m = measure(url, ORG, MONTH)
    return {
        "decided": m["decided"],
        "flags": m["flagged"],
        "facts_s": m["facts_seconds"],
        "pass_s": m["seconds"],
    }


def measure(url: str, org: str, month: str) -> dict[str, Any]:
    """The columnar pass on an already-imported database, for ``bench/run.py`` and the like.

    Builds the month's facts (timed apart), runs the pass over every patient-month
    (timed) and counts what it decided and why it flagged the rest. Read-only: the month
    run itself is timed in a process of its own (``bench.run._child_columnar``), so that its
    peak memory is not this measurement's, which holds every patient-month's facts at once.
    """
    from caretally.billing.evaluate import _facts_by_payer_options
    from caretally.billing.payers import PayerRules
    from caretally.columnar.decide import decide_months
    from caretally.dates import parse_month
    from caretally.store.db import open_database

    engine = open_database(url, org)
    rules = PayerRules.load()
    period = parse_month(month)
    began = time.perf_counter()
    facts = list(_facts_by_payer_options(engine, org, period, rules, None, None, None, {}))
    facts_s = time.perf_counter() - began
    began = time.perf_counter()
    result = decide_months((f, rules.for_payer(f.payer)) for f in facts)
    out: dict[str, Any] = {
        "facts_seconds": facts_s,
        "seconds": time.perf_counter() - began,
        "months": result.total,
        "decided": len(result.decided),
        "flagged": dict(Counter(result.flagged.values())),
    }
    engine.dispose()
    return out


def _database(label: str, url: str, bundle: Path, rows: list[list[str]], notes: list[str]) -> None:
    print(f"importing into {label} (twice: one organization per engine) …", flush=True)
    for org in (ORG, COLUMNAR_ORG):
        imp = in_child(_child_import_org, url, str(bundle), org)
        if "failed" in imp:
            rows.append([f"import {label}", "failed", "", "", imp["failed"]])
            return
    floor = in_child(_child_sql_floor, url)
    floor_s = floor.get("seconds")
    rows.append([f"floor a: SQL facts {label}", _s(floor_s), "1.00", _mb(floor), ""])
    for choice, org in (("full", ORG), ("columnar", COLUMNAR_ORG)):
        print(f"billing {MONTH} on {label} with --engine {choice} …", flush=True)
        bill = in_child(_child_bill, url, org, choice)
        if "failed" in bill:
            rows.append([f"bill {label} --engine {choice}", "failed", "", "", bill["failed"]])
            continue
        ratio = f"{bill['seconds'] / floor_s:.1f}" if floor_s else ""
        note = f"{bill['patients']:,} patients, {bill['lines']:,} lines"
        if choice == "columnar":
            note += f"; {bill['decided']:,} months decided by the columnar pass"
        rows.append([f"bill {label} --engine {choice}", _s(bill["seconds"]), ratio, _mb(bill), note])
    if label == "SQLite":
        flags = in_child(_child_flags, url)
        if "flags" in flags:
            notes.append(
                f"columnar pass on {label}: decided {flags['decided']:,}; flagged {flags['flags']}; "
                f"facts built in {flags['facts_s']:.2f} s, the pass over every month {flags['pass_s']:.2f} s"
            )


def _child_import_org(url: str, bundle: str, org: str) -> dict[str, Any]:
    from caretally.ingest import import_bundle
    from caretally.store.db import open_database

    engine = open_database(url, org)
    began = time.perf_counter()
    report = import_bundle(engine, org, Path(bundle))
    engine.dispose()
    return {"seconds": time.perf_counter() - began, "ok": report.ok()}


def _s(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _mb(result: dict[str, Any]) -> str:
    return f"{result['peak_mb']:.0f}" if "peak_mb" in result else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG)
    parser.add_argument("--skip-pg", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    rows: list[list[str]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="ct-columnar-") as tmp:
        work = Path(tmp)
        bundle = work / "bundle"
        print(f"synthesizing {args.patients:,} patients …", flush=True)
        in_child(_child_synth, args.patients, str(bundle))
        _database("SQLite", f"sqlite:///{work / 'bench.sqlite'}", bundle, rows, notes)
        if not args.skip_pg:
            url = create_pg_database(args.pg_url)
            try:
                _database("PostgreSQL", url, bundle, rows, notes)
            finally:
                drop_pg_database(args.pg_url, url)
    header = ["step", "seconds", "÷ floor a", "peak MB", "note"]
    table = "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        + ["| " + " | ".join(r) + " |" for r in rows]
    )
    facts = machine(None if args.skip_pg else pg_version(args.pg_url))
    command = "python bench/columnar.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = (
        f"\n### Columnar month run, {args.patients:,} patients — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n\n"
        f"Command: `{command}`  \n"
        + "  \n".join(f"{k}: {v}" for k, v in facts.items())
        + "\n\n"
        + table
        + "\n\n"
        + "".join(f"- {n}\n" for n in notes)
    )
    print(text)
    with args.results.open("a", encoding="utf-8") as handle:
        handle.write(text)


if __name__ == "__main__":
    main()

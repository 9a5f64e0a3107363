"""End-to-end benchmark: synthesize, import, bill and build the worklist, against two floors.

    python bench/run.py --patients 100000 [--pg-url URL | --skip-pg] [--results bench/RESULTS.md]

Everything runs in one invocation. Each measured step runs in its own child process
(``multiprocessing`` with ``spawn``), so "peak memory" is that step's own peak resident
set size (``ru_maxrss`` of the child: interpreter and imports included, other steps
excluded; for PostgreSQL the server's memory is not counted). Times are wall-clock
seconds of the step's work only: opening the database (and migrating it) is done in the
child before the clock starts. The table is printed and appended, dated, with the machine
description and the exact command, to the results file.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shlex
import sqlite3
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Appended, not prepended: ``caretally`` must come from the installed package (or a
    # PYTHONPATH snapshot), only ``bench`` itself is looked up here.
    sys.path.append(str(ROOT))

from bench import floors  # noqa: E402

ORG = "bench"
MONTH = "2026-03"
WORKLIST_AS_OF = date(2026, 3, 20)
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Issue 13's targets, each checked against a figure measured in the same run.
TARGETS = {
    "bill_ratio_floor_a": 1.5,  # cold month run ÷ floor (a)
    "incremental_share": 0.05,  # month run after 1% of patients get one more day ÷ cold run
    "worklist_ratio_floor_a": 2.0,  # worklist built cold ÷ floor (a)
    "worklist_page_p95_ms": 200.0,  # first page of 50 rows from the kept state
    "worklist_visible_s": 5.0,  # a reading posted through the API shows in the worklist
    "import_sqlite_readings_per_s": 200_000,
    "import_pg_readings_per_s": 100_000,
    "peak_mb": 2048,
}


#: The groups of steps after the import and the floors (``--steps``).
STEPS = frozenset({"bill", "worklist"})


@dataclass
class Step:
    name: str
    seconds: float
    rows: int | None
    rows_label: str
    peak_mb: float | None
    note: str = ""
    floor_a: float | None = None  # seconds of the floor this step is compared with
    floor_b: float | None = None
    cold: float | None = None  # seconds of the cold run an incremental run is compared with


# ----------------------------------------------------------------------------------------
# Work done in child processes (top-level functions so ``spawn`` can find them).
# ----------------------------------------------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _child_synth(patients: int, out: str) -> dict[str, Any]:
    from caretally.synth import SynthConfig, synthesize

    began = time.perf_counter()
    counts = synthesize(SynthConfig(patients=patients, start=date(2026, 3, 1), months=1, seed=1), Path(out))
    return {"seconds": time.perf_counter() - began, "counts": counts, "peak_mb": _peak_mb()}


def _child_import(url: str, bundle: str) -> dict[str, Any]:
    from caretally.ingest import import_bundle
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    began = time.perf_counter()
    report = import_bundle(engine, ORG, Path(bundle))
    seconds = time.perf_counter() - began
    problems = [str(p) for p in report.problems[:5]]
    counts = {stem: c.to_json() for stem, c in report.counts.items()}
    engine.dispose()
    return {
        "seconds": seconds,
        "ok": report.ok(),
        "problems": problems,
        "counts": counts,
        "peak_mb": _peak_mb(),
    }


def _child_columnar_pass(url: str) -> dict[str, Any]:
    """The columnar pass timed apart from the run: the month's facts, then the pass over
    all of them at once (read-only). Holding every patient-month's facts in one list is
    the measurement's doing, not the month run's (which takes ranges), so this child's
    peak is reported in a note and not as a step's."""
    from bench import columnar

    return columnar.measure(url, ORG, MONTH) | {"peak_mb": _peak_mb()}


def _child_columnar(url: str) -> dict[str, Any]:
    """The month billed with ``--engine columnar`` (the month's first run), its rows then
    written alone (floor c), and the run voided so that the engine's cold run after it is
    judged and stored again."""
    from bench import run_floor
    from caretally.billing.payers import PayerRules
    from caretally.billing.records import void_run
    from caretally.billing.run import bill_month
    from caretally.dates import parse_month
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    rules = PayerRules.load()
    began = time.perf_counter()
    result = bill_month(engine, ORG, parse_month(MONTH), rules, engine_choice="columnar")
    seconds = time.perf_counter() - began
    peak = _peak_mb()
    stored = run_floor.store_seconds(engine, result.run_id)
    void_run(engine, ORG, result.run_id)
    engine.dispose()
    return {"bill_seconds": seconds, "peak_mb": peak, "stored": stored}


def _child_incremental(url: str) -> dict[str, Any]:
    """Cold engine run, one more day of readings for 1% of patients through the live path,
    the incremental run, and a full run of the same state (``bench/incremental.py``)."""
    from bench import incremental

    return incremental.measure(url, ORG, MONTH, 0.01) | {"peak_mb": _peak_mb()}


def _child_worklist_state(url: str) -> dict[str, Any]:
    """The worklist built cold, the kept state built, first pages, refresh after 1% touched
    (``bench/worklist_state.py``)."""
    from bench import worklist_state

    got: dict[str, Any] = dict(worklist_state.measure(url, ORG, WORKLIST_AS_OF, compare_cold=True))
    return got | {"peak_mb": _peak_mb()}


def _child_post_to_visible(url: str) -> dict[str, Any]:
    """A reading posted to a real ``caretally serve`` until ``GET /api/v1/worklist`` shows it."""
    from bench import worklist_state

    return dict(worklist_state.post_to_visible(url, ORG, WORKLIST_AS_OF)) | {"peak_mb": _peak_mb()}


def _child_sql_floor(url: str) -> dict[str, Any]:
    from caretally.dates import parse_month
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    month = parse_month(MONTH)
    window = floors.window_for(month.start, month.end)
    floors.sql_floor(engine, ORG, window)  # warm the cache as the run before it did
    began = time.perf_counter()
    rows = floors.sql_floor(engine, ORG, window)
    seconds = time.perf_counter() - began
    engine.dispose()
    return {"seconds": seconds, "rows": rows, "peak_mb": _peak_mb()}


def _child_duckdb(bundle: str) -> dict[str, Any]:
    from caretally.dates import parse_month

    month = parse_month(MONTH)
    window = floors.window_for(month.start, month.end)
    began = time.perf_counter()
    con = floors.duckdb_load(Path(bundle))
    load = time.perf_counter() - began
    loaded = con.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    began = time.perf_counter()
    rows = floors.duckdb_floor(con, window)
    seconds = time.perf_counter() - began
    return {"load_seconds": load, "loaded": loaded, "seconds": seconds, "rows": rows, "peak_mb": _peak_mb()}


def _call(conn: Any, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise
    finally:
        conn.close()


def in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn`` in a fresh interpreter so its peak memory is its own.

    A child that dies (an exception, or killed for want of memory) comes back as
    ``{"failed": why}`` so the run can go on with the other steps and say what failed.
    """
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_call, args=(send, fn, args))
    process.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:
        status, payload = "error", "the child process ended without a result"
    process.join()
    if status == "ok" and process.exitcode == 0:
        return dict(payload)
    last = str(payload).strip().splitlines()[-1] if payload else ""
    return {"failed": f"exit code {process.exitcode}: {last}"}


# ----------------------------------------------------------------------------------------
# PostgreSQL database lifecycle and machine description
# ----------------------------------------------------------------------------------------


def create_pg_database(admin_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"ct_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name}
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def pg_version(admin_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(admin_url)
    with engine.connect() as conn:
        version = str(conn.execute(text("SHOW server_version")).scalar_one())
    engine.dispose()
    return version


def _git_head() -> str:
    import subprocess

    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "caretally"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def machine(pg: str | None) -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    import caretally

    return {
        "caretally code": f"{Path(caretally.__file__).parent} (git {_git_head()})",
        "nproc": str(os.cpu_count()),
        "RAM": ram,
        "CPU": cpu,
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": pg or "not used (--skip-pg)",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def build_table(steps: list[Step], title: str) -> Table:
    table = Table(title=title)
    for name in ("step", "seconds", "rows", "rows/s", "peak MB", "÷ floor a", "÷ floor b", "note"):
        table.add_column(name, justify="left" if name in ("step", "note") else "right")
    for s in steps:
        rate = s.rows / s.seconds if s.rows is not None and s.seconds > 0 else None
        table.add_row(
            s.name,
            "—" if s.rows is None and s.seconds == 0 else f"{s.seconds:.2f}",
            "—" if s.rows is None else f"{s.rows:,} {s.rows_label}".strip(),
            "—" if rate is None else f"{rate:,.0f}",
            _fmt(s.peak_mb, ",.0f"),
            "—" if s.floor_a is None else f"{s.seconds / s.floor_a:.1f}×",
            "—" if s.floor_b is None else f"{s.seconds / s.floor_b:.1f}×",
            s.note,
        )
    return table


def _failed(steps: list[Step], name: str, result: dict[str, Any], console: Console) -> bool:
    """Record a step whose child failed; True when it did."""
    if "failed" not in result:
        return False
    console.print(f"[red]{name} failed: {result['failed']}[/red]")
    steps.append(Step(name, 0.0, None, "", None, note=f"FAILED ({result['failed']})"))
    return True


def run(args: argparse.Namespace, console: Console) -> list[Step]:
    if args.workdir:
        work = Path(args.workdir)
        work.mkdir(parents=True, exist_ok=True)
        return _run_in(work, args, console)
    with tempfile.TemporaryDirectory(prefix="caretally-bench-") as tmp:
        return _run_in(Path(tmp), args, console)


def _run_in(work: Path, args: argparse.Namespace, console: Console) -> list[Step]:
    steps: list[Step] = []
    bundle = work / "bundle"
    console.print(f"working in {work}")

    sqlite_path = work / "bench.db"
    reuse = args.reuse and (bundle / "readings.csv").exists() and sqlite_path.exists()
    if reuse:
        # Steps of a run cut short measured again on its bundle and SQLite database (which
        # hold what the earlier steps posted); PostgreSQL is imported afresh.
        console.print(f"reusing the bundle and the SQLite database in {work}")
        counts = {f.stem: _data_lines(f) for f in sorted(bundle.glob("*.csv"))}
    else:
        console.print(f"synthesizing {args.patients:,} patients …")
        synth = in_child(_child_synth, args.patients, str(bundle))
        if "failed" in synth:
            raise SystemExit(f"synthesis failed: {synth['failed']}")
        counts = synth["counts"]
        steps.append(Step("synthesize", synth["seconds"], sum(counts.values()), "rows", synth["peak_mb"]))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{sqlite_path}{suffix}").unlink(missing_ok=True)
    total_rows = sum(counts.values())
    readings = counts["readings"]
    console.print(f"  {counts}")

    databases: list[tuple[str, str, bool]] = [("SQLite", f"sqlite:///{sqlite_path}", reuse)]
    pg_url = None
    if args.skip_pg:
        console.print("[yellow]--skip-pg: PostgreSQL steps are not run[/yellow]")
    else:
        pg_url = create_pg_database(args.pg_url)
        databases.append(("PostgreSQL", pg_url, False))

    try:
        console.print("floor b: loading the bundle into DuckDB …")
        duck = in_child(_child_duckdb, str(bundle))
        duck_seconds = None
        if not _failed(steps, "floor b: DuckDB", duck, console):
            duck_seconds = duck["seconds"]
            load = Step(
                "floor b: DuckDB load (CSV → memory)", duck["load_seconds"], duck["loaded"], "readings", None
            )
            load.peak_mb = duck["peak_mb"]
            steps.append(load)
            steps.append(
                Step("floor b: DuckDB facts query", duck["seconds"], duck["rows"], "facts", duck["peak_mb"])
            )
        for label, url, imported in databases:
            _database_steps(
                steps, label, url, bundle, readings, total_rows, duck_seconds, console, imported, args.steps
            )
    finally:
        if pg_url is not None:
            drop_pg_database(args.pg_url, pg_url)
    return steps


def _database_steps(
    steps: list[Step],
    label: str,
    url: str,
    bundle: Path,
    readings: int,
    total_rows: int,
    duck_seconds: float | None,
    console: Console,
    imported: bool = False,
    chosen: frozenset[str] = STEPS,
) -> None:
    if not imported:
        console.print(f"importing into {label} …")
        imp = in_child(_child_import, url, str(bundle))
        if _failed(steps, f"import {label}", imp, console):
            return
        if not imp["ok"]:
            raise SystemExit(f"import into {label} reported problems: {imp['problems']}")
        rate = readings / imp["seconds"]
        note = f"{total_rows:,} rows in all; {rate:,.0f} readings/s"
        steps.append(Step(f"import {label}", imp["seconds"], readings, "readings", imp["peak_mb"], note=note))

    console.print(f"floor a: SQL facts on {label} …")
    floor = in_child(_child_sql_floor, url)
    floor_seconds = None
    if not _failed(steps, f"floor a: SQL facts {label}", floor, console):
        floor_seconds = floor["seconds"]
        name = f"floor a: SQL facts {label}"
        steps.append(Step(name, floor["seconds"], floor["rows"], "facts", floor["peak_mb"]))

    if "bill" in chosen:
        _bill_steps(steps, label, url, floor_seconds, duck_seconds, console)
    if "worklist" in chosen:
        _worklist_steps(steps, label, url, floor_seconds, duck_seconds, console)


def _pass_note(apart: dict[str, Any]) -> str:
    flagged = ", ".join(f"{k} {v:,}" for k, v in sorted(apart["flagged"].items(), key=lambda kv: -kv[1]))
    return (
        f"pass decided {apart['decided']:,} of {apart['months']:,} patient-months "
        f"(facts {apart['facts_seconds']:.1f} s, pass {apart['seconds']:.1f} s, measured apart with "
        f"every month's facts held at once: {apart['peak_mb']:,.0f} MB); flagged: {flagged}"
    )


def _bill_steps(
    steps: list[Step],
    label: str,
    url: str,
    floor_seconds: float | None,
    duck_seconds: float | None,
    console: Console,
) -> None:
    # The columnar run first (the month's first run, voided after), then the engine's cold
    # run, the incremental run after 1% of patients get one more day, and a full run again.
    name = f"bill {MONTH} {label} --engine columnar"
    console.print(f"{name} …")
    apart = in_child(_child_columnar_pass, url)
    col = in_child(_child_columnar, url)
    if not _failed(steps, name, col, console):
        note = "the pass not measured apart" if "failed" in apart else _pass_note(apart)
        months = apart.get("months")
        step = Step(name, col["bill_seconds"], months, "patient-months", col["peak_mb"], note)
        step.floor_a, step.floor_b = floor_seconds, duck_seconds
        steps.append(step)
        stored = col["stored"]
        note = (
            f"the columnar run's {stored['decision_rows']:,} decision rows, "
            f"{stored['warning_rows']:,} warning rows and {stored['claim_lines']:,} claim lines "
            f"({stored['stored_mb']:,.0f} MB) written alone (bench/run_floor.py)"
        )
        step = Step(f"floor c: storing a run {label}", stored["store"], None, "", None, note)
        step.floor_a = floor_seconds
        steps.append(step)

    name = f"bill {MONTH} {label} --engine full"
    console.print(f"{name}, then --incremental after 1% touched …")
    inc = in_child(_child_incremental, url)
    if not _failed(steps, name, inc, console):
        step = Step(name, inc["cold_s"], inc["patients"], "patients", inc["peak_mb"], "cold")
        step.floor_a, step.floor_b = floor_seconds, duck_seconds
        steps.append(step)
        note = (
            f"{inc['posted']:,} readings posted, {inc['evaluated']:,} patients evaluated; "
            f"{inc['ratio']:.1%} of the cold run; "
            f"same digests as a full run: {'yes' if inc['same'] else 'NO'}"
        )
        step = Step(f"incremental {MONTH} {label}", inc["incr_s"], inc["evaluated"], "patients", None, note)
        step.cold = inc["cold_s"]
        steps.append(step)
        steps.append(
            Step(f"bill {MONTH} {label} full again (same state)", inc["full_again_s"], None, "", None)
        )


def _worklist_steps(
    steps: list[Step],
    label: str,
    url: str,
    floor_seconds: float | None,
    duck_seconds: float | None,
    console: Console,
) -> None:
    name = f"worklist cold {WORKLIST_AS_OF} {label}"
    console.print(f"{name}, then the kept state …")
    wl = in_child(_child_worklist_state, url)
    if _failed(steps, name, wl, console):
        return
    # Each part's own peak (VmHWM reset before it); the child's whole peak is the largest.
    step = Step(name, wl["cold_build_worklist_s"], int(wl["cold_rows"]), "rows", wl["cold_peak_mb"])
    step.floor_a, step.floor_b = floor_seconds, duck_seconds
    steps.append(step)
    note = f"{int(wl['state_rows']):,} rows kept"
    steps.append(
        Step(f"worklist state built {label}", wl["state_cold_s"], None, "", wl["state_peak_mb"], note)
    )
    for reader in ("api", "web"):
        p95 = wl[f"{reader}_first_page_p95_ms"] / 1000
        note = f"p50 {wl[f'{reader}_first_page_p50_ms']:.1f} ms ({reader} reader)"
        steps.append(Step(f"worklist first page {reader} {label}", p95, 50, "rows", None, note))
    note = (
        f"{int(wl['posted_readings']):,} readings posted, {int(wl['refresh_1pct_patients']):,} patients "
        f"re-evaluated; first page after: p95 {wl['api_first_page_after_p95_ms']:.1f} ms"
    )
    steps.append(
        Step(
            f"worklist refresh after 1% touched {label}",
            wl["refresh_1pct_s"],
            None,
            "",
            wl["pages_refresh_peak_mb"],
            note + " (peak MB: first pages, the post and the refresh together)",
        )
    )

    name = f"worklist shows a posted reading {label}"
    console.print(f"{name} …")
    vis = in_child(_child_post_to_visible, url)
    if not _failed(steps, name, vis, console):
        note = f"kept state refreshed by the server's consumer after {vis['post_to_kept_s']:.2f} s"
        steps.append(Step(name, vis["post_to_visible_s"], None, "", None, note))


def _data_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for _ in handle) - 1


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def verdicts(steps: list[Step]) -> list[str]:
    """One line per target: met or missed, with the figure and what it is compared with."""
    out: list[str] = []
    by = {s.name: s for s in steps}
    for s in steps:
        if s.name.startswith("bill ") and s.floor_a:
            ratio, limit = s.seconds / s.floor_a, TARGETS["bill_ratio_floor_a"]
            out.append(f"{s.name}: {ratio:.1f}× floor a (target ≤ {limit}×) — {_verdict(ratio <= limit)}")
        if s.name.startswith("incremental ") and s.cold:
            share, limit = s.seconds / s.cold, TARGETS["incremental_share"]
            out.append(
                f"{s.name}: {share:.1%} of the cold run (target ≤ {limit:.0%}) — {_verdict(share <= limit)}"
            )
        if s.name.startswith("worklist cold ") and s.floor_a:
            ratio, limit = s.seconds / s.floor_a, TARGETS["worklist_ratio_floor_a"]
            out.append(f"{s.name}: {ratio:.1f}× floor a (target ≤ {limit}×) — {_verdict(ratio <= limit)}")
        if s.name.startswith("worklist first page "):  # seconds hold the p95
            ms, limit = s.seconds * 1000, TARGETS["worklist_page_p95_ms"]
            out.append(f"{s.name}: p95 {ms:.0f} ms (target ≤ {limit:.0f} ms) — {_verdict(ms <= limit)}")
        if s.name.startswith("worklist shows a posted reading "):
            limit = TARGETS["worklist_visible_s"]
            ok = s.seconds <= limit
            out.append(f"{s.name}: {s.seconds:.1f} s (target ≤ {limit:.0f} s) — {_verdict(ok)}")
    for label, key in (
        ("SQLite", "import_sqlite_readings_per_s"),
        ("PostgreSQL", "import_pg_readings_per_s"),
    ):
        s = by.get(f"import {label}")
        if s is not None and s.rows:
            rate = s.rows / s.seconds
            out.append(
                f"import {label}: {rate:,.0f} readings/s over the whole import "
                f"(target ≥ {TARGETS[key]:,}) — {_verdict(rate >= TARGETS[key])}"
            )
    peak = max((s.peak_mb for s in steps if s.peak_mb is not None), default=0.0)
    limit = TARGETS["peak_mb"]
    out.append(f"peak memory of any step: {peak:,.0f} MB (target ≤ {limit:,} MB) — {_verdict(peak <= limit)}")
    return out


def append_results(path: Path, text_table: str, facts: dict[str, str], command: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = [f"\n## Run of {stamp}\n", f"Command: `{command}`\n"]
    block += [f"- {k}: {v}" for k, v in facts.items()]
    block += ["", "```text", text_table.rstrip(), "```", ""]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(block) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="server on which a fresh database is created")
    parser.add_argument("--skip-pg", action="store_true", help="for machines without PostgreSQL")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--workdir", help="where the bundle and SQLite file go (default: a new temp dir)")
    parser.add_argument(
        "--steps",
        type=lambda text: frozenset(text.split(",")),
        default=STEPS,
        help="which of bill,worklist to run after the import and the floors (default: both)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the bundle and SQLite database of an earlier run in --workdir (not imported again)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    console = Console(record=True, width=160)
    facts = machine(None if args.skip_pg else pg_version(args.pg_url))
    command = "python " + shlex.join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    steps = run(args, console)
    title = f"caretally benchmark: {args.patients:,} patients, {MONTH}"
    if args.skip_pg:
        title += " (PostgreSQL skipped)"
    console.export_text()  # drop progress lines from the recording; keep only the table
    console.print(build_table(steps, title))
    lines = verdicts(steps)
    for line in lines:
        console.print(line)
    append_results(args.results, console.export_text(), facts, command)
    console.print(f"appended to {args.results}")


if __name__ == "__main__":
    main()

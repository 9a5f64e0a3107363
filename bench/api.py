"""HTTP API benchmark: a real ``caretally serve`` and a load generator in separate processes.

    python bench/api.py --patients 100000 [--db URL] [--seconds 20] [--results bench/RESULTS.md]

Steps (issue 11, item 10):

1. A database of ``--patients`` synthetic patients (``caretally.synth``, March 2026,
   imported with ``import_bundle``) unless ``--db`` names one this script built before
   (``--reuse``). An integration token and a care-staff token are made.
2. ``caretally serve`` starts in its own process (uvicorn, one worker, access log off).
3. The load generator runs in another process (``multiprocessing`` spawn; asyncio +
   httpx, one keep-alive connection per client):
   * single-reading POSTs to ``/api/v1/readings`` from 8 clients for ``--seconds``:
     requests/s and latency percentiles (target ≥ 1,000 req/s, p99 ≤ 50 ms);
   * 1,000-reading batches to ``/api/v1/readings`` from ``--batch-clients`` clients:
     readings/s (target ≥ 50,000);
   * ``GET /api/v1/patients/{id}/months/2026-03`` for random patients from 8 clients:
     p95 (target ≤ 50 ms). No month run is stored, so each read evaluates the month
     live (the answer says ``source: live``) — the slower of the two paths.

Every reading posted is new (``bench-<run>-<n>``) and valid (a device assigned for all
of March, its own patient), and every answer must be 200: a failed request stops the run.
The figures are printed as a Markdown section; ``--results`` appends it to that file.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ORG = "bench"
MONTH = "2026-03"
CLIENTS = 8
TARGETS = {
    "single_rps": 1_000.0,
    "single_p99_ms": 50.0,
    "batch_readings_per_s": 50_000.0,
    "read_p95_ms": 50.0,
}
SECRET = "bench-only-" + "Zq8Lw3Rt6Yp1Xn5Km9Vb2Hc7Jf4Gd0"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


# -- the database -------------------------------------------------------------------------


def build_database(url: str, patients: int) -> dict[str, Any]:
    """Synthesize and import ``patients`` patients; returns what the step took."""
    from caretally.ingest import import_bundle
    from caretally.store.db import open_database
    from caretally.synth import SynthConfig, synthesize

    with tempfile.TemporaryDirectory(prefix="caretally-bench-api-") as folder:
        began = time.perf_counter()
        synthesize(SynthConfig(patients=patients, start=date(2026, 3, 1), months=1, seed=1), Path(folder))
        synth_s = time.perf_counter() - began
        engine = open_database(url, ORG)
        began = time.perf_counter()
        report = import_bundle(engine, ORG, Path(folder))
        import_s = time.perf_counter() - began
        if not report.stored:
            raise SystemExit(f"the synthetic bundle did not import: {report.problems[:3]}")
    engine.dispose()
    return {"synth_s": synth_s, "import_s": import_s}


def credentials_and_targets(url: str, sample: int = 5_000) -> dict[str, Any]:
    """Tokens, devices to post readings for, and patients to read (all RPM, all March)."""
    from sqlalchemy import or_, select

    from caretally.services import accounts
    from caretally.services.context import cli_actor
    from caretally.store import schema
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    tag = uuid.uuid4().hex[:6]
    feed = accounts.create_token(engine, cli_actor(ORG), name=f"bench-feed-{tag}", role="integration").secret
    nurse = accounts.create_token(engine, cli_actor(ORG), name=f"bench-nurse-{tag}", role="care_staff").secret
    d = schema.devices
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.c.patient_id, d.c.device_id, d.c.kind)
            .where(
                d.c.org_id == ORG,
                d.c.program == "RPM",
                d.c.assigned_date <= date(2026, 3, 1),
                or_(d.c.returned_date.is_(None), d.c.returned_date > date(2026, 3, 31)),
            )
            .limit(sample)
        ).all()
        patients = conn.execute(
            select(schema.patients.c.patient_id).where(schema.patients.c.org_id == ORG)
        ).scalars()
        everyone = list(patients)
    engine.dispose()
    if not rows:
        raise SystemExit("no RPM device is assigned for the whole of March in this database")
    return {
        "feed": feed,
        "nurse": nurse,
        "devices": [tuple(r) for r in rows],
        "patients": random.Random(7).sample(everyone, min(len(everyone), sample)),
        "run": tag,
    }


_KINDS = {
    "blood_pressure": ("blood_pressure", "mmHg", lambda n: f"{110 + n % 40}/{70 + n % 20}"),
    "weight": ("weight", "lbs", lambda n: f"{150 + n % 60}.{n % 10}"),
    "glucose": ("glucose", "mg/dL", lambda n: str(80 + n % 120)),
    "spo2": ("spo2", "%", lambda n: str(90 + n % 10)),
}


def make_reading(n: int, devices: list[tuple[str, str, str]], run: str) -> dict[str, str]:
    patient, device, kind = devices[n % len(devices)]
    rtype, unit, value = _KINDS.get(kind, _KINDS["blood_pressure"])
    instant = datetime(2026, 3, 2, tzinfo=UTC) + timedelta(seconds=(n * 7919) % (27 * 86_400))
    return {
        "reading_id": f"bench-{run}-{n}",
        "patient_id": patient,
        "device_id": device,
        "measured_at": instant.isoformat(),
        "type": rtype,
        "value": value(n),
        "unit": unit,
        "transmission": "auto",
    }


# -- the load generator (its own process) -------------------------------------------------


async def _single_posts(base: str, setup: dict[str, Any], seconds: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    counter = iter(range(10**9))
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {setup['feed']}"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as http:
            while time.perf_counter() < stop:
                body = [make_reading(next(counter), setup["devices"], setup["run"] + "s")]
                began = time.perf_counter()
                answer = await http.post("/api/v1/readings", json=body)
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    raise RuntimeError(f"single POST answered {answer.status_code}: {answer.text[:300]}")

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    wall = time.perf_counter() - began
    return {"requests": len(latencies), "wall_s": wall, "latencies": latencies}


async def _batches(base: str, setup: dict[str, Any], batches: int, clients: int) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {setup['feed']}"}
    bodies = [
        [make_reading(b * 1000 + i, setup["devices"], setup["run"] + "b") for i in range(1000)]
        for b in range(batches)
    ]
    queue = list(range(batches))
    latencies: list[float] = []
    inserted = 0

    async def client() -> None:
        nonlocal inserted
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as http:
            while queue:
                body = bodies[queue.pop()]
                began = time.perf_counter()
                answer = await http.post("/api/v1/readings", json=body)
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    raise RuntimeError(f"batch POST answered {answer.status_code}: {answer.text[:300]}")
                inserted += answer.json()["counts"]["inserted"]

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - began
    return {"batches": batches, "inserted": inserted, "wall_s": wall, "latencies": latencies}


async def _reads(base: str, setup: dict[str, Any], reads: int) -> dict[str, Any]:
    import httpx

    headers = {"Authorization": f"Bearer {setup['nurse']}"}
    patients = list(setup["patients"])
    random.Random(11).shuffle(patients)
    queue = patients[:reads]
    latencies: list[float] = []
    sources: set[str] = set()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
            while queue:
                patient = queue.pop()
                began = time.perf_counter()
                answer = await http.get(f"/api/v1/patients/{patient}/months/{MONTH}")
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    raise RuntimeError(f"month read answered {answer.status_code}: {answer.text[:300]}")
                sources.add(answer.json()["source"])

    began = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    wall = time.perf_counter() - began
    return {"reads": len(latencies), "wall_s": wall, "latencies": latencies, "sources": sorted(sources)}


def load(base: str, setup: dict[str, Any], options: dict[str, Any], out: Any) -> None:
    """The load generator's process: warm up, then the three measurements, in order."""
    try:

        async def everything() -> dict[str, Any]:
            await _single_posts(base, {**setup, "run": setup["run"] + "w"}, 2.0)  # warm-up, not counted
            single = await _single_posts(base, setup, options["seconds"])
            batches = await _batches(base, setup, options["batches"], options["batch_clients"])
            reads = await _reads(base, setup, options["reads"])
            return {"single": single, "batches": batches, "reads": reads}

        out.send(asyncio.run(everything()))
    except BaseException as exc:  # reported by the parent, which stops the server
        out.send({"error": f"{type(exc).__name__}: {exc}"})


# -- the run ------------------------------------------------------------------------------


def start_server(url: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARETALLY_")}
    env.update(
        CARETALLY_DATABASE_URL=url,
        CARETALLY_SECRET_KEY=SECRET,
        CARETALLY_ACCESS_LOG="false",
        CARETALLY_MAX_BODY_BYTES=str(16 * 1024**2),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise SystemExit("caretally serve did not start")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(args: argparse.Namespace, built: dict[str, Any] | None, figures: dict[str, Any]) -> str:
    single, batches, reads = figures["single"], figures["batches"], figures["reads"]
    rps = single["requests"] / single["wall_s"]
    p50, p99 = _percentile(single["latencies"], 0.50), _percentile(single["latencies"], 0.99)
    per_s = batches["inserted"] / batches["wall_s"]
    batch_p50 = _percentile(batches["latencies"], 0.50)
    read_p50, read_p95 = _percentile(reads["latencies"], 0.50), _percentile(reads["latencies"], 0.95)

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = [
        f"## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: HTTP API (issue 11 item 10), {args.patients:,} patients",
        "",
        f"Command: `{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`",
        "",
        f"Server (`caretally serve`, one uvicorn worker) and load generator (asyncio + httpx, one "
        f"process) on this machine: {os.cpu_count()} CPUs shared with other sessions "
        f"(load average at start {args.load_at_start}); Python {platform.python_version()}; "
        f"database {args.db_kind}.",
        "",
    ]
    if built is not None:
        lines += [
            f"Database built first: synthesize {built['synth_s']:.1f} s, import {built['import_s']:.1f} s.",
            "",
        ]
    lines += [
        "| measurement | result | target | |",
        "|---|---|---|---|",
        f"| single-reading POSTs, {CLIENTS} clients, {single['requests']:,} requests in "
        f"{single['wall_s']:.1f} s | {rps:,.0f} req/s; p50 {_ms(p50)} ms, p99 {_ms(p99)} ms | "
        f"≥ 1,000 req/s, p99 ≤ 50 ms | {verdict(rps >= TARGETS['single_rps'])} / "
        f"{verdict(p99 * 1000 <= TARGETS['single_p99_ms'])} |",
        f"| 1,000-reading batches, {args.batch_clients} clients, {batches['batches']} batches | "
        f"{per_s:,.0f} readings/s ({batches['inserted']:,} inserted in {batches['wall_s']:.1f} s; "
        f"p50 {_ms(batch_p50)} ms a batch) | ≥ 50,000 readings/s | "
        f"{verdict(per_s >= TARGETS['batch_readings_per_s'])} |",
        f"| patient-month read (`{', '.join(reads['sources'])}`), {CLIENTS} clients, {reads['reads']} "
        f"patients | p50 {_ms(read_p50)} ms, p95 {_ms(read_p95)} ms | p95 ≤ 50 ms | "
        f"{verdict(read_p95 * 1000 <= TARGETS['read_p95_ms'])} |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--db", help="database URL (default: a new SQLite file in a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="--db already holds the synthetic practice")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the single-POST run")
    parser.add_argument("--batches", type=int, default=40, help="1,000-reading batches to post")
    parser.add_argument("--batch-clients", type=int, default=2)
    parser.add_argument("--reads", type=int, default=400, help="patient-month reads")
    parser.add_argument("--results", type=Path, help="append the section to this file")
    args = parser.parse_args()
    scratch = None
    if args.db is None:
        scratch = tempfile.TemporaryDirectory(prefix="caretally-bench-api-db-")
        args.db = f"sqlite:///{Path(scratch.name) / 'bench.db'}"
    args.db_kind = "SQLite" if args.db.startswith("sqlite") else "PostgreSQL"
    args.load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    built = None
    if not args.reuse:
        print(f"building {args.patients:,} patients in {args.db_kind} …", flush=True)
        built = build_database(args.db, args.patients)
        print(f"  synthesize {built['synth_s']:.1f} s, import {built['import_s']:.1f} s", flush=True)
    setup = credentials_and_targets(args.db)
    server, base = start_server(args.db)
    try:
        context = multiprocessing.get_context("spawn")
        mine, theirs = context.Pipe(duplex=False)
        options = {"seconds": args.seconds, "batches": args.batches, "batch_clients": args.batch_clients}
        options["reads"] = args.reads
        generator = context.Process(target=load, args=(base, setup, options, theirs))
        generator.start()
        figures = mine.recv()
        generator.join()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    if "error" in figures:
        raise SystemExit(f"the load generator failed: {figures['error']}")
    section = report(args, built, figures)
    print(section)
    if args.results is not None:
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write("\n" + section)
    if scratch is not None:
        scratch.cleanup()


if __name__ == "__main__":
    main()

"""The worklist kept as state: cold build, first page, refresh after 1% touched, post → visible.

    python bench/worklist_state.py --patients 10000 [--pg-url URL] [--results bench/RESULTS.md]

Synthesizes a one-month practice (``SynthConfig(patients=N, start=2026-03-01, months=1,
seed=1)``, as ``bench/run.py``), imports it into a fresh SQLite file (and a PostgreSQL
database with ``--pg-url``), then :func:`measure` — which ``bench/run.py`` can call on a
database it imported — times, as of 2026-03-20:

* ``cold_build_worklist_s``: today's cold ``build_worklist`` (the reference);
* ``state_cold_s``: building the kept state from nothing (evaluation + rows written);
* ``api_first_page_p50/p95_ms``: the API reader's work for the first 50 rows (freshness
  check + indexed query + rows decoded), 60 times; ``web_first_page_*`` the web page's
  (patients together, totals, staff choices);
* ``refresh_1pct_s``: after one more reading day for 1% of the patients (posted through
  the live readings path), the incremental refresh that brings the state up;
* with ``--serve``: ``post_to_kept_s`` and ``post_to_visible_s``, a reading POSTed to a
  real ``caretally serve`` until the server's own consumer has refreshed the state, and
  until ``GET /api/v1/worklist`` has answered from it.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, and_, func, select, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

from bench.incremental import readings_by_patient  # noqa: E402

ORG = "default"
AS_OF = date(2026, 3, 20)
QUERIES = 60
SECRET = "bench-only-" + "Wm4Qx8Tr2Lk6Zp0Nc5Vy9Hb3Jd7Gf1"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _timed(fn: Callable[[], Any], times: int) -> list[float]:
    out = []
    for _ in range(times):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def _readings_to_post(engine: Engine, org: str, as_of: date, share: float, seed: int) -> list[dict[str, str]]:
    """One new reading, on a day up to ``as_of`` the patient's device had none, for ``share`` of
    the patients with readings this month."""
    from caretally.store import schema

    rd = schema.readings
    window = and_(rd.c.org_id == org, rd.c.local_date.between(as_of.replace(day=1), as_of))
    with engine.connect() as conn:
        # The patients first, then only the chosen ones' readings: reading every reading of
        # the month (3 million rows at 100,000 patients) was most of this step's peak memory.
        having = sorted(conn.execute(select(rd.c.patient_id).where(window).distinct()).scalars())
        rng = random.Random(seed)
        chosen = rng.sample(having, max(1, round(len(having) * share)))
        by_patient = readings_by_patient(conn, window, chosen)
        first = conn.execute(select(func.min(rd.c.local_date)).where(rd.c.org_id == org)).scalar()
    tag = f"{time.time_ns():x}"
    items = []
    for i, patient in enumerate(chosen):
        days = {r["local_date"] for r in by_patient[patient]}
        base = by_patient[patient][0]
        for shift in range(-base["local_date"].day + 1, (as_of - base["local_date"]).days + 1):
            day = base["local_date"] + timedelta(days=shift)
            # The organization's first day must stay where it is (else the post touches every
            # patient-month). The reading is the base one moved by whole days of UTC time, so
            # across a DST change its local date can be a day off ``day``: keep a day away.
            if day > first + timedelta(days=1) and day not in days:
                break
        else:
            continue  # every day so far has a reading already
        items.append(
            {
                "reading_id": f"bench-wl-{tag}-{i}",
                "patient_id": patient,
                "device_id": base["device_id"],
                "measured_at": (base["measured_at"] + timedelta(days=shift)).isoformat(),
                "type": base["type"],
                "value": str(base["value"]),
                "unit": base["unit"],
                "transmission": base["transmission"],
            }
        )
    return items


def _peak_reset() -> None:
    """Start a new peak of resident memory for this process (Linux: ``clear_refs`` 5 resets VmHWM)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak_mb() -> float:
    """Peak resident memory since the last :func:`_peak_reset` (VmHWM), in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure(url: str, org: str, as_of: date, *, compare_cold: bool = False) -> dict[str, float]:
    """State build, first-page latencies and the refresh after 1% touched, on an imported database.

    The organization's kept states are dropped first, so the build is cold. With
    ``compare_cold`` the cold ``build_worklist`` is timed as well (a second full evaluation).
    """
    from caretally import worklist_state as ws
    from caretally.billing.payers import PayerRules
    from caretally.ingest.live import ingest_readings
    from caretally.store import schema
    from caretally.store.db import open_database
    from caretally.worklist import build_worklist

    engine = open_database(url, org)
    rules = PayerRules.load()
    out: dict[str, float] = {}
    if compare_cold:
        _peak_reset()
        began = time.perf_counter()
        out["cold_rows"] = len(build_worklist(engine, org, as_of, rules))
        out["cold_build_worklist_s"] = time.perf_counter() - began
        out["cold_peak_mb"] = _peak_mb()
    for kept_as_of, _, key in ws.kept_states(engine, org):
        ws.forget_state(engine, org, ws.state_id(kept_as_of, key))
    _peak_reset()
    began = time.perf_counter()
    built = ws.refresh(engine, org, as_of, rules)
    out["state_cold_s"] = time.perf_counter() - began
    out["state_peak_mb"] = _peak_mb()
    _peak_reset()
    sid = built.state_id
    with engine.connect() as conn:
        kept = schema.worklist_rows
        out["state_rows"] = conn.execute(select(func.count()).where(kept.c.state_id == sid)).scalar_one()

    def api_page() -> None:
        ws.refresh(engine, org, as_of, rules)
        with engine.connect() as conn:
            assert len(ws.ranked(conn, org, sid, limit=51)) > 0

    def web_page() -> None:
        ws.refresh(engine, org, as_of, rules)
        with engine.connect() as conn:
            ws.together(conn, org, sid, limit=50)
            ws.totals(conn, org, sid)
            ws.practitioners_in_use(conn, org, sid)

    for name, fn in (("api_first_page", api_page), ("web_first_page", web_page)):
        ms = _timed(fn, QUERIES)
        out[f"{name}_p50_ms"] = statistics.median(ms)
        out[f"{name}_p95_ms"] = _percentile(ms, 0.95)

    items = _readings_to_post(engine, org, as_of, 0.01, seed=5)
    posted = ingest_readings(engine, org, items, now=datetime.now(UTC))
    assert posted.ok(), [p.message for p in posted.problems[:3]]
    out["posted_readings"] = len(items)
    began = time.perf_counter()
    again = ws.refresh(engine, org, as_of, rules)
    out["refresh_1pct_s"] = time.perf_counter() - began
    assert again.mode == "incremental", again
    out["refresh_1pct_patients"] = again.evaluated
    out["api_first_page_after_p95_ms"] = _percentile(_timed(api_page, QUERIES), 0.95)
    out["pages_refresh_peak_mb"] = _peak_mb()
    engine.dispose()
    return out


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_to_visible(url: str, org: str, as_of: date) -> dict[str, float]:
    """A reading POSTed to a real ``caretally serve``: seconds until the server's consumer has
    refreshed the kept state, and until ``GET /api/v1/worklist`` has answered after it."""
    import httpx

    from caretally.services import accounts
    from caretally.services.context import cli_actor
    from caretally.store import schema
    from caretally.store.db import open_database

    engine = open_database(url, org)
    feed = accounts.create_token(engine, cli_actor(org), name=f"wl-feed-{time.time_ns()}", role="integration")
    nurse = accounts.create_token(
        engine, cli_actor(org), name=f"wl-nurse-{time.time_ns()}", role="care_staff"
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARETALLY_")}
    env.update(CARETALLY_DATABASE_URL=url, CARETALLY_SECRET_KEY=SECRET, CARETALLY_ACCESS_LOG="false")
    server = subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    states, touches = schema.worklist_states, schema.month_touches

    def caught_up() -> bool:
        """The state of ``as_of`` (other days' states the task may also build are not waited for)."""
        with engine.connect() as conn:
            mark = conn.execute(select(func.max(touches.c.id)).where(touches.c.org_id == org)).scalar()
            kept = conn.execute(
                select(func.max(states.c.touches_through)).where(
                    states.c.org_id == org, states.c.as_of == as_of
                )
            ).scalar()
        return (kept or 0) >= (mark or 0)

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("caretally serve did not start")
            time.sleep(0.2)
        query = {"as_of": as_of.isoformat(), "limit": 50}
        with httpx.Client(base_url=base, timeout=300) as http:
            nurse_auth = {"Authorization": f"Bearer {nurse.secret}"}
            assert http.get("/api/v1/worklist", params=query, headers=nurse_auth).status_code == 200
            item = _readings_to_post(engine, org, as_of, 0.0, seed=11)[:1]
            began = time.monotonic()
            posted = http.post(
                "/api/v1/readings", json=item, headers={"Authorization": f"Bearer {feed.secret}"}
            )
            assert posted.status_code in (200, 201), posted.text
            while not caught_up():
                if time.monotonic() - began > 120:
                    raise SystemExit("the kept worklist was not refreshed within 120 s")
                time.sleep(0.02)
            kept_s = time.monotonic() - began
            assert http.get("/api/v1/worklist", params=query, headers=nurse_auth).status_code == 200
            visible_s = time.monotonic() - began
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        engine.dispose()
    return {"post_to_kept_s": kept_s, "post_to_visible_s": visible_s}


def _build(url: str, bundle: Path) -> float:
    from caretally.ingest import import_bundle
    from caretally.store.db import open_database

    engine = open_database(url, ORG)
    began = time.perf_counter()
    assert import_bundle(engine, ORG, bundle).ok()
    seconds = time.perf_counter() - began
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--pg-url", default=None, help="an empty PostgreSQL database to use as well")
    parser.add_argument("--serve", action="store_true", help="also time a POST to a real caretally serve")
    parser.add_argument("--results", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()
    from caretally.synth import SynthConfig, synthesize

    work = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    bundle = work / "bundle"
    synthesize(SynthConfig(patients=args.patients, start=date(2026, 3, 1), months=1, seed=1), bundle)
    urls = {"SQLite": f"sqlite:///{work / 'bench.db'}"}
    if args.pg_url:
        urls["PostgreSQL"] = args.pg_url
    figures: dict[str, dict[str, float]] = {}
    for name, url in urls.items():
        imported = _build(url, bundle)
        found = measure(url, ORG, AS_OF, compare_cold=True)
        found["import_s"] = imported
        if args.serve:
            found.update(post_to_visible(url, ORG, AS_OF))
        figures[name] = found
        print(name, {k: round(v, 3) for k, v in found.items()}, flush=True)
    keys = sorted({k for f in figures.values() for k in f})
    lines = ["| figure | " + " | ".join(figures) + " |", "|---|" + "---:|" * len(figures)]
    for key in keys:
        cells = [f"{figures[n][key]:.3f}" if key in figures[n] else "–" for n in figures]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if args.results:
        command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
        with args.results.open("a", encoding="utf-8") as handle:
            handle.write(
                f"\n### The worklist kept as state, {args.patients:,} patients "
                f"({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)\n\n`{command}`\n\n{table}\n"
            )


if __name__ == "__main__":
    main()

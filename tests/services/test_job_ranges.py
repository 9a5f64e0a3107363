"""A month run split across three real ``caretally worker`` processes on the real Redis.

The job's ranges are evaluated by several worker processes (their logs say which), and
the run they store — claim lines, summary, decisions, digests — is the one a one-process
``bill_month`` stores for the same data, byte for byte. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select

from caretally.billing.payers import PayerRules
from caretally.billing.run import BillingSettings, bill_month, line_content, stored_lines
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.jobs.queue import JobQueue, make_huey
from caretally.services import jobs
from caretally.services.context import cli_actor
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize
from tests.api.world import MONTH
from tests.conftest import skip_or_fail

REDIS_ENV = "CARETALLY_TEST_REDIS_URL"
#: A Redis database of this test's own, so it never meets another test's queue.
REDIS_DB = 11
RANGE_SIZE = 15


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ranges-practice")
    synthesize(SynthConfig(patients=120, start=date(2026, 3, 1), months=1, seed=47, lead_in_days=29), out)
    return out


@pytest.fixture(scope="module")
def larger_practice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ranges long enough (160 patients, about a second each) that a test sees one held."""
    out = tmp_path_factory.mktemp("ranges-larger-practice")
    synthesize(SynthConfig(patients=480, start=date(2026, 3, 1), months=1, seed=47, lead_in_days=29), out)
    return out


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        skip_or_fail(f"the split month run needs {REDIS_ENV} (.ci/run sets it)")
    return re.sub(r"/\d+$", "", url.rstrip("/")) + f"/{REDIS_DB}"


def _workers(url: str, redis_url: str, n: int) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "CARETALLY_JOB_HEARTBEAT_SECONDS": "1", "CARETALLY_LOG_LEVEL": "info"}
    env.pop("CARETALLY_RANGE_SIZE", None)  # the job carries the range size of the one who started it
    return [
        subprocess.Popen(
            [sys.executable, "-m", "caretally.cli.main", "worker", "--db", url, "--redis", redis_url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]


def _stored(engine: Engine, run_id: str) -> dict[str, Any]:
    """Everything a run stored, without its id: lines, decisions rows, digests, summary."""
    r, d = schema.billing_runs, schema.run_decisions
    with engine.connect() as conn:
        run = conn.execute(select(r).where(r.c.run_id == run_id)).mappings().one()
        decisions = conn.execute(
            select(d.c.patient_id, d.c.facts_digest, d.c.billable_count, d.c.decisions)
            .where(d.c.run_id == run_id)
            .order_by(d.c.patient_id)
        ).all()
    return {
        "lines": [line_content(line) for line in stored_lines(engine, run_id)],
        "decisions": [tuple(row) for row in decisions],
        "digests": {k: run[k] for k in ("input_digest", "lines_digest", "decisions_digest", "ruleset_hash")},
        "engine_version": run["engine_version"],
        "summary": run["summary"],
        "settings": run["settings"],
    }


def _forget(engine: Engine, run_id: str) -> None:
    """Remove a run, so the month can be billed afresh by the other path."""
    with engine.begin() as conn:
        for table in (schema.claim_lines, schema.run_decisions, schema.billing_runs):
            conn.execute(delete(table).where(table.c.run_id == run_id))


def test_three_workers_bill_a_month_as_one_process_does(db_url: str, redis_url: str, practice: Path) -> None:
    engine = open_database(db_url, "default")
    assert import_bundle(engine, "default", practice).ok()
    huey = make_huey(db_url, redis_url=redis_url)
    huey.flush()
    queue = JobQueue(huey, engine, heartbeat=1.0, range_size=RANGE_SIZE)  # this process only enqueues
    workers = _workers(db_url, redis_url, 3)
    actor = cli_actor("default")
    seen: list[tuple[int, int]] = []
    try:
        job, new = jobs.start_month_run(engine, actor, queue, MONTH)
        assert new
        deadline = time.monotonic() + 90
        while not (job := jobs.get_job(engine, actor, queue, job.job_id)).finished:
            assert time.monotonic() < deadline, f"the split run did not finish: {job}"
            for w in workers:
                assert w.poll() is None, w.stderr.read() if w.stderr else ""
            if job.state == jobs.RUNNING and job.total is not None:
                seen.append((job.done or 0, job.total))
            time.sleep(0.05)
    finally:
        for w in workers:
            w.terminate()
        logs = [w.communicate(timeout=30)[1] for w in workers]
        huey.flush()
    assert job.state == jobs.SUCCEEDED and job.outcome == "created", (job, logs)
    assert job.run_id is not None and job.done == job.total
    # Every range was evaluated, by more than one worker process.
    ranges_by = [len(re.findall(r"range \d+ of job \S+ evaluated", text)) for text in logs]
    total = job.total or 0
    assert total > 3 * RANGE_SIZE
    assert sum(ranges_by) >= -(-total // RANGE_SIZE), (ranges_by, logs)
    assert sum(1 for n in ranges_by if n) >= 2, ranges_by
    # Progress counted patients across workers, never past the total.
    assert all(0 <= done <= t == total for done, t in seen), seen
    split = _stored(engine, job.run_id)
    assert split["lines"] and split["decisions"]

    _forget(engine, job.run_id)
    alone = bill_month(engine, "default", parse_month(MONTH), PayerRules.load(), BillingSettings())
    assert alone.outcome == "created" and alone.run_id != job.run_id
    one = _stored(engine, alone.run_id)
    assert split["digests"] == one["digests"]
    assert split["lines"] == one["lines"]
    assert split["decisions"] == one["decisions"]
    assert split["summary"] == one["summary"]
    assert (split["engine_version"], split["settings"]) == (one["engine_version"], one["settings"])
    engine.dispose()


def test_a_range_whose_worker_is_killed_is_evaluated_again(
    db_url: str, redis_url: str, larger_practice: Path
) -> None:
    """SIGKILL a worker while it holds a range: the range is queued again, the run is whole.

    With ranges of a few dozen patients a worker could finish its range between two looks
    at the claims (the run then ended before anything was killed); ranges of 160 patients
    are held for about a second."""
    engine = open_database(db_url, "default")
    assert import_bundle(engine, "default", larger_practice).ok()
    huey = make_huey(db_url, redis_url=redis_url)
    huey.flush()
    queue = JobQueue(huey, engine, heartbeat=1.0, range_size=160)
    workers = _workers(db_url, redis_url, 3)
    by_pid = {w.pid: w for w in workers}
    actor = cli_actor("default")
    killed: subprocess.Popen[str] | None = None
    try:
        job, _ = jobs.start_month_run(engine, actor, queue, MONTH)
        deadline = time.monotonic() + 90
        while killed is None:
            assert time.monotonic() < deadline, "no worker other than the coordinator took a range"
            with engine.connect() as conn:
                coordinator = conn.execute(
                    select(schema.jobs.c.worker).where(schema.jobs.c.job_id == job.job_id)
                ).scalar_one()
            for index in range(3):
                holder = huey.storage.peek_data(f"caretally:claim:{job.job_id}:{index}")
                staged = huey.storage.peek_data(f"caretally:range:{job.job_id}:{index}")
                if (
                    not isinstance(holder, bytes)
                    or isinstance(staged, bytes)
                    or holder.decode() == coordinator
                ):
                    continue
                pid = int(holder.decode().split(":")[1])
                killed = by_pid[pid]
                killed.kill()
                killed.wait(30)  # reaped: its pid is gone, as a dead process's is
                break
            assert not jobs.get_job(engine, actor, queue, job.job_id).finished
            time.sleep(0.005)
        while not (job := jobs.get_job(engine, actor, queue, job.job_id)).finished:
            assert time.monotonic() < deadline, f"the split run did not finish: {job}"
            time.sleep(0.05)
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        logs = [w.communicate(timeout=30)[1] for w in workers]
        huey.flush()
    assert killed.returncode == -9
    assert job.state == jobs.SUCCEEDED and job.run_id is not None, (job, logs)
    assert any("queued again" in text for text in logs), logs
    split = _stored(engine, job.run_id)
    _forget(engine, job.run_id)
    alone = bill_month(engine, "default", parse_month(MONTH), PayerRules.load(), BillingSettings())
    one = _stored(engine, alone.run_id)
    assert split["digests"] == one["digests"]
    assert (split["lines"], split["decisions"], split["summary"]) == (
        one["lines"],
        one["decisions"],
        one["summary"],
    )
    engine.dispose()


def test_one_consumer_on_the_embedded_queue_finishes_a_split_run_alone(
    sqlite_url: str, tmp_path: Path, practice: Path
) -> None:
    """No other worker: the coordinator evaluates every range itself, staged in huey's SQLite file."""
    from caretally.jobs.queue import BackgroundConsumer

    engine = open_database(sqlite_url, "default")
    assert import_bundle(engine, "default", practice).ok()
    huey = make_huey(sqlite_url, queue_file=tmp_path / "jobs.queue")
    queue = JobQueue(huey, engine, heartbeat=1.0, range_size=25)
    consumer = BackgroundConsumer(queue)
    consumer.start()
    actor = cli_actor("default")
    try:
        job, _ = jobs.start_month_run(engine, actor, queue, MONTH)
        deadline = time.monotonic() + 90
        while not (job := jobs.get_job(engine, actor, queue, job.job_id)).finished:
            assert time.monotonic() < deadline, f"the split run did not finish: {job}"
            time.sleep(0.05)
    finally:
        consumer.stop()
    assert job.state == jobs.SUCCEEDED and job.run_id is not None, job
    # Nothing of the run is left in the queue's store once it is stored.
    with sqlite3.connect(tmp_path / "jobs.queue") as db:
        left = db.execute("SELECT key FROM kv WHERE key LIKE ?", (f"%{job.job_id}%",)).fetchall()
    assert left == []
    split = _stored(engine, job.run_id)
    _forget(engine, job.run_id)
    alone = bill_month(engine, "default", parse_month(MONTH), PayerRules.load(), BillingSettings())
    assert _stored(engine, alone.run_id) == split
    engine.dispose()

"""Month-close jobs through real consumers, on SQLite and PostgreSQL, with huey's SQLite
queue and with the machine's real Redis.

A job goes queued → running → succeeded through a real huey consumer; a consumer process
killed in the middle of a month run leaves a job that is reported as failed and no run
at all, and starting the run again gives the run an uninterrupted one would have given.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from caretally.billing.run import current_run
from caretally.ingest import import_bundle, import_records
from caretally.jobs.queue import BackgroundConsumer, JobQueue, make_huey
from caretally.services import accounts, jobs
from caretally.services.context import cli_actor
from caretally.services.errors import NotFound
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize
from tests.api.world import CLOCK, MONTH, tenant_bundle
from tests.conftest import skip_or_fail

REDIS_ENV = "CARETALLY_TEST_REDIS_URL"


@dataclass(frozen=True)
class Broker:
    redis_url: str | None
    queue_file: str

    def env(self) -> dict[str, str]:
        out = {"CARETALLY_QUEUE_FILE": self.queue_file, "CARETALLY_JOB_HEARTBEAT_SECONDS": "1"}
        if self.redis_url:
            out["CARETALLY_REDIS_URL"] = self.redis_url
        return out


@pytest.fixture(params=["sqlite-queue", "redis"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Broker:
    if request.param == "redis":
        url = os.environ.get(REDIS_ENV)
        if not url:
            skip_or_fail(f"the Redis job-queue tests need {REDIS_ENV} (.ci/run sets it)")
        return Broker(url, str(tmp_path / "unused.queue"))
    return Broker(None, str(tmp_path / "jobs.queue"))


def make_queue(engine: Engine, url: str, broker: Broker, heartbeat: float = 1.0) -> JobQueue:
    huey = make_huey(url, redis_url=broker.redis_url, queue_file=broker.queue_file)
    return JobQueue(huey, engine, heartbeat=heartbeat)


@pytest.fixture
def queue_for(broker: Broker) -> Iterator[object]:
    """Queues made for a test, flushed afterwards (Redis keeps keys between tests)."""
    made: list[JobQueue] = []

    def build(engine: Engine, url: str) -> JobQueue:
        queue = make_queue(engine, url, broker)
        made.append(queue)
        return queue

    yield build
    for queue in made:
        queue.huey.flush()


def wait_for(engine: Engine, queue: JobQueue, org: str, job_id: str, seconds: float = 60) -> jobs.Job:
    deadline = time.monotonic() + seconds
    while True:
        job = jobs.get_job(engine, cli_actor(org), queue, job_id)
        if job.finished or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def runs_of(engine: Engine, org: str) -> int:
    r = schema.billing_runs
    with engine.connect() as conn:
        counted = conn.execute(select(func.count()).where(r.c.org_id == org, r.c.month == MONTH))
        return int(counted.scalar_one())


def row_total(engine: Engine, job_id: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(schema.jobs.c.total).where(schema.jobs.c.job_id == job_id)).scalar_one()


def test_a_job_runs_through_a_real_consumer_to_succeeded(db_url: str, queue_for: object) -> None:
    engine = open_database(db_url, None)
    accounts.add_org(engine, "north", "North Clinic")
    accounts.add_org(engine, "south", "South Clinic")
    assert import_records(engine, "north", tenant_bundle("north"), now=CLOCK).ok()
    queue = queue_for(engine, db_url)  # type: ignore[operator]
    consumer = BackgroundConsumer(queue)
    consumer.start()
    try:
        job, new = jobs.start_month_run(engine, cli_actor("north"), queue, MONTH)
        assert new and job.state in (jobs.QUEUED, jobs.RUNNING, jobs.SUCCEEDED)
        again, new_again = jobs.start_month_run(engine, cli_actor("north"), queue, MONTH)
        if again.job_id == job.job_id:  # still active: the same job, not a second one
            assert not new_again
        done = wait_for(engine, queue, "north", job.job_id)
        assert done.state == jobs.SUCCEEDED, done
        run = current_run(engine, "north", MONTH)
        assert run is not None and done.run_id == run.run_id and done.outcome == "created"
        assert done.total is not None and done.total > 0 and done.done == done.total
        assert done.started_at is not None and done.finished_at is not None and done.error is None
        # Billing the same data again: the same run, found unchanged.
        rerun, _ = jobs.start_month_run(engine, cli_actor("north"), queue, MONTH)
        rerun = wait_for(engine, queue, "north", rerun.job_id)
        assert (rerun.state, rerun.run_id, rerun.outcome) == (jobs.SUCCEEDED, run.run_id, "unchanged")
        listed = jobs.list_jobs(engine, cli_actor("north"), queue, month=MONTH)
        assert rerun.job_id == listed[0].job_id and job.job_id in {j.job_id for j in listed}
        # Another organization sees none of it.
        with pytest.raises(NotFound):
            jobs.get_job(engine, cli_actor("south"), queue, job.job_id)
        assert jobs.list_jobs(engine, cli_actor("south"), queue) == []
    finally:
        consumer.stop()
        engine.dispose()


def test_a_refused_month_run_fails_with_its_code(db_url: str, queue_for: object) -> None:
    """A month no rule-year covers: the job fails with one line, and no run is stored."""
    engine = open_database(db_url, None)
    accounts.add_org(engine, "north", "North Clinic")
    assert import_records(engine, "north", tenant_bundle("north"), now=CLOCK).ok()
    queue = queue_for(engine, db_url)  # type: ignore[operator]
    consumer = BackgroundConsumer(queue)
    consumer.start()
    try:
        job, _ = jobs.start_month_run(engine, cli_actor("north"), queue, "2099-01")
        done = wait_for(engine, queue, "north", job.job_id)
        assert done.state == jobs.FAILED and done.error and "\n" not in done.error, done
        assert done.error_code == "rules_unavailable" and done.run_id is None
        assert done.error.startswith("the rules cannot judge 2099-01")
        assert "north-" not in done.error  # no patient in the line
    finally:
        consumer.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def practice_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough patients that evaluating the month takes a moment to interrupt."""
    out = tmp_path_factory.mktemp("jobs-practice")
    synthesize(SynthConfig(patients=150, start=date(2026, 3, 1), months=1, seed=31, lead_in_days=29), out)
    return out


def _worker(url: str, broker: Broker) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", "worker", "--db", url],
        env={**os.environ, **broker.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_an_interrupted_job_is_failed_stores_nothing_and_runs_again_the_same(
    db_url: str, broker: Broker, queue_for: object, practice_bundle: Path
) -> None:
    engine = open_database(db_url, "default")
    assert import_bundle(engine, "default", practice_bundle).ok()
    queue = queue_for(engine, db_url)  # type: ignore[operator]
    actor = cli_actor("default")
    worker = _worker(db_url, broker)
    try:
        job, _ = jobs.start_month_run(engine, actor, queue, MONTH)
        # The run has inserted its run row (uncommitted) once it reports 0 of N patients.
        deadline = time.monotonic() + 120
        on_row = not db_url.startswith("sqlite")  # PostgreSQL: the row gets the figures too
        while queue.progress(job.job_id) is None or (on_row and row_total(engine, job.job_id) is None):
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker never started the run"
            assert not jobs.get_job(engine, actor, queue, job.job_id).finished
            time.sleep(0.01)
        running = jobs.get_job(engine, actor, queue, job.job_id)
        assert running.state == jobs.RUNNING and running.total and running.done is not None
        assert running.done < running.total
        worker.send_signal(signal.SIGKILL)
        worker.wait(30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)
    assert queue.reap() == 1  # what a starting consumer does; a lookup would do the same
    failed = jobs.get_job(engine, actor, queue, job.job_id)
    assert failed.state == jobs.FAILED and failed.error_code == jobs.INTERRUPTED, failed
    assert "start the run again" in (failed.error or "")
    if on_row:
        assert failed.total == running.total and failed.done is not None  # the row's last figures
    assert runs_of(engine, "default") == 0, "an interrupted run left rows behind"
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.claim_lines)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(schema.run_decisions)).scalar_one() == 0

    consumer = BackgroundConsumer(queue)
    consumer.start()
    try:
        again, new = jobs.start_month_run(engine, actor, queue, MONTH)
        assert new
        again = wait_for(engine, queue, "default", again.job_id, 180)
        assert again.state == jobs.SUCCEEDED and again.outcome == "created", again
        assert again.done == again.total == running.total
        once_more, _ = jobs.start_month_run(engine, actor, queue, MONTH)
        once_more = wait_for(engine, queue, "default", once_more.job_id, 180)
    finally:
        consumer.stop()
    # Same data, rules and engine: the same run (same digests), nothing new stored.
    assert (once_more.outcome, once_more.run_id) == ("unchanged", again.run_id)
    assert runs_of(engine, "default") == 1
    engine.dispose()


def test_a_consumer_on_another_machine_is_alive_while_it_beats(sqlite_url: str, queue_for: object) -> None:
    """The cross-machine rule: a heartbeat in the queue's store, stale after ``stale_after``."""
    engine = open_database(sqlite_url, "default")
    queue = queue_for(engine, sqlite_url)  # type: ignore[operator]
    elsewhere = "another-host.example:4242:0badcafe"
    assert not queue.is_alive(elsewhere)  # never beat
    key = queue._key("alive", elsewhere)
    queue.huey.storage.put_data(key, str(time.time()).encode())
    assert queue.is_alive(elsewhere)
    queue.huey.storage.put_data(key, str(time.time() - queue.stale_after - 1).encode())
    assert not queue.is_alive(elsewhere)
    # This machine: a process that has exited is gone whatever its last beat said.
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    here = f"{socket.gethostname()[:80]}:{finished.stdout.strip()}:0badcafe"
    queue.huey.storage.put_data(queue._key("alive", here), str(time.time()).encode())
    assert not queue.is_alive(here)
    queue.start_heartbeat()
    try:
        assert queue.is_alive(queue.worker_id)
    finally:
        queue.stop_heartbeat()
    assert not queue.is_alive(queue.worker_id)
    engine.dispose()


def test_a_job_waits_for_a_writer_holding_sqlite_and_then_runs(
    sqlite_url: str, queue_for: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the database's write lock longer than one lock timeout: the job
    stays queued meanwhile, then runs, instead of being lost or stuck as running."""
    import sqlite3

    monkeypatch.setenv("CARETALLY_LOCK_TIMEOUT", "0.2")
    engine = open_database(sqlite_url, None)
    accounts.add_org(engine, "north", "North Clinic")
    assert import_records(engine, "north", tenant_bundle("north"), now=CLOCK).ok()
    queue = queue_for(engine, sqlite_url)  # type: ignore[operator]
    job, _ = jobs.start_month_run(engine, cli_actor("north"), queue, MONTH)
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    consumer = BackgroundConsumer(queue)
    consumer.start()
    try:
        time.sleep(1.5)  # several lock timeouts
        assert jobs.get_job(engine, cli_actor("north"), queue, job.job_id).state == jobs.QUEUED
        holder.execute("ROLLBACK")
        done = wait_for(engine, queue, "north", job.job_id)
        assert done.state == jobs.SUCCEEDED, done
    finally:
        holder.close()
        consumer.stop()
        engine.dispose()

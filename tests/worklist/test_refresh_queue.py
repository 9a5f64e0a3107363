"""The task queue keeps the worklist state fresh: a burst of ingests queues one refresh, and
a consumer — the in-process one of ``caretally serve`` on the embedded queue, or a
``caretally worker`` process on Redis — brings the state up to the committed data."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from caretally import worklist_state as ws
from caretally.jobs.queue import BackgroundConsumer, JobQueue, make_huey
from caretally.services.context import Actor
from caretally.services.ingest import post_readings
from caretally.services.permissions import Role
from caretally.store import schema
from tests.conftest import skip_or_fail
from tests.worklist.conftest import AS_OF, ORG, copy_database
from tests.worklist.test_state import RULES, assert_kept_equals_cold

REDIS_ENV = "CARETALLY_TEST_REDIS_URL"


def _state_mark(engine: Engine, sid: str) -> int:
    s = schema.worklist_states
    with engine.connect() as conn:
        return int(conn.execute(select(s.c.touches_through).where(s.c.state_id == sid)).scalar_one())


def _wait(until: Callable[[], bool], seconds: float = 60) -> float:
    start = time.monotonic()
    while not until():
        assert time.monotonic() - start < seconds, "the kept worklist was not refreshed in time"
        time.sleep(0.1)
    return time.monotonic() - start


def _burst(engine: Engine, queue: JobQueue) -> list[bool]:
    """Five posts of one reading each through the service, each queueing a refresh after its commit."""
    r = schema.readings
    with engine.connect() as conn:
        base = conn.execute(
            select(r).where(r.c.org_id == ORG, r.c.local_date < AS_OF).order_by(r.c.reading_id).limit(5)
        ).mappings().all()  # fmt: skip
    actor = Actor(org_id=ORG, role=Role.INTEGRATION, actor="token:feed")
    queued: list[bool] = []
    for i, row in enumerate(base):
        item = {
            "reading_id": f"burst-{i}",
            "patient_id": row["patient_id"],
            "device_id": row["device_id"],
            "measured_at": row["measured_at"].replace(hour=(row["measured_at"].hour + 1) % 24).isoformat(),
            "type": row["type"],
            "value": str(row["value"]),
            "unit": row["unit"],
            "transmission": row["transmission"],
        }
        post_readings(
            engine, actor, [item], touched=lambda org: queued.append(queue.enqueue_worklist_refresh(org))
        )
    return queued


def test_embedded_queue_coalesces_a_burst_and_the_serve_consumer_refreshes(
    kept_template: Path, tmp_path: Path
) -> None:
    engine = copy_database(kept_template, tmp_path)
    queue = JobQueue(make_huey(str(engine.url), queue_file=tmp_path / "jobs.queue"), engine)
    kept = ws.refresh(engine, ORG, AS_OF, RULES)
    queued = _burst(engine, queue)
    assert queued == [True, False, False, False, False]
    assert queue.huey.pending_count() == 1
    assert _state_mark(engine, kept.state_id) < ws.touches_mark(engine, ORG)
    consumer = BackgroundConsumer(queue)
    consumer.start()
    try:
        _wait(lambda: _state_mark(engine, kept.state_id) == ws.touches_mark(engine, ORG))
    finally:
        consumer.stop()
    assert queue.enqueue_worklist_refresh(ORG), "the task cleared its pending mark when it started"
    assert ws.refresh(engine, ORG, AS_OF, RULES).mode == "fresh"
    assert_kept_equals_cold(engine, kept.state_id)
    queue.huey.flush()
    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get(REDIS_ENV)
    if not url:
        skip_or_fail(f"the Redis worklist-refresh test needs {REDIS_ENV} (.ci/run sets it)")
    return url


def test_on_redis_a_caretally_worker_process_refreshes(
    kept_template: Path, tmp_path: Path, redis_url: str
) -> None:
    engine = copy_database(kept_template, tmp_path)
    url = engine.url.render_as_string(hide_password=False)
    queue = JobQueue(make_huey(url, redis_url=redis_url), engine)
    queue.huey.flush()
    kept = ws.refresh(engine, ORG, AS_OF, RULES)
    assert _burst(engine, queue) == [True, False, False, False, False]
    env = {**os.environ, "CARETALLY_REDIS_URL": redis_url}
    worker = subprocess.Popen(
        [sys.executable, "-m", "caretally.cli.main", "worker", "--db", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(lambda: _state_mark(engine, kept.state_id) == ws.touches_mark(engine, ORG))
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(30)
        queue.huey.flush()
    assert "Traceback" not in (worker.stderr.read() if worker.stderr else "")
    assert_kept_equals_cold(engine, kept.state_id)
    engine.dispose()

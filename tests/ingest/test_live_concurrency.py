"""Live readings under real concurrency and a real crash, on SQLite and PostgreSQL.

Eight threads post overlapping batches at the same instant: every reading must be
stored exactly once, and exactly one request may call each one ``inserted``. A child
process is killed with SIGKILL while its batch is half written: nothing of the batch may
remain, and sending the batch again must store all of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from caretally.ingest.live import LiveResult, ingest_readings
from caretally.store import schema
from tests.ingest.live_practice import NOW, open_practice, reading, stored_readings

CLIENTS = 8
POOL = 120
WINDOW = 40


def _pool() -> list[dict[str, Any]]:
    """Scale readings a quarter hour apart; every other one has the source's own id."""
    from datetime import datetime

    start = datetime.fromisoformat("2026-03-01T06:00:00-06:00")
    items = []
    for n in range(POOL):
        when = (start + timedelta(minutes=15 * n)).isoformat()
        extra = {"reading_id": f"R{n:03d}"} if n % 2 else {}
        items.append(reading(measured_at=when, value=f"{180 + n / 10:.1f}", **extra))
    return items


def test_eight_clients_posting_overlapping_batches_store_every_reading_once(db_url: str) -> None:
    engine = open_practice(db_url)
    pool = _pool()
    # Client c sends pool[10c : 10c + 40], twice (the second time in reverse order): each
    # reading is in up to four clients' batches, and the batches start at one barrier.
    batches = [pool[10 * c : 10 * c + WINDOW] for c in range(CLIENTS)]
    barrier = threading.Barrier(CLIENTS)
    results: list[list[LiveResult]] = [[] for _ in range(CLIENTS)]
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[c].append(ingest_readings(engine, "clinic", batches[c], now=NOW))
            results[c].append(ingest_readings(engine, "clinic", list(reversed(batches[c])), now=NOW))
        except BaseException as exc:  # reported below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    sent = {json.dumps(item, sort_keys=True) for batch in batches for item in batch}
    stored = stored_readings(engine)
    keys = [row["reading_key"] for row in stored]
    assert len(keys) == len(set(keys)) == len(sent)
    every = [r for per_client in results for r in per_client]
    assert all(r.stored and r.ok() for r in every)
    assert sum(r.counts["inserted"] for r in every) == len(sent)
    assert sum(r.counts["unchanged"] for r in every) == 2 * CLIENTS * WINDOW - len(sent)
    assert all(r.counts["updated"] == 0 for r in every)
    with_id = {i.key for r in every for i in r.items if i.key and i.status == "inserted"}
    assert with_id == {row["reading_id"] for row in stored if row["reading_id"]}


CHILD = """
import json, sys, time
from datetime import datetime
from sqlalchemy import event
from caretally.store.db import open_database
from caretally.ingest.live import ingest_readings

url, path, now = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3])
items = json.loads(open(path).read())
engine = open_database(url, "clinic")

@event.listens_for(engine, "after_cursor_execute")
def pause(conn, cursor, statement, parameters, context, executemany):
    # The merge's INSERT into the real table has run inside the open transaction: the
    # batch is half done. Say so, then wait to be killed.
    if statement.lstrip().upper().startswith("INSERT INTO READINGS"):
        print(f"MIDWAY {cursor.rowcount}", flush=True)
        time.sleep(600)

ingest_readings(engine, "clinic", items, now=now)
print("FINISHED", flush=True)
"""


def _count(engine: Any, table: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(table).where(table.c.org_id == "clinic")
        ).scalar_one()


def test_a_process_killed_mid_batch_leaves_nothing_and_the_retry_succeeds(
    db_url: str, tmp_path: Path
) -> None:
    engine = open_practice(db_url)
    ingest_readings(engine, "clinic", [reading(reading_id="BEFORE")], now=NOW)
    batches_before = _count(engine, schema.import_batches)
    batch = _pool()
    (tmp_path / "batch.json").write_text(json.dumps(batch), encoding="utf-8")
    (tmp_path / "child.py").write_text(CHILD, encoding="utf-8")
    child = subprocess.Popen(
        [sys.executable, str(tmp_path / "child.py"), db_url, str(tmp_path / "batch.json"), NOW.isoformat()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.startswith("MIDWAY"), (line, child.stderr.read() if child.poll() is not None else "")
        written = int(line.split()[1])
        assert written == POOL  # the whole batch sat in the uncommitted transaction
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert [row["reading_key"] for row in stored_readings(engine)] == ["BEFORE"]
    assert _count(engine, schema.import_batches) == batches_before
    retry = ingest_readings(engine, "clinic", batch, now=NOW)
    assert retry.stored and retry.counts["inserted"] == POOL
    assert len(stored_readings(engine)) == POOL + 1

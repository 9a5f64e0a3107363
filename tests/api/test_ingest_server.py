"""Live ingest against a real server: ``caretally serve`` (uvicorn) in its own process on a
loopback port, real HTTP clients, SQLite and PostgreSQL.

* Eight clients post overlapping batches at once: every reading is stored exactly once
  and exactly one request reports inserting it.
* The server is killed (SIGKILL) while it works on a batch: nothing of that batch is
  stored, and the same batch sent again to a new server is stored whole.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.engine import make_url

from caretally.services import accounts
from caretally.services.context import cli_actor
from caretally.store import schema
from tests.api.world import SECRET
from tests.ingest.live_practice import ORG, open_practice

CLIENTS = 8


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    base: str = ""

    def start(self) -> None:
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "caretally.cli.main",
                "serve",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"caretally serve did not start: {self.process.communicate()[1][-2000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[Server, Engine, dict[str, str]]]:
    engine = open_practice(db_url)
    token = accounts.create_token(engine, cli_actor(ORG), name="feed", role="integration").secret
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARETALLY_")}
    env.update(
        CARETALLY_DATABASE_URL=db_url,
        CARETALLY_SECRET_KEY=SECRET,
        CARETALLY_MAX_BODY_BYTES=str(32 * 1024**2),
        CARETALLY_ACCESS_LOG="false",
    )
    server = Server(db_url, env)
    server.start()
    try:
        yield server, engine, {"Authorization": f"Bearer {token}"}
    finally:
        server.stop()
        engine.dispose()


START = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)


def reading(n: int, *, keyed: bool) -> dict[str, Any]:
    """The scale's reading number ``n``: keyed by its id, or (``keyed=False``) by device,
    instant and type, the natural key a device feed without ids gets."""
    return {
        "reading_id": f"r-{n}" if keyed else "",
        "patient_id": "P1",
        "device_id": "D2",
        "measured_at": (START + timedelta(minutes=7 * n)).isoformat(),
        "type": "weight",
        "value": f"{180 + n % 7}.{n % 10}",
        "unit": "lbs",
        "transmission": "auto",
    }


def readings_count(engine: Engine, **where: Any) -> int:
    r = schema.readings
    query = select(func.count()).select_from(r).where(r.c.org_id == ORG)
    for name, value in where.items():
        query = query.where(r.c[name].like(value))
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def test_eight_clients_posting_overlapping_batches_store_every_reading_once(
    served: tuple[Server, Engine, dict[str, str]],
) -> None:
    server, engine, auth = served
    universe = 480  # readings 0…479; half keyed by id, half by device, instant and type
    batch, step = 60, 20  # client c posts windows starting at c*step, wrapping: each reading ~3 times
    sent = Counter[int]()
    plans: list[list[list[int]]] = []
    for c in range(CLIENTS):
        windows = []
        for k in range(universe // (step * CLIENTS) + 3):
            start = (c * step + k * step * CLIENTS) % universe
            window = [(start + i) % universe for i in range(batch)]
            windows.append(window)
            sent.update(window)
        plans.append(windows)
    assert min(sent[n] for n in range(universe)) >= 2, "every reading must be sent by more than one request"
    barrier = threading.Barrier(CLIENTS)

    def client(windows: list[list[int]]) -> list[dict[str, Any]]:
        answers = []
        with httpx.Client(base_url=server.base, headers=auth, timeout=120) as http:
            barrier.wait()
            for window in windows:
                body = [reading(n, keyed=n % 2 == 0) for n in window]
                answer = http.post("/api/v1/readings", json=body)
                assert answer.status_code == 200, answer.text
                answers.append(answer.json())
        return answers

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = [a for answers in pool.map(client, plans) for a in answers]

    inserted = Counter[str]()
    for body in results:
        assert body["ok"] and body["stored"]
        for item in body["items"]:
            assert item["status"] in ("inserted", "unchanged"), item
            if item["status"] == "inserted":
                inserted[item["key"] or f"{body['batch_id']}{item['pointer']}"] += 1
    assert sum(inserted.values()) == universe, "each reading is reported inserted by exactly one request"
    assert readings_count(engine) == universe
    r = schema.readings
    with engine.connect() as conn:
        keys = conn.execute(select(r.c.reading_key).where(r.c.org_id == ORG)).scalars().all()
    assert len(set(keys)) == universe
    assert sum(1 for k in keys if k.startswith("r-")) == universe // 2


def _wait_for_a_writer(url: str, limit: float = 120.0) -> None:
    """Return as soon as another connection holds a write transaction on the database.

    SQLite: our ``BEGIN IMMEDIATE`` fails while the server holds the one write lock (we
    let go at once when it succeeds). PostgreSQL: a backend of the database other than
    ours has a transaction id, which a transaction gets at its first write.
    """
    deadline = time.monotonic() + limit
    if url.startswith("sqlite"):
        probe = sqlite3.connect(str(make_url(url).database), timeout=0, isolation_level=None)
        try:
            while time.monotonic() < deadline:
                try:
                    probe.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if "locked" in str(exc) or "busy" in str(exc):
                        return
                    raise
                probe.execute("ROLLBACK")
                time.sleep(0.002)
        finally:
            probe.close()
    else:
        watcher = create_engine(url, isolation_level="AUTOCOMMIT")
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_xid IS NOT NULL"
        )
        try:
            with watcher.connect() as conn:
                while time.monotonic() < deadline:
                    if conn.execute(query).scalar_one():
                        return
                    time.sleep(0.002)
        finally:
            watcher.dispose()
    pytest.fail("the server never began writing the batch")


def test_a_server_killed_mid_batch_stores_none_of_it_and_the_retry_succeeds(
    served: tuple[Server, Engine, dict[str, str]],
) -> None:
    server, engine, auth = served
    size = 12_000
    body = [reading(n, keyed=True) | {"reading_id": f"kill-{n}"} for n in range(size)]
    outcome: dict[str, Any] = {}

    def post() -> None:
        try:
            with httpx.Client(base_url=server.base, headers=auth, timeout=300) as http:
                outcome["answer"] = http.post("/api/v1/readings", json=body)
        except httpx.TransportError as exc:
            outcome["error"] = exc

    with httpx.Client(base_url=server.base, headers=auth, timeout=60) as http:
        # A first request, so that the token's last-used write is done before the batch.
        assert http.post("/api/v1/readings", json=[]).status_code == 200
    sender = threading.Thread(target=post)
    sender.start()
    _wait_for_a_writer(server.url)  # the batch's transaction has begun and not committed
    server.kill()
    sender.join(timeout=60)
    assert "answer" not in outcome, (
        f"the server answered ({outcome['answer'].status_code}) before it was killed; "
        "the batch is too small to be killed in the middle on this machine"
    )
    assert isinstance(outcome.get("error"), httpx.TransportError)
    assert readings_count(engine, reading_key="kill-%") == 0, "a killed batch left readings behind"

    server.start()
    with httpx.Client(base_url=server.base, headers=auth, timeout=300) as http:
        retried = http.post("/api/v1/readings", json=body)
    assert retried.status_code == 200, retried.text
    assert retried.json()["counts"]["inserted"] == size
    assert readings_count(engine, reading_key="kill-%") == size

"""The task queue of one caretally installation, made from settings when a process starts.

huey runs the queue: ``SqliteHuey`` in a file beside the embedded SQLite database (or
``CARETALLY_QUEUE_FILE``), ``RedisHuey`` when ``CARETALLY_REDIS_URL`` is set — the broker a
deployment with several machines shares. The queue's name is derived from the database
URL, so two installations on one Redis never take each other's jobs.

Besides the tasks, the queue's key-value store holds two kinds of small, PHI-free values:

* live progress of a running job (patients done / total). On SQLite a month run holds the
  database's one write lock until it commits, so the ``jobs`` row cannot be updated while
  it runs; the queue's own store (another file, or Redis) can.
* a heartbeat per consumer. A job records the consumer that runs it; when that consumer
  stops beating (killed, machine restarted) the job is reported as failed. A month run is
  one transaction, so an interrupted one has stored nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey
from huey.consumer import Consumer
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

log = logging.getLogger("caretally.jobs")

MONTH_RUN_TASK = "caretally.month_run"
RANGE_TASK = "caretally.month_range"
WORKLIST_TASK = "caretally.worklist_refresh"
#: A pending worklist refresh older than this is assumed lost (its consumer died before
#: taking it), and the next ingest queues another.
WORKLIST_PENDING_SECONDS = 60.0
QUEUE_SUFFIX = ".queue"
#: The queue file's folder when the database is not a SQLite file and no Redis is set: the
#: system's temporary folder, where every process of this machine finds the same file.
DEFAULT_QUEUE_FOLDER = Path(tempfile.gettempdir())
HEARTBEAT_SECONDS = 5.0
#: Progress is written at most this often (plus at the start and the end of a run).
PROGRESS_EVERY = 0.5


class QueueUnavailable(Exception):
    """The queue cannot be used as configured; one line, and what to do."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def queue_name(database_url: str) -> str:
    """One queue per database: a digest of its URL (password left out)."""
    try:
        shown = make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = database_url
    return "caretally-" + hashlib.sha256(shown.encode()).hexdigest()[:12]


def queue_file_for(database_url: str, queue_file: str | Path | None = None) -> Path:
    """Where the embedded queue lives: the given file, else beside the SQLite database.

    A server database without Redis gets ``<temporary folder>/<queue name>.queue``: good
    for one machine, lost when the temporary folder is cleaned; set ``CARETALLY_QUEUE_FILE``
    or Redis for anything lasting.
    """
    if queue_file:
        return Path(queue_file)
    fallback = DEFAULT_QUEUE_FOLDER / f"{queue_name(database_url)}{QUEUE_SUFFIX}"
    try:
        parsed = make_url(database_url)
    except ArgumentError:
        return fallback
    database = parsed.database or ""
    # A URI filename (file:…) is not a path: such a database gets the default queue file.
    if (
        parsed.drivername.startswith("sqlite")
        and database not in ("", ":memory:")
        and not (database.startswith("file:"))
    ):
        path = Path(database)
        return path.with_name(path.name + QUEUE_SUFFIX)
    return fallback


def make_huey(
    database_url: str, *, redis_url: str | None = None, queue_file: str | Path | None = None
) -> Huey:
    """The huey instance for a database: Redis when given, else the embedded SQLite queue.

    Results are not kept: the ``jobs`` table is the record of every job.
    """
    name = queue_name(database_url)
    if redis_url:
        try:
            huey: Huey = RedisHuey(name, url=redis_url, results=False)
            huey.storage.conn.ping()
        except Exception as exc:  # redis raises its own ConnectionError, ValueError for a bad URL
            raise QueueUnavailable(
                f"cannot reach the job queue at Redis {_shown(redis_url)}: {type(exc).__name__}",
                "check CARETALLY_REDIS_URL (--redis), e.g. redis://127.0.0.1:6379/0, and that Redis runs",
            ) from None
        return huey
    path = queue_file_for(database_url, queue_file)
    try:
        return SqliteHuey(name, filename=str(path), results=False)
    except Exception as exc:  # sqlite3.OperationalError: a folder that does not exist, no permission
        raise QueueUnavailable(
            f"cannot open the job queue file {path}: {exc}",
            "set CARETALLY_QUEUE_FILE to a writable path, or use Redis (CARETALLY_REDIS_URL)",
        ) from None


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<the Redis URL>"


def new_worker_id() -> str:
    """``host:pid:random`` — which consumer runs a job, and where to look for it."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class JobQueue:
    """A huey queue bound to this process's database engine, with the month-run task.

    Built per process (``create_app``, ``caretally worker``); nothing here is global. The
    task is registered on this instance's huey under a fixed name, so a task a server
    enqueues is the one a worker process runs.
    """

    def __init__(
        self,
        huey: Huey,
        engine: Engine,
        *,
        heartbeat: float = HEARTBEAT_SECONDS,
        stale_after: float | None = None,
        range_size: int | None = None,
    ) -> None:
        self.huey = huey
        self.engine = engine
        self.heartbeat = heartbeat
        #: A consumer silent for this long is gone, and its running job interrupted.
        self.stale_after = stale_after if stale_after is not None else max(3 * heartbeat, heartbeat + 10)
        self.worker_id = new_worker_id()
        self._beating = threading.Event()
        self._stop_beating = threading.Event()
        self._last_progress: dict[str, float] = {}
        self._month_run = huey.task(name=MONTH_RUN_TASK)(self._run_month)
        #: Patients per range task when a month run is split across workers (``caretally.jobs.ranges``);
        #: ``None``: the consumer that takes the job runs it all in its own process.
        self.range_size = range_size
        self._month_range = huey.task(name=RANGE_TASK)(self._run_range)
        self._worklist_refresh = huey.task(name=WORKLIST_TASK)(self._refresh_worklist)

    # -- tasks ---------------------------------------------------------------------------

    def _run_month(self, job_id: str, range_size: int | None = None) -> None:
        from caretally.jobs.tasks import run_month_job

        run_month_job(self, job_id, range_size or self.range_size)

    def _run_range(self, job_id: str, index: int) -> None:
        from caretally.jobs.ranges import run_range

        run_range(self, job_id, index)

    def _refresh_worklist(self, org_id: str) -> None:
        # Cleared before reading: an ingest committing from now on queues a refresh of its
        # own, and every one committed before is in what this refresh reads.
        self.huey.storage.delete_data(self._key("worklist-pending", org_id))
        from caretally.services.months import refresh_kept_worklists

        refresh_kept_worklists(self.engine, org_id)

    def enqueue_worklist_refresh(self, org_id: str) -> bool:
        """Queue a refresh of the organization's kept worklist unless one is waiting already.

        A burst of posts queues one refresh, not one each: the first sets a pending mark in
        the queue's store, the task clears it when it starts. True when a task was queued.
        """
        key = self._key("worklist-pending", org_id)
        stamp = json.dumps(time.time()).encode()
        storage = self.huey.storage
        if not storage.put_if_empty(key, stamp):
            pending = self._peek(key)
            if isinstance(pending, int | float) and time.time() - pending < WORKLIST_PENDING_SECONDS:
                return False
            storage.put_data(key, stamp)
        self._worklist_refresh(org_id)
        return True

    def enqueue_range(self, job_id: str, index: int) -> None:
        """One range of a split month run (``caretally.jobs.ranges``) for any consumer."""
        self._month_range(job_id, index)

    def enqueue_month_run(self, job_id: str) -> None:
        """Put the job on the queue; raises ``QueueUnavailable`` when the broker is down.

        The job carries this queue's ``range_size``: the process that starts a run decides
        whether it is split across workers (a consumer's own setting applies otherwise).
        """
        try:
            self._month_run(job_id, self.range_size)
        except Exception as exc:
            raise QueueUnavailable(
                f"the job queue refused the job: {type(exc).__name__}",
                "check that Redis (or the queue file) is reachable, then start the run again",
            ) from None

    # -- progress ------------------------------------------------------------------------

    @staticmethod
    def _key(kind: str, ident: str) -> str:
        return f"caretally:{kind}:{ident}"

    def put_progress(self, job_id: str, done: int, total: int) -> bool:
        """Record patients done / total, at most every ``PROGRESS_EVERY`` seconds; True if written."""
        now = time.monotonic()
        if 0 < done < total and now - self._last_progress.get(job_id, 0.0) < PROGRESS_EVERY:
            return False
        self._last_progress[job_id] = now
        self.huey.storage.put_data(self._key("progress", job_id), json.dumps([done, total]).encode())
        return True

    def progress(self, job_id: str) -> tuple[int, int] | None:
        raw = self._peek(self._key("progress", job_id))
        if not isinstance(raw, list) or len(raw) != 2:
            return None
        return int(raw[0]), int(raw[1])

    def forget(self, job_id: str) -> None:
        self._last_progress.pop(job_id, None)
        self.huey.storage.delete_data(self._key("progress", job_id))

    def _peek(self, key: str) -> Any:
        try:
            raw = self.huey.storage.peek_data(key)
        except Exception:  # a broker that is down: no live figure, the row still answers
            log.warning("the job queue could not be read")
            return None
        if not isinstance(raw, bytes | str):
            return None  # huey's EmptyData
        try:
            return json.loads(raw)
        except ValueError:
            return None

    # -- heartbeats ----------------------------------------------------------------------

    def beat(self) -> None:
        self.huey.storage.put_data(self._key("alive", self.worker_id), json.dumps(time.time()).encode())

    def start_heartbeat(self) -> None:
        """Beat now and every ``heartbeat`` seconds until ``stop_heartbeat``."""
        if self._beating.is_set():
            return
        self.beat()
        self._beating.set()
        self._stop_beating.clear()

        def loop() -> None:
            while not self._stop_beating.wait(self.heartbeat):
                try:
                    self.beat()
                except Exception:
                    log.warning("could not write the consumer heartbeat to the job queue")

        threading.Thread(target=loop, name="caretally-heartbeat", daemon=True).start()

    def stop_heartbeat(self) -> None:
        self._stop_beating.set()
        self._beating.clear()
        try:
            self.huey.storage.delete_data(self._key("alive", self.worker_id))
        except Exception:
            log.warning("could not remove the consumer heartbeat from the job queue")

    def is_alive(self, worker_id: str | None) -> bool:
        """Is the consumer that took a job still there?

        This process's own consumer is alive while it beats; one on this machine is gone
        when its process is; any other is gone when its heartbeat is older than
        ``stale_after`` (clocks of the machines are assumed roughly in step).
        """
        if not worker_id:
            return False
        if worker_id == self.worker_id:
            return self._beating.is_set()
        host, _, rest = worker_id.partition(":")
        pid_text = rest.partition(":")[0]
        if host == socket.gethostname()[:80] and pid_text.isdigit():
            pid = int(pid_text)
            if pid == os.getpid() or not _pid_running(pid):
                return False  # this process restarted, or that one has exited
        beat = self._peek(self._key("alive", worker_id))
        return isinstance(beat, int | float) and time.time() - beat <= self.stale_after

    # -- consumers -----------------------------------------------------------------------

    def consumer(self, *, workers: int = 1, in_process: bool = False) -> Consumer:
        """A huey consumer with thread workers; ``in_process`` leaves signal handlers alone."""
        kind = _InProcessConsumer if in_process else Consumer
        return kind(
            self.huey,
            workers=workers,
            worker_type="thread",
            periodic=False,
            initial_delay=0.1,
            max_delay=1.0,
            check_worker_health=True,
        )

    def reap(self) -> int:
        """Mark every running job whose consumer is gone as failed; how many were."""
        from caretally.services.jobs import reap_interrupted

        return reap_interrupted(self.engine, self)


class _InProcessConsumer(Consumer):
    """A consumer inside ``caretally serve``: uvicorn owns the signals, so this sets none."""

    def _set_signal_handlers(self) -> None:
        pass


class BackgroundConsumer:
    """The in-process consumer of ``caretally serve`` on the embedded default.

    One worker thread: with no ``caretally worker`` running, jobs still finish. A job it
    is running when the server stops stays ``running`` until the next lookup or start
    finds its consumer gone and reports it as failed (its run transaction rolled back).
    """

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._consumer: Consumer | None = None

    def start(self) -> None:
        self.queue.start_heartbeat()
        self.queue.reap()
        self._consumer = self.queue.consumer(in_process=True)
        self._consumer.start()
        log.info("job consumer running in this process (one worker thread)")

    def stop(self, *, wait: float = 5.0) -> None:
        if self._consumer is not None:
            self._consumer.stop_flag.set()
            for _, thread in self._consumer.worker_threads:
                thread.join(wait)
            self._consumer.scheduler.join(wait)
            self._consumer = None
        self.queue.stop_heartbeat()


def run_consumer(build: Callable[[], JobQueue]) -> None:
    """``caretally worker`` with one process: consume until SIGINT (graceful) or SIGTERM."""
    queue = build()
    queue.start_heartbeat()
    try:
        reaped = queue.reap()
        if reaped:
            log.warning("%d job(s) interrupted by a stopped consumer reported as failed", reaped)
        queue.consumer().run()
    finally:
        queue.stop_heartbeat()
        queue.engine.dispose()

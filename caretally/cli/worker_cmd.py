"""``caretally worker``: run the month-close jobs that ``caretally serve`` queues.

One process by default. ``--workers N`` starts N consumer processes (each one worker
thread), not N threads in one: a month run may fork its own evaluation workers, which a
daemonic child process may not, and one run per process keeps runs from sharing state.
SIGINT lets running jobs finish; SIGTERM stops at once (a job cut off is reported as
failed and stored nothing).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
from typing import Annotated, Any

import typer

from caretally.cli.common import DbOption, UserError, err_console, open_db

RedisOption = Annotated[
    str | None,
    typer.Option("--redis", help="Redis URL of the job queue (default: $CARETALLY_REDIS_URL, else SQLite)."),
]
WorkersOption = Annotated[
    int, typer.Option("--workers", min=1, max=32, help="Consumer processes, one job at a time each.")
]
RangeSizeOption = Annotated[
    int | None,
    typer.Option(
        "--range-size",
        min=1,
        help="Split the month runs this worker starts into range tasks of this many patients, "
        "evaluated by every worker of the queue (default: $CARETALLY_RANGE_SIZE, else one process).",
    ),
]


def _logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("caretally", "huey"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)  # SQL parameters are patient data


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker(
        db_url: DbOption = None,
        redis: RedisOption = None,
        workers: WorkersOption = 1,
        range_size: RangeSizeOption = None,
    ) -> None:
        """Run queued month-close jobs (month runs started over HTTP) until stopped."""
        from caretally.api.settings import SettingsError, load_settings
        from caretally.jobs.queue import QueueUnavailable, make_huey, queue_file_for, run_consumer
        from caretally.store.db import resolve_url, shown_url

        try:
            settings = load_settings(database_url=db_url, redis_url=redis, range_size=range_size)
        except SettingsError as exc:
            raise UserError(exc.message, exc.hint, 2) from None
        url = resolve_url(settings.database_url)
        open_db(url, None).dispose()  # migrated, reachable: or one line and exit 2
        try:
            make_huey(url, redis_url=settings.redis_url, queue_file=settings.queue_file)
        except QueueUnavailable as exc:
            raise UserError(exc.message, exc.hint, 2) from None
        where = (
            f"Redis {shown_url(settings.redis_url)}"
            if settings.redis_url
            else f"queue file {queue_file_for(url, settings.queue_file)}"
        )
        err_console.print(
            f"caretally worker: {workers} consumer(s), {where}, database {shown_url(url)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        _logging(settings.log_level)

        def build() -> Any:
            from caretally.jobs.queue import JobQueue
            from caretally.store.db import make_engine

            huey = make_huey(url, redis_url=settings.redis_url, queue_file=settings.queue_file)
            return JobQueue(
                huey,
                make_engine(url),
                heartbeat=settings.job_heartbeat_seconds,
                range_size=settings.range_size,
            )

        if workers == 1:
            run_consumer(build)
            return
        _supervise(build, workers)


def _supervise(build: Any, workers: int) -> None:
    """N consumer processes; a signal to this one goes to each of them."""
    from caretally.jobs.queue import run_consumer

    context = multiprocessing.get_context("fork")
    children = [
        context.Process(target=run_consumer, args=(build,), name=f"worker-{i + 1}") for i in range(workers)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.is_alive() and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    for child in children:
        child.join()

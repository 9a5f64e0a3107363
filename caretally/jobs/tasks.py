"""What a consumer runs for a job: the month run, reporting progress as it goes.

The month run is ``billing.run.bill_month``, the one the CLI's ``bill`` calls, with the
same defaults as ``caretally bill --month M`` without options (national pricing, place
of service 11, Medicare rules without payer overlays). It is one transaction: when it
fails or its process dies, nothing of it is stored.

Progress (patients stored / total) goes to the queue's store as the run reports it, and on
PostgreSQL to the ``jobs`` row as well; on SQLite the run holds the database's one write
lock until it commits, so the row gets its figures when the run starts and ends.

Error lines recorded on the job name codes and counts, never patients: a refusal's
message (month busy, rules missing for the month) or the type of an unexpected error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import OperationalError

from caretally.services import jobs

if TYPE_CHECKING:
    from caretally.jobs.queue import JobQueue

log = logging.getLogger("caretally.jobs")

#: How often a consumer tries a write of its job's row while SQLite's write lock is held.
WRITE_ATTEMPTS = 120
T = TypeVar("T")


def run_month_job(queue: JobQueue, job_id: str, range_size: int | None = None) -> None:
    """Run the job's month run: in this process, or split in ranges of ``range_size``
    patients across every consumer of the queue (``caretally.jobs.ranges``)."""
    from caretally.billing.run import bill_month
    from caretally.dates import parse_month
    from caretally.errors import ProblemsError, Refusal
    from caretally.rules.families.common import UnsupportedOption
    from caretally.rules.params import MissingParameter

    job = _claim(queue, job_id)
    if job is None:
        return  # not queued any more (already run, or reported failed)
    seen = [0, 0]
    # The row too, where the run's own transaction does not hold the only write lock.
    on_row = queue.engine.dialect.name != "sqlite"

    def progress(done: int, total: int) -> None:
        seen[:] = [done, total]
        if queue.put_progress(job_id, done, total) and on_row:
            jobs.record_progress(queue.engine, job_id, queue.worker_id, done, total)

    from caretally.jobs.ranges import Coordinator, RangeFailed

    split = Coordinator(queue, job_id, range_size, progress) if range_size else None
    try:
        from caretally.services.practice import run_settings

        # The organization's locality and payer overlays (Admin → Practice settings).
        billing_settings, payer_rules = run_settings(queue.engine, job.org_id)
        if billing_settings.incremental and not split:
            from caretally.billing.incremental import bill_month_incremental

            result, _how = bill_month_incremental(
                queue.engine,
                job.org_id,
                parse_month(job.month),
                payer_rules,
                billing_settings,
                progress=progress,
            )
        else:
            result = bill_month(
                queue.engine,
                job.org_id,
                parse_month(job.month),
                payer_rules,
                billing_settings,
                progress=None if split else progress,
                ranges=split,
            )
    except RangeFailed as exc:
        _failed(queue, job_id, "range_failed", f"{exc.args[0]}; nothing was stored")
    except Refusal as exc:
        _failed(queue, job_id, exc.problem.code, exc.problem.message)
    except ProblemsError as exc:
        first = exc.problems[0].message if exc.problems else "the rules cannot judge this month"
        _failed(queue, job_id, "rules_unavailable", first)
    except (MissingParameter, UnsupportedOption) as exc:  # no rule-year (or option) for the month
        text = exc.args[0] if exc.args else type(exc).__name__
        _failed(queue, job_id, "rules_unavailable", f"the rules cannot judge {job.month}: {text}")
    except Exception as exc:
        log.error("month run job %s stopped on %s", job_id, type(exc).__name__)
        message = f"the month run stopped on an unexpected {type(exc).__name__}; nothing was stored"
        _failed(queue, job_id, "internal_error", message)
    else:
        total = seen[1] or result.summary.patients
        _patiently(
            lambda: jobs.finish(
                queue.engine,
                job_id,
                jobs.SUCCEEDED,
                run_id=result.run_id,
                outcome=result.outcome,
                done=total,
                total=total,
                worker=queue.worker_id,
            ),
            f"job {job_id} waits to record its end",
        )
    finally:
        try:
            queue.forget(job_id)
        except Exception:
            log.warning("could not clear job progress from the queue")


def _failed(queue: JobQueue, job_id: str, code: str, message: str) -> None:
    _patiently(
        lambda: jobs.finish(
            queue.engine, job_id, jobs.FAILED, error_code=code, error=message, worker=queue.worker_id
        ),
        f"job {job_id} waits to record its end",
    )


def _claim(queue: JobQueue, job_id: str) -> jobs.Job | None:
    """Take the job (``None``: it is not queued any more)."""
    take = lambda: jobs.claim(queue.engine, job_id, queue.worker_id)  # noqa: E731 - named for the call below
    return _patiently(take, f"job {job_id} waits to start")


def _patiently(write: Callable[[], T], waiting: str) -> T:
    """A job's own row write, tried again while SQLite's write lock is held by another
    writer (each try waits ``CARETALLY_LOCK_TIMEOUT``): a job must not stay ``running``
    because an import held the lock when it ended."""
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        try:
            return write()
        except OperationalError:
            if attempt == WRITE_ATTEMPTS:
                raise
            log.info("database busy; %s", waiting)
    raise AssertionError("unreachable")

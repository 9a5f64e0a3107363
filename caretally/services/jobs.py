"""Month-close jobs as the service sees them: start a month run, follow it, list them.

A job is a row in ``jobs`` (the record a client polls) plus a task on the queue
(``caretally.jobs``) that a consumer runs. The row moves ``queued → running →
succeeded | failed``; only the consumer that took it moves it on, and a job whose
consumer has gone (killed, restarted) is reported as ``failed`` with ``interrupted`` by
the next lookup or consumer start. Its month run was one transaction, so it stored
nothing; starting the run again bills the month as if it had never begun.

Starting a run is recorded in the audit trail; reading a job shows no PHI (counts, a run
id, a one-line error) and is not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import OperationalError

from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import NotFound, Unavailable
from caretally.services.months import month_period
from caretally.store import schema

if TYPE_CHECKING:
    from caretally.jobs.queue import JobQueue

MONTH_RUN = "month_run"
QUEUED, RUNNING, SUCCEEDED, FAILED = "queued", "running", "succeeded", "failed"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
ACTIVE = (QUEUED, RUNNING)
INTERRUPTED = "interrupted"
MAX_LIST = 200

_jobs = schema.jobs


@dataclass(frozen=True)
class Job:
    job_id: str
    org_id: str
    kind: str
    month: str
    state: str
    done: int | None
    total: int | None
    run_id: str | None
    outcome: str | None  # created | unchanged, once succeeded
    error_code: str | None
    error: str | None
    created_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.state in (SUCCEEDED, FAILED)


def _job(row: object, live: tuple[int, int] | None = None) -> Job:
    r = row._mapping  # type: ignore[attr-defined]
    done, total = live if live is not None and r["state"] == RUNNING else (r["done"], r["total"])
    return Job(
        job_id=r["job_id"],
        org_id=r["org_id"],
        kind=r["kind"],
        month=r["month"],
        state=r["state"],
        done=done,
        total=total,
        run_id=r["run_id"],
        outcome=r["outcome"],
        error_code=r["error_code"],
        error=r["error"],
        created_by=r["created_by"],
        created_at=r["created_at"],
        started_at=r["started_at"],
        finished_at=r["finished_at"],
    )


def _now() -> datetime:
    return datetime.now(UTC)


# ----------------------------------------------------------------------------------------
# What a caller (API, CLI, web) asks
# ----------------------------------------------------------------------------------------


def start_month_run(
    engine: Engine, actor: Actor, queue: JobQueue, month: str, *, now: Callable[[], datetime] = _now
) -> tuple[Job, bool]:
    """Queue a month run of ``month``; returns the job and whether it is new.

    While a run of the same month is queued or running, asking again returns that job
    instead of queueing a second one (the second would only wait for the month's lock).
    """
    month_period(month)
    reap_interrupted(engine, queue, actor.org_id)
    job_id = str(uuid.uuid4())
    with audit.audited(engine, actor, "month_run.start", f"months/{month}/runs") as (conn, note):
        existing = conn.execute(
            select(_jobs)
            .where(_jobs.c.org_id == actor.org_id, _jobs.c.month == month, _jobs.c.state.in_(ACTIVE))
            .order_by(_jobs.c.created_at.desc())
            .limit(1)
        ).first()
        if existing is not None:
            note.detail = {"job_id": existing.job_id, "already_active": True}
            return _job(existing, queue.progress(existing.job_id)), False
        conn.execute(
            insert(_jobs).values(
                job_id=job_id,
                org_id=actor.org_id,
                kind=MONTH_RUN,
                month=month,
                state=QUEUED,
                created_by=actor.actor[:120],
                created_at=now(),
            )
        )
        note.detail = {"job_id": job_id}
    from caretally.jobs.queue import QueueUnavailable

    try:
        queue.enqueue_month_run(job_id)
    except QueueUnavailable as exc:
        finish(engine, job_id, FAILED, error_code="queue_unavailable", error=exc.message)
        raise Unavailable(exc.message, hint=exc.hint, code="queue_unavailable") from None
    return get_job(engine, actor, queue, job_id), True


def get_job(engine: Engine, actor: Actor, queue: JobQueue, job_id: str) -> Job:
    """One job of the actor's organization; another organization's is not found."""
    with engine.connect() as conn:
        row = _row(conn, actor.org_id, job_id)
    if row is None:
        raise NotFound("no such job", code="no_such_job")
    if row.state == RUNNING and not queue.is_alive(row.worker):
        _interrupt(engine, row.job_id, row.worker)
        with engine.connect() as conn:
            row = _row(conn, actor.org_id, job_id)
        assert row is not None
    return _job(row, queue.progress(job_id) if row.state == RUNNING else None)


def list_jobs(
    engine: Engine, actor: Actor, queue: JobQueue, *, month: str | None = None, limit: int = 50
) -> list[Job]:
    """The organization's jobs, newest first (``month`` to narrow them)."""
    if month is not None:
        month_period(month)
    reap_interrupted(engine, queue, actor.org_id)
    query = select(_jobs).where(_jobs.c.org_id == actor.org_id)
    if month is not None:
        query = query.where(_jobs.c.month == month)
    query = query.order_by(_jobs.c.created_at.desc(), _jobs.c.job_id).limit(max(1, min(limit, MAX_LIST)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return [_job(r, queue.progress(r.job_id) if r.state == RUNNING else None) for r in rows]


def _row(conn: Connection, org_id: str, job_id: str) -> object | None:
    return conn.execute(select(_jobs).where(_jobs.c.org_id == org_id, _jobs.c.job_id == job_id)).first()


# ----------------------------------------------------------------------------------------
# What a consumer does to the row
# ----------------------------------------------------------------------------------------


def claim(engine: Engine, job_id: str, worker: str, *, now: Callable[[], datetime] = _now) -> Job | None:
    """Move a queued job to running for ``worker``; ``None`` if it is not queued any more."""
    with engine.begin() as conn:
        done = conn.execute(
            update(_jobs)
            .where(_jobs.c.job_id == job_id, _jobs.c.state == QUEUED)
            .values(state=RUNNING, worker=worker[:120], started_at=now())
        )
        if done.rowcount != 1:
            return None
        row = conn.execute(select(_jobs).where(_jobs.c.job_id == job_id)).one()
    return _job(row)


def record_progress(engine: Engine, job_id: str, worker: str, done: int, total: int) -> None:
    """Patients done / total on the row of a job this consumer runs (best effort: a busy
    database skips a figure, the next one comes soon)."""
    try:
        with engine.begin() as conn:
            conn.execute(
                update(_jobs)
                .where(_jobs.c.job_id == job_id, _jobs.c.state == RUNNING, _jobs.c.worker == worker[:120])
                .values(done=done, total=total)
            )
    except OperationalError:
        pass


def finish(
    engine: Engine,
    job_id: str,
    state: str,
    *,
    run_id: str | None = None,
    outcome: str | None = None,
    done: int | None = None,
    total: int | None = None,
    error_code: str | None = None,
    error: str | None = None,
    worker: str | None = None,
    now: Callable[[], datetime] = _now,
) -> bool:
    """Record how a job ended; with ``worker``, only if that consumer still holds it."""
    condition = [_jobs.c.job_id == job_id, _jobs.c.state.in_(ACTIVE)]
    if worker is not None:
        condition.append(_jobs.c.worker == worker[:120])
    values: dict[str, object] = {"state": state, "finished_at": now()}
    if run_id is not None:
        values.update(run_id=run_id, outcome=outcome)
    if total is not None:
        values.update(done=done, total=total)
    if error is not None:
        values.update(error_code=error_code, error=_one_line(error))
    with engine.begin() as conn:
        return conn.execute(update(_jobs).where(*condition).values(**values)).rowcount == 1


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _interrupt(engine: Engine, job_id: str, worker: str | None) -> bool:
    """Report a running job whose consumer is gone as failed (if no one else did first)."""
    try:
        with engine.begin() as conn:
            done = conn.execute(
                update(_jobs)
                .where(_jobs.c.job_id == job_id, _jobs.c.state == RUNNING, _jobs.c.worker == worker)
                .values(
                    state=FAILED,
                    finished_at=_now(),
                    error_code=INTERRUPTED,
                    error="interrupted: the worker running it stopped before it finished; "
                    "nothing was stored — start the run again",
                )
            )
            return done.rowcount == 1
    except OperationalError:  # SQLite busy with another run: the next lookup records it
        return False


def reap_interrupted(engine: Engine, queue: JobQueue, org_id: str | None = None) -> int:
    """Every running job (of ``org_id``, or all) whose consumer is gone → failed; how many."""
    query = select(_jobs.c.job_id, _jobs.c.worker).where(_jobs.c.state == RUNNING)
    if org_id is not None:
        query = query.where(_jobs.c.org_id == org_id)
    with engine.connect() as conn:
        running = conn.execute(query).all()
    gone = [(job_id, worker) for job_id, worker in running if not queue.is_alive(worker)]
    return sum(1 for job_id, worker in gone if _interrupt(engine, job_id, worker))

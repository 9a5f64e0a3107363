"""A month run split across worker processes: one queue task per range of patients.

The consumer that takes a month-run job (the *coordinator*) opens the run as
``bill_month`` always does — it holds the month and takes the snapshot — then splits the
month's patients into ranges of ``range_size`` ids, writes a *plan* to the queue's store
(run id, snapshot id, ranges; no patient data beyond the ids that bound each range) and
enqueues one ``caretally.month_range`` task per range. Any ``caretally worker`` sharing the
database and the broker takes a task, reads the run's snapshot (PostgreSQL imports the
exported snapshot; on SQLite the coordinator holds the one write lock, so nothing can
change under the readers), evaluates its range with ``billing.run.patient_result`` and
puts the results, compressed, back in the queue's store.

The coordinator takes the results in range order and stores them in its own transaction
exactly as a one-process run stores its own: same rows, same digests. While it waits it
evaluates the highest unclaimed range itself, so a run finishes even with one consumer.
A range whose worker is gone (heartbeat stale, process dead) is put on the queue again;
a range that fails fails the job, and the run's transaction rolls back: nothing stored.

Staging lives in the queue's store (Redis or huey's SQLite file): each range's results
are deleted as soon as they are stored, so the store holds at most the ranges done ahead
of the one being written. Results travel pickled between processes running the same
caretally (the plan carries the engine version and rules hash, and a worker with others
refuses the range); the broker is trusted as the database is.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from caretally.billing.evaluate import evaluate_month, facts_options
from caretally.billing.run import RangeRun, _directory, engine_version, patient_result
from caretally.errors import Problem
from caretally.facts import patients_in_month
from caretally.model import Payer
from caretally.services.practice import run_settings
from caretally.store.db import make_engine

if TYPE_CHECKING:
    from caretally.jobs.queue import JobQueue

log = logging.getLogger("caretally.jobs")

#: A range put back on the queue this many times (its workers died) fails the job.
MAX_ATTEMPTS = 3
POLL_SECONDS = 0.05


class RangeFailed(Exception):
    """A range could not be evaluated; one line naming the range, never a patient."""


@dataclass(frozen=True)
class Plan:
    job_id: str
    run_id: str
    org_id: str
    month: str
    snapshot: str | None
    ruleset_hash: str
    engine_version: str
    ranges: list[tuple[str, str]]
    sizes: list[int]

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__).encode()

    @staticmethod
    def from_json(raw: Any) -> Plan:
        data = json.loads(raw)
        data["ranges"] = [tuple(r) for r in data["ranges"]]
        return Plan(**data)


def _key(kind: str, job_id: str, index: int | None = None) -> str:
    return f"caretally:{kind}:{job_id}" + ("" if index is None else f":{index}")


def _get(queue: JobQueue, key: str) -> bytes | None:
    raw = queue.huey.storage.peek_data(key)
    if isinstance(raw, str):
        return raw.encode()
    return raw if isinstance(raw, bytes) else None  # huey's EmptyData: not there


def split(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


# ----------------------------------------------------------------------------------------
# The worker's side: one range
# ----------------------------------------------------------------------------------------


def run_range(queue: JobQueue, job_id: str, index: int) -> None:
    """Evaluate range ``index`` of job ``job_id`` unless it is done, taken, or the job over."""
    raw = _get(queue, _key("plan", job_id))
    if raw is None:
        return  # the run has ended (stored, failed or interrupted): nothing to do
    plan = Plan.from_json(raw)
    if _get(queue, _key("range", job_id, index)) is not None:
        return
    holder = _get(queue, _key("claim", job_id, index))
    if holder is not None and holder.decode() != queue.worker_id and queue.is_alive(holder.decode()):
        return  # another live worker (or the coordinator) has it
    evaluate_range(queue, plan, index)


def evaluate_range(queue: JobQueue, plan: Plan, index: int) -> None:
    """Claim, evaluate and stage one range; a failure is staged as an error line."""
    storage = queue.huey.storage
    storage.put_data(_key("claim", plan.job_id, index), queue.worker_id.encode())
    try:
        staged = zlib.compress(pickle.dumps(_evaluate(queue, plan, index), pickle.HIGHEST_PROTOCOL), 1)
    except Exception as exc:
        log.error("range %d of job %s stopped on %s", index, plan.job_id, type(exc).__name__)
        message = exc.args[0] if isinstance(exc, RangeFailed) else type(exc).__name__
        storage.put_data(_key("range-error", plan.job_id, index), str(message).encode())
        return
    if _get(queue, _key("plan", plan.job_id)) is not None:  # not after the run has ended
        storage.put_data(_key("range", plan.job_id, index), staged)
        log.info("range %d of job %s evaluated (%d patients)", index + 1, plan.job_id, plan.sizes[index])


def _evaluate(queue: JobQueue, plan: Plan, index: int) -> tuple[list[Any], list[Problem]]:
    # The organization's stored locality and payer overlays, as the coordinator reads them:
    # a range priced or judged by other settings would not be the same run.
    settings, rules = run_settings(queue.engine, plan.org_id)
    if rules.content_hash != plan.ruleset_hash or engine_version() != plan.engine_version:
        raise RangeFailed(
            f"range {index + 1}: this worker runs other rules or another engine than the coordinator "
            "(upgrade every worker to the same caretally)"
        )
    url = queue.engine.url.render_as_string(hide_password=False)
    reader = make_engine(url, snapshot=plan.snapshot) if plan.snapshot else queue.engine
    try:
        directory = _directory(reader, plan.org_id)
        from caretally.dates import parse_month

        month = parse_month(plan.month)
        problems: list[Problem] = []
        results = [
            patient_result(facts, decisions, rules, settings, directory, plan.run_id)
            for facts, decisions in evaluate_month(
                reader,
                plan.org_id,
                month,
                rules,
                id_range=plan.ranges[index],
                problems=problems,
                memo={},
            )
        ]
    finally:
        if reader is not queue.engine:
            reader.dispose()
    if len(results) != plan.sizes[index]:
        raise RangeFailed(f"range {index + 1}: {len(results)} patients read, {plan.sizes[index]} planned")
    return results, problems


# ----------------------------------------------------------------------------------------
# The coordinator's side: plan, enqueue, collect in order
# ----------------------------------------------------------------------------------------


class Coordinator:
    """The ``ranges`` source ``bill_month`` reads when a job is split across workers.

    ``progress(done, total)`` is patients whose range is evaluated, by any worker.
    """

    def __init__(self, queue: JobQueue, job_id: str, range_size: int, progress: Any = None) -> None:
        self.queue, self.job_id, self.range_size, self.progress = queue, job_id, max(1, range_size), progress

    def __call__(self, run: RangeRun) -> Iterator[Any]:
        _settings, rules = run_settings(self.queue.engine, run.org_id)
        lookback = max(facts_options(rules.for_payer(p), run.month).lookback for p in Payer)
        ids = patients_in_month(run.reader, run.org_id, run.month, lookback)
        parts = split(list(ids), self.range_size)
        plan = Plan(
            job_id=self.job_id,
            run_id=run.run_id,
            org_id=run.org_id,
            month=run.month.start.strftime("%Y-%m"),
            snapshot=run.snapshot,
            ruleset_hash=rules.content_hash,
            engine_version=engine_version(),
            ranges=[(p[0], p[-1]) for p in parts],
            sizes=[len(p) for p in parts],
        )
        total = len(ids)
        self._tell(0, total)
        storage = self.queue.huey.storage
        storage.put_data(_key("plan", self.job_id), plan.to_json())
        try:
            for index in range(len(parts)):
                self.queue.enqueue_range(self.job_id, index)
            yield from self._collect(plan, run, total)
        finally:
            self._clean(plan)

    def _tell(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def _collect(self, plan: Plan, run: RangeRun, total: int) -> Iterator[Any]:
        attempts = [1] * len(plan.ranges)
        finished: set[int] = set()
        for index in range(len(plan.ranges)):
            while True:
                staged = self._staged(plan, index)
                if staged is not None:
                    break
                self._watch(plan, attempts, finished, total)
            results, problems = pickle.loads(zlib.decompress(staged))
            self.queue.huey.storage.delete_data(_key("range", self.job_id, index))
            run.problems.extend(problems)
            yield from results

    def _staged(self, plan: Plan, index: int) -> bytes | None:
        error = _get(self.queue, _key("range-error", self.job_id, index))
        if error is not None:
            raise RangeFailed(error.decode())
        return _get(self.queue, _key("range", self.job_id, index))

    def _watch(self, plan: Plan, attempts: list[int], finished: set[int], total: int) -> None:
        """One look at every range: count the done, requeue the orphaned, take one if idle."""
        idle: int | None = None
        for index in range(len(plan.ranges)):
            if index in finished:
                continue
            error = _get(self.queue, _key("range-error", self.job_id, index))
            if error is not None:  # any failed range fails the run now: no point storing the rest
                raise RangeFailed(error.decode())
            if _get(self.queue, _key("range", self.job_id, index)) is not None:
                finished.add(index)
                continue
            holder = _get(self.queue, _key("claim", self.job_id, index))
            if holder is None:
                idle = index  # the highest unclaimed: workers take the queue from the front
            elif not self.queue.is_alive(holder.decode()):
                self._requeue(index, attempts, holder.decode())
        self._tell(sum(plan.sizes[i] for i in finished), total)
        if idle is not None:
            evaluate_range(self.queue, plan, idle)
        else:
            time.sleep(POLL_SECONDS)

    def _requeue(self, index: int, attempts: list[int], holder: str) -> None:
        if attempts[index] >= MAX_ATTEMPTS:
            raise RangeFailed(f"range {index + 1}: its worker stopped {attempts[index]} times")
        attempts[index] += 1
        log.warning("range %d of job %s: its worker is gone; queued again", index, self.job_id)
        self.queue.huey.storage.delete_data(_key("claim", self.job_id, index))
        self.queue.enqueue_range(self.job_id, index)

    def _clean(self, plan: Plan) -> None:
        storage = self.queue.huey.storage
        try:
            storage.delete_data(_key("plan", self.job_id))
            for index in range(len(plan.ranges)):
                for kind in ("range", "claim", "range-error"):
                    storage.delete_data(_key(kind, self.job_id, index))
        except Exception:
            log.warning("could not clear the ranges of job %s from the queue", self.job_id)

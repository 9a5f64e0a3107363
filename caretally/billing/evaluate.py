"""The one place where stored facts meet the rules.

Ingest never calls rules and rules never touch the database; this module reads the
rule-year options that shape the facts, builds the facts in SQL and hands each
patient-month to the pure engine. ``explain``, the month run, worklists and the scenario
tests all come through here, so there is exactly one path from data to decisions.
"""

from __future__ import annotations

import heapq
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeVar

from sqlalchemy import Engine

from caretally.billing.payers import PayerRules
from caretally.errors import Problem, ProblemsError
from caretally.facts import BATCH, FactsOptions, build_month_facts, patients_in_month
from caretally.model import Decision, PatientMonthFacts, Payer, Period
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.families.common import UnsupportedOption
from caretally.rules.params import MissingParameter, RuleBook
from caretally.store.db import make_engine

T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")
#: ``progress(done, total)``: patients evaluated so far, of how many.
Progress = Callable[[int, int], None]


def facts_options(rules: RuleBook, month: Period) -> FactsOptions:
    """The options that change which days count, read from the rule-year of the month."""
    year = rules.for_date(month.end)
    anchor = year.options["device_period_anchor"].value if "device_period_anchor" in year.options else None
    return FactsOptions(
        anchor=anchor or "enrollment_start",
        manual_programs=frozenset(str(p) for p in year.rule_global("manual_readings_count").value),
        setup_codes=frozenset(c.code for c in year.codes.values() if c.family == "setup"),
        period_days=int(year.option("device_period_days").value),
    )


def evaluate_month(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: RuleBook | PayerRules,
    *,
    as_of: date | None = None,
    patients: set[str] | None = None,
    id_range: tuple[str, str] | None = None,
    problems: list[Problem] | None = None,
    progress: Progress | None = None,
    memo: dict[Any, Any] | None = None,
) -> Iterator[tuple[PatientMonthFacts, list[Decision]]]:
    """Facts and decisions for every patient-month, in patient order.

    With ``PayerRules`` each patient is judged by the rules of their payer, on facts
    shaped by that payer's options (period anchor, patient-reported RTM data).

    Errors are values: a rule-year gap for one patient (a missing parameter, an option
    value no family supports) becomes a ``Problem`` in ``problems`` and that patient gets
    no decisions, while everyone else is judged. Without a ``problems`` list the first
    one is raised as ``ProblemsError``. ``progress(done, total)`` is told every patient.

    ``memo`` is shared by the calls of one run over several patient ranges (see
    :func:`caretally.facts.build_month_facts`).
    """
    payer_rules = rules if isinstance(rules, PayerRules) else PayerRules(rules)
    counted = None
    if progress is not None:
        lookback = max(facts_options(payer_rules.for_payer(p), month).lookback for p in Payer)
        ids = patients_in_month(engine, org_id, month, lookback)
        counted = _Counter(len(ids) if patients is None else len(patients.intersection(ids)), progress)
    facts_of = _facts_by_payer_options(engine, org_id, month, payer_rules, as_of, patients, id_range, memo)
    for facts in facts_of:
        try:
            decisions = evaluate_patient_month(facts, payer_rules.for_payer(facts.payer))
        except (MissingParameter, UnsupportedOption) as exc:
            problem = patient_problem(facts.patient_id, exc)
            if problems is None:
                raise ProblemsError([problem]) from None
            problems.append(problem)
            decisions = []
        yield facts, decisions
        if counted is not None:
            counted.add(1)


def patient_problem(patient_id: str, exc: Exception) -> Problem:
    """A rule-year gap met while judging one patient: reported, and the run goes on."""
    code = "unsupported_option" if isinstance(exc, UnsupportedOption) else "missing_parameter"
    text = exc.args[0] if exc.args else str(exc)
    return Problem("month run", None, f"patient {patient_id}", code, f"{text}; nothing was billed for them")


def _facts_by_payer_options(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: PayerRules,
    as_of: date | None,
    patients: set[str] | None,
    id_range: tuple[str, str] | None,
    memo: dict[Any, Any] | None = None,
) -> Iterator[PatientMonthFacts]:
    """Facts in patient order, each built with the options of the patient's own payer.

    An overlay may count periods from the first reading or refuse patient-reported RTM
    data; those options change the facts, not only the rules, so the patients of each
    distinct option set are built in their own pass and the passes merged by patient id.
    """
    groups: dict[FactsOptions, set[Payer]] = {}
    for payer in Payer:
        groups.setdefault(facts_options(rules.for_payer(payer), month), set()).add(payer)
    if len(groups) == 1:
        (options,) = groups
        yield from build_month_facts(
            engine,
            org_id,
            month,
            as_of=as_of,
            options=options,
            patients=patients,
            id_range=id_range,
            memo=memo,
        )
        return
    streams = [
        build_month_facts(
            engine,
            org_id,
            month,
            as_of=as_of,
            options=options,
            patients=patients,
            id_range=id_range,
            payers=payers,
            memo=memo,
        )
        for options, payers in sorted(groups.items(), key=lambda kv: sorted(kv[1]))
    ]
    yield from heapq.merge(*streams, key=lambda f: f.patient_id)


# ----------------------------------------------------------------------------------------
# The same evaluation over a whole practice, in forked workers when it pays.
# ----------------------------------------------------------------------------------------

#: Below this many patients one process is faster than starting workers.
PARALLEL_FROM = 4000


@dataclass(frozen=True)
class _MapJob:
    """What every worker needs; inherited through fork, never pickled."""

    url: str
    org_id: str
    month: Period
    rules: RuleBook | PayerRules
    as_of: date | None
    patients: set[str] | None
    fn: Callable[[PatientMonthFacts, list[Decision]], Any]
    snapshot: str | None = None
    #: Facts every range would otherwise read again; each worker fills its own copy.
    memo: dict[Any, Any] = field(default_factory=dict)
    #: With the columnar pass (``bill --engine columnar``): ``columnar(facts, outcomes)`` for
    #: the patient-months it decides; ``fn`` gets the engine's decisions for the flagged rest.
    columnar: Callable[[PatientMonthFacts, list[Any]], Any] | None = None


_JOB: _MapJob | None = None
#: Forked workers find their job in ``_JOB``; one forking run at a time per process sets it,
#: so two threads (a served request and an in-process job consumer) never swap jobs.
_FORKING = threading.Lock()


def _map_range(id_range: tuple[str, str], job: _MapJob | None = None) -> tuple[list[Any], list[Problem]]:
    """``fn`` over one contiguous range of patient ids (in a worker, or in-process)."""
    job = job or _JOB
    assert job is not None
    engine = make_engine(job.url, snapshot=job.snapshot)
    problems: list[Problem] = []
    try:
        if job.columnar is not None:
            return _columnar_range(engine, job, id_range, problems), problems
        results = [
            job.fn(facts, decisions)
            for facts, decisions in evaluate_month(
                engine,
                job.org_id,
                job.month,
                job.rules,
                as_of=job.as_of,
                patients=job.patients,
                id_range=id_range,
                problems=problems,
                memo=job.memo,
            )
        ]
        return results, problems
    finally:
        engine.dispose()


def _columnar_range(
    engine: Engine, job: _MapJob, id_range: tuple[str, str], problems: list[Problem]
) -> list[Any]:
    """One range through the columnar pass; the months it flags through the engine, in patient order."""
    from caretally.columnar.decide import decide_months

    assert job.columnar is not None
    book = job.rules if isinstance(job.rules, PayerRules) else PayerRules(job.rules)
    facts_list = list(
        _facts_by_payer_options(
            engine, job.org_id, job.month, book, job.as_of, job.patients, id_range, job.memo
        )
    )
    result = decide_months((f, book.for_payer(f.payer)) for f in facts_list)
    out: list[Any] = []
    for facts in facts_list:
        outcomes = result.decided.get(facts.patient_id)
        if outcomes is not None:
            out.append(job.columnar(facts, outcomes))
            continue
        try:
            decisions = evaluate_patient_month(facts, book.for_payer(facts.payer))
        except (MissingParameter, UnsupportedOption) as exc:
            problems.append(patient_problem(facts.patient_id, exc))
            decisions = []
        out.append(job.fn(facts, decisions))
    return out


def map_month(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: RuleBook | PayerRules,
    fn: Callable[[PatientMonthFacts, list[Decision]], T],
    *,
    as_of: date | None = None,
    patients: set[str] | None = None,
    problems: list[Problem] | None = None,
    snapshot: str | None = None,
    progress: Progress | None = None,
    columnar: Callable[[PatientMonthFacts, list[Any]], T] | None = None,
    population: Sequence[str] | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> Iterator[T]:
    """``fn(facts, decisions)`` for every patient-month, in patient order.

    Patients are split into contiguous id ranges; with enough of them and more than one
    core, forked workers evaluate the ranges (each with its own database connection) and
    only ``fn``'s results travel back, so ``fn`` should return small, picklable values.
    The rules engine is pure, so a worker's answer is the one the parent would have given.
    Problems of single patients go to ``problems`` (see :func:`evaluate_month`); without a
    list, the first one is raised once its range is done.

    ``columnar`` switches on the columnar pass (:mod:`caretally.columnar`): each range's
    patient-months are decided in bulk and ``columnar(facts, outcomes)`` gets the ones it
    decides; ``fn(facts, decisions)`` gets the engine's decisions for the months it flags.

    ``snapshot`` (a PostgreSQL exported snapshot, see ``store.db.serial_transaction``)
    makes every range — in this process or a worker — read that one snapshot, the one
    ``engine`` reads. ``progress(done, total)`` counts patients: once before the first
    range is read, then after each range. ``population``: the month's patients
    (:func:`patients_in_month`) when the caller read them already in the same snapshot.
    ``parallel_from``: the fewest patients worth forking for. The incremental month run
    evaluates a few hundred touched patients in one process while the cold run it is
    measured against uses every core, so it forks from fewer; the ranges are then cut so
    that every worker gets one.
    """
    global _JOB
    book = rules if isinstance(rules, PayerRules) else PayerRules(rules)
    lookback = max(facts_options(book.for_payer(p), month).lookback for p in Payer)
    if population is None:
        population = patients_in_month(engine, org_id, month, lookback, patients)
    ids = [i for i in population if patients is None or i in patients]
    workers = max(1, min(os.cpu_count() or 1, 8))
    forking = len(ids) >= parallel_from and "fork" in multiprocessing.get_all_start_methods()
    # Forking for fewer than PARALLEL_FROM: one range per worker, so none idles (a run of
    # more keeps its BATCH-sized ranges).
    size = max(1, -(-len(ids) // workers)) if forking and len(ids) < PARALLEL_FROM else BATCH
    ranges = [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]
    url = engine.url.render_as_string(hide_password=False)
    job = _MapJob(url, org_id, month, rules, as_of, patients, fn, snapshot, columnar=columnar)
    counted = _Counter(len(ids), progress)
    if not forking:
        # In-process: the job travels as an argument, so concurrent threads stay apart.
        chunks: Iterable[tuple[list[T], list[Problem]]] = (_map_range(r, job) for r in ranges)
        for chunk, found in chunks:
            _report(found, problems)
            yield from chunk
            counted.add(len(chunk))
        return
    with _FORKING:
        _JOB = job
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_leave_with_parent
            ) as pool:
                for chunk, found in _bounded_map(pool, _map_range, ranges, ahead=workers + 1):
                    _report(found, problems)
                    yield from chunk
                    counted.add(len(chunk))
        finally:
            _JOB = None


def _bounded_map(pool: Executor, fn: Callable[[A], R], items: Iterable[A], *, ahead: int) -> Iterator[R]:
    """``pool.map(fn, items)`` with at most ``ahead`` items given out and not yet taken.

    ``pool.map`` hands every range out at once, so when the workers evaluate faster than
    the caller stores, finished ranges (a 2,000-patient range's decisions are about 35 MB)
    pile up in the caller: at 100,000 patients most of the month waited there. Giving out
    the next range only when one is taken keeps the workers busy and the caller's memory
    at a few ranges, whatever the practice's size.
    """
    waiting: deque[Future[R]] = deque()
    left = iter(items)
    try:
        for item in itertools.islice(left, ahead):
            waiting.append(pool.submit(fn, item))
        while waiting:
            done = waiting.popleft().result()
            for item in itertools.islice(left, 1):
                waiting.append(pool.submit(fn, item))
            yield done
            del done
    finally:
        for future in waiting:
            future.cancel()


def _leave_with_parent() -> None:
    """A forked worker ends when the process that forked it is gone.

    A server stopped mid-run (``caretally serve`` on SIGTERM while its consumer refreshes a
    worklist) exits without shutting its pool down. Its workers inherited the server's
    signal handlers and wait on a queue whose write end their siblings hold, so they would
    wait for ever, each holding its memory and a database connection.
    """
    parent = os.getppid()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="leave-with-parent", daemon=True).start()


class _Counter:
    """Patients done of a known total, told to ``progress`` (told ``0, total`` at once)."""

    def __init__(self, total: int, progress: Progress | None):
        self.total, self.done, self.progress = total, 0, progress
        if progress is not None:
            progress(0, total)

    def add(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def _report(found: list[Problem], problems: list[Problem] | None) -> None:
    if not found:
        return
    if problems is None:
        raise ProblemsError(found)
    problems.extend(found)

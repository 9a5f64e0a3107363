"""The one place where stored facts meet the rules.

Ingest never calls rules and rules never touch the database; this module reads the
rule-year options that shape the facts, builds the facts in SQL and hands each
patient-month to the pure engine. ``explain``, the month run, worklists and the scenario
tests all come through here, so there is exactly one path from data to decisions.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from sqlalchemy import Engine

from caretally.billing.payers import PayerRules
from caretally.facts import BATCH, FactsOptions, build_month_facts, patients_in_month
from caretally.model import Decision, PatientMonthFacts, Period
from caretally.rules.engine import evaluate_patient_month
from caretally.rules.params import RuleBook
from caretally.store.db import make_engine

T = TypeVar("T")


def facts_options(rules: RuleBook, month: Period) -> FactsOptions:
    """The options that change which days count, read from the rule-year of the month."""
    year = rules.for_date(month.end)
    anchor = year.options["device_period_anchor"].value if "device_period_anchor" in year.options else None
    manual = (
        year.options["rtm_count_manual_readings"].value
        if "rtm_count_manual_readings" in year.options
        else None
    )
    return FactsOptions(
        anchor=anchor or "enrollment_start",
        rtm_count_manual=True if manual is None else bool(manual),
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
) -> Iterator[tuple[PatientMonthFacts, list[Decision]]]:
    """Facts and decisions for every patient-month, in patient order.

    With ``PayerRules`` each patient is judged by the rules of their payer; the options
    that shape the facts (period anchor, patient-reported RTM data) come from Medicare's.
    """
    payer_rules = rules if isinstance(rules, PayerRules) else PayerRules(rules)
    options = facts_options(payer_rules.base, month)
    facts_stream = build_month_facts(
        engine, org_id, month, as_of=as_of, options=options, patients=patients, id_range=id_range
    )
    for facts in facts_stream:
        yield facts, evaluate_patient_month(facts, payer_rules.for_payer(facts.payer))


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


_JOB: _MapJob | None = None


def _map_range(id_range: tuple[str, str]) -> list[Any]:
    """``fn`` over one contiguous range of patient ids (in a worker, or in-process)."""
    job = _JOB
    assert job is not None
    engine = make_engine(job.url)
    try:
        return [
            job.fn(facts, decisions)
            for facts, decisions in evaluate_month(
                engine,
                job.org_id,
                job.month,
                job.rules,
                as_of=job.as_of,
                patients=job.patients,
                id_range=id_range,
            )
        ]
    finally:
        engine.dispose()


def map_month(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: RuleBook | PayerRules,
    fn: Callable[[PatientMonthFacts, list[Decision]], T],
    *,
    as_of: date | None = None,
    patients: set[str] | None = None,
) -> Iterator[T]:
    """``fn(facts, decisions)`` for every patient-month, in patient order.

    Patients are split into contiguous id ranges; with enough of them and more than one
    core, forked workers evaluate the ranges (each with its own database connection) and
    only ``fn``'s results travel back, so ``fn`` should return small, picklable values.
    The rules engine is pure, so a worker's answer is the one the parent would have given.
    """
    global _JOB
    ids = [i for i in patients_in_month(engine, org_id, month) if patients is None or i in patients]
    ranges = [(ids[i], ids[min(i + BATCH, len(ids)) - 1]) for i in range(0, len(ids), BATCH)]
    url = engine.url.render_as_string(hide_password=False)
    _JOB = _MapJob(url, org_id, month, rules, as_of, patients, fn)
    try:
        if len(ids) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
            for r in ranges:
                yield from _map_range(r)
            return
        workers = max(1, min(os.cpu_count() or 1, 8))
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork")) as pool:
            for chunk in pool.map(_map_range, ranges):
                yield from chunk
    finally:
        _JOB = None

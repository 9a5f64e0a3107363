"""Live ingest: JSON from a request goes through the bundle pipeline, item by item.

Every live entry point (readings, FHIR, Tenovi, time entries) turns its input into the
same records a bundle holds and hands them to ``import_records``: one validator, one
error shape, one idempotent merge with audit rows. What this module adds is what a
request needs and a bundle does not:

* a **JSON pointer** on every problem (``/3/measured_at``), translated from the record
  position and column the pipeline reports through a ``Locator`` per record, so an
  adapter can point into its own input (``/entry/2/resource/valueQuantity``);
* an **outcome per item** (``inserted``, ``unchanged``, ``updated``, ``retracted``,
  ``rejected``, ``ignored``, or ``not_stored`` when an all-or-nothing request was refused);
* the **patient-months touched**, for the incremental month run;
* **retries**: two requests storing the same new key at once cannot both insert it (the
  unique index stops one), so the loser is run again and finds the record stored. The
  pipeline's live mode makes that failure clean (SQLite's write lock taken at
  ``BEGIN IMMEDIATE``, PostgreSQL at REPEATABLE READ), and every attempt is one
  transaction: a process killed mid-request leaves nothing of it behind.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from caretally.dates import add_months
from caretally.errors import Problem
from caretally.ingest.pipeline import DEFAULT_CLOCK_SKEW, Guard, import_records
from caretally.ingest.report import ImportReport
from caretally.ingest.staging import Change, ConcurrentWrite

#: Outcomes an item can have; ``counts`` reports each.
STATUSES: tuple[str, ...] = (
    "inserted",
    "unchanged",
    "updated",
    "retracted",
    "rejected",
    "ignored",
    "not_stored",
)
#: Attempts at a request that lost a race for a key (PostgreSQL unique violation,
#: serialization failure or deadlock) before the error is passed on.
ATTEMPTS = 8
#: PostgreSQL SQLSTATEs that mean "another transaction got there first; run again".
_RETRY_STATES = frozenset({"23505", "40001", "40P01"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What happened to one item of the request; ``pointer`` is the item's JSON pointer."""

    pointer: str
    status: str
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pointer": self.pointer, "status": self.status}
        if self.key is not None:
            out["key"] = self.key
        return out


@dataclass
class LiveResult:
    """The one result shape of every live ingest function (and of ``import_zip``).

    ``touched`` holds ``(patient_id, "YYYY-MM")`` for every patient-month whose stored
    data changed: the local month of each reading or time entry inserted, updated or
    retracted (its month before and after an update), and every month an inserted,
    updated or retracted enrollment or device assignment spans up to the month of
    ``now``. A device period can end in the month after a reading, so the month run
    that reads it re-evaluates a touched month and the one after it. A changed patient
    row (payer, member id …) is not a month: its id goes into ``changed_patients``.
    """

    kind: str
    stored: bool
    batch_id: str | None
    items: list[ItemOutcome] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    touched: frozenset[tuple[str, str]] = frozenset()
    changed_patients: frozenset[str] = frozenset()
    #: Bundles only: counts per file, as ``ImportReport.to_json`` gives them.
    files: dict[str, dict[str, int]] = field(default_factory=dict)

    def ok(self) -> bool:
        """True when nothing was rejected (with ``partial`` a request can be stored and not ok)."""
        return not self.problems

    @property
    def counts(self) -> dict[str, int]:
        if self.files:
            return {
                name: sum(c.get(name, 0) for c in self.files.values())
                for name in ("inserted", "unchanged", "updated", "rejected", "deleted")
            }
        out = dict.fromkeys(STATUSES, 0)
        for item in self.items:
            out[item.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "ok": self.ok(),
            "stored": self.stored,
            "batch_id": self.batch_id,
            "counts": self.counts,
            "items": [i.to_json() for i in self.items],
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
            "touched": [{"patient_id": p, "month": m} for p, m in sorted(self.touched)],
            "changed_patients": sorted(self.changed_patients),
        }
        if self.files:
            out["files"] = self.files
        return out


def escape(token: str) -> str:
    """One RFC 6901 reference token: ``~`` → ``~0``, ``/`` → ``~1``."""
    return token.replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    return "".join(f"/{escape(str(t))}" for t in tokens)


@dataclass(frozen=True, slots=True)
class Locator:
    """Where one record came from: the item's pointer and where each of its columns lives.

    ``fields`` maps a record column to a pointer relative to ``base`` (``"/effectiveDateTime"``);
    a column it does not name is pointed at as ``base/<column>``, which is right whenever
    the record is the item itself (JSON readings, time entries).
    """

    base: str
    fields: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None

    def at(self, column: str | None) -> str:
        if column is None:
            return self.base
        return self.base + self.fields.get(column, pointer(column))


def problem(kind: str, where: str, code: str, message: str, column: str | None = None) -> Problem:
    """A live problem: ``file`` names the request kind, ``pointer`` the place in its body."""
    return Problem(kind, None, column, code, message, pointer=where)


def run_records(
    engine: Engine,
    org_id: str,
    kind: str,
    stem: str,
    records: Sequence[Mapping[str, Any]],
    locators: Sequence[Locator],
    *,
    partial: bool,
    now: datetime,
    early: Sequence[tuple[str, Problem]] = (),
    ignored: Sequence[ItemOutcome] = (),
    retract: Sequence[tuple[Mapping[str, Any], Locator]] = (),
    warnings: Sequence[Problem] = (),
    guard: Guard | None = None,
    actor: str | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LiveResult:
    """Store ``records`` (one per locator) of file ``stem`` and account for every item.

    ``early`` are problems an adapter found before making a record (``(item pointer,
    problem)``); ``ignored`` are items deliberately skipped (with a warning in
    ``warnings``); ``retract`` are retraction rows (``file``, ``id``, ``reason``) for
    records the source withdrew. When ``early`` is not empty and ``partial`` is off,
    the records are still checked, so the answer lists every problem, but nothing is
    stored.
    """
    if len(records) != len(locators):
        raise ValueError("one locator per record")
    refused_early = bool(early) and not partial
    payload: dict[str, list[Mapping[str, Any]]] = {}
    if records:
        payload[stem] = list(records)
    if retract:
        payload["retractions"] = [row for row, _ in retract]
    report: ImportReport | None = None
    if payload:

        def attempt() -> ImportReport:
            return import_records(
                engine,
                org_id,
                payload,
                source_name=f"<{kind}>",
                skip_invalid=partial,
                now=now,
                max_clock_skew=max_clock_skew,
                live=True,
                guard=guard,
                actor=actor,
                check_only=refused_early,
            )

        report = with_retries(attempt)
    locate = {stem: list(locators), "retractions": [loc for _, loc in retract]}
    problems = [p for _, p in early]
    rejected_pointers = {where for where, _ in early}
    if report is not None:
        for found in report.problems:
            translated = _translate(kind, found, locate)
            problems.append(translated)
            rejected_pointers.add(_item_of(found, locate))
    stored = report.stored if report is not None else not refused_early
    items: list[ItemOutcome] = []
    for s, found_locators in locate.items():
        outcomes = report.outcomes.get(s, {}) if report is not None and stored else {}
        for line, loc in enumerate(found_locators, start=1):
            if loc.base in rejected_pointers:
                status = "rejected"
            elif not stored:
                status = "not_stored"
            else:
                status = outcomes.get(line, "unchanged")  # an identical repeat within the request
            items.append(ItemOutcome(loc.base, status, loc.key))
    items.extend(ItemOutcome(where, "rejected") for where in _early_items(early, locate))
    items.extend(ignored)
    items.sort(key=lambda i: _order(i.pointer))
    all_warnings = list(warnings)
    if report is not None:
        all_warnings.extend(_translate(kind, w, locate) for w in report.warnings)
    touched, patients = (frozenset(), frozenset())
    if report is not None and stored:
        touched, patients = touched_months(report.changes, now)
    return LiveResult(
        kind,
        stored,
        report.batch_id if report is not None and stored else None,
        items,
        sorted(problems, key=lambda p: _order(p.pointer or "")),
        all_warnings,
        touched,
        patients,
    )


def _early_items(early: Sequence[tuple[str, Problem]], locate: Mapping[str, list[Locator]]) -> list[str]:
    """Items rejected before they became records (each once, in order)."""
    recorded = {loc.base for locators in locate.values() for loc in locators}
    seen: list[str] = []
    for where, _ in early:
        if where not in recorded and where not in seen:
            seen.append(where)
    return seen


def _order(where: str) -> tuple[Any, ...]:
    """The item a pointer is in, for a stable sort into document order.

    Only the tokens up to the first array index count (``/3``, ``/entry/3``), compared
    as numbers: problems of one item keep the order the checks found them in.
    """
    key: list[Any] = []
    for token in where.split("/")[1:]:
        if token.isdigit():
            key.append((0, int(token), ""))
            break
        key.append((1, 0, token))
    return tuple(key)


def _stem_and_line(found: Problem) -> tuple[str | None, int | None]:
    """The pipeline names a record ``<kind>:<stem>[n]``; duplicates use the same label."""
    label = found.file
    if ":" not in label or not label.endswith("]"):
        return None, found.line
    stem = label.rsplit(":", 1)[1].split("[", 1)[0]
    return stem, found.line


def _item_of(found: Problem, locate: Mapping[str, list[Locator]]) -> str:
    stem, line = _stem_and_line(found)
    locators = locate.get(stem or "", [])
    if line is not None and 1 <= line <= len(locators):
        return locators[line - 1].base
    return ""


def _translate(kind: str, found: Problem, locate: Mapping[str, list[Locator]]) -> Problem:
    """The pipeline's ``<kind>:<stem>[n]`` and column, as a pointer into the request."""
    stem, line = _stem_and_line(found)
    locators = locate.get(stem or "", [])
    inside = line is not None and 1 <= line <= len(locators)
    where = locators[line - 1].at(found.field) if inside and line is not None else ""
    return Problem(kind, None, found.field, found.code, found.message, pointer=where)


# ---------------------------------------------------------------------------------------
# Retries.
# ---------------------------------------------------------------------------------------


def retryable(exc: BaseException) -> bool:
    """A conflict with a concurrent transaction, which a second attempt resolves."""
    if isinstance(exc, ConcurrentWrite):
        return True
    if not isinstance(exc, DBAPIError) or exc.orig is None:
        return False
    state = getattr(exc.orig, "sqlstate", None)
    if state in _RETRY_STATES:
        return True
    # SQLite with BEGIN IMMEDIATE serialises writers, so a unique violation there is a
    # race only the first statement could have lost; still, treat it alike.
    return "UNIQUE constraint failed" in str(exc.orig)


def with_retries(run: Callable[[], T], *, attempts: int = ATTEMPTS) -> T:
    """Run ``run`` (one transaction) again after a retryable conflict, with jittered backoff."""
    for attempt in range(attempts - 1):
        try:
            return run()
        except (DBAPIError, ConcurrentWrite) as exc:
            if not retryable(exc):
                raise
        time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
    return run()


# ---------------------------------------------------------------------------------------
# Touched patient-months.
# ---------------------------------------------------------------------------------------

_DATED = {"readings": "local_date", "time_entries": "local_date", "visits": "visit_date"}
_SPANS = {"enrollments": ("start_date", "end_date"), "devices": ("assigned_date", "returned_date")}


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _months(first: date, last: date) -> Iterable[str]:
    day = first.replace(day=1)
    while day <= last:
        yield day.strftime("%Y-%m")
        day = add_months(day, 1)


def touched_months(
    changes: Mapping[str, Sequence[Change]], now: datetime
) -> tuple[frozenset[tuple[str, str]], frozenset[str]]:
    """``(patient, month)`` pairs whose data changed, and patients whose own row changed."""
    touched: set[tuple[str, str]] = set()
    patients: set[str] = set()
    ceiling = now.date()
    for stem, found in changes.items():
        for change in found:
            for values in (change.old, change.new):
                if values is None:
                    continue
                patient = values.get("patient_id")
                if stem == "patients" and patient:
                    patients.add(patient)
                elif stem in _DATED and patient:
                    day = _day(values.get(_DATED[stem]))
                    if day is not None:
                        touched.add((patient, day.strftime("%Y-%m")))
                elif stem in _SPANS and patient:
                    start_name, end_name = _SPANS[stem]
                    start, end = _day(values.get(start_name)), _day(values.get(end_name))
                    if start is None:
                        continue
                    last = min(end or ceiling, ceiling) if start <= ceiling else start
                    touched.update((patient, m) for m in _months(start, max(start, last)))
    return frozenset(touched), frozenset(patients)


# ---------------------------------------------------------------------------------------
# JSON readings.
# ---------------------------------------------------------------------------------------


def ingest_readings(
    engine: Engine,
    org_id: str,
    items: Any,
    *,
    partial: bool = False,
    now: datetime,
    actor: str | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LiveResult:
    """Store a JSON array of readings, each an object with the ``readings.csv`` fields.

    All-or-nothing unless ``partial``. A ``reading_id`` already stored with the same
    content is ``unchanged``; with other content it is ``updated`` and audited (naming
    ``actor``). Safe to call from many clients at once: every reading is stored once.
    """
    kind = "readings"
    if not isinstance(items, list):
        where = problem(kind, "", "bad_json", "the body must be a JSON array of readings")
        return LiveResult(kind, False, None, problems=[where])
    locators = [
        Locator(pointer(i), key=_text_key(item.get("reading_id")) if isinstance(item, Mapping) else None)
        for i, item in enumerate(items)
    ]
    if not items:
        return LiveResult(kind, True, None)
    return run_records(
        engine,
        org_id,
        kind,
        "readings",
        items,
        locators,
        partial=partial,
        now=now,
        actor=actor,
        max_clock_skew=max_clock_skew,
    )


def _text_key(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None

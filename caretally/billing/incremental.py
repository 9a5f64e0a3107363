"""The incremental month run (``bill --incremental``): re-evaluate only what changed.

The run stored last for the month (its *base*) saw ``month_touches`` up to an id and a
billing history of earlier months (``billing.touchmarks``). When the base was made with
the same rules, engine and settings, and neither the history nor the organization as a
whole changed since, only the patients touched after the base (and those entering the
month's population) are evaluated; every other patient's decisions row refers to the row
that holds its text (``run_decisions.stored_in``, read through ``run.decision_rows``)
and its claim lines are copied forward in SQL, in patient order. The new run is stored
exactly as a full run of the same data would store it: the same decisions, lines in the
same order, summary and digests (``tests/billing/test_incremental.py`` proves it).
Anything else is answered by the full run (:func:`caretally.billing.run.bill_month`),
with the reason.

Known limit: on PostgreSQL, touch ids come from a sequence, and an ingest that took an id
before the base run's snapshot but committed after it is missed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, literal, select, update

from caretally.billing.evaluate import facts_options, map_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import (
    DRAFT,
    SUPERSEDED,
    BillingSettings,
    RunResult,
    RunSummary,
    RunWarning,
    StoredRun,
    _directory,
    _line_row,
    _PatientResult,
    _quiet_gc,
    _reading,
    _same_run,
    bill_month,
    current_run,
    decision_rows,
    engine_version,
    hold_month,
    input_digest_of,
    latest_locked,
    line_content,
    line_digest_part,
    line_key,
    patient_result,
    stored_line,
    stored_lines,
)
from caretally.billing.serialize import stored_decisions_json
from caretally.billing.touchmarks import history_key, mark_run
from caretally.errors import Problem
from caretally.facts import patients_in_month
from caretally.ingest.touches import EVERY, next_month
from caretally.model import ClaimLine, Payer, Period
from caretally.store import schema
from caretally.store.db import require_json_text

#: Patient ids per ``IN (…)`` list when copying rows forward.
CHUNK = 2000


@dataclass(frozen=True)
class Incremental:
    """How ``bill --incremental`` went: ``mode`` incremental | unchanged | full, and why."""

    mode: str
    reason: str
    evaluated: int = 0
    carried: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reason": self.reason,
            "evaluated": self.evaluated,
            "carried": self.carried,
        }


class _Full(Exception):
    """The incremental run cannot vouch for the result; the full run must be made."""


def bill_month_incremental(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: PayerRules,
    settings: BillingSettings | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[int, int], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> tuple[RunResult, Incremental]:
    """Bill ``month`` re-evaluating only the touched patients, or in full when in doubt."""
    settings = settings or BillingSettings()
    try:
        return _incremental(
            engine, org_id, month, rules, settings, now=now, progress=progress, on_wait=on_wait
        )
    except _Full as why:
        result = bill_month(
            engine, org_id, month, rules, settings, now=now, progress=progress, on_wait=on_wait
        )
        return result, Incremental("full", str(why), evaluated=result.summary.patients)


def _base(
    conn: Connection, reader: Engine, org_id: str, month_text: str, rules: PayerRules, settings_json: Any
):
    """The run to build on and what it saw, or ``_Full`` saying why there is none."""
    previous = current_run(reader, org_id, month_text)
    if previous is None:
        raise _Full(f"{month_text} has no stored run to build on")
    if latest_locked(reader, org_id, month_text) is not None:
        raise _Full(f"{month_text} has a locked run: an amendment is always a full run")
    if previous.ruleset_hash != rules.content_hash:
        raise _Full("the rules changed since the last run")
    if previous.engine_version != engine_version():
        raise _Full("the engine changed since the last run")
    runs = schema.billing_runs
    stored_settings = conn.execute(
        select(runs.c.settings).where(runs.c.run_id == previous.run_id)
    ).scalar_one()
    if stored_settings != settings_json:
        raise _Full("the billing settings differ from the last run's")
    summary = previous.summary or {}
    if summary.get("problems") or summary.get("provisional") or summary.get("undecided_programs"):
        raise _Full(
            "the last run has problems, provisional or undecided programs, which only a full run redoes"
        )
    m = schema.run_touch_marks
    mark = conn.execute(select(m).where(m.c.run_id == previous.run_id)).first()
    if mark is None:
        raise _Full("the last run was stored before changes were tracked")
    if mark.history_key != history_key(conn, org_id, month_text):
        raise _Full("the billing history of earlier months changed since the last run")
    return previous, mark


def _touched(conn: Connection, org_id: str, month_text: str, since: int) -> set[str]:
    """Patients touched after id ``since`` in ``month_text``, the month after, or before
    (earlier months carry into it: first reading days, prior periods); ``_Full`` for an
    organization-wide touch."""
    t = schema.month_touches
    rows = conn.execute(
        select(t.c.patient_id, t.c.month).where(t.c.org_id == org_id, t.c.id > since).distinct()
    ).all()
    out: set[str] = set()
    # A device period with its date of service in the month may end in the next one
    # (``device_dos=threshold_day``): readings there change the month's evidence.
    through = next_month(month_text)
    for patient, month in rows:
        if patient == EVERY:
            raise _Full(
                "a change since the last run touched the whole organization (a bulk import, a practitioner)"
            )
        if month == EVERY or month <= through:
            out.add(patient)
    return out


def _incremental(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: PayerRules,
    settings: BillingSettings,
    *,
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None,
    on_wait: Callable[[str], None] | None,
) -> tuple[RunResult, Incremental]:
    require_json_text(engine)
    month_text = month.start.strftime("%Y-%m")
    settings_json = settings.to_json()
    with (
        hold_month(engine, org_id, month_text, on_wait=on_wait) as held,
        _reading(held) as reader,
        _quiet_gc(),
    ):
        conn = held.conn
        previous, mark = _base(conn, reader, org_id, month_text, rules, settings_json)
        touched = _touched(conn, org_id, month_text, mark.touches_through)
        if not touched:
            kept = stored_lines(reader, previous.run_id)
            conn.rollback()
            return _unchanged(previous, month_text, kept), Incremental(
                "unchanged", "nothing touched since the last run"
            )
        book = rules
        lookback = max(facts_options(book.for_payer(p), month).lookback for p in Payer)
        population = patients_in_month(reader, org_id, month, lookback)
        d = schema.run_decisions
        before = {
            r.patient_id: r
            for r in conn.execute(
                select(d.c.patient_id, d.c.facts_digest, d.c.billable_count).where(
                    d.c.run_id == previous.run_id
                )
            )
        }
        in_month = set(population)
        redo = (touched & in_month) | (in_month - before.keys())
        old_parts: dict[str, str] = dict(mark.decision_parts or {})
        if not set(before) - redo <= old_parts.keys():
            raise _Full("the last run's decision digests are not stored")
        return _store(
            conn,
            reader,
            held.snapshot,
            org_id,
            month,
            rules,
            settings,
            previous,
            population,
            redo,
            before,
            old_parts,
            now=now,
            progress=progress,
        )


def _warning(item: dict[str, Any]) -> RunWarning:
    return RunWarning(item["code"], item["patient_id"], item["message"], tuple(item.get("entry_ids") or ()))


def _add_lines(summary: RunSummary, lines: Iterable[ClaimLine]) -> None:
    for line in lines:
        summary.lines += 1
        summary.lines_by_code[line.code] += 1
        summary.units_by_code[line.code] += line.units
        summary.payment_by_code[line.code] += line.expected_payment


def _unchanged(previous: StoredRun, month_text: str, kept: list[ClaimLine]) -> RunResult:
    """The base run, as ``bill`` reports a rerun that changed nothing (its summary as stored)."""
    stored = previous.summary or {}
    summary = RunSummary(patients=stored.get("patients", 0), decisions=stored.get("decisions", 0))
    _add_lines(summary, kept)
    summary.warnings = [_warning(w) for w in stored.get("warnings") or []]
    summary.readings_through = stored.get("readings_through")
    return RunResult(
        previous.run_id,
        month_text,
        "unchanged",
        previous.status,
        kept,
        summary,
        previous.run_id,
        previous.amends_run_id,
        [],
    )


def _old_decision_count(conn: Connection, run_id: str, patients: Sequence[str]) -> int:
    d = schema.run_decisions
    joined, value = decision_rows()
    total = 0
    for start in range(0, len(patients), CHUNK):
        chunk = patients[start : start + CHUNK]
        rows = conn.execute(
            select(value).select_from(joined).where(d.c.run_id == run_id, d.c.patient_id.in_(chunk))
        )
        total += sum(len(stored_decisions_json(v)) for (v,) in rows)
    return total


def _refer_decisions(conn: Connection, old_run: str, run_id: str, carried: Sequence[str]) -> None:
    """A row per carried patient that refers to the row holding its decisions, in SQL.

    The text stays where it was stored (``stored_in``: the base run's row, or the row the
    base itself referred to), so a carried patient costs a short row, not a 17 KB copy.
    """
    d = schema.run_decisions
    columns = ["run_id", "org_id", "patient_id", "facts_digest", "billable_count", "stored_in"]
    for start in range(0, len(carried), CHUNK):
        chunk = carried[start : start + CHUNK]
        source = select(
            literal(run_id, d.c.run_id.type),
            d.c.org_id,
            d.c.patient_id,
            d.c.facts_digest,
            d.c.billable_count,
            func.coalesce(d.c.stored_in, d.c.run_id),
        ).where(d.c.run_id == old_run, d.c.patient_id.in_(chunk))
        conn.execute(insert(d).from_select(columns, source))


#: ``claim_lines`` columns copied as they are when a line is carried (all but id and run id).
_LINE_COLUMNS = [c.name for c in schema.claim_lines.columns if c.name not in ("id", "run_id")]


def _carry_lines(
    conn: Connection,
    old_run: str,
    run_id: str,
    carried: Sequence[str],
    ids: Mapping[str, list[int]],
    position: Mapping[int, int],
) -> None:
    """The carried patients' lines (consecutive in patient order) copied in SQL, in stored order.

    ``ids``: each patient's line ids in the base run; ``position``: each id's place among
    the base run's lines. When the segment's lines are one unbroken stretch of the base
    run's lines (no other patient's line between them, as when the base stored the same
    patients in the same order), they are copied as one primary-key range; otherwise by
    patient.
    """
    c = schema.claim_lines
    theirs = [x for patient in carried for x in ids.get(patient, ())]
    if not theirs:
        return
    wanted = select(literal(run_id, c.c.run_id.type), *(c.c[name] for name in _LINE_COLUMNS))
    columns = ["run_id", *_LINE_COLUMNS]
    at = [position[x] for x in theirs]
    if max(at) - min(at) + 1 == len(theirs):
        low, high = min(theirs), max(theirs)
        source = wanted.where(c.c.run_id == old_run, c.c.id.between(low, high)).order_by(c.c.id)
        conn.execute(insert(c).from_select(columns, source))
        return
    for start in range(0, len(carried), CHUNK):
        chunk = carried[start : start + CHUNK]
        source = wanted.where(c.c.run_id == old_run, c.c.patient_id.in_(chunk)).order_by(c.c.id)
        conn.execute(insert(c).from_select(columns, source))


def _store(
    conn: Connection,
    reader: Engine,
    snapshot: str | None,
    org_id: str,
    month: Period,
    rules: PayerRules,
    settings: BillingSettings,
    previous: StoredRun,
    population: list[str],
    redo: set[str],
    before: dict[str, Any],
    old_parts: dict[str, str],
    *,
    now: Callable[[], datetime],
    progress: Callable[[int, int], None] | None,
) -> tuple[RunResult, Incremental]:
    month_text = month.start.strftime("%Y-%m")
    settings_json = settings.to_json()
    run_id = str(uuid.uuid4())
    directory = _directory(reader, org_id, redo if len(redo) <= CHUNK else None)
    runs = schema.billing_runs
    conn.execute(
        insert(runs).values(
            run_id=run_id,
            org_id=org_id,
            month=month_text,
            status=DRAFT,
            engine_version=engine_version(),
            ruleset_hash=rules.content_hash,
            input_digest="",
            lines_digest="",
            created_at=now(),
            locked_at=None,
            amends_run_id=None,
            settings=settings_json,
        )
    )
    if progress is not None:
        progress(0, len(population))
    problems: list[Problem] = []

    def evaluate(facts: Any, decisions: Any) -> _PatientResult:
        return patient_result(facts, decisions, rules, settings, directory, run_id)

    fresh = {
        r.patient_id: r
        for r in map_month(
            reader,
            org_id,
            month,
            rules,
            evaluate,
            patients=redo,
            problems=problems,
            snapshot=snapshot,
            population=population,
        )
    }
    c = schema.claim_lines
    old_lines: dict[str, list[ClaimLine]] = defaultdict(list)
    old_ids: dict[str, list[int]] = defaultdict(list)
    position: dict[int, int] = {}
    for row in conn.execute(select(c).where(c.c.run_id == previous.run_id).order_by(c.c.id)).mappings():
        old_lines[row["patient_id"]].append(stored_line(row, run_id))
        old_ids[row["patient_id"]].append(row["id"])
        position[row["id"]] = len(position)
    old_warnings: dict[str, list[RunWarning]] = defaultdict(list)
    for item in (previous.summary or {}).get("warnings") or []:
        old_warnings[item["patient_id"]].append(_warning(item))

    summary = RunSummary()
    input_hash, decisions_hash, lines_hash = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    all_lines: list[ClaimLine] = []
    parts: dict[str, str] = {}
    carried: list[str] = []
    decision_rows: list[dict[str, Any]] = []
    # The lines are stored in patient order, as a full run stores them: runs of consecutive
    # carried patients are copied in SQL, the re-evaluated patients' lines inserted between.
    steps: list[tuple[str, list[Any]]] = []

    def step(kind: str, items: Sequence[Any]) -> None:
        if steps and steps[-1][0] == kind:
            steps[-1][1].extend(items)
        else:
            steps.append((kind, list(items)))

    for patient in population:
        found = fresh.get(patient)
        if found is not None:
            input_hash.update(found.facts_digest.encode())
            decisions_hash.update(found.decisions_digest.encode())
            parts[patient] = found.decisions_digest
            summary.absorb(found.summary)
            lines = found.lines
            decision_rows.append(
                {
                    "run_id": run_id,
                    "org_id": org_id,
                    "patient_id": patient,
                    "facts_digest": found.facts_digest,
                    "billable_count": found.billable,
                    "decisions": found.decisions_json,
                }
            )
            step("fresh", lines)
        elif patient in redo:
            continue  # a problem of the patient's: in ``problems``, as a full run has it
        else:
            row = before[patient]
            input_hash.update(row.facts_digest.encode())
            decisions_hash.update(old_parts[patient].encode())
            parts[patient] = old_parts[patient]
            summary.patients += 1
            summary.warnings.extend(old_warnings.get(patient, ()))
            lines = old_lines.get(patient, [])
            carried.append(patient)
            step("carried", [patient])
        for line in lines:
            lines_hash.update(line_digest_part(line_content(line)))
        _add_lines(summary, lines)
        all_lines.extend(lines)
    _refer_decisions(conn, previous.run_id, run_id, carried)
    if decision_rows:
        conn.execute(insert(schema.run_decisions), decision_rows)
    for kind, items in steps:
        if kind == "carried":
            _carry_lines(conn, previous.run_id, run_id, items, old_ids, position)
            continue
        for start in range(0, len(items), 5000):
            chunk = items[start : start + 5000]
            conn.execute(insert(c), [_line_row(run_id, org_id, line_key(x), x) for x in chunk])
    kept = set(carried)
    dropped = [p for p in before if p not in kept]
    summary.decisions += int((previous.summary or {}).get("decisions", 0)) - _old_decision_count(
        conn, previous.run_id, dropped
    )
    summary.problems = sorted(problems, key=lambda p: (p.field or "", p.message))
    summary.readings_through = conn.execute(
        select(func.coalesce(func.max(schema.readings.c.id), 0)).where(schema.readings.c.org_id == org_id)
    ).scalar_one()
    digest = lines_hash.hexdigest()
    input_digest = input_digest_of(input_hash.hexdigest(), settings_json)
    version = engine_version()
    how = Incremental(
        "incremental", "re-evaluated the patients touched since the last run", len(fresh), len(carried)
    )
    if _same_run(previous, digest, input_digest, rules.content_hash, version):
        kept = stored_lines(reader, previous.run_id)
        conn.rollback()
        result = _unchanged(previous, month_text, kept)
        return result, Incremental(
            "unchanged", "the touched patients' facts are as the last run saw them", len(fresh), len(carried)
        )
    conn.execute(
        update(runs)
        .where(runs.c.run_id == run_id)
        .values(
            input_digest=input_digest,
            lines_digest=digest,
            decisions_digest=decisions_hash.hexdigest(),
            engine_version=version,
            summary=summary.to_json(),
        )
    )
    if previous.status == DRAFT:
        conn.execute(
            update(runs)
            .where(runs.c.run_id == previous.run_id, runs.c.status == DRAFT)
            .values(status=SUPERSEDED)
        )
    mark_run(conn, org_id, month_text, run_id, parts)
    if progress is not None:
        progress(len(population), len(population))
    return RunResult(run_id, month_text, "created", DRAFT, all_lines, summary, previous.run_id, None, []), how

"""The incremental month run (``bill --incremental``): re-evaluate only what changed.

The run stored last for the month (its *base*) saw ``month_touches`` up to an id and a
billing history of earlier months (``billing.touchmarks``). When the base was made with
the same rules, engine and settings, and neither the history nor the organization as a
whole changed since, only the patients touched after the base are read and evaluated
(every change that can move a patient into or out of the month's population touches
them). Everything else is carried forward in SQL without being read: every other
patient's decisions row refers to the row that holds its text (``run_decisions.stored_in``,
read through ``run.decision_rows``), and so does its ``run_warnings`` row if it has one;
their claim lines are copied in stretches between the
re-evaluated patients, in patient order; the digests are the base's with the re-evaluated
patients' old parts taken out and their new ones added (``run.DigestSum``), and the
summary the base's with the same exchange. The cost is O(touched) plus SQL that copies
rows. The new run is stored exactly as a full run of the same data would store it: the
same decisions, lines in the same order, summary and digests
(``tests/billing/test_incremental.py`` proves it). Anything else is answered by the full
run (:func:`caretally.billing.run.bill_month`), with the reason.

Known limit: on PostgreSQL, touch ids come from a sequence, and an ingest that took an id
before the base run's snapshot but committed after it is missed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, Integer, Table, cast, delete, func, insert, literal, select, update

from caretally.billing.evaluate import facts_options, map_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import (
    DIGEST_SCHEME,
    DRAFT,
    SUPERSEDED,
    BillingSettings,
    DigestSum,
    RunResult,
    RunSummary,
    StoredLines,
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
    decisions_digest_part,
    engine_version,
    facts_sum_of,
    hold_month,
    input_digest_of,
    input_digest_part,
    latest_locked,
    line_content,
    line_digest_part,
    line_key,
    patient_result,
    stored_line,
    warning_row,
    warnings_of,
)
from caretally.billing.touchmarks import history_key, mark_run
from caretally.errors import Problem
from caretally.facts import patients_in_month
from caretally.ingest.touches import EVERY, next_month
from caretally.model import ClaimLine, Payer, Period
from caretally.store import schema
from caretally.store.db import require_json_text

#: Patient ids per ``IN (…)`` list when copying rows forward.
CHUNK = 2000

#: Touched patients from which their evaluation is split across forked workers, as a
#: cold run's is (``map_month``'s ``parallel_from``).
PARALLEL_FROM = 200


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
    if previous.digest_scheme != DIGEST_SCHEME or previous.decisions_digest is None:
        raise _Full("the last run's digests chain every patient in order (stored before summed digests)")
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
            result = _unchanged(engine, conn, previous, month_text)
            conn.rollback()
            return result, Incremental("unchanged", "nothing touched since the last run")
        lookback = max(facts_options(rules.for_payer(p), month).lookback for p in Payer)
        # Only the touched can have entered or left the month's population since the base.
        redo = sorted(set(patients_in_month(reader, org_id, month, lookback, touched)) & touched)
        before = _old_rows(conn, previous.run_id, sorted(touched))
        return _store(
            conn,
            reader,
            held.snapshot,
            org_id,
            month,
            rules,
            settings,
            previous,
            redo,
            before,
            engine=engine,
            now=now,
            progress=progress,
        )


@dataclass(frozen=True)
class _OldRow:
    """A re-evaluated (or dropped) patient's row in the base run: what its digests counted."""

    facts_digest: str
    decisions_part: str
    decisions: int


def _old_rows(conn: Connection, run_id: str, patients: Sequence[str]) -> dict[str, _OldRow]:
    """The base run's rows of ``patients`` (those it has), with their shares of its digests.

    The decisions part is made from the stored text, as the base made it and as
    ``db verify`` remakes it.
    """
    d = schema.run_decisions
    joined, text = decision_rows(text=True)
    out: dict[str, _OldRow] = {}
    for start in range(0, len(patients), CHUNK):
        chunk = patients[start : start + CHUNK]
        rows = conn.execute(
            select(d.c.patient_id, d.c.facts_digest, d.c.billable_count, text)
            .select_from(joined)
            .where(d.c.run_id == run_id, d.c.patient_id.in_(chunk))
        )
        for patient, facts_digest, billable, value in rows:
            stored = orjson.loads(value)
            count = len(stored) if isinstance(stored, list) else len(stored["decisions"])
            out[patient] = _OldRow(facts_digest, decisions_digest_part(patient, billable, value), count)
    return out


def _old_lines(conn: Connection, run_id: str, patients: Sequence[str]) -> Iterator[ClaimLine]:
    """The base run's claim lines of ``patients``."""
    c = schema.claim_lines
    for start in range(0, len(patients), CHUNK):
        chunk = patients[start : start + CHUNK]
        for row in conn.execute(select(c).where(c.c.run_id == run_id, c.c.patient_id.in_(chunk))).mappings():
            yield stored_line(row)


def _readings_through(conn: Connection, org_id: str, base: int | None) -> int:
    """The organization's newest reading id, as a full run records it, read from the base's on.

    A full run takes ``MAX(id)`` over the organization's readings: at 100,000 patients
    that walks 4.6 M index entries (over a second on SQLite). Ids only grow, so the newest
    is among those from the base's mark on, a range of the primary key. SQLite would plan
    ``org_id = ?`` on its index instead of the key range; ``org_id || ''`` keeps it on the
    range. When no reading from the mark on is left (the base's newest was deleted), or the
    base has no mark, the full query answers.
    """
    r = schema.readings
    if base is not None:
        found = conn.execute(
            select(func.max(r.c.id)).where(r.c.id >= int(base), r.c.org_id.concat("") == org_id)
        ).scalar_one()
        if found is not None:
            return int(found)
    return int(
        conn.execute(select(func.coalesce(func.max(r.c.id), 0)).where(r.c.org_id == org_id)).scalar_one()
    )


def _line_totals(conn: Connection, run_id: str, summary: RunSummary) -> None:
    """The summary's line counts, units and payments by code, added up by the database.

    Payments are summed in cents (SQLite keeps NUMERIC as a float), so the total is the
    one a full run adds up from its lines, to the cent.
    """
    c = schema.claim_lines
    cents = cast(func.round(c.c.expected_payment * 100), Integer)
    rows = conn.execute(
        select(c.c.code, func.count(), func.sum(c.c.units), func.sum(cents))
        .where(c.c.run_id == run_id)
        .group_by(c.c.code)
    )
    for code, lines, units, paid in rows:
        summary.lines += lines
        summary.lines_by_code[code] += lines
        summary.units_by_code[code] += int(units)
        summary.payment_by_code[code] += (Decimal(int(paid)) / 100).quantize(Decimal("0.01"))


def _unchanged(engine: Engine, conn: Connection, previous: StoredRun, month_text: str) -> RunResult:
    """The base run, as ``bill`` reports a rerun that changed nothing (its summary as stored)."""
    stored = previous.summary or {}
    summary = RunSummary(patients=stored.get("patients", 0), decisions=stored.get("decisions", 0))
    _line_totals(conn, previous.run_id, summary)
    summary.warnings_by_code.update(stored.get("warnings_by_code") or {})
    summary.readings_through = stored.get("readings_through")
    return RunResult(
        previous.run_id,
        month_text,
        "unchanged",
        previous.status,
        StoredLines(engine, previous.run_id),
        summary,
        previous.run_id,
        previous.amends_run_id,
        [],
    )


#: The columns a referring row leaves NULL: the text lives in the row ``stored_in`` names.
_TEXT_COLUMNS = ("decisions", "warnings")


def _refer(conn: Connection, table: Table, old_run: str, run_id: str, changed: Sequence[str]) -> None:
    """A row per carried patient that refers to the row holding its text, in SQL.

    For ``run_decisions`` and ``run_warnings``: the text (decisions, warnings) stays where it
    was stored (``stored_in``: the base run's row, or the row the base itself referred to),
    so a carried patient costs a short row, not a 17 KB copy. Every row of the base is
    referred to in one statement, its short columns copied; then the ``changed`` patients'
    references (re-evaluated or gone) are deleted, by name.
    """
    kept = [c for c in table.c if c.name not in ("run_id", "stored_in", *_TEXT_COLUMNS)]
    source = select(
        literal(run_id, table.c.run_id.type),
        *kept,
        func.coalesce(table.c.stored_in, table.c.run_id),
    ).where(table.c.run_id == old_run)
    columns = ["run_id", *(c.name for c in kept), "stored_in"]
    conn.execute(insert(table).from_select(columns, source))
    for start in range(0, len(changed), CHUNK):
        chunk = changed[start : start + CHUNK]
        conn.execute(delete(table).where(table.c.run_id == run_id, table.c.patient_id.in_(chunk)))


#: ``claim_lines`` columns copied as they are when a line is carried (all but id and run id).
_LINE_COLUMNS = [c.name for c in schema.claim_lines.columns if c.name not in ("id", "run_id")]


def _carry_stretch(
    conn: Connection, old_run: str, run_id: str, after: str | None, before: str | None, skip: Sequence[str]
) -> None:
    """Copy the base run's lines of the patients between ``after`` and ``before`` (exclusive;
    None: open), except ``skip``'s, in the order stored.

    The base stored its lines in patient order, compared as Python compares strings (SQLite
    compares bytes; on PostgreSQL ``claim_lines.patient_id`` has the "C" collation), so the
    stretch is one range of its ``(run_id, patient_id)`` index.
    """
    c = schema.claim_lines
    wanted = select(literal(run_id, c.c.run_id.type), *(c.c[name] for name in _LINE_COLUMNS)).where(
        c.c.run_id == old_run
    )
    if after is not None:
        wanted = wanted.where(c.c.patient_id > after)
    if before is not None:
        wanted = wanted.where(c.c.patient_id < before)
    if skip:
        wanted = wanted.where(c.c.patient_id.not_in(list(skip)))
    conn.execute(insert(c).from_select(["run_id", *_LINE_COLUMNS], wanted.order_by(c.c.id)))


def _store_lines(
    conn: Connection,
    old_run: str,
    run_id: str,
    org_id: str,
    changed: set[str],
    fresh_lines: dict[str, list[ClaimLine]],
) -> None:
    """The new run's lines in patient order, as a full run stores them.

    The re-evaluated patients' new lines are inserted at their places; the stretches of
    carried patients between them are copied in SQL. A changed patient without new lines
    is left out of the stretch around it (by name, up to ``CHUNK`` names a stretch).
    """
    c = schema.claim_lines
    after: str | None = None
    skip: list[str] = []
    for patient in sorted(changed | fresh_lines.keys()):
        lines = fresh_lines.get(patient)
        if not lines:
            skip.append(patient)
            if len(skip) < CHUNK:
                continue
            _carry_stretch(conn, old_run, run_id, after, patient, skip[:-1])
            after, skip = patient, []
            continue
        _carry_stretch(conn, old_run, run_id, after, patient, skip)
        conn.execute(insert(c), [_line_row(run_id, org_id, line_key(x), x) for x in lines])
        after, skip = patient, []
    _carry_stretch(conn, old_run, run_id, after, None, skip)


def _store(
    conn: Connection,
    reader: Engine,
    snapshot: str | None,
    org_id: str,
    month: Period,
    rules: PayerRules,
    settings: BillingSettings,
    previous: StoredRun,
    redo: list[str],
    before: dict[str, _OldRow],
    *,
    engine: Engine,
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
            digest_scheme=DIGEST_SCHEME,
        )
    )
    if progress is not None:
        progress(0, len(redo))
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
            patients=set(redo),
            problems=problems,
            snapshot=snapshot,
            population=redo,
            parallel_from=PARALLEL_FROM,
        )
    }
    stored = previous.summary or {}
    # The base's digests and counts, without the changed patients' shares, then with the new ones.
    lines_sum = DigestSum(previous.lines_digest)
    decisions_sum = DigestSum(previous.decisions_digest)
    facts_sum = DigestSum(facts_sum_of(previous.input_digest, settings_json))
    summary = RunSummary(
        patients=int(stored.get("patients", 0)) - len(before),
        decisions=int(stored.get("decisions", 0)) - sum(row.decisions for row in before.values()),
    )
    for patient, row in before.items():
        decisions_sum.remove(row.decisions_part.encode())
        facts_sum.remove(input_digest_part(patient, row.facts_digest))
    for line in _old_lines(conn, previous.run_id, sorted(before)):
        lines_sum.remove(line_digest_part(line_content(line)))
    # The warnings stay in the rows (carried ones by reference); only their counts change.
    summary.warnings_by_code.update(stored.get("warnings_by_code") or {})
    summary.warnings_by_code.subtract(w.code for w in warnings_of(conn, previous.run_id, sorted(before)))
    decision_rows: list[dict[str, Any]] = []
    warning_rows: list[dict[str, Any]] = []
    for patient in redo:
        found = fresh.get(patient)
        if found is None:
            continue  # a problem of the patient's: in ``problems``, as a full run has it
        facts_sum.update(input_digest_part(patient, found.facts_digest))
        decisions_sum.update(found.decisions_digest.encode())
        summary.absorb(found.summary)
        for line in found.lines:
            lines_sum.update(line_digest_part(line_content(line)))
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
        if found.warnings_json is not None:
            warning_rows.append(warning_row(run_id, org_id, found))
    summary.warnings_by_code = +summary.warnings_by_code  # codes no patient warns of any more
    summary.problems = sorted(problems, key=lambda p: (p.field or "", p.message))
    summary.readings_through = _readings_through(conn, org_id, stored.get("readings_through"))
    digest = lines_sum.hexdigest()
    input_digest = input_digest_of(facts_sum.hexdigest(), settings_json)
    version = engine_version()
    carried = int(stored.get("patients", 0)) - len(before)
    if _same_run(previous, digest, input_digest, rules.content_hash, version):
        result = _unchanged(engine, conn, previous, month_text)
        conn.rollback()
        return result, Incremental(
            "unchanged", "the touched patients' facts are as the last run saw them", len(fresh), carried
        )
    _refer(conn, schema.run_decisions, previous.run_id, run_id, sorted(before))
    if decision_rows:
        conn.execute(insert(schema.run_decisions), decision_rows)
    _refer(conn, schema.run_warnings, previous.run_id, run_id, sorted(before))
    if warning_rows:
        conn.execute(insert(schema.run_warnings), warning_rows)
    _store_lines(
        conn,
        previous.run_id,
        run_id,
        org_id,
        set(before),
        {patient: found.lines for patient, found in fresh.items() if found.lines},
    )
    _line_totals(conn, run_id, summary)
    conn.execute(
        update(runs)
        .where(runs.c.run_id == run_id)
        .values(
            input_digest=input_digest,
            lines_digest=digest,
            decisions_digest=decisions_sum.hexdigest(),
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
    mark_run(conn, org_id, month_text, run_id)
    if progress is not None:
        progress(len(redo), len(redo))
    how = Incremental(
        "incremental", "re-evaluated the patients touched since the last run", len(fresh), carried
    )
    lines = StoredLines(engine, run_id)
    return RunResult(run_id, month_text, "created", DRAFT, lines, summary, previous.run_id, None, []), how

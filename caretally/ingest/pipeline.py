"""One import, start to finish, in one transaction.

read sources → check each file in dependency order (rows register in the reference index
as they pass) → stage valid rows → find duplicates → either refuse (all-or-nothing) or
merge, record the batch and the audit rows, apply retractions, and commit. Nothing is
written to the real tables until every file has been checked, so a refused bundle leaves
no trace. Warnings (invisible characters removed, overlapping or overlong time) are
collected alongside problems but never refuse anything.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import Connection, Engine, insert
from sqlalchemy.exc import IntegrityError

from caretally.errors import Problem
from caretally.ingest import bulk, retractions
from caretally.ingest.fastpath import (
    READING_CELLS,
    READING_STORED,
    Item,
    LocalDays,
    ReadingTuple,
    clean_batch,
    same,
    stored_instant,
)
from caretally.ingest.plausibility import Entry, stored_entries_near, time_warnings
from caretally.ingest.references import ReferenceIndex, Scope, load_from_database
from caretally.ingest.rejects import write_rejects
from caretally.ingest.report import FileCounts, ImportReport, RejectedRow
from caretally.ingest.rows import FILES, ORDER, FileSpec, check_header, check_row, json_safe, reading_cells
from caretally.ingest.sources import Record, Source, array_sources, csv_record, discover
from caretally.ingest.staging import Change, DirectLoad, Duplicate, Stage
from caretally.ingest.touches import record_changes
from caretally.ingest.values import utc_now
from caretally.store import schema
from caretally.store.db import begin_write

BATCH_ROWS = 20_000
#: How far past the import's clock a reading may be (device clocks drift, zones get mixed up).
DEFAULT_CLOCK_SKEW = timedelta(hours=24)
#: Every stem a bundle may carry: the record files, then retractions (applied last).
STEMS: tuple[str, ...] = (*ORDER, retractions.STEM)

#: A check that needs the staged values of several rows at once (e.g. "is this time
#: entry's month locked?"): given the open connection, the organization and each file's
#: staging table, it returns ``(stem, problem)`` for every staged line it refuses; the
#: pipeline then takes those lines out of the stage and reports them like any other.
Guard = Callable[[Connection, str, Mapping[str, Stage]], list[tuple[str, Problem]]]


def import_bundle(
    engine: Engine,
    org_id: str,
    source: Path,
    *,
    skip_invalid: bool = False,
    rejects_path: Path | None = None,
    progress: bool = False,
    ignore_unknown_files: bool = False,
    now: datetime | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    on_wait: Callable[[str], None] | None = None,
    live: bool = False,
    actor: str | None = None,
    bulk_block_bytes: int = bulk.BLOCK_BYTES,
) -> ImportReport:
    """Import a bundle folder (CSV, JSON Lines or bundle.json) or a single bundle file.

    With ``skip_invalid`` the valid rows are stored and rejected rows are written to
    ``rejects_path`` (a folder; default ``<bundle>/rejects``) as ``<stem>.rejects.csv``.
    With ``now`` (aware), a reading later than ``now + max_clock_skew`` is rejected.
    ``caretally import`` always passes the real clock; library callers without one (the
    scenario harness, generated test bundles dated after today) get no upper bound, so
    the clock is an explicit choice of the caller and tests can fix it.

    ``live`` runs the import as a request of the service would (see ``import_records``).
    ``bulk_block_bytes`` is the size of the blocks in which readings.csv is parsed and
    checked by Arrow (``caretally.ingest.bulk``); 0 reads it row by row. The outcome is
    the same either way (tests hold the two to that); only the speed differs.
    """
    source = Path(source)
    warnings: list[Problem] = []
    sources, problems = discover(
        source, STEMS, progress=progress, ignore_unknown=ignore_unknown_files, warnings=warnings
    )
    report = _run(
        engine,
        org_id,
        sources,
        problems,
        str(source),
        skip_invalid=skip_invalid,
        progress=progress,
        clock=_Clock.of(now, max_clock_skew),
        warnings=warnings,
        on_wait=on_wait,
        live=live,
        actor=actor,
        bulk_block_bytes=bulk_block_bytes,
    )
    if skip_invalid and report.rejected_rows:
        folder = rejects_path or (source if source.is_dir() else source.parent) / "rejects"
        report.rejects_written = write_rejects(folder, report.rejected_rows)
    return report


def import_records(
    engine: Engine,
    org_id: str,
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    source_name: str = "<records>",
    skip_invalid: bool = False,
    now: datetime | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
    live: bool = False,
    guard: Guard | None = None,
    actor: str | None = None,
    check_only: bool = False,
) -> ImportReport:
    """Import in-memory records keyed by file stem, e.g. ``{"patients": [{...}, ...]}``.

    Values may be text or native (numbers, booleans, ``date``/aware ``datetime``);
    problems point at ``<source_name>:<stem>[n]`` with ``n`` the 1-based position.
    ``now`` and ``max_clock_skew`` as for ``import_bundle`` (a service taking records from
    the outside world should pass its clock).

    ``live`` is how a service request runs: the transaction takes SQLite's write lock at
    its start (``BEGIN IMMEDIATE``) or runs at PostgreSQL's REPEATABLE READ, so that a
    concurrent request storing the same key makes this one fail cleanly (the caller
    retries; see ``caretally.ingest.live``) instead of reporting a wrong outcome; only
    the ids the records name are read; every file goes through staging; and the report
    carries each record's outcome and the records inserted, updated or retracted.
    ``guard`` adds a check over the staged rows (run before anything is written) and
    ``actor`` is recorded on every audit row of an update. ``check_only`` checks
    everything and stores nothing (a live request that already knows it must be refused
    still reports every problem of its records).
    """
    sources, problems = array_sources(source_name, records, STEMS)
    return _run(
        engine,
        org_id,
        sources,
        problems,
        source_name,
        skip_invalid=skip_invalid,
        progress=False,
        clock=_Clock.of(now, max_clock_skew),
        warnings=[],
        live=live,
        guard=guard,
        actor=actor,
        scope=Scope.of(records) if live else None,
        check_only=check_only,
    )


@dataclass(frozen=True)
class _Clock:
    """The import's idea of "now": today's date for birth dates, the latest reading instant."""

    today: date
    not_after: datetime | None
    skew: str

    @classmethod
    def of(cls, now: datetime | None, skew: timedelta) -> _Clock:
        if skew < timedelta(0):
            raise ValueError("the allowed clock skew cannot be negative")
        if now is not None and (now.tzinfo is None or now.utcoffset() is None):
            raise ValueError("the import clock must be timezone-aware")
        today = date.today() if now is None else now.date()
        hours = skew.total_seconds() / 3600
        return cls(today, None if now is None else now + skew, f"{hours:g} h")


@dataclass
class _FileResult:
    counts: FileCounts
    stage: Stage | DirectLoad
    source: Source
    entries: list[Entry] = field(default_factory=list)


def _where(record: Record) -> str:
    return record.file if record.file.endswith("]") else f"{record.file}:{record.line}"


def _run(
    engine: Engine,
    org_id: str,
    sources: list[Source],
    problems: list[Problem],
    source_name: str,
    *,
    skip_invalid: bool,
    progress: bool,
    clock: _Clock,
    on_wait: Callable[[str], None] | None = None,
    warnings: list[Problem],
    live: bool = False,
    guard: Guard | None = None,
    actor: str | None = None,
    scope: Scope | None = None,
    check_only: bool = False,
    bulk_block_bytes: int = 0,
) -> ImportReport:
    started = utc_now()
    today = clock.today
    problems = list(problems)
    rejected: list[RejectedRow] = []
    counts: dict[str, FileCounts] = {}
    by_stem = {s.stem: s for s in sources}
    retraction_source = by_stem.pop(retractions.STEM, None)
    for src in sources:
        warnings.extend(src.warnings)
    status = Console(stderr=True).status("storing…") if progress else nullcontext()

    outcomes: dict[str, dict[int, str]] = {}
    changes: dict[str, list[Change]] = {}
    with engine.connect() as conn:
        if live and conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        # SQLite: the write lock before the first read, so a run or import in progress is
        # waited for, instead of failing at the merge when it has committed meanwhile.
        begin_write(conn, on_wait=on_wait)
        transaction = conn.get_transaction()
        assert transaction is not None
        try:
            index = load_from_database(conn, org_id, set(by_stem), scope)
            index.not_after, index.clock_skew_text = clock.not_after, clock.skew
            results: list[_FileResult] = []
            for stem in ORDER:
                if stem in by_stem:
                    result = _check_file(
                        conn,
                        org_id,
                        by_stem[stem],
                        index,
                        today,
                        problems,
                        rejected,
                        warnings,
                        direct=not live,
                        block_bytes=bulk_block_bytes,
                    )
                    counts[stem] = result.counts
                    results.append(result)
            for result in results:
                result.stage.finish()
                for dup in result.stage.remove_duplicates():
                    _duplicate(result, dup, problems, rejected)
                if result.entries:
                    # A direct load was the organization's first: nothing of its own stored before.
                    direct_load = isinstance(result.stage, DirectLoad)
                    found = [] if direct_load else stored_entries_near(conn, org_id, result.entries)
                    warnings.extend(time_warnings(result.entries, found))
            if guard is not None:
                _apply_guard(conn, org_id, guard, results, problems, rejected)
            to_retract: list[retractions.Retraction] = []
            retract_lines: list[int] = []
            if retraction_source is not None:
                counts[retractions.STEM], to_retract, retract_lines = _check_retractions(
                    conn, org_id, retraction_source, problems, rejected
                )
            if (problems and not skip_invalid) or check_only:
                transaction.rollback()
                return ImportReport(counts, problems, False, None, source_name, rejected, warnings=warnings)
            batch_id = str(uuid.uuid4())
            with status:
                now = utc_now()
                for result in results:
                    merged = result.stage.merge(org_id, batch_id, now, track=live, actor=actor)
                    result.counts.inserted = merged.inserted
                    result.counts.updated = merged.updated
                    result.counts.unchanged += merged.unchanged
                    result.stage.drop()
                    if merged.outcomes is not None:
                        outcomes[result.source.stem] = merged.outcomes
                        changes.setdefault(result.source.stem, []).extend(merged.changes)
                if retraction_source is not None:
                    deleted = retractions.apply(conn, org_id, batch_id, now, to_retract)
                    retracted = counts[retractions.STEM]
                    retracted.deleted = deleted
                    retracted.unchanged = retracted.read - retracted.rejected - deleted
                    if live:
                        outcomes[retractions.STEM] = _retraction_outcomes(to_retract, retract_lines, changes)
                _record_touches(conn, org_id, live, changes, counts, now)
                if not live:
                    _analyze(
                        conn,
                        {r.stage.spec.table.name: r.counts.inserted for r in results if r.counts.inserted},
                    )
                conn.execute(
                    insert(schema.import_batches).values(
                        batch_id=batch_id,
                        org_id=org_id,
                        source=source_name,
                        started_at=started,
                        finished_at=utc_now(),
                        counts={
                            stem: c.to_json(with_deleted=stem == retractions.STEM)
                            for stem, c in counts.items()
                        },
                    )
                )
            transaction.commit()
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise
    return ImportReport(
        counts,
        problems,
        True,
        batch_id,
        source_name,
        rejected,
        warnings=warnings,
        outcomes=outcomes,
        changes={stem: tuple(found) for stem, found in changes.items()},
    )


def _record_touches(
    conn: Connection,
    org_id: str,
    live: bool,
    changes: Mapping[str, Sequence[Change]],
    counts: Mapping[str, FileCounts],
    now: datetime,
) -> None:
    """The patient-months this import changed, for ``bill --incremental`` (``ingest.touches``).

    A live import tracks every record it changed; a bulk import does not, so one that
    changed anything touches every patient-month and the next incremental run is a full one.
    """
    if live:
        record_changes(conn, org_id, changes, now)
    elif any(c.inserted or c.updated or getattr(c, "deleted", 0) for c in counts.values()):
        record_changes(conn, org_id, None, now)


#: A bulk import that inserts at least this many rows into a table, or a tenth of what it
#: held, has PostgreSQL gather that table's statistics before it commits.
ANALYZE_AFTER_ROWS = 10_000


def _analyze(conn: Connection, inserted: Mapping[str, int]) -> list[str]:
    """Fresh planner statistics for the tables a big bulk import filled (PostgreSQL).

    A first import leaves statistics that describe empty tables (autovacuum may be off,
    and is late either way): the next month run was planned for empty tables and took
    2.4x as long (5.3 s against 2.2 s, bench/incremental.py). ANALYZE samples a fixed
    number of rows, so it costs a fraction of a second at any size; it runs inside the
    import's transaction and its statistics appear when the import commits. SQLite is left
    without statistics: its plans are written for that (see ``Stage.merge``). Returns the
    tables analyzed.
    """
    if conn.dialect.name != "postgresql" or not inserted:
        return []
    # reltuples: the row count the planner believes (-1 or 0 before any ANALYZE).
    believed = dict(
        conn.exec_driver_sql(
            "SELECT relname, GREATEST(reltuples, 0)::bigint FROM pg_class "
            "WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace "
            "AND relname = ANY(%(names)s)",
            {"names": list(inserted)},
        ).all()
    )
    chosen = [
        name
        for name, rows in inserted.items()
        if rows >= ANALYZE_AFTER_ROWS or rows * 10 >= believed.get(name, 0)
    ]
    for name in chosen:
        conn.exec_driver_sql(f"ANALYZE {name}")
    return chosen


def _apply_guard(
    conn: Connection,
    org_id: str,
    guard: Guard,
    results: list[_FileResult],
    problems: list[Problem],
    rejected: list[RejectedRow],
) -> None:
    staged = {r.source.stem: r for r in results if isinstance(r.stage, Stage)}
    refused: dict[str, list[int]] = {}
    for stem, problem in guard(conn, org_id, {k: r.stage for k, r in staged.items()}):  # type: ignore[misc]
        problems.append(problem)
        line = problem.line or 0
        if line in refused.setdefault(stem, []):
            continue
        refused[stem].append(line)
        result = staged[stem]
        result.counts.rejected += 1
        where = problem.file if problem.file.endswith("]") else f"{problem.file}:{line}"
        rejected.append(RejectedRow(stem, where, problem.row or {}, (problem.message,)))
    for stem, lines in refused.items():
        stage = staged[stem].stage
        assert isinstance(stage, Stage)
        stage.reject_lines(lines)


def _retraction_outcomes(
    applied: list[retractions.Retraction], lines: list[int], changes: dict[str, list[Change]]
) -> dict[int, str]:
    """``retracted`` for the first retraction of each record, ``unchanged`` for repeats."""
    out: dict[int, str] = {}
    seen: set[tuple[str, str]] = set()
    for item, line in zip(applied, lines, strict=True):
        mark = (item.target.stem, item.key)
        if mark in seen:
            out[line] = "unchanged"
            continue
        seen.add(mark)
        out[line] = "retracted"
        changes.setdefault(item.target.stem, []).append(Change(item.key, dict(item.old), None))
    return out


def _check_retractions(
    conn: Any, org_id: str, source: Source, problems: list[Problem], rejected: list[RejectedRow]
) -> tuple[FileCounts, list[retractions.Retraction], list[int]]:
    counts = FileCounts()
    found: list[retractions.Retraction] = []
    lines: list[int] = []
    problems.extend(source.problems)
    header_faults = [] if source.header is None else retractions.check_header(source.header)
    for fault in header_faults:
        problems.append(Problem(source.label, 1, fault.field, fault.code, fault.message))
    file_error = "; ".join(str(p) for p in source.problems) or "; ".join(f.message for f in header_faults)
    for record in source.records():
        counts.read += 1
        where = _where(record)
        if record.problems or file_error:
            problems.extend(replace(p, row=dict(record.raw)) for p in record.problems)
            errors = [p.message for p in record.problems] or [file_error]
            rejected.append(RejectedRow(retractions.STEM, where, record.raw, tuple(errors)))
            counts.rejected += 1
            continue
        outcome = retractions.check(conn, org_id, record.raw)
        if source.header is None:
            unknown = sorted(k for k in record.raw if k not in retractions.COLUMNS)
            extra = [
                retractions.Refusal(k, "unknown_column", f"unknown column {k!r}; use file, id, reason")
                for k in unknown
            ]
            if extra:
                outcome = extra + (outcome if isinstance(outcome, list) else [])
        if isinstance(outcome, retractions.Retraction):
            found.append(outcome)
            lines.append(record.line)
            continue
        for refusal in outcome:
            problems.append(
                Problem(
                    record.file, record.line, refusal.field, refusal.code, refusal.message, dict(record.raw)
                )
            )
        rejected.append(
            RejectedRow(
                retractions.STEM, where, record.raw, tuple(f"{r.field}: {r.message}" for r in outcome)
            )
        )
        counts.rejected += 1
    return counts, found, lines


def _check_file(
    conn: Any,
    org_id: str,
    source: Source,
    index: ReferenceIndex,
    today: date,
    problems: list[Problem],
    rejected: list[RejectedRow],
    warnings: list[Problem],
    *,
    direct: bool = True,
    block_bytes: int = 0,
) -> _FileResult:
    spec = FILES[source.stem]
    file_problems = list(source.problems)
    if source.header is not None and not source.problems:
        file_problems += [
            Problem(source.label, 1, f.field, f.code, f.message) for f in check_header(spec, source.header)
        ]
    problems.extend(file_problems)
    file_error = "; ".join(str(p) for p in file_problems)
    if spec.stem == "readings" and not file_error:
        return _check_readings(
            conn,
            org_id,
            source,
            index,
            today,
            problems,
            rejected,
            warnings,
            direct=direct,
            block_bytes=block_bytes,
        )
    if (
        spec.stem == "time_entries"
        and not file_error
        and block_bytes
        and source.path is not None
        and source.header is not None
        and all(name in spec.columns for name in source.header)
    ):

        def load(target: Stage | DirectLoad) -> _FileResult:
            return _time_entries_in_bulk(
                conn, source, index, today, problems, rejected, warnings, block_bytes, target
            )

        return _direct_or_staged(conn, org_id, spec, problems, rejected, warnings, load, direct=direct)
    counts = FileCounts()
    stage = Stage(conn, spec)
    keyed = source.header is None
    buffer: list[dict[str, Any]] = []
    entries: list[Entry] = []
    timed = spec.stem == "time_entries"
    for record in source.records():
        counts.read += 1
        staged = _check_record(
            spec, record, index, today, problems, rejected, file_error, warnings, keyed=keyed
        )
        if staged is None:
            counts.rejected += 1
            continue
        if timed:
            entries.append(_staged_entry(staged, record))
        buffer.append(staged)
        if len(buffer) >= BATCH_ROWS:
            stage.add(buffer)
            buffer = []
    stage.add(buffer)
    return _FileResult(counts, stage, source, entries)


def _staged_entry(staged: dict[str, Any], record: Record) -> Entry:
    """A checked time entry of this bundle, for the overlap check (with its file and line)."""
    return Entry(
        staged["entry_id"],
        staged["practitioner_id"],
        staged["started_at"],
        staged["seconds"],
        staged["local_date"],
        (record.file, record.line),
    )


def _time_entries_in_bulk(
    conn: Any,
    source: Source,
    index: ReferenceIndex,
    today: date,
    problems: list[Problem],
    rejected: list[RejectedRow],
    warnings: list[Problem],
    block_bytes: int,
    stage: Stage | DirectLoad,
) -> _FileResult:
    """time_entries.csv through Arrow (``bulk.check_time_entries``); rows it does not take,
    and whole files it cannot read in blocks, get ``_check_record`` as in ``_check_file``."""
    spec = FILES["time_entries"]
    assert source.path is not None and source.header is not None and source.batches is not None
    assert spec.stored == bulk.TIME_STORED
    header = source.header
    counts = FileCounts()
    entries: list[Entry] = []
    positions = {name: header.index(name) if name in header else None for name in bulk.TIME_CELLS}
    days = LocalDays()

    def row_path(batch: list[Item]) -> None:
        buffer: list[dict[str, Any]] = []
        for line, cells, problem in batch:
            counts.read += 1
            record = csv_record(source.label, header, line, cells, problem)
            staged = _check_record(spec, record, index, today, problems, rejected, "", warnings, keyed=False)
            if staged is None:
                counts.rejected += 1
                continue
            entries.append(_staged_entry(staged, record))
            buffer.append(staged)
        stage.add(buffer)

    for piece in bulk.read_blocks(source.label, source.path, len(header), source.batches, block_bytes):
        if isinstance(piece, list):
            row_path(piece)
            continue
        first, table = piece
        clean, rest = bulk.check_time_entries(table, first, positions, index, days)
        counts.read += clean.table.num_rows
        stage.add_arrow(clean.table, clean.lines)
        taken = clean.table
        for entry_id, performer, started, seconds, local, line in zip(
            taken["entry_id"].to_pylist(),
            taken["practitioner_id"].to_pylist(),
            taken["started_at"].to_pylist(),
            taken["seconds"].to_pylist(),
            taken["local_date"].to_pylist(),
            clean.lines.to_pylist(),
            strict=True,
        ):
            entries.append(
                Entry(
                    entry_id,
                    performer,
                    datetime.fromisoformat(started).replace(tzinfo=UTC),
                    seconds,
                    date.fromisoformat(local),
                    (source.label, line),
                )
            )
        row_path(rest)
    entries.sort(key=lambda e: e.where[1] if e.where else 0)  # file order, as the row path makes it
    return _FileResult(counts, stage, source, entries)


def _check_record(
    spec: FileSpec,
    record: Record,
    index: ReferenceIndex,
    today: date,
    problems: list[Problem],
    rejected: list[RejectedRow],
    file_error: str,
    warnings: list[Problem],
    *,
    keyed: bool,
) -> dict[str, Any] | None:
    """The row's staged values, or ``None`` after recording why it is rejected."""
    row = check_row(spec, record.raw, index, today, keyed=keyed) if not record.problems else None
    if file_error or record.problems or (row is not None and row.faults):
        where = _where(record)
        errors: list[str] = []
        if file_error:
            errors.append(file_error)
        for problem in record.problems:
            problems.append(replace(problem, row=dict(record.raw)) if problem.row is None else problem)
            errors.append(problem.message)
        if row is not None and not file_error:
            for fault in row.faults:
                problems.append(
                    Problem(
                        record.file, record.line, fault.field, fault.code, fault.message, dict(record.raw)
                    )
                )
                errors.append(f"{fault.field}: {fault.message}" if fault.field else fault.message)
        if row is not None:
            spec.unregister(row.values, index, file_error or where)
        rejected.append(RejectedRow(spec.stem, where, record.raw, tuple(errors)))
        return None
    assert row is not None
    for note in row.warnings:
        warnings.append(Problem(record.file, record.line, note.field, note.code, note.message))
    spec.register(row.values, index)
    staged = {name: row.values.get(name) for name in spec.stored}
    staged["_line"] = record.line
    return staged


def _check_readings(
    conn: Any,
    org_id: str,
    source: Source,
    index: ReferenceIndex,
    today: date,
    problems: list[Problem],
    rejected: list[RejectedRow],
    warnings: list[Problem],
    *,
    direct: bool = True,
    block_bytes: int = 0,
) -> _FileResult:
    """Readings: clean rows go straight to the store in stored form, others get the full check.

    An organization without readings has them written directly into the table under a
    savepoint; if the bundle repeats a key the savepoint is rolled back and the file is
    read again through the staging table, which reports the repeats (rare: it takes an
    erroneous or overlapping export). A live request (``direct=False``) always stages:
    a direct load may drop the table's indexes, which concurrent requests must never see.
    """
    spec = FILES["readings"]

    def load(target: Stage | DirectLoad) -> _FileResult:
        counts = _feed_readings(spec, source, index, today, problems, rejected, warnings, target, block_bytes)
        return _FileResult(counts, target, source)

    return _direct_or_staged(conn, org_id, spec, problems, rejected, warnings, load, direct=direct)


def _direct_or_staged(
    conn: Any,
    org_id: str,
    spec: FileSpec,
    problems: list[Problem],
    rejected: list[RejectedRow],
    warnings: list[Problem],
    load: Callable[[Stage | DirectLoad], _FileResult],
    *,
    direct: bool,
) -> _FileResult:
    """``load`` the file straight into its table when the organization has no rows there yet,
    else (or when the bundle repeats a key) through the staging table.

    A direct load writes each row once instead of twice (stage, then merge). It runs under
    a savepoint; if the bundle repeats a key, the table's unique index refuses it, the
    savepoint is rolled back and the file is read again through the staging table, which
    reports the repeats (rare: it takes an erroneous or overlapping export). A live request
    (``direct=False``) always stages: a direct load may drop the table's indexes, which
    concurrent requests must never see.
    """
    if not direct:
        return load(Stage(conn, spec))
    problems_mark, rejected_mark, warnings_mark = len(problems), len(rejected), len(warnings)
    _ensure_transaction(conn)
    try:
        with conn.begin_nested():
            target = DirectLoad.open(conn, spec, org_id)
            if target is not None:
                try:
                    result = load(target)
                    target.complete()
                except BaseException:
                    target.abort()
                    raise
                return result
    except (IntegrityError, conn.dialect.dbapi.IntegrityError):
        del problems[problems_mark:]
        del rejected[rejected_mark:]
        del warnings[warnings_mark:]
    return load(Stage(conn, spec))


def _ensure_transaction(conn: Any) -> None:
    """SQLite's driver opens its transaction lazily, at the first write; a SAVEPOINT
    issued before that would open (and on release commit) a transaction of its own."""
    if conn.dialect.name == "sqlite":
        driver = conn.connection.driver_connection
        if not driver.in_transaction:
            driver.execute("BEGIN")


def _feed_readings(
    spec: FileSpec,
    source: Source,
    index: ReferenceIndex,
    today: date,
    problems: list[Problem],
    rejected: list[RejectedRow],
    warnings: list[Problem],
    target: Stage | DirectLoad,
    block_bytes: int = 0,
) -> FileCounts:
    counts = FileCounts()
    days = LocalDays()
    rows: list[ReadingTuple] = []
    lines: list[int] = []
    keyed = source.header is None

    def fallback(record: Record) -> None:
        staged = _check_record(spec, record, index, today, problems, rejected, "", warnings, keyed=keyed)
        if staged is None:
            counts.rejected += 1
        else:
            lines.append(staged.pop("_line"))
            rows.append(_stored_reading(staged))

    def flush(force: bool) -> None:
        nonlocal rows, lines
        if rows and (force or len(rows) >= BATCH_ROWS):
            target.add_stored(rows, lines)
            rows, lines = [], []

    # Extra columns are kept per row; the fast path only knows the documented eight, so a
    # file that has more goes through the full check, which stores them in ``extra``.
    extra_columns = source.header is not None and any(name not in spec.columns for name in source.header)
    if source.batches is not None and source.header is not None and not extra_columns:
        header = source.header
        take = itemgetter(*(header.index(name) for name in READING_CELLS[1:]))
        if "reading_id" in header:
            pick = itemgetter(header.index("reading_id"), *(header.index(n) for n in READING_CELLS[1:]))
        else:

            def pick(cells: Sequence[Any]) -> tuple[Any, ...]:
                return (None, *take(cells))

        batches: Iterator[list[Item]] = source.batches()
        if block_bytes and source.path is not None:
            batches = _bulk_batches(source, header, index, days, counts, target, block_bytes)
        for batch in batches:
            counts.read += len(batch)
            for line, cells, problem in clean_batch(batch, len(header), pick, index, days, rows, lines):
                fallback(csv_record(source.label, header, line, cells, problem))
            flush(False)
    else:
        for record in source.records():
            counts.read += 1
            cells = None if record.problems or extra_columns else reading_cells(record.raw, keyed=keyed)
            if cells is None or clean_batch(
                [(record.line, cells, None)], None, same, index, days, rows, lines
            ):
                fallback(record)
            flush(False)
    flush(True)
    return counts


def _bulk_batches(
    source: Source,
    header: list[str],
    index: ReferenceIndex,
    days: LocalDays,
    counts: FileCounts,
    target: Stage | DirectLoad,
    block_bytes: int,
) -> Iterator[list[Item]]:
    """readings.csv through Arrow: plainly clean rows go to ``target`` here, block by block;
    the rows the vector checks did not accept come out as batches for the row path."""
    assert source.path is not None and source.batches is not None
    positions = [header.index(name) if name in header else None for name in READING_CELLS]
    for piece in bulk.read_blocks(source.label, source.path, len(header), source.batches, block_bytes):
        if isinstance(piece, list):
            yield piece
            continue
        first, table = piece
        clean, rest = bulk.check_table(table, first, positions, index, days)
        counts.read += clean.table.num_rows
        target.add_arrow(clean.table, clean.lines)
        if rest:
            yield rest


def _stored_reading(values: dict[str, Any]) -> tuple[Any, ...]:
    """A fully checked reading's values in the fast path's stored form."""
    out = []
    for name in READING_STORED:
        value = values[name]
        if name == "measured_at":
            value = stored_instant(value)
        elif name == "local_date":
            value = value.isoformat()
        elif name == "extra":
            value = "null" if value is None else json.dumps(value)  # JSON text, as stored
        out.append(value)
    return tuple(out)


def _duplicate(
    result: _FileResult, dup: Duplicate, problems: list[Problem], rejected: list[RejectedRow]
) -> None:
    """An identical repeat changes nothing; a conflicting one is rejected (first wins)."""
    if not dup.differs:
        result.counts.unchanged += 1
        return
    spec = FILES[result.source.stem]
    field = spec.key
    if spec.stem == "readings":
        field = "reading_id" if dup.values.get("reading_id") else "measured_at"
    label = result.source.label
    positional = result.source.header is None and not label.endswith(".jsonl")
    file = f"{label}[{dup.line}]" if positional else label
    first = f"{label}[{dup.first_line}]" if positional else f"line {dup.first_line}"
    message = f"{spec.key} {dup.key} already appears at {first} with different {', '.join(dup.differs)}"
    raw = {k: json_safe(val) for k, val in dup.values.items() if k != "_line"}
    problems.append(Problem(file, dup.line, field, "duplicate_id", message, raw))
    rejected.append(
        RejectedRow(spec.stem, file if positional else f"{file}:{dup.line}", raw, (f"{field}: {message}",))
    )
    result.counts.rejected += 1

"""Readers that turn a bundle on disk (or records in memory) into located records.

Whatever the format, each record comes out as a ``Record``: the label and line a
problem should point at, and the raw mapping of column name to value. CSV line numbers
are physical lines (header = 1), counted across quoted cells that span lines; JSON Lines
use the line of the object; ``bundle.json`` and in-memory records use the position in
their array (1-based) and name it in the label, e.g. ``bundle.json:patients[3]``.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import rich.progress
from rich.console import Console

from caretally.errors import Problem

BUNDLE_JSON = "bundle.json"
#: Files bigger than this get a progress bar when progress is asked for.
PROGRESS_BYTES = 2_000_000


@dataclass(slots=True)
class Record:
    file: str
    line: int
    raw: Mapping[str, Any]
    problems: tuple[Problem, ...] = ()


@dataclass
class Source:
    """One file's worth of records for one stem.

    ``header`` is the CSV header (``None`` for keyed formats, whose records name their
    own columns). ``records`` is called once, after the header has been judged.
    """

    stem: str
    label: str
    header: list[str] | None
    records: Callable[[], Iterator[Record]]
    problems: list[Problem] = field(default_factory=list)
    #: CSV only: lists of ``(line, cells, problem)``, for readers that index cells by position.
    batches: Callable[[], Iterator[list[tuple[int, list[str], Problem | None]]]] | None = None


def _open_text(path: Path, progress: bool) -> AbstractContextManager[IO[str]]:
    if progress and path.stat().st_size > PROGRESS_BYTES:
        return rich.progress.open(
            path,
            "r",
            encoding="utf-8-sig",
            newline="",
            description=f"reading {path.name}",
            console=Console(stderr=True),
            transient=True,
        )
    return path.open("r", encoding="utf-8-sig", newline="")


def csv_source(stem: str, path: Path, *, progress: bool = False) -> Source:
    label = path.name
    try:
        with path.open("r", encoding="utf-8-sig", newline="") as handle:
            first = next(csv.reader(handle), None)
    except UnicodeDecodeError as exc:
        problem = Problem(label, 1, None, "bad_encoding", f"not UTF-8 text: {exc.reason}")
        return Source(stem, label, [], lambda: iter(()), [problem])
    except csv.Error as exc:
        problem = Problem(label, 1, None, "bad_csv", f"unreadable header: {exc}")
        return Source(stem, label, [], lambda: iter(()), [problem])
    if first is None:
        problem = Problem(label, 1, None, "missing_header", "the file is empty; it needs a header row")
        return Source(stem, label, [], lambda: iter(()), [problem])
    header = [name.strip() for name in first]

    def batches() -> Iterator[list[tuple[int, list[str], Problem | None]]]:
        with _open_text(path, progress) as handle:
            yield from _csv_batches(label, handle)

    def records() -> Iterator[Record]:
        for batch in batches():
            for line, row, problem in batch:
                yield csv_record(label, header, line, row, problem)

    return Source(stem, label, header, records, batches=batches)


#: Rows per batch handed out by ``_csv_batches``.
CSV_BATCH = 2_000


def _csv_batches(label: str, handle: IO[str]) -> Iterator[list[tuple[int, list[str], Problem | None]]]:
    """Lists of ``(physical line, cells, None)`` for the data rows; a problem item ends it.

    Most rows hold no quote, so they are split on commas directly (the ``csv`` module
    would give the same cells); a row with a quote, a stray carriage return or a NUL goes
    through ``csv.reader``, which may read further lines for a quoted cell that spans
    them. Line numbers count physical lines as ``csv.reader`` does (header = 1). Rows
    come in batches so a fast consumer pays one generator step per batch, not per row.
    """
    lines = iter(handle)
    end = 0
    batch: list[tuple[int, list[str], Problem | None]] = []
    try:
        header = csv.reader(lines, strict=True)
        if next(header, None) is None:
            return
        end = header.line_num
        for text in lines:
            line = end + 1
            body = text[:-1] if text.endswith("\n") else text
            if body.endswith("\r"):
                body = body[:-1]
            if '"' in body or "\r" in body or "\0" in body:
                reader = csv.reader(itertools.chain((text,), lines), strict=True)
                row = next(reader, [])
                end += reader.line_num
            else:
                row = body.split(",") if body else []
                end = line
            if row:  # a blank line holds no record
                batch.append((line, row, None))
                if len(batch) >= CSV_BATCH:
                    yield batch
                    batch = []
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text after line {end}: {exc.reason}; the rest of the file was not read"
        batch.append((end + 1, [], Problem(label, end + 1, None, "bad_encoding", message)))
    except csv.Error as exc:
        message = f"unreadable CSV after line {end}: {exc}; the rest of the file was not read"
        batch.append((end + 1, [], Problem(label, end + 1, None, "bad_csv", message)))
    if batch:
        yield batch


def csv_record(label: str, header: list[str], line: int, cells: list[str], problem: Problem | None) -> Record:
    """The record for one CSV row, with a problem when its width differs from the header's."""
    if problem is not None:
        return Record(label, line, {}, (problem,))
    width = len(header)
    if len(cells) == width:
        return Record(label, line, dict(zip(header, cells, strict=True)))
    raw: dict[str, Any] = dict(zip(header, cells, strict=False))
    if len(cells) > width:
        raw["__extra_cells__"] = cells[width:]
    message = f"row has {len(cells)} fields, the header has {width}"
    return Record(label, line, raw, (Problem(label, line, None, "wrong_field_count", message),))


def jsonl_source(stem: str, path: Path, *, progress: bool = False) -> Source:
    label = path.name

    def records() -> Iterator[Record]:
        number = 0
        try:
            with _open_text(path, progress) as handle:
                for number, text in enumerate(handle, start=1):
                    if not text.strip():
                        continue
                    yield _json_record(label, number, text)
        except UnicodeDecodeError as exc:
            message = f"not UTF-8 text after line {number}: {exc.reason}; the rest of the file was not read"
            yield Record(label, number + 1, {}, (Problem(label, number + 1, None, "bad_encoding", message),))

    return Source(stem, label, None, records)


def _json_record(label: str, number: int, text: str) -> Record:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        problem = Problem(label, number, None, "bad_json", f"not valid JSON: {exc.msg}")
        return Record(label, number, {"__raw__": text.rstrip("\r\n")}, (problem,))
    return _object_record(label, number, value)


def _object_record(label: str, number: int, value: Any) -> Record:
    if not isinstance(value, dict):
        problem = Problem(
            label, number, None, "bad_record", f"expected a JSON object, got {type(value).__name__}"
        )
        return Record(label, number, {"__raw__": json.dumps(value)}, (problem,))
    return Record(label, number, value)


def array_sources(
    container: str, arrays: Mapping[str, Any], known: Sequence[str]
) -> tuple[list[Source], list[Problem]]:
    """Sources from ``{stem: [records...]}``, as in bundle.json or ``import_records``."""
    sources: list[Source] = []
    problems: list[Problem] = []
    for stem, items in arrays.items():
        if stem not in known:
            problems.append(
                Problem(
                    container, None, stem, "unknown_section", f"{stem!r} is not one of: {', '.join(known)}"
                )
            )
            continue
        if not isinstance(items, list | tuple):
            problems.append(
                Problem(f"{container}:{stem}", None, None, "bad_json", f"{stem} must be an array")
            )
            continue

        def records(stem: str = stem, items: Sequence[Any] = items) -> Iterator[Record]:
            for position, item in enumerate(items, start=1):
                yield _object_record(f"{container}:{stem}[{position}]", position, item)

        sources.append(Source(stem, f"{container}:{stem}", None, records))
    return sources, problems


def bundle_json_sources(path: Path, known: Sequence[str]) -> tuple[list[Source], list[Problem]]:
    label = path.name
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        return [], [Problem(label, None, None, "bad_encoding", f"not UTF-8 text: {exc.reason}")]
    except json.JSONDecodeError as exc:
        return [], [Problem(label, exc.lineno, None, "bad_json", f"not valid JSON: {exc.msg}")]
    if not isinstance(data, dict):
        return [], [Problem(label, 1, None, "bad_json", "bundle.json must hold one object of arrays")]
    return array_sources(label, data, known)


def discover(
    source: Path, known: Sequence[str], *, progress: bool = False
) -> tuple[list[Source], list[Problem]]:
    """Every source in a bundle folder (or a single bundle file), one per stem.

    A stem present in more than one format is a problem (which copy is right cannot be
    known); the CSV copy, then JSON Lines, then bundle.json is the one read.
    """
    problems: list[Problem] = []
    found: dict[str, list[Source]] = {}
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(p for p in source.iterdir() if p.is_file())
    else:
        return [], [Problem(str(source), None, None, "missing_source", f"{source} does not exist")]
    for path in files:
        if path.name == BUNDLE_JSON:
            from_json, trouble = bundle_json_sources(path, known)
            problems.extend(trouble)
            for src in from_json:
                found.setdefault(src.stem, []).append(src)
        elif path.suffix == ".csv" and path.stem in known:
            found.setdefault(path.stem, []).append(csv_source(path.stem, path, progress=progress))
        elif path.suffix == ".jsonl" and path.stem in known:
            found.setdefault(path.stem, []).append(jsonl_source(path.stem, path, progress=progress))
    rank = {".csv": 0, ".jsonl": 1}
    chosen: list[Source] = []
    for stem in known:
        candidates = sorted(found.get(stem, []), key=lambda s: rank.get(Path(s.label).suffix, 2))
        if not candidates:
            continue
        if len(candidates) > 1:
            others = ", ".join(c.label for c in candidates[1:])
            problems.append(
                Problem(
                    candidates[0].label,
                    None,
                    None,
                    "duplicate_source",
                    f"{stem} also given as {others}; only {candidates[0].label} was read",
                )
            )
        chosen.append(candidates[0])
    if not chosen and not problems:
        problems.append(
            Problem(
                str(source),
                None,
                None,
                "missing_source",
                "no bundle files found (patients.csv, bundle.json …)",
            )
        )
    return chosen, problems


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows rendered as CSV text (used for rejects files and by tests building bundles)."""
    columns: list[str] = []
    for row in rows:
        for name in row:
            if name not in columns:
                columns.append(name)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


__all__ = [
    "BUNDLE_JSON",
    "Record",
    "Source",
    "array_sources",
    "bundle_json_sources",
    "csv_source",
    "csv_text",
    "discover",
    "jsonl_source",
]

"""Readers that turn a bundle on disk (or records in memory) into located records.

Whatever the format, each record comes out as a ``Record``: the label and line a
problem should point at, and the raw mapping of column name to value. CSV line numbers
are physical lines (header = 1), counted across quoted cells that span lines; JSON Lines
use the line of the object; ``bundle.json`` and in-memory records use the position in
their array (1-based) and name it in the label, e.g. ``bundle.json:patients[3]``.

Text is decoded with ``surrogateescape`` so that a byte which is not UTF-8 stops the
file exactly at its own line: the rows before it are read as usual, and one
``bad_encoding`` problem gives the line and the byte offset (a strict decoder fails a
whole read-ahead block early, losing the rows before the fault in that block).
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import rich.progress
from rich.console import Console

from caretally.errors import Problem
from caretally.ingest.cleaning import NUL, clean_text, code_points

BUNDLE_JSON = "bundle.json"
#: Files bigger than this get a progress bar when progress is asked for.
PROGRESS_BYTES = 2_000_000
#: Folder entries that are never data: ``caretally import``'s own rejects folder, and
#: notes a person keeps with the bundle. Hidden entries (``.DS_Store``, ``.git``) too.
OWN_FOLDERS = frozenset({"rejects"})
README_RE = re.compile(r"readme(\.[a-z0-9]+)?", re.IGNORECASE)
_ESCAPED = re.compile("[\udc80-\udcff]")


def _has_bad_bytes(text: str) -> bool:
    """True when decoding met a byte that is not UTF-8 (kept as a lone surrogate)."""
    return not text.isascii() and _ESCAPED.search(text) is not None


def first_bad_utf8(path: Path) -> tuple[int, int, str]:
    """(line, byte offset from the start of the file, description) of the first non-UTF-8 byte.

    Read in blocks so a large file is never held whole; a multi-byte character cut by a
    block boundary is carried over to the next block.
    """
    line, offset, pending = 1, 0, b""
    with path.open("rb") as handle:
        while True:
            block = handle.read(1 << 20)
            data = pending + block
            if not block:
                if data:
                    return line, offset, f"the file ends inside a character (byte 0x{data[0]:02X})"
                return line, offset, "undecodable text"
            try:
                data.decode("utf-8")
                good, pending = len(data), b""
            except UnicodeDecodeError as exc:
                if exc.end == len(data) and exc.reason == "unexpected end of data":
                    good, pending = exc.start, data[exc.start :]
                else:
                    where = offset + exc.start
                    return line + data.count(b"\n", 0, exc.start), where, f"byte 0x{data[exc.start]:02X}"
            line += data.count(b"\n", 0, good)
            offset += good


def encoding_problem(label: str, path: Path) -> Problem:
    line, offset, what = first_bad_utf8(path)
    message = f"not UTF-8 text: {what} at byte offset {offset}; the rest of the file was not read"
    return Problem(label, line, None, "bad_encoding", message)


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
    warnings: list[Problem] = field(default_factory=list)
    #: CSV only: lists of ``(line, cells, problem)``, for readers that index cells by position.
    batches: Callable[[], Iterator[list[tuple[int, list[str], Problem | None]]]] | None = None
    #: CSV only: the file itself, for the bulk reader (``caretally.ingest.bulk``).
    path: Path | None = None


def _open_text(path: Path, progress: bool) -> AbstractContextManager[IO[str]]:
    if progress and path.stat().st_size > PROGRESS_BYTES:
        return rich.progress.open(
            path,
            "r",
            encoding="utf-8-sig",
            errors="surrogateescape",
            newline="",
            description=f"reading {path.name}",
            console=Console(stderr=True),
            transient=True,
        )
    return path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="")


def csv_source(stem: str, path: Path, *, progress: bool = False) -> Source:
    label = path.name
    try:
        with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
            first = next(csv.reader(handle), None)
    except csv.Error as exc:
        problem = Problem(label, 1, None, "bad_csv", f"unreadable header: {exc}")
        return Source(stem, label, [], lambda: iter(()), [problem])
    if first is None:
        problem = Problem(label, 1, None, "missing_header", "the file is empty; it needs a header row")
        return Source(stem, label, [], lambda: iter(()), [problem])
    if any(_has_bad_bytes(name) for name in first):
        return Source(stem, label, [], lambda: iter(()), [encoding_problem(label, path)])
    header, warnings, faults = _clean_header(label, first)
    if faults:
        return Source(stem, label, [], lambda: iter(()), faults)

    def batches() -> Iterator[list[tuple[int, list[str], Problem | None]]]:
        with _open_text(path, progress) as handle:
            yield from _csv_batches(label, handle, path)

    def records() -> Iterator[Record]:
        for batch in batches():
            for line, row, problem in batch:
                yield csv_record(label, header, line, row, problem)

    return Source(stem, label, header, records, batches=batches, warnings=warnings, path=path)


def _clean_header(label: str, cells: list[str]) -> tuple[list[str], list[Problem], list[Problem]]:
    """Header names trimmed and cleaned of invisible characters (warned); NUL is refused."""
    header: list[str] = []
    warnings: list[Problem] = []
    faults: list[Problem] = []
    for cell in cells:
        if NUL in cell:
            faults.append(Problem(label, 1, None, "nul_byte", "the header holds a NUL byte (\\0)"))
            continue
        name, removed = clean_text(cell)
        name = name.strip()
        header.append(name)
        if removed:
            message = f"removed {len(removed)} invisible character(s) ({code_points(removed)}) from a name"
            warnings.append(Problem(label, 1, name or None, "invisible_removed", message))
    return header, warnings, faults


#: Rows per batch handed out by ``_csv_batches``.
CSV_BATCH = 2_000


def _csv_batches(
    label: str, handle: IO[str], path: Path | None = None, *, after: int | None = None
) -> Iterator[list[tuple[int, list[str], Problem | None]]]:
    """Lists of ``(physical line, cells, None)`` for the data rows; a problem item ends it.

    Most rows hold no quote, so they are split on commas directly (the ``csv`` module
    would give the same cells); a row with a quote, a stray carriage return or a NUL goes
    through ``csv.reader``, which may read further lines for a quoted cell that spans
    them. Line numbers count physical lines as ``csv.reader`` does (header = 1). Rows
    come in batches so a fast consumer pays one generator step per batch, not per row.
    A row holding a byte that is not UTF-8 ends the file with one ``bad_encoding`` item
    located by ``first_bad_utf8`` (``path``), since the row's own text cannot be trusted.
    With ``after`` the handle is positioned at the start of line ``after + 1``, past the
    header (the bulk reader hands over the rest of a file it cannot take in blocks).
    """
    lines = iter(handle)
    end = 0
    batch: list[tuple[int, list[str], Problem | None]] = []
    try:
        if after is None:
            header = csv.reader(lines, strict=True)
            if next(header, None) is None:
                return
            end = header.line_num
        else:
            end = after
        for text in lines:
            line = end + 1
            body = text[:-1] if text.endswith("\n") else text
            if body.endswith("\r"):
                body = body[:-1]
            if '"' in body or "\r" in body or "\0" in body:
                reader = csv.reader(itertools.chain((text,), lines), strict=True)
                row = next(reader, [])
                end += reader.line_num
                suspect = True  # the row may span lines this loop did not see
            else:
                row = body.split(",") if body else []
                end = line
                suspect = not text.isascii()
            if suspect and any(_has_bad_bytes(cell) for cell in row):
                problem = (
                    encoding_problem(label, path)
                    if path is not None
                    else Problem(label, line, None, "bad_encoding", "not UTF-8 text")
                )
                batch.append((problem.line or line, [], problem))
                break
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


def csv_batches_from(
    label: str, path: Path, offset: int, after: int
) -> Iterator[list[tuple[int, list[str], Problem | None]]]:
    """``_csv_batches`` over the rest of ``path`` from byte ``offset``, the start of line
    ``after + 1`` (a data line: the header and any BOM lie before it)."""
    with path.open("rb") as raw:
        raw.seek(offset)
        with io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="") as handle:
            yield from _csv_batches(label, handle, path, after=after)


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
                    if _has_bad_bytes(text):
                        problem = encoding_problem(label, path)
                        yield Record(label, problem.line or number, {}, (problem,))
                        return
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
    except UnicodeDecodeError:
        return [], [encoding_problem(label, path)]
    except json.JSONDecodeError as exc:
        return [], [Problem(label, exc.lineno, None, "bad_json", f"not valid JSON: {exc.msg}")]
    if not isinstance(data, dict):
        return [], [Problem(label, 1, None, "bad_json", "bundle.json must hold one object of arrays")]
    return array_sources(label, data, known)


def _kind(path: Path) -> str:
    """``file``, ``folder``, ``missing``, or what else the path is (checked before opening,
    because opening a FIFO would wait forever for a writer)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing" if not path.is_symlink() else "broken symbolic link"
    except OSError as exc:
        return f"unreadable entry ({exc.strerror})"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def known_names(known: Sequence[str]) -> list[str]:
    """Every file name a bundle folder may hold."""
    return [BUNDLE_JSON, *(f"{stem}{ext}" for stem in known for ext in (".csv", ".jsonl"))]


def is_ignored_entry(name: str) -> bool:
    """Hidden entries and README files: metadata a person or an OS keeps, never data."""
    return name.startswith(".") or bool(README_RE.fullmatch(name))


def _unknown(path: Path, names: Sequence[str], kind: str) -> str:
    what = "folder" if kind == "folder" else "file"
    close = difflib.get_close_matches(path.name.lower(), names, n=1, cutoff=0.6)
    guess = f"; did you mean {close[0]}?" if close else ""
    return f"{path.name} is not a {what} caretally knows{guess} (move it away or use --ignore-unknown-files)"


def discover(
    source: Path,
    known: Sequence[str],
    *,
    progress: bool = False,
    ignore_unknown: bool = False,
    warnings: list[Problem] | None = None,
) -> tuple[list[Source], list[Problem]]:
    """Every source in a bundle folder (or a single bundle file), one per stem.

    Nothing is skipped in silence: an entry that is not a bundle file is an
    ``unknown_file`` problem naming the closest known name (a warning instead, with
    ``ignore_unknown``), and a known name that is a folder, FIFO or device is
    ``not_a_file``. Hidden entries, README files and the ``rejects`` folder are the
    documented exceptions. A stem present in more than one format is a problem (which
    copy is right cannot be known); the CSV copy, then JSON Lines, then bundle.json is
    the one read.
    """
    problems: list[Problem] = []
    notes = warnings if warnings is not None else []
    found: dict[str, list[Source]] = {}
    names = known_names(known)
    kind = _kind(source)
    if kind == "file":
        files = [source]
    elif kind == "folder":
        files = []
        for path in sorted(source.iterdir()):
            if is_ignored_entry(path.name):
                continue
            entry = _kind(path)
            if path.name in OWN_FOLDERS and entry == "folder":
                continue
            if path.name in names:
                if entry == "file":
                    files.append(path)
                else:
                    message = f"{path.name} is a {entry}, not a file"
                    problems.append(Problem(path.name, None, None, "not_a_file", message))
            elif ignore_unknown:
                notes.append(Problem(path.name, None, None, "ignored_file", f"{path.name} was not read"))
            else:
                problems.append(Problem(path.name, None, None, "unknown_file", _unknown(path, names, entry)))
    elif kind == "missing":
        return [], [Problem(str(source), None, None, "missing_source", f"{source} does not exist")]
    else:
        message = f"{source} is a {kind}, not a bundle folder or file"
        return [], [Problem(str(source), None, None, "not_a_file", message)]
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
        elif ignore_unknown:
            notes.append(Problem(path.name, None, None, "ignored_file", f"{path.name} was not read"))
        else:
            problems.append(Problem(path.name, None, None, "unknown_file", _unknown(path, names, "file")))
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

"""The bulk reader for readings.csv and time_entries.csv: Arrow parses and checks whole
blocks of rows at once (``check_table`` for readings, ``check_time_entries``).

Readings run to millions per import; parsing each row in Python and checking it cell by
cell costs a few microseconds a row even on the fast path (``fastpath.clean_batch``).
Here pyarrow's CSV reader splits a block of the file (a few MB) in C, and vector
expressions (``pyarrow.compute``) find the rows that are plainly clean and build their
stored columns. Every other row is handed back, with its physical line and its cells,
to the row-by-row path, so the rows that are refused are judged and reported by the
same code as before (``clean_batch``, then ``check_row``): the report does not change.

What makes a row "plainly clean" is deliberately narrow, so that the vector checks are
easy to hold to ``clean_batch``: every cell printable ASCII without surrounding spaces
(``reading_id`` may be empty), lengths within the limits, a known transmission, a UTC
timestamp ``YYYY-MM-DDTHH:MM:SSZ`` (year 1900–2199) that reads back the same, an accepted
patient, a device of that patient, a patient-local date not before the birth date and no
later than the import clock allows. Local dates come per (zone, UTC hour), exactly as
``LocalDays`` computes them; an hour that holds a local midnight or an offset change
sends its rows down the row path.

Line numbers stay exact because a block goes to Arrow only when each of its lines is one
record: no NUL, no carriage return except before a line feed, no blank line, valid UTF-8,
and as many rows as lines (then Arrow's rows and the file's lines correspond one to one).
A line with a quote must read into the same cells through ``csv.reader`` as through Arrow.
A quote-free block with a row of the wrong width is split in Python the way
``sources._csv_batches`` splits a quote-free line. Anything else (a quoted cell spanning
lines, a bare carriage return, bytes that are not UTF-8) hands the rest of the file to
``sources._csv_batches``, which reads it as before.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from caretally.ingest.cleaning import TEXT_MAX
from caretally.ingest.fastpath import (
    ID_MAX,
    NO_EXTRA,
    NO_LATER_BOUND,
    READING_STORED,
    TRANSMISSIONS,
    TYPE_MAX,
    UNIT_MAX,
    VALUE_MAX,
    Item,
    LocalDays,
    _whole_hour_date,
    stored_instant,
)
from caretally.ingest.references import ReferenceIndex
from caretally.ingest.sources import csv_batches_from
from caretally.model import Modality, Program

#: Bytes per block handed to Arrow (cut at a line end). Big enough that Arrow's per-call
#: cost vanishes, small enough that a block's columns stay a few tens of MB.
BLOCK_BYTES = 8 << 20
BOM = b"\xef\xbb\xbf"
_STAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class Clean:
    """Rows the vector checks accepted: stored columns (``READING_STORED``) and their lines."""

    table: pa.Table
    lines: pa.Array


def data_start(path: Path) -> tuple[int, int] | None:
    """Byte offset and line number of the first data line, when the header is one plain line.

    ``None`` (read the whole file row by row) when the header has a quote, a NUL or a
    carriage return other than a CRLF ending: only a plain header line is certain to end
    at the first line feed, as ``csv.reader`` reads it.
    """
    with path.open("rb") as handle:
        first = handle.readline(1 << 20)
    if not first.endswith(b"\n"):
        return None
    body = first[:-1]
    if body.endswith(b"\r"):
        body = body[:-1]
    if b'"' in body or b"\r" in body or b"\0" in body:
        return None
    return len(first), 2


def _simple(block: bytes) -> bool:
    """True when no line of ``block`` is blank, holds a NUL or a bare CR, or is not UTF-8.

    Quotes are judged after parsing (``_same_as_csv``).
    """
    if b"\0" in block or block.startswith(b"\n") or block.startswith(b"\r\n"):
        return False
    if b"\n\n" in block or b"\n\r\n" in block:
        return False
    if b"\r" in block and block.count(b"\r") != block.count(b"\r\n"):
        return False
    if not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return False
    return True


def _same_as_csv(block: bytes, table: pa.Table) -> bool:
    """True when every line holding a quote reads, through ``csv.reader`` as ``_csv_batches``
    reads it, into exactly the cells Arrow gave its row (row i is line i: checked before).

    A quoted cell that spans lines, a quote ``csv`` refuses in strict mode, or any other
    difference in reading makes it false, and the caller hands the rest of the file to the
    row path, which then says what ``csv`` says.
    """
    lines = block.split(b"\n")
    at = [i for i, text in enumerate(lines) if b'"' in text]
    if not at:
        return True
    given = zip(*(column.to_pylist() for column in table.take(at).columns), strict=True)
    for i, cells in zip(at, given, strict=True):
        try:
            found = next(csv.reader([lines[i].decode("utf-8") + "\n"], strict=True), [])
        except csv.Error:
            return False
        if found != list(cells):
            return False
    return True


def _split(block: bytes, first_line: int) -> list[Item]:
    """A simple block's rows split in Python, exactly as ``_csv_batches`` splits quote-free lines."""
    items: list[Item] = []
    text = block.decode("utf-8")
    for number, body in enumerate(text.split("\n"), start=first_line):
        if body.endswith("\r"):
            body = body[:-1]
        if body:
            items.append((number, body.split(","), None))
    return items


def read_blocks(
    label: str,
    path: Path,
    width: int,
    whole: Callable[[], Iterator[list[Item]]],
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[tuple[int, pa.Table] | list[Item]]:
    """The data rows of a CSV file: ``(first line, table of text cells)`` for blocks Arrow
    parsed, lists of ``(line, cells, problem)`` items for the rest (in file order).

    ``whole`` reads the whole file row by row (``Source.batches``), for a header that is
    not one plain line.
    """
    start = data_start(path)
    if start is None:
        yield from whole()
        return
    offset, line = start
    names = [f"c{i}" for i in range(width)]
    read = pcsv.ReadOptions(column_names=names, use_threads=False, block_size=max(block_bytes, 1 << 16) * 2)
    plain = pcsv.ParseOptions(quote_char=False, double_quote=False, escape_char=False)
    quoting = pcsv.ParseOptions(
        quote_char='"', double_quote=True, escape_char=False, newlines_in_values=False
    )
    convert = pcsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    with path.open("rb") as handle:
        handle.seek(offset)
        pending = b""
        while True:
            chunk = handle.read(block_bytes)
            data = pending + chunk
            if not data:
                return
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            if cut == 0:  # no line end yet: read on (one line longer than a block)
                pending = data
                continue
            block, pending = data[:cut], data[cut:]
            if not _simple(block):
                yield from csv_batches_from(label, path, offset, line - 1)
                return
            rows = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            quoted = b'"' in block
            try:
                table = pcsv.read_csv(pa.py_buffer(block), read, quoting if quoted else plain, convert)
            except pa.ArrowInvalid:
                table = None
            if quoted and (table is None or table.num_rows != rows or not _same_as_csv(block, table)):
                yield from csv_batches_from(label, path, offset, line - 1)
                return
            if table is None or table.num_rows != rows:
                yield _split(block, line)
            else:
                yield line, table
            offset += len(block)
            line += rows


def _local_dates(text: pa.Array, tz: pa.Array, ok: pa.Array, days: LocalDays) -> pa.Array:
    """Each row's patient-local date from its UTC ``text`` and zone, null where the hour has
    two local dates; worked out once per zone and UTC hour of the rows ``ok`` keeps."""
    hour = pc.utf8_slice_codeunits(text, 0, 13)
    zone_hour = pc.binary_join_element_wise(pc.fill_null(tz, ""), hour, "|")
    distinct = pc.unique(pc.filter(zone_hour, ok))
    dates: list[str | None] = []
    for key in distinct.to_pylist():
        name, at = key.split("|")
        hours = days.zones.setdefault(name, {})
        if at not in hours:
            hours[at] = _whole_hour_date(name, at)
        dates.append(hours[at])
    return pa.array(dates, pa.string()).take(pc.index_in(zone_hour, value_set=distinct))


def _lookup(keys: pa.Array, get: Callable[[str], str | None]) -> pa.Array:
    """``get(key)`` for every key (null for ``None``), computed once per distinct key."""
    distinct = pc.unique(keys)
    values = pa.array([get(k) for k in distinct.to_pylist()], pa.string())
    return values.take(pc.index_in(keys, value_set=distinct))


def check_table(
    table: pa.Table,
    first_line: int,
    positions: Sequence[int | None],
    index: ReferenceIndex,
    days: LocalDays,
) -> tuple[Clean, list[Item]]:
    """The block's plainly clean rows in stored form, and every other row as an item.

    ``positions`` gives the column of each of the eight reading cells (``READING_CELLS``
    order; ``None`` for a missing ``reading_id`` column).
    """
    count = table.num_rows
    cols = table.columns
    rid_at = positions[0]
    rid = cols[rid_at] if rid_at is not None else pa.repeat("", count)
    patient, device, stamp, kind, value, unit, transmission = (cols[p] for p in positions[1:])  # type: ignore[index]

    def plain(column: Any, limit: int, *, empty: bool = False) -> Any:
        """Printable ASCII (``isprintable`` holds, ``strip`` changes nothing), 1..limit long."""
        size = pc.binary_length(column)
        fits = (
            pc.less_equal(size, limit) if empty else pc.and_(pc.greater(size, 0), pc.less_equal(size, limit))
        )
        spaced = pc.or_(pc.starts_with(column, " "), pc.ends_with(column, " "))
        return pc.and_(pc.and_(pc.ascii_is_printable(column), fits), pc.invert(spaced))

    ok = pc.and_(plain(rid, ID_MAX, empty=True), pc.and_(plain(patient, ID_MAX), plain(device, ID_MAX)))
    ok = pc.and_(ok, pc.and_(plain(kind, TYPE_MAX), plain(unit, UNIT_MAX)))
    ok = pc.and_(ok, plain(value, VALUE_MAX))
    mode = pc.ascii_lower(transmission)
    ok = pc.and_(ok, pc.is_in(mode, value_set=pa.array(list(TRANSMISSIONS), pa.string())))
    # ``YYYY-MM-DDTHH:MM:SSZ`` naming a real instant: Arrow's parse, written back, gives the
    # same day and clock (a 30 February or a 60th second would roll over to another).
    day = pc.utf8_slice_codeunits(stamp, 0, 10)
    clock = pc.utf8_slice_codeunits(stamp, 11, 19)
    shaped = pc.and_(pc.equal(pc.binary_length(stamp), 20), pc.ends_with(stamp, "Z"))
    shaped = pc.and_(shaped, pc.equal(pc.utf8_slice_codeunits(stamp, 10, 11), "T"))
    shaped = pc.and_(shaped, pc.and_(pc.greater_equal(stamp, "1900"), pc.less(stamp, "2200")))
    parsed = pc.strptime(stamp, format=_STAMP_FORMAT, unit="s", error_is_null=True)
    again = pc.cast(parsed, pa.string())
    ok = pc.and_(
        ok,
        pc.fill_null(pc.and_(shaped, pc.equal(again, pc.binary_join_element_wise(day, clock, " "))), False),
    )
    text = pc.binary_join_element_wise(day, " ", clock, ".000000", "")
    latest = NO_LATER_BOUND if index.not_after is None else stored_instant(index.not_after)
    ok = pc.and_(ok, pc.less_equal(text, latest))

    patients, devices = index.patients, index.devices
    tz = _lookup(patient, lambda p: None if p in patients.rejected else patients.known.get(p))
    owner = _lookup(device, lambda d: None if d in devices.rejected else devices.known.get(d))
    ok = pc.and_(ok, pc.fill_null(pc.equal(owner, patient), False))
    ok = pc.and_(ok, pc.is_valid(tz))

    local = _local_dates(text, tz, ok, days)
    ok = pc.and_(ok, pc.is_valid(local))  # hours with two local dates take the row path
    birth = _lookup(patient, index.births.get)
    ok = pc.and_(ok, pc.fill_null(pc.greater_equal(local, birth), True))
    ok = pc.fill_null(ok, False)

    lines = pa.array(range(first_line, first_line + count), pa.int64())
    rest = _rest(table, lines, ok)

    has_id = pc.not_equal(rid, "")
    # ``reading_key`` without a reading_id: ``device|YYYY-MM-DDTHH:MM:SS+00:00|type``.
    synthetic = pc.binary_join_element_wise(device, "|", day, "T", clock, "+00:00|", kind, "")
    columns = {
        "reading_key": pc.if_else(has_id, rid, synthetic),
        "reading_id": pc.if_else(has_id, rid, pa.scalar(None, pa.string())),
        "patient_id": patient,
        "device_id": device,
        "measured_at": text,
        "local_date": local,
        "type": kind,
        "value": value,
        "unit": unit,
        "transmission": mode,
        "extra": pa.repeat(NO_EXTRA, count),
    }
    assert tuple(columns) == READING_STORED
    clean = pa.table(columns).filter(ok)
    return Clean(clean, lines.filter(ok)), rest


# --- time entries ----------------------------------------------------------------------

#: The time-entry cells ``check_time_entries`` reads (absent optional columns are empty).
TIME_CELLS: tuple[str, ...] = (
    "entry_id",
    "patient_id",
    "practitioner_id",
    "program",
    "started_at",
    "seconds",
    "minutes",
    "activity",
    "interactive",
    "modality",
    "note",
)
#: ``check_time_entry``'s stored columns, in the table's order (``FileSpec.stored``).
TIME_STORED: tuple[str, ...] = (
    "entry_id",
    "patient_id",
    "practitioner_id",
    "program",
    "started_at",
    "local_date",
    "seconds",
    "activity",
    "interactive",
    "modality",
    "note",
    "extra",
)
_WALL_FORMAT = "%Y-%m-%dT%H:%M:%S"
_TRUE = ("true", "yes", "1")
_FALSE = ("false", "no", "0")


def _canonical(column: Any, spelled: Sequence[str]) -> Any:
    """The canonical spelling of a case-insensitive enum cell; null when not one of them."""
    lowered = pa.array([s.lower() for s in spelled], pa.string())
    return pa.array(list(spelled), pa.string()).take(pc.index_in(pc.utf8_lower(column), value_set=lowered))


def check_time_entries(
    table: pa.Table,
    first_line: int,
    positions: dict[str, int | None],
    index: ReferenceIndex,
    days: LocalDays,
) -> tuple[Clean, list[Item]]:
    """Time entries as ``check_table`` takes readings: plainly clean rows in stored form.

    Plainly clean: ids printable ASCII 1–64 long; ``started_at`` written
    ``YYYY-MM-DDTHH:MM:SS`` with ``Z`` or ``±HH:MM`` (year 1900–2199) naming a real wall
    clock; a duration as whole seconds or as whole minutes (not both), above 0 and at most
    12 hours; ``interactive`` one of true/yes/1/false/no/0; program and modality empty or
    a known value (a modality when interactive); activity and note printable ASCII within
    the text limit; a known patient and practitioner, and for a program the patient's
    enrollment in it; a UTC hour with one local date. Anything else takes the row path.
    """
    count = table.num_rows
    empty = pa.repeat("", count)

    def cell(name: str) -> Any:
        at = positions.get(name)
        return table.column(at) if at is not None else empty

    def plain(column: Any, limit: int, *, blank: bool = False) -> Any:
        size = pc.binary_length(column)
        spaced = pc.or_(pc.starts_with(column, " "), pc.ends_with(column, " "))
        good = pc.and_(pc.and_(pc.ascii_is_printable(column), pc.less_equal(size, limit)), pc.invert(spaced))
        return good if blank else pc.and_(good, pc.greater(size, 0))

    entry, patient, practitioner = cell("entry_id"), cell("patient_id"), cell("practitioner_id")
    ok = pc.and_(plain(entry, ID_MAX), pc.and_(plain(patient, ID_MAX), plain(practitioner, ID_MAX)))
    activity, note = cell("activity"), cell("note")
    ok = pc.and_(ok, pc.and_(plain(activity, TEXT_MAX), plain(note, TEXT_MAX, blank=True)))

    raw_program = cell("program")
    program = _canonical(raw_program, [p.value for p in Program])
    has_program = pc.not_equal(raw_program, "")
    ok = pc.and_(ok, pc.or_(pc.invert(has_program), pc.is_valid(program)))
    raw_modality = cell("modality")
    modality = _canonical(raw_modality, [m.value for m in Modality])
    has_modality = pc.not_equal(raw_modality, "")
    ok = pc.and_(ok, pc.or_(pc.invert(has_modality), pc.is_valid(modality)))
    flag = pc.utf8_lower(cell("interactive"))
    interactive = pc.is_in(flag, value_set=pa.array(_TRUE))
    ok = pc.and_(ok, pc.or_(interactive, pc.is_in(flag, value_set=pa.array(_FALSE))))
    ok = pc.and_(ok, pc.or_(pc.invert(interactive), has_modality))

    seconds_raw, minutes_raw = cell("seconds"), cell("minutes")
    by_seconds = pc.and_(pc.match_substring_regex(seconds_raw, r"^[0-9]{1,5}$"), pc.equal(minutes_raw, ""))
    by_minutes = pc.and_(pc.match_substring_regex(minutes_raw, r"^[0-9]{1,3}$"), pc.equal(seconds_raw, ""))
    digits = pc.if_else(by_seconds, seconds_raw, pc.if_else(by_minutes, minutes_raw, "0"))
    amount = pc.cast(pc.fill_null(digits, "0"), pa.int64())
    seconds = pc.if_else(by_minutes, pc.multiply(amount, 60), amount)
    ok = pc.and_(ok, pc.or_(by_seconds, by_minutes))
    ok = pc.and_(ok, pc.and_(pc.greater(seconds, 0), pc.less_equal(seconds, 12 * 3600)))

    stamp = cell("started_at")
    size = pc.binary_length(stamp)
    wall = pc.utf8_slice_codeunits(stamp, 0, 19)
    zulu = pc.and_(pc.equal(size, 20), pc.ends_with(stamp, "Z"))
    sign = pc.utf8_slice_codeunits(stamp, 19, 20)
    hh, mm = pc.utf8_slice_codeunits(stamp, 20, 22), pc.utf8_slice_codeunits(stamp, 23, 25)
    offset_shape = pc.and_(pc.equal(size, 25), pc.is_in(sign, value_set=pa.array(["+", "-"])))
    offset_shape = pc.and_(offset_shape, pc.equal(pc.utf8_slice_codeunits(stamp, 22, 23), ":"))
    two_digits = r"^[0-5][0-9]$"
    offset_shape = pc.and_(offset_shape, pc.match_substring_regex(mm, two_digits))
    offset_shape = pc.and_(offset_shape, pc.match_substring_regex(hh, r"^([01][0-9]|2[0-3])$"))
    shaped = pc.and_(pc.or_(zulu, offset_shape), pc.equal(pc.utf8_slice_codeunits(stamp, 10, 11), "T"))
    shaped = pc.and_(shaped, pc.and_(pc.greater_equal(stamp, "1900"), pc.less(stamp, "2200")))
    parsed = pc.strptime(wall, format=_WALL_FORMAT, unit="s", error_is_null=True)
    again = pc.binary_join_element_wise(
        pc.utf8_slice_codeunits(stamp, 0, 10), pc.utf8_slice_codeunits(stamp, 11, 19), " "
    )
    ok = pc.and_(ok, pc.fill_null(pc.and_(shaped, pc.equal(pc.cast(parsed, pa.string()), again)), False))
    safe = pc.and_(offset_shape, pc.fill_null(ok, False))
    minutes_off = pc.add(
        pc.multiply(pc.cast(pc.if_else(safe, hh, "0"), pa.int64()), 60),
        pc.cast(pc.if_else(safe, mm, "0"), pa.int64()),
    )
    signed = pc.if_else(pc.equal(sign, "-"), pc.negate(minutes_off), minutes_off)
    shift = pc.cast(pc.multiply(pc.if_else(safe, signed, 0), 60), pa.duration("s"))
    utc = pc.subtract(pc.fill_null(parsed, pa.scalar(0, pa.timestamp("s"))), shift)
    text = pc.binary_join_element_wise(pc.cast(utc, pa.string()), ".000000", "")

    patients, practitioners = index.patients, index.practitioners
    tz = _lookup(patient, lambda p: None if p in patients.rejected else patients.known.get(p))
    ok = pc.and_(ok, pc.is_valid(tz))
    performer = _lookup(
        practitioner, lambda p: None if p in practitioners.rejected else practitioners.known.get(p)
    )
    ok = pc.and_(ok, pc.is_valid(performer))
    pair = pc.binary_join_element_wise(patient, pc.fill_null(program, ""), "|")
    enrolled = _lookup(pair, lambda k: "1" if tuple(k.split("|", 1)) in index.enrolled else None)
    ok = pc.and_(ok, pc.or_(pc.invert(has_program), pc.is_valid(enrolled)))

    ok = pc.fill_null(ok, False)
    local = _local_dates(text, tz, ok, days)
    ok = pc.fill_null(pc.and_(ok, pc.is_valid(local)), False)

    lines = pa.array(range(first_line, first_line + count), pa.int64())
    rest = _rest(table, lines, ok)
    null = pa.scalar(None, pa.string())
    columns = {
        "entry_id": entry,
        "patient_id": patient,
        "practitioner_id": practitioner,
        "program": pc.if_else(has_program, program, null),
        "started_at": text,
        "local_date": local,
        "seconds": seconds,
        "activity": activity,
        "interactive": interactive,
        "modality": pc.if_else(has_modality, modality, null),
        "note": pc.if_else(pc.not_equal(note, ""), note, null),
        "extra": pa.repeat(NO_EXTRA, count),
    }
    assert tuple(columns) == TIME_STORED
    return Clean(pa.table(columns).filter(ok), lines.filter(ok)), rest


def _rest(table: pa.Table, lines: pa.Array, ok: Any) -> list[Item]:
    """The rows ``ok`` does not hold, as ``(line, cells, None)`` items for the row path."""
    at = pc.indices_nonzero(pc.invert(ok))
    if not len(at):
        return []
    cells = zip(*(c.to_pylist() for c in table.take(at).columns), strict=True)
    return [(line, list(row), None) for line, row in zip(lines.take(at).to_pylist(), cells, strict=True)]

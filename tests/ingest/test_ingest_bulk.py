"""The Arrow bulk path for readings.csv must change nothing but the speed.

A property generates readings files with good and bad rows (quotes, BOM, CRLF, blank
lines, rows of the wrong width, zones with half-hour and 45-minute offsets, DST days,
leap days, duplicate ids, birth dates and the import clock at the edge) and imports
each twice, with the bulk path in small blocks and row by row: the reports (problems,
warnings, rejected rows, counts) and the stored readings must be identical. An
end-to-end test imports a synthetic practice both ways on SQLite and PostgreSQL and
compares every table, then imports it again (every row unchanged both ways).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from caretally.ingest import bulk, import_bundle
from caretally.ingest.fastpath import READING_CELLS, LocalDays
from caretally.ingest.references import ReferenceIndex
from caretally.store import schema
from caretally.store.db import ensure_org, open_database
from caretally.synth import SynthConfig, synthesize
from tests.ingest.bundles import DR_NPI

#: Patients: id → (zone, birth date). Lord Howe moves by half an hour at DST, Kathmandu is
#: +05:45, St John's -03:30, Chatham +12:45/+13:45; BORN is born on a leap day.
PATIENTS = {
    "P1": ("America/Chicago", "1950-01-01"),
    "P2": ("Asia/Kathmandu", "1960-05-05"),
    "P3": ("Australia/Lord_Howe", "1970-07-07"),
    "P4": ("America/St_Johns", "1980-08-08"),
    "P5": ("Pacific/Chatham", "1945-03-03"),
    "BORN": ("Europe/London", "2024-02-29"),
}
#: A patient row that is refused (bad zone): its device's readings refer to a rejected patient.
REJECTED = "PX"
DEVICE = {p: f"D-{p}" for p in (*PATIENTS, REJECTED)}
CLOCK = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)

_serial = itertools.count()


def _practice_files(folder: Path) -> None:
    lines = ["patient_id,birth_date,timezone,payer,family_name,given_name,sex"]
    for pid, (tz, born) in PATIENTS.items():
        lines.append(f"{pid},{born},{tz},commercial,Doe,Sam,U")
    lines.append(f"{REJECTED},1950-01-01,Mars/Olympus,commercial,Doe,Sam,U")
    (folder / "patients.csv").write_text("\n".join(lines) + "\n")
    lines = ["device_id,patient_id,program,kind,medical_device,assigned_date"]
    for pid, device in DEVICE.items():
        lines.append(f"{device},{pid},RPM,weight,true,2020-01-01")
    (folder / "devices.csv").write_text("\n".join(lines) + "\n")


#: Instants at the edges: DST changes (US, Lord Howe, Chatham), local midnights of the
#: odd-offset zones, the leap day, the birth of BORN, and the import clock.
EDGES = [
    "2026-03-08T07:59:59Z",
    "2026-03-08T08:00:00Z",
    "2026-11-01T06:59:59Z",
    "2026-11-01T07:00:00Z",
    "2026-04-04T14:59:59Z",
    "2026-04-04T15:00:00Z",
    "2026-10-03T15:30:00Z",
    "2026-04-04T13:45:00Z",
    "2026-09-26T14:00:00Z",
    "2026-03-01T18:14:59Z",
    "2026-03-01T18:15:00Z",
    "2026-03-01T03:29:59Z",
    "2026-03-01T03:30:00Z",
    "2024-02-29T00:00:00Z",
    "2024-02-28T23:59:59Z",
    "2028-02-29T12:00:00Z",
    "2026-11-01T06:30:00Z",
    "2026-11-01T06:30:01Z",
    "2025-02-29T10:00:00Z",
    "2026-03-01T24:00:00Z",
    "2026-03-01T12:30:60Z",
    "1899-12-31T23:59:59Z",
    "2026-03-08T02:30:00-06:00",
    "2026-03-08T02:30:00",
    "2026-03-08t08:30:00z",
    "2026-03-08",
    "2026-3-8T08:30:00Z",
    " 2026-03-08T08:30:00Z",
]

instants = st.one_of(
    st.sampled_from(EDGES),
    st.datetimes(min_value=datetime(2024, 2, 20), max_value=datetime(2026, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")
    ),
)


def _mostly(good: list[str], bad: list[str]) -> st.SearchStrategy[str]:
    """A good value nine times in ten: a row is plainly clean often enough that the bulk
    path takes many rows in every file, and faulty often enough that most files have some."""
    return st.integers(0, 9).flatmap(lambda n: st.sampled_from(bad if n == 0 else good))


@st.composite
def reading_rows(draw: st.DrawFn) -> dict[str, Any]:
    patient = draw(_mostly(list(PATIENTS), [REJECTED, "P9", " P1", "P1\u200b"]))
    owner = patient.strip().replace("\u200b", "") if draw(st.integers(0, 19)) else "P1"
    device = DEVICE.get(owner, "D-P9")
    row = {
        "reading_id": draw(
            _mostly(["", f"R{next(_serial)}", f"R{next(_serial)}"], ["R-dup", " R-sp", "R" * 65, "R\u00e9"])
        ),
        "patient_id": patient,
        "device_id": draw(_mostly([device], [device + " ", "D-P9", ""])),
        "measured_at": draw(
            st.integers(0, 9).flatmap(lambda n: st.sampled_from(EDGES) if n < 3 else instants)
        ),
        "type": draw(_mostly(["weight", "bp", "t" * 64], ["t" * 65, "wei\tght", "", " bp"])),
        "value": draw(
            _mostly(
                ["180", "128/82", "9" * 64, "1 8"], ["9" * 65, "", "\u00a0180", "1\u200b80", "1,5", '12"3']
            )
        ),
        "unit": draw(_mostly(["lb", "mmHg", "u" * 32], ["°F", "u" * 33, ""])),
        "transmission": draw(_mostly(["auto", "MANUAL", "Auto"], ["fax", " auto", ""])),
    }
    # How the row is written: plainly, every cell quoted, one cell short, one extra, a
    # quoted value spanning two lines, or a value quoted and then continued (``"9"9``,
    # which ``csv`` refuses in strict mode). The last two hand the rest of the file to the
    # row path, so they are rare.
    row["_shape"] = draw(
        st.sampled_from(["plain"] * 30 + ["quoted"] * 6 + ["short", "long", "spanning", "continued"])
    )
    return row


def _header(columns: Sequence[str], optional: str, layout: dict[str, Any]) -> list[str]:
    """The file's columns: ``optional`` only when the layout's ``reading_id`` flag says so."""
    header = [c for c in columns if layout["reading_id"] or c != optional]
    return header[::-1] if layout["reverse"] else header


def _write_file(path: Path, out: list[str], layout: dict[str, Any]) -> None:
    """Header and data lines as the layout writes them: a blank line, final newline, BOM."""
    if layout["blank_at"] is not None and len(out) > 1:
        out.insert(1 + layout["blank_at"] % (len(out) - 1), "")
    end = layout["newline"]
    data = (end.join(out) + (end if layout["final_newline"] else "")).encode("utf-8")
    path.write_bytes((bulk.BOM if layout["bom"] else b"") + data)


def _write_readings(path: Path, rows: list[dict[str, Any]], layout: dict[str, Any]) -> None:
    header = _header(READING_CELLS, "reading_id", layout)
    end = layout["newline"]
    out = [",".join(header)]
    for row in rows:
        cells = [row[c] for c in header]
        shape = row["_shape"]
        if shape == "quoted":
            out.append(",".join('"' + c.replace('"', '""') + '"' for c in cells))
        elif shape in ("spanning", "continued"):
            at = header.index("value")
            cells[at] = '"18' + end + '0"' if shape == "spanning" else '"9"9'
            out.append(",".join(cells))
        elif shape == "short":
            out.append(",".join(cells[:-1]))
        elif shape == "long":
            out.append(",".join([*cells, "x"]))
        else:
            out.append(",".join(cells))
    _write_file(path, out, layout)


layouts = st.fixed_dictionaries(
    {
        "reading_id": st.booleans(),
        "reverse": st.booleans(),
        "newline": st.sampled_from(["\n", "\r\n"]),
        "final_newline": st.booleans(),
        "bom": st.booleans(),
        "blank_at": st.one_of(st.none(), st.integers(0, 50)),
        "block": st.sampled_from([40, 97, 256, 1024, bulk.BLOCK_BYTES]),
    }
)


@pytest.fixture(scope="module")
def engine() -> Engine:
    folder = Path(tempfile.mkdtemp(prefix="ct-bulk-"))
    return open_database(f"sqlite:///{folder / 'bulk.db'}", "seed")


def _outcome(engine: Engine, org: str, folder: Path, block: int) -> tuple[Any, ...]:
    ensure_org(engine, org)
    report = import_bundle(
        engine,
        org,
        folder,
        skip_invalid=True,
        rejects_path=Path(tempfile.mkdtemp(prefix="ct-bulk-rejects-")),
        now=CLOCK - timedelta(hours=24),
        bulk_block_bytes=block,
    )
    stored = []
    for r in (schema.readings, schema.time_entries):
        columns = [c for c in r.columns if c.name not in ("id", "org_id")]
        with engine.connect() as conn:
            stored.append(sorted(conn.execute(select(*columns).where(r.c.org_id == org)).all()))
    counts = {stem: c.to_json() for stem, c in report.counts.items()}
    return report.ok(), counts, report.problems, report.warnings, report.rejected_rows, stored


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(reading_rows(), min_size=0, max_size=60), layout=layouts)
def test_bulk_path_equals_row_checker(
    engine: Engine, rows: list[dict[str, Any]], layout: dict[str, Any]
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ct-bulk-b-"))
    _practice_files(folder)
    _write_readings(folder / "readings.csv", rows, layout)
    n = next(_serial)
    by_rows = _outcome(engine, f"rows{n}", folder, 0)
    in_bulk = _outcome(engine, f"bulk{n}", folder, layout["block"])
    assert in_bulk == by_rows


def test_clean_rows_are_taken_by_the_vector_checks(tmp_path: Path) -> None:
    """The property above is only worth something if the bulk path accepts rows itself:
    every plain row of a clean file (edge instants included) is accepted in Arrow."""
    index = ReferenceIndex()
    for pid, (tz, born) in PATIENTS.items():
        index.patients.accept(pid, tz)
        index.births[pid] = born
        index.devices.accept(DEVICE[pid], pid)
    stamps = [s for s in EDGES[:18]]
    rows = [
        {
            "reading_id": "" if i % 2 else f"R{i}",
            "patient_id": pid,
            "device_id": DEVICE[pid],
            "measured_at": stamp,
            "type": "weight",
            "value": "180",
            "unit": "lb",
            "transmission": "MANUAL" if i % 3 else "auto",
            "_shape": "plain",
        }
        for i, (pid, stamp) in enumerate(itertools.product(PATIENTS, stamps))
    ]
    path = tmp_path / "readings.csv"
    layout = {"reading_id": True, "reverse": False, "newline": "\r\n", "final_newline": True, "bom": True}
    _write_readings(path, rows, {**layout, "blank_at": None})
    taken, rest = 0, 0
    days = LocalDays()
    for piece in bulk.read_blocks("readings.csv", path, 8, lambda: iter(()), 300):
        assert not isinstance(piece, list), "a clean block went down the row path"
        first, table = piece
        clean, others = bulk.check_table(table, first, list(range(8)), index, days)
        taken += clean.table.num_rows
        rest += len(others)
    # The row path gets BORN's readings before 2024-02-29 London time (refused: before
    # birth) and readings in a UTC hour that holds a local midnight or an offset change.
    expected_rest = sum(
        1
        for r in rows
        if (r["patient_id"] == "BORN" and r["measured_at"] < "2024-02-29")
        or _two_dates(PATIENTS[r["patient_id"]][0], r["measured_at"])
    )
    assert 0 < expected_rest < len(rows) // 4
    assert rest == expected_rest
    assert taken == len(rows) - expected_rest
    assert isinstance(clean.table["local_date"], pa.ChunkedArray)


def _two_dates(tz: str, stamp: str) -> bool:
    start = datetime.fromisoformat(stamp[:13] + ":00:00+00:00")
    a, b = (
        start.astimezone(ZoneInfo(tz)),
        (start + timedelta(minutes=59, seconds=59)).astimezone(ZoneInfo(tz)),
    )
    return a.date() != b.date() or a.utcoffset() != b.utcoffset()


# --- time entries ---------------------------------------------------------------------------

TIME_COLUMNS = (
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
#: Few instants, so one performer's entries overlap (warnings) and DST and odd offsets meet.
STARTS = [
    "2026-03-08T07:30:00Z",
    "2026-03-08T01:45:00-06:00",
    "2026-03-08T13:15:00+05:45",
    "2026-04-04T14:40:00Z",
    "2026-03-01T18:10:00Z",
    "2026-03-01T23:59:59-03:30",
    "2026-03-02T07:00:00+13:45",
    "2024-02-29T10:00:00Z",
    "2026-11-01T06:00:00Z",
    "2026-03-08T08:00:00-00:00",
]
BAD_STARTS = [
    "2026-02-30T10:00:00-05:00",
    "2026-03-08T02:30:00",
    "2026-03-08T02:30:00+24:00",
    "2026-03-08T02:30:00+0545",
    "2026-03-08 02:30:00-06:00",
    "2026-03-08t02:30:00z",
    "1899-12-31T23:00:00Z",
    "2026-03-08T10:00:00.5Z",
]


def _time_practice(folder: Path) -> None:
    _practice_files(folder)
    (folder / "practitioners.csv").write_text(
        f"practitioner_id,npi,name,credential\nDR1,{DR_NPI},Ada Moreno,MD\nRN1,,Cy Park,RN\nBAD,,Bo Gus,XYZ\n"
    )
    (folder / "enrollments.csv").write_text(
        "enrollment_id,patient_id,program,start_date,billing_practitioner_id,diagnoses\n"
        "E1,P1,RPM,2024-01-01,DR1,I10\nE2,P2,CCM,2024-01-01,DR1,I10;E11.9\nE3,P3,RPM,2024-01-01,BAD,I10\n"
    )


ENROLLED = {"P1": ["RPM", "rpm"], "P2": ["CCM", "ccm"]}


@st.composite
def time_rows(draw: st.DrawFn) -> dict[str, Any]:
    """Coherent entries nine cells in ten (program of the patient's enrollment, one way of
    giving the duration, a modality when interactive), so that the bulk path takes many."""
    patient = draw(_mostly(["P1", "P2", "P3", "P4", "P5", "BORN"], [REJECTED, "P9", ""]))
    program = draw(_mostly(["", *ENROLLED.get(patient, [""])], ["XYZ", "APCM", " RPM", "RPM", "CCM"]))
    seconds, minutes = draw(
        _mostly(
            [("600", ""), ("0090", ""), ("43200", ""), ("", "10"), ("1800", "")],
            [("", ""), ("0", ""), ("43201", ""), ("+60", ""), ("600", "10"), ("", "721"), ("6e2", "")],
        )
    )
    interactive, modality = draw(
        _mostly(
            [("true", "phone"), ("Yes", "Video"), ("false", ""), ("0", "in_person"), ("false", "phone")],
            [("true", ""), ("maybe", "phone"), ("", ""), ("false", "fax"), ("true", " phone")],
        )
    )
    return {
        "entry_id": draw(_mostly([f"T{next(_serial)}"], ["T-dup", " T1", "T" * 65, ""])),
        "patient_id": patient,
        "practitioner_id": draw(_mostly(["DR1", "RN1"], ["BAD", "NOPE", ""])),
        "program": program,
        "started_at": draw(_mostly(STARTS, BAD_STARTS)),
        "seconds": seconds,
        "minutes": minutes,
        "activity": draw(_mostly(["review", "data interpretation"], ["", "a" * 4001, "call\u200b"])),
        "interactive": interactive,
        "modality": modality,
        "note": draw(
            _mostly(["", "Left voicemail, follow-up.", "ok"], ["x" * 4001, " n", "caf\u00e9", "  "])
        ),
        "_shape": draw(st.sampled_from(["plain"] * 60 + ["quoted"] * 8 + ["short", "spanning"])),
    }


def _write_time_entries(path: Path, rows: list[dict[str, Any]], layout: dict[str, Any]) -> None:
    header = _header(TIME_COLUMNS, "minutes", layout)
    end = layout["newline"]
    out = [",".join(header)]
    for row in rows:
        cells = [row[c] for c in header]
        shape = row["_shape"]
        # A cell holding a comma must be quoted in any shape; the rest as the shape says.
        quoted = ['"' + c.replace('"', '""') + '"' for c in cells]
        if shape == "quoted":
            out.append(",".join(quoted))
        elif shape == "short":
            out.append(",".join(quoted[:-1]))
        elif shape == "spanning":
            at = header.index("note")
            quoted[at] = '"one' + end + 'two"'
            out.append(",".join(quoted))
        else:
            out.append(",".join(q if "," in c else c for q, c in zip(quoted, cells, strict=True)))
    _write_file(path, out, layout)


#: A blank line hands the rest of the file to the row path: rarer here, so that most files
#: are read in Arrow blocks to the end.
time_layouts = layouts.flatmap(
    lambda layout: st.sampled_from([None, None, None, None, 0, 7]).map(lambda at: {**layout, "blank_at": at})
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(time_rows(), min_size=10, max_size=50), layout=time_layouts)
def test_bulk_time_entries_equal_row_checker(
    engine: Engine, rows: list[dict[str, Any]], layout: dict[str, Any]
) -> None:
    """Time entries both ways: same problems, overlap warnings, rejected rows, counts, rows
    (``reading_id`` in the layout decides here whether the file has a minutes column)."""
    folder = Path(tempfile.mkdtemp(prefix="ct-bulk-t-"))
    _time_practice(folder)
    _write_time_entries(folder / "time_entries.csv", rows, layout)
    n = next(_serial)
    by_rows = _outcome(engine, f"trows{n}", folder, 0)
    in_bulk = _outcome(engine, f"tbulk{n}", folder, layout["block"])
    assert in_bulk == by_rows


# --- end to end: a synthetic practice both ways, on SQLite and PostgreSQL -----------------


TABLES = (
    schema.practitioners,
    schema.patients,
    schema.enrollments,
    schema.devices,
    schema.readings,
    schema.time_entries,
)


def _tables(engine: Engine, org: str) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in TABLES:
            columns = [c for c in table.columns if c.name not in ("id", "org_id")]
            rows = conn.execute(select(*columns).where(table.c.org_id == org)).all()
            out[table.name] = sorted(tuple(repr(v) for v in row) for row in rows)
    return out


def test_bundle_imports_the_same_with_and_without_the_bulk_path(db_url: str, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    synthesize(SynthConfig(patients=60, start=date(2026, 3, 1), months=1, seed=3), bundle)
    engine = open_database(db_url, "bulk")
    try:
        first = import_bundle(
            engine, "bulk", bundle, bulk_block_bytes=64 * 1024
        )  # first load: indexes rebuilt
        ensure_org(engine, "rows")
        second = import_bundle(engine, "rows", bundle, bulk_block_bytes=0)
        assert first.ok() and second.ok(), (first.problems[:3], second.problems[:3])
        assert first.counts["readings"].inserted > 1000
        assert {k: c.to_json() for k, c in first.counts.items()} == {
            k: c.to_json() for k, c in second.counts.items()
        }
        assert _tables(engine, "bulk") == _tables(engine, "rows")
        # Again: the organization has readings, so both go through the staging table.
        again = import_bundle(engine, "bulk", bundle, bulk_block_bytes=64 * 1024)
        again_rows = import_bundle(engine, "rows", bundle, bulk_block_bytes=0)
        for report in (again, again_rows):
            assert report.ok()
            for counts in report.counts.values():
                assert counts.inserted == counts.updated == counts.rejected == 0
                assert counts.unchanged == counts.read
        assert _tables(engine, "bulk") == _tables(engine, "rows")
    finally:
        engine.dispose()

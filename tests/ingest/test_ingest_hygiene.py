"""Nothing skipped in silence, invisible characters, NUL bytes, limits, plausible data, retractions.

Every case starts from the valid bundle and changes one thing; database cases run on
SQLite and PostgreSQL through ``db_url``.
"""

from __future__ import annotations

import csv
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from caretally.ingest import import_bundle, import_records
from caretally.store import schema
from caretally.store.db import open_database
from tests.ingest.bundles import valid_bundle, with_row, write_csv, write_jsonl

ORG = "clinic"
#: The bundle's data is from March 2026; this clock is a little later.
CLOCK = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)


def codes(report: object) -> list[tuple[str, int | None, str | None, str]]:
    return [(p.file, p.line, p.field, p.code) for p in report.problems]  # type: ignore[attr-defined]


def warning_codes(report: object) -> list[tuple[str, int | None, str | None, str]]:
    return [(p.file, p.line, p.field, p.code) for p in report.warnings]  # type: ignore[attr-defined]


# --- the bundle folder ---------------------------------------------------------------------


def test_unknown_file_is_an_error_with_the_closest_name(tmp_path: Path, sqlite_url: str) -> None:
    folder = write_csv(tmp_path / "b", valid_bundle())
    (folder / "time_entries.csv").rename(folder / "time-entries.csv")
    engine = open_database(sqlite_url, ORG)
    report = import_bundle(engine, ORG, folder, now=CLOCK)
    assert not report.stored
    assert [(p.file, p.code) for p in report.problems] == [("time-entries.csv", "unknown_file")]
    assert "did you mean time_entries.csv?" in report.problems[0].message

    ignored = import_bundle(engine, ORG, folder, now=CLOCK, ignore_unknown_files=True)
    assert ignored.ok() and ignored.stored
    assert [(w.file, w.code) for w in ignored.warnings] == [("time-entries.csv", "ignored_file")]
    assert "time_entries" not in ignored.counts


def test_hidden_files_readme_and_rejects_folder_are_not_data(tmp_path: Path, sqlite_url: str) -> None:
    folder = write_csv(tmp_path / "b", valid_bundle())
    (folder / ".DS_Store").write_bytes(b"\x00\x01junk")
    (folder / "README.md").write_text("exported by the EHR\n")
    (folder / "rejects").mkdir()
    (folder / "rejects" / "patients.rejects.csv").write_text("x\n")
    report = import_bundle(open_database(sqlite_url, ORG), ORG, folder, now=CLOCK)
    assert report.ok() and report.stored and not report.warnings


def test_folder_or_fifo_where_a_file_is_expected(tmp_path: Path, sqlite_url: str) -> None:
    folder = write_csv(tmp_path / "b", valid_bundle())
    (folder / "devices.csv").unlink()
    (folder / "devices.csv").mkdir()
    (folder / "readings.csv").unlink()
    os.mkfifo(folder / "readings.csv")  # opening it would block: it must never be opened
    report = import_bundle(open_database(sqlite_url, ORG), ORG, folder, now=CLOCK, skip_invalid=True)
    found = {(p.file, p.code) for p in report.problems}
    assert {("devices.csv", "not_a_file"), ("readings.csv", "not_a_file")} <= found
    assert "named pipe" in next(p.message for p in report.problems if p.file == "readings.csv")


def test_a_fifo_given_as_the_bundle(tmp_path: Path, sqlite_url: str) -> None:
    os.mkfifo(tmp_path / "pipe")
    report = import_bundle(open_database(sqlite_url, ORG), ORG, tmp_path / "pipe", now=CLOCK)
    assert [p.code for p in report.problems] == ["not_a_file"]


# --- encoding ------------------------------------------------------------------------------


def _readings_with_bad_byte(folder: Path, bad_line: int) -> int:
    """Rewrite readings.csv with ``bad_line - 1`` good lines before a Latin-1 byte; return its offset."""
    bundle = valid_bundle()
    template = bundle["readings"][0]
    bundle["readings"] = [
        dict(template, reading_id=f"R{n}", measured_at=f"2026-03-01T05:{n % 60:02d}:{n // 60:02d}Z")
        for n in range(bad_line - 2)
    ]
    write_csv(folder, bundle)
    path = folder / "readings.csv"
    data = path.read_bytes()
    bad = data.rstrip(b"\n").split(b"\n")[-1].replace(b"mmHg", b"mmHg\xe9") + b"\n"
    good_row = data.rstrip(b"\n").split(b"\n")[-1] + b"\n"
    path.write_bytes(data + bad + good_row)
    return len(data) + bad.index(b"\xe9")


@pytest.mark.parametrize("bad_line", [4, 900])  # 900: well past the first read-ahead block
def test_non_utf8_is_reported_once_at_its_line_and_byte(
    tmp_path: Path, sqlite_url: str, bad_line: int
) -> None:
    folder = tmp_path / "b"
    offset = _readings_with_bad_byte(folder, bad_line)
    report = import_bundle(open_database(sqlite_url, ORG), ORG, folder, now=CLOCK, skip_invalid=True)
    bad = [p for p in report.problems if p.code == "bad_encoding"]
    assert len(bad) == 1 and report.problems == bad
    assert (bad[0].file, bad[0].line) == ("readings.csv", bad_line)
    assert f"byte 0xE9 at byte offset {offset}" in bad[0].message
    assert report.counts["readings"].inserted == bad_line - 2  # every row before it was read


def test_non_utf8_in_json_lines(tmp_path: Path, sqlite_url: str) -> None:
    folder = write_jsonl(tmp_path / "b", valid_bundle())
    path = folder / "patients.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"Kahale", b"Kah\xffale")
    path.write_bytes(b"\n".join(lines))
    report = import_bundle(open_database(sqlite_url, ORG), ORG, folder, now=CLOCK)
    bad = [p for p in report.problems if p.code == "bad_encoding"]
    assert [(p.file, p.line) for p in bad] == [("patients.jsonl", 2)]
    offset = len(lines[0]) + 1 + lines[1].index(b"\xff")
    assert f"byte 0xFF at byte offset {offset}" in bad[0].message


# --- NUL, invisible characters and limits --------------------------------------------------


def test_nul_byte_is_an_error_on_both_databases(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, ORG)
    bundle = with_row(valid_bundle(), "patients", 0, family_name="Lo\x00pez")
    with_row(bundle, "readings", 1, value="131\x00/85")
    folder = write_csv(tmp_path / "b", bundle)
    report = import_bundle(engine, ORG, folder, now=CLOCK, skip_invalid=True)
    assert ("patients.csv", 2, "family_name", "nul_byte") in codes(report)
    assert ("readings.csv", 3, "value", "nul_byte") in codes(report)
    assert report.stored  # the rest was stored: no driver error on either database


def test_invisible_characters_are_removed_with_a_warning(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    bundle = with_row(valid_bundle(), "patients", 0, family_name="Lo\u200bpez\u202e")
    with_row(bundle, "readings", 0, unit="mm\u2066Hg")
    report = import_records(engine, ORG, bundle, now=CLOCK)
    assert report.ok(), report.problems
    assert warning_codes(report) == [
        ("<records>:patients[1]", 1, "family_name", "invisible_removed"),
        ("<records>:readings[1]", 1, "unit", "invisible_removed"),
    ]
    assert "U+200B, U+202E" in report.warnings[0].message and "patient P1" in report.warnings[0].message
    with engine.connect() as conn:
        name = conn.execute(select(schema.patients.c.family_name).where(schema.patients.c.patient_id == "P1"))
        assert name.scalar_one() == "Lopez"
        units = conn.execute(select(schema.readings.c.unit)).scalars().all()
        assert "mmHg" in units and not any("\u2066" in u for u in units)


def test_a_value_left_empty_names_the_patient(db_url: str) -> None:
    bundle = with_row(valid_bundle(), "patients", 1, given_name="\u200b\u202d")
    report = import_records(open_database(db_url, ORG), ORG, bundle, now=CLOCK)
    assert [c for c in codes(report) if c[0].startswith("<records>:patients")] == [
        ("<records>:patients[2]", 2, "given_name", "invisible_only")
    ]
    assert "patient P2" in report.problems[0].message


def test_tabs_and_newlines_keep_their_meaning(sqlite_url: str) -> None:
    bundle = with_row(valid_bundle(), "time_entries", 0, note="line one\nline\ttwo")
    engine = open_database(sqlite_url, ORG)
    report = import_records(engine, ORG, bundle, now=CLOCK)
    assert report.ok() and not report.warnings
    with engine.connect() as conn:
        note = conn.execute(select(schema.time_entries.c.note).where(schema.time_entries.c.entry_id == "T1"))
        assert note.scalar_one() == "line one\nline\ttwo"


@pytest.mark.parametrize(
    ("stem", "field", "ok", "too_long"),
    [
        ("time_entries", "note", "n" * 4000, "n" * 4001),
        ("readings", "value", "9" * 64, "9" * 65),
        ("patients", "family_name", "f" * 4000, "f" * 4001),
        ("readings", "unit", "u" * 32, "u" * 33),
        ("patients", "patient_id", "P2", "P" * 65),
    ],
)
def test_documented_length_limits(sqlite_url: str, stem: str, field: str, ok: str, too_long: str) -> None:
    engine = open_database(sqlite_url, ORG)
    index = 1 if stem == "patients" else 0
    fine = import_records(engine, ORG, with_row(valid_bundle(), stem, index, **{field: ok}), now=CLOCK)
    assert fine.ok(), fine.problems
    refused = import_records(
        engine, ORG, with_row(valid_bundle(), stem, index, **{field: too_long}), now=CLOCK
    )
    assert (f"<records>:{stem}[{index + 1}]", index + 1, field, "too_long") in codes(refused)


# --- plausible data ------------------------------------------------------------------------


def test_reading_before_birth_is_rejected_on_both_paths(db_url: str, tmp_path: Path) -> None:
    bundle = with_row(valid_bundle(), "patients", 0, birth_date="2026-03-02")
    folder = write_csv(tmp_path / "b", bundle)  # CSV: the fast path sees these rows first
    report = import_bundle(open_database(db_url, ORG), ORG, folder, now=CLOCK)
    # P1's readings on 2026-02-28/03-01 local (Chicago) are before the birth date; 03-07 is not.
    assert [c for c in codes(report)] == [
        ("readings.csv", 2, "measured_at", "before_birth"),
        ("readings.csv", 3, "measured_at", "before_birth"),
    ]


def test_future_reading_depends_on_the_clock_and_the_skew(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, ORG)
    folder = write_csv(tmp_path / "b", valid_bundle())
    early = datetime(2026, 3, 6, 23, 0, tzinfo=UTC)  # the 03-08 reading is 33 hours later
    report = import_bundle(engine, ORG, folder, now=early)
    assert codes(report) == [("readings.csv", 4, "measured_at", "future_reading")]
    assert "24 h" in report.problems[0].message
    assert import_bundle(engine, ORG, folder, now=early, max_clock_skew=timedelta(hours=36)).ok()
    assert import_bundle(engine, ORG, folder).ok()  # no clock given: no upper bound (the CLI gives one)


def _entry(entry_id: str, start: str, minutes: int, who: str = "RN1") -> dict[str, object]:
    return {
        "entry_id": entry_id,
        "patient_id": "P1",
        "practitioner_id": who,
        "program": "RPM",
        "started_at": start,
        "minutes": str(minutes),
        "activity": "review",
        "interactive": "false",
    }


def test_overlapping_time_is_a_warning_within_the_bundle_and_against_the_store(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    first = valid_bundle()
    first["time_entries"] = [_entry("A", "2026-03-11T14:00:00Z", 30), _entry("B", "2026-03-11T14:20:00Z", 20)]
    report = import_records(engine, ORG, first, now=CLOCK)
    assert report.ok() and report.stored
    assert warning_codes(report) == [("<records>:time_entries[2]", 2, "started_at", "overlapping_time")]
    assert "overlaps A" in report.warnings[0].message and "by 10 min" in report.warnings[0].message

    later = {
        "time_entries": [
            _entry("C", "2026-03-11T14:35:00Z", 10),
            _entry("D", "2026-03-11T14:35:00Z", 10, "NP1"),
        ]
    }
    again = import_records(engine, ORG, later, now=CLOCK)
    assert warning_codes(again) == [("<records>:time_entries[1]", 1, "started_at", "overlapping_time")]
    assert "overlaps B" in again.warnings[0].message


def test_more_than_sixteen_hours_in_a_day_names_the_performer(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    bundle = valid_bundle()
    bundle["time_entries"] = [
        _entry("L1", "2026-03-12T12:00:00Z", 600),
        _entry("L2", "2026-03-12T22:00:00Z", 420),
    ]
    report = import_records(engine, ORG, bundle, now=CLOCK)
    assert report.ok()
    assert warning_codes(report) == [("<records>:time_entries[2]", 2, "practitioner_id", "long_day")]
    assert "RN1 has 17.0 hours of time entries on 2026-03-12" in report.warnings[0].message
    short = valid_bundle()
    short["time_entries"] = [
        _entry("S1", "2026-03-13T12:00:00Z", 600),
        _entry("S2", "2026-03-13T22:00:00Z", 360),
    ]
    assert not import_records(engine, ORG, short, now=CLOCK).warnings  # exactly 16 h is allowed


# --- retractions ---------------------------------------------------------------------------


def _lock_a_run(engine: object, month: str, patient: str) -> str:
    run_id = f"run-{month}"
    now = datetime(2026, 4, 2, tzinfo=UTC)
    with engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            insert(schema.billing_runs).values(
                run_id=run_id,
                org_id=ORG,
                month=month,
                status="locked",
                engine_version="t",
                ruleset_hash="h",
                input_digest="i",
                lines_digest="l",
                created_at=now,
                locked_at=now,
                settings={},
            )
        )
        conn.execute(
            insert(schema.run_decisions).values(
                run_id=run_id,
                org_id=ORG,
                patient_id=patient,
                facts_digest="f",
                billable_count=1,
                decisions=[],
            )
        )
    return run_id


def test_retractions_delete_with_an_audit_row(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, ORG)
    assert import_records(engine, ORG, valid_bundle(), now=CLOCK).ok()
    folder = tmp_path / "fix"
    folder.mkdir()
    with (folder / "retractions.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerows(
            [
                ("file", "id", "reason"),
                ("readings", "MSK-0001", "sent twice"),
                ("time_entries.csv", "T3", "wrong patient"),
            ]
        )
    report = import_bundle(engine, ORG, folder, now=CLOCK)
    assert report.ok(), report.problems
    assert (report.counts["retractions"].read, report.counts["retractions"].deleted) == (2, 2)
    assert report.to_json()["counts"]["retractions"]["deleted"] == 2
    with engine.connect() as conn:
        left = conn.execute(select(schema.readings.c.reading_key)).scalars().all()
        assert "MSK-0001" not in left and len(left) == 3
        audits = (
            conn.execute(select(schema.audit_changes).order_by(schema.audit_changes.c.id)).mappings().all()
        )
    assert [(a["table_name"], a["record_key"]) for a in audits] == [
        ("readings", "MSK-0001"),
        ("time_entries", "T3"),
    ]
    assert audits[0]["new_values"] == {"retraction_reason": "sent twice"}
    assert audits[0]["old_values"]["value"] == "95" and audits[0]["batch_id"] == report.batch_id


def test_retraction_refused_for_unknown_records_and_locked_runs(db_url: str) -> None:
    engine = open_database(db_url, ORG)
    assert import_records(engine, ORG, valid_bundle(), now=CLOCK).ok()
    run_id = _lock_a_run(engine, "2026-03", "P1")
    retractions = [
        {"file": "readings", "id": "nope", "reason": "x"},
        {"file": "time_entries", "id": "T1", "reason": "x"},  # P1, March: used by the locked run
        {"file": "enrollments", "id": "E1", "reason": "x"},  # open since January: March is inside
        {"file": "time_entries", "id": "T3", "reason": "x"},  # P2: no locked decisions
        {"file": "patients", "id": "P1", "reason": "x"},
    ]
    report = import_records(engine, ORG, {"retractions": retractions}, now=CLOCK)
    assert not report.stored
    assert [(p.line, p.field, p.code) for p in report.problems] == [
        (1, "id", "unknown_retraction"),
        (2, "id", "retraction_locked"),
        (3, "id", "retraction_locked"),
        (5, "file", "bad_enum"),
    ]
    assert run_id in report.problems[1].message
    with engine.connect() as conn:  # refused as a whole: T3 is still there
        assert conn.execute(select(schema.time_entries.c.entry_id)).scalars().all().count("T3") == 1


def test_rejects_file_neutralises_formulas(tmp_path: Path, sqlite_url: str) -> None:
    bundle = with_row(
        valid_bundle(), "patients", 1, sex='=HYPERLINK("http://x")', city="-2+3", postal_code="-5"
    )
    folder = write_csv(tmp_path / "b", bundle)
    report = import_bundle(open_database(sqlite_url, ORG), ORG, folder, now=CLOCK, skip_invalid=True)
    rows = list(csv.DictReader((folder / "rejects" / "patients.rejects.csv").open(newline="")))
    assert rows[0]["sex"] == '\'=HYPERLINK("http://x")' and rows[0]["city"] == "'-2+3"
    assert rows[0]["postal_code"] == "-5"  # a plain number is data, not a formula
    assert report.rejects_written


def test_invisible_characters_in_a_csv_header_are_removed(tmp_path: Path, sqlite_url: str) -> None:
    folder = write_csv(tmp_path / "b", valid_bundle())
    path = folder / "practitioners.csv"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("credential", "credential\u200b", 1), encoding="utf-8")
    report = import_bundle(open_database(sqlite_url, ORG), ORG, folder, now=CLOCK)
    assert report.ok(), report.problems
    assert warning_codes(report) == [("practitioners.csv", 1, "credential", "invisible_removed")]


def test_stored_overlaps_for_a_run_summary(db_url: str) -> None:
    from caretally.ingest.plausibility import stored_overlaps

    engine = open_database(db_url, ORG)
    bundle = valid_bundle()
    bundle["time_entries"] = [
        _entry("A", "2026-03-11T14:00:00Z", 30),
        _entry("B", "2026-03-11T14:20:00Z", 20),
        _entry("C", "2026-03-11T14:20:00Z", 20, "NP1"),
    ]
    assert import_records(engine, ORG, bundle, now=CLOCK).stored
    with engine.connect() as conn:
        found = stored_overlaps(conn, ORG, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
        none = stored_overlaps(conn, ORG, datetime(2026, 4, 1, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC))
    assert [(later.entry_id, earlier.entry_id, seconds) for later, earlier, seconds in found] == [
        ("B", "A", 600)
    ]
    assert none == []

"""Bundles sent as a zip: extracted safely (no traversal, links or bombs), then imported."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from caretally.ingest.zipbundle import import_zip
from caretally.store.db import open_database
from tests.ingest.bundles import valid_bundle, with_row, write_csv
from tests.ingest.live_practice import NOW, stored_readings


def zipped(files: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def bundle_files(tmp_path: Path, folder: str = "") -> dict[str, bytes]:
    written = write_csv(tmp_path / "csv", valid_bundle())
    return {f"{folder}{p.name}": p.read_bytes() for p in sorted(written.iterdir())}


def test_a_zipped_bundle_imports_like_the_folder(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, "clinic")
    result = import_zip(engine, "clinic", zipped(bundle_files(tmp_path, "export-2026-03/")), now=NOW)
    assert result.stored and result.ok(), result.problems
    assert result.files["readings"] == {"read": 4, "inserted": 4, "unchanged": 0, "updated": 0, "rejected": 0}
    assert result.counts["inserted"] == 2 + 4 + 3 + 2 + 4 + 3
    assert ("P1", "2026-03") in result.touched and ("P2", "2026-02") in result.touched
    assert result.changed_patients == {"P1", "P2"}
    again = import_zip(engine, "clinic", zipped(bundle_files(tmp_path)), now=NOW)
    assert again.counts["inserted"] == 0 and again.touched == frozenset()


def test_problems_name_the_member_and_line(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, "clinic")
    bad = with_row(valid_bundle(), "readings", 1, measured_at="2026-03-01T19:45:00")
    write_csv(tmp_path / "bad", bad)
    files = {f"upload/{p.name}": p.read_bytes() for p in sorted((tmp_path / "bad").iterdir())}
    files["upload/notes.txt"] = b"hello"
    result = import_zip(engine, "clinic", zipped(files), now=NOW)
    assert not result.stored
    assert sorted((p.file, p.line, p.code) for p in result.problems) == [
        ("upload/notes.txt", None, "unknown_file"),
        ("upload/readings.csv", 3, "naive_timestamp"),
    ]
    partial = import_zip(engine, "clinic", zipped(files), partial=True, now=NOW)
    assert partial.stored and partial.files["readings"]["inserted"] == 3
    assert len(stored_readings(engine, "clinic")) == 3


def test_unsafe_archives_are_refused_whole(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, "clinic")
    good = bundle_files(tmp_path)

    def codes(data: bytes, **kw: int) -> list[tuple[str, str]]:
        result = import_zip(engine, "clinic", data, partial=True, now=NOW, **kw)
        assert not result.stored
        return [(p.file, p.code) for p in result.problems]

    assert codes(zipped({**good, "../escape.csv": b"x"})) == [("../escape.csv", "unsafe_path")]
    assert codes(zipped({**good, "/etc/cron.d/x": b"x"})) == [("/etc/cron.d/x", "unsafe_path")]
    assert codes(zipped(good, links={"link.csv": "/etc/passwd"})) == [("link.csv", "unsafe_path")]
    assert codes(zipped({**good, "a/b/readings.csv": b"x"})) == [("a/b/readings.csv", "nested_member")]
    assert codes(zipped({f"f{n}.csv": b"" for n in range(65)})) == [("<zip>", "too_many_members")]
    bomb = zipped({"readings.csv": b"0" * 5_000_000})
    assert len(bomb) < 20_000
    assert codes(bomb, max_bytes=1_000_000) == [("<zip>", "too_large")]
    assert codes(b"PK\x03\x04 not really") == [("<zip>", "bad_zip")]
    assert codes(zipped({"__MACOSX/._patients.csv": b"x", ".DS_Store": b"x"})) == [
        ("<zip>", "missing_source")
    ]
    assert stored_readings(engine, "clinic") == []


def test_a_file_object_is_read_and_a_lying_size_header_refused(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url, "clinic")
    result = import_zip(engine, "clinic", io.BytesIO(zipped(bundle_files(tmp_path))), now=NOW)
    assert result.stored and result.ok()
    # A member whose headers claim 10 bytes but that holds 2 MB: reading stops at the claimed
    # size and the CRC no longer matches, so it is refused before anything is imported.
    data = bytearray(zipped({"readings.csv": b"1" * 2_000_000}))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.infolist()[0]
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size, central directory
    local = info.header_offset
    data[local + 22 : local + 26] = (10).to_bytes(4, "little")  # and in the local header
    found = import_zip(engine, "clinic", bytes(data), now=NOW, max_bytes=1_000_000)
    assert not found.stored and [(p.file, p.code) for p in found.problems] == [("readings.csv", "bad_zip")]

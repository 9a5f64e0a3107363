"""A bundle sent as one zip file: extracted safely, then imported like a bundle folder.

A zip from the outside world may try to write outside the folder (``../x``, absolute
paths), smuggle a symbolic link, or expand to far more than it weighs. So every member
is checked before anything is written: its name must be a plain file name (or sit in
one common top folder, which is dropped), it must be a regular file, unencrypted, and
the members together may hold at most ``max_bytes`` once expanded — counted while
copying, not taken from the archive's own claims. Any such fault refuses the whole zip
(even with ``partial``): it is the container that is wrong, not a row.

The files are written into a fresh temporary folder with exclusive creation and handed
to ``import_bundle``; problems name the member as it is in the zip.
"""

from __future__ import annotations

import io
import shutil
import stat
import tempfile
import zipfile
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sqlalchemy import Engine

from caretally.errors import Problem
from caretally.ingest.live import LiveResult, touched_months, with_retries
from caretally.ingest.pipeline import DEFAULT_CLOCK_SKEW, import_bundle
from caretally.ingest.report import ImportReport

KIND = "bundle"
ARCHIVE = "<zip>"
#: A bundle has at most a dozen files; anything near this is not a bundle.
MAX_MEMBERS = 64
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
_COPY = 1 << 16


def _refuse(*problems: Problem) -> LiveResult:
    return LiveResult(KIND, False, None, problems=list(problems))


def _fault(member: str, code: str, message: str) -> Problem:
    return Problem(member, None, None, code, message)


def _skipped(parts: tuple[str, ...]) -> bool:
    """Hidden entries and macOS resource forks: never data, skipped like hidden files in a folder."""
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _plan(archive: zipfile.ZipFile, max_bytes: int) -> tuple[dict[str, zipfile.ZipInfo], list[Problem]]:
    """Extracted file name → member, or every reason the archive cannot be extracted."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        return {}, [
            _fault(ARCHIVE, "too_many_members", f"{len(infos)} members; a bundle has at most {MAX_MEMBERS}")
        ]
    faults: list[Problem] = []
    files: list[tuple[tuple[str, ...], zipfile.ZipInfo]] = []
    for info in infos:
        name = info.filename
        path = PurePosixPath(name)
        if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in path.parts:
            faults.append(_fault(name, "unsafe_path", "a member name must stay inside the bundle folder"))
            continue
        # The file type sits in the high bits of external_attr (Unix zips); 0 = not recorded.
        mode = stat.S_IFMT(info.external_attr >> 16)
        if stat.S_ISLNK(mode):
            faults.append(_fault(name, "unsafe_path", "symbolic links are not accepted in a bundle zip"))
            continue
        if info.is_dir():
            continue
        if mode and not stat.S_ISREG(mode):
            faults.append(_fault(name, "not_a_file", "only regular files are accepted in a bundle zip"))
            continue
        if info.flag_bits & 0x1:
            faults.append(_fault(name, "encrypted_member", "encrypted members cannot be read"))
            continue
        if _skipped(path.parts):
            continue
        files.append((path.parts, info))
    declared = sum(info.file_size for _, info in files)
    if declared > max_bytes:
        faults.append(
            _fault(
                ARCHIVE,
                "too_large",
                f"the members hold {declared:,} bytes expanded, over the {max_bytes:,} limit",
            )
        )
    tops = {parts[0] for parts, _ in files if len(parts) > 1}
    strip = len(tops) == 1 and all(len(parts) == 2 for parts, _ in files)
    plan: dict[str, zipfile.ZipInfo] = {}
    for parts, info in files:
        rest = parts[1:] if strip else parts
        if len(rest) != 1:
            faults.append(
                _fault(
                    info.filename,
                    "nested_member",
                    "bundle files must sit at the top of the zip (or in one folder)",
                )
            )
            continue
        if rest[0] in plan:
            faults.append(_fault(info.filename, "duplicate_member", f"{rest[0]} appears twice in the zip"))
            continue
        plan[rest[0]] = info
    return plan, faults


def _extract(
    archive: zipfile.ZipFile, plan: dict[str, zipfile.ZipInfo], folder: Path, max_bytes: int
) -> list[Problem]:
    total = 0
    for name, info in plan.items():
        try:
            with archive.open(info) as source, (folder / name).open("xb") as target:
                while chunk := source.read(_COPY):
                    total += len(chunk)
                    if total > max_bytes:
                        return [
                            _fault(
                                info.filename,
                                "too_large",
                                f"the zip expands to more than {max_bytes:,} bytes",
                            )
                        ]
                    target.write(chunk)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError) as exc:
            return [_fault(info.filename, "bad_zip", f"cannot read this member: {exc}")]
    return []


def import_zip(
    engine: Engine,
    org_id: str,
    data: bytes | BinaryIO,
    *,
    partial: bool = False,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
    actor: str | None = None,
    max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> LiveResult:
    """Import a zipped bundle (the files ``caretally import`` reads from a folder).

    The same report as the CLI, per file (``files``), as a ``LiveResult``; problems name
    the member and line (``patients.csv:7``). All-or-nothing unless ``partial``.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes | bytearray) else data)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return _refuse(_fault(ARCHIVE, "bad_zip", f"not a zip file: {exc}"))
    with archive, tempfile.TemporaryDirectory(prefix="caretally-zip-") as scratch:
        plan, faults = _plan(archive, max_bytes)
        folder = Path(scratch) / "bundle"
        folder.mkdir()
        faults = faults or _extract(archive, plan, folder, max_bytes)
        if faults:
            return _refuse(*faults)
        if not plan:
            return _refuse(_fault(ARCHIVE, "missing_source", "the zip holds no bundle file"))
        rejects = Path(scratch) / "rejects"

        def attempt() -> ImportReport:
            shutil.rmtree(rejects, ignore_errors=True)
            return import_bundle(
                engine,
                org_id,
                folder,
                skip_invalid=partial,
                rejects_path=rejects,
                now=now,
                max_clock_skew=max_clock_skew,
                live=True,
                actor=actor,
            )

        report = with_retries(attempt)
        names = {name: info.filename for name, info in plan.items()}

        def rename(found: Problem) -> Problem:
            label = found.file.replace(str(folder), ARCHIVE)
            head, sep, tail = label.partition(":")
            return replace(
                found,
                file=names.get(head, head) + sep + tail,
                message=found.message.replace(str(folder), ARCHIVE),
            )

        touched, patients = (
            touched_months(report.changes, now) if report.stored else (frozenset(), frozenset())
        )
        return LiveResult(
            KIND,
            report.stored,
            report.batch_id,
            problems=[rename(p) for p in report.problems],
            warnings=[rename(w) for w in report.warnings],
            touched=touched,
            changed_patients=patients,
            files=report.to_json()["counts"],
        )

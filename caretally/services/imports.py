"""Importing a bundle that arrives as a zip (the API's ``POST /imports``).

The zip is unpacked into a private temporary folder and handed to the same
``import_bundle`` the CLI uses, so validation, idempotency and the report are the CLI's.
Unpacking trusts nothing in the archive: names that climb out of the folder, absolute
names, links, devices, encrypted members and duplicate names are refused, and the bytes
actually written are counted (declared sizes can lie), so a small upload cannot expand
past ``max_unpacked`` bytes or ``max_members`` files.
"""

from __future__ import annotations

import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import Engine, update

from caretally.errors import Problem
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput
from caretally.services.ingest import Touched, after_commit
from caretally.store import schema

#: Problems listed in an answer at most (the count says how many there were).
MAX_LISTED_PROBLEMS = 10_000
_CHUNK = 1 << 16
_IGNORED_PREFIXES = ("__MACOSX/",)


@dataclass(frozen=True)
class UnpackLimits:
    max_members: int = 64
    max_unpacked: int = 2 * 1024**3


@dataclass(frozen=True)
class ImportOutcome:
    """The CLI's import report (as JSON) and whether anything was stored."""

    stored: bool
    ok: bool
    report: dict[str, Any]


def _bad(member: str, code: str, message: str) -> Problem:
    return Problem(member, None, None, code, message)


def _member_problem(info: zipfile.ZipInfo) -> Problem | None:
    name = info.filename
    if "\x00" in name or "\\" in name:
        return _bad(
            name.replace("\x00", "?"), "zip_bad_name", "the name holds a backslash or a NUL character"
        )
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or any(":" in part for part in path.parts):
        return _bad(name, "zip_absolute_path", "an absolute name would be written outside the bundle folder")
    if any(part == ".." for part in path.parts):
        return _bad(name, "zip_path_traversal", "'..' in a name would be written outside the bundle folder")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return _bad(name, "zip_symlink", "links are refused in a bundle")
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return _bad(name, "zip_special_file", "only plain files and folders are accepted")
    if info.flag_bits & 0x1:
        return _bad(name, "zip_encrypted", "encrypted members cannot be read")
    return None


def _files(archive: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    for info in archive.infolist():
        if info.filename.startswith(_IGNORED_PREFIXES):
            continue
        yield info


def unpack(source: IO[bytes] | Path, into: Path, limits: UnpackLimits = UnpackLimits()) -> Path:
    """Unpack a bundle zip into ``into``; returns the folder holding the bundle's files.

    A zip made of a folder (every file under one top folder) gives that folder. Every
    fault of every member is reported at once as ``InvalidInput``.
    """
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InvalidInput(
            "the body is not a zip archive", hint="send the bundle files zipped", code="not_a_zip"
        ) from None
    with archive:
        members = list(_files(archive))
        problems = [p for p in (_member_problem(i) for i in members) if p is not None]
        names = [i.filename.rstrip("/") for i in members]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        problems.extend(
            _bad(n, "zip_duplicate_name", "the archive holds this name twice") for n in duplicates
        )
        files = [i for i in members if not i.is_dir()]
        if len(files) > limits.max_members:
            problems.append(
                _bad(
                    "<zip>",
                    "zip_too_many_files",
                    f"{len(files)} files; a bundle has at most {limits.max_members}",
                )
            )
        if sum(i.file_size for i in files) > limits.max_unpacked:
            problems.append(
                _bad(
                    "<zip>",
                    "zip_too_large",
                    f"the files would unpack to more than {limits.max_unpacked} bytes",
                )
            )
        if not files and not problems:
            problems.append(_bad("<zip>", "zip_empty", "the archive holds no files"))
        if problems:
            raise InvalidInput("the zip cannot be used as a bundle", code="bad_zip", problems=problems)
        written = 0
        root = into.resolve()
        for info in files:
            target = (root / info.filename).resolve()
            if root not in target.parents:
                raise InvalidInput(
                    "the zip cannot be used as a bundle",
                    code="bad_zip",
                    problems=[_bad(info.filename, "zip_path_traversal", "the name leaves the bundle folder")],
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            declared = info.file_size
            count = 0
            try:
                with archive.open(info) as src, target.open("wb") as out:
                    while chunk := src.read(_CHUNK):
                        count += len(chunk)
                        written += len(chunk)
                        if count > declared or written > limits.max_unpacked:
                            raise InvalidInput(
                                "the zip cannot be used as a bundle",
                                code="bad_zip",
                                problems=[
                                    _bad(info.filename, "zip_too_large", "the member expands beyond its size")
                                ],
                            )
                        out.write(chunk)
            except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
                raise InvalidInput(
                    "the zip cannot be used as a bundle",
                    code="bad_zip",
                    problems=[_bad(info.filename, "zip_corrupt", f"cannot be read: {type(exc).__name__}")],
                ) from None
    tops = {PurePosixPath(i.filename).parts[0] for i in files}
    nested = all(len(PurePosixPath(i.filename).parts) > 1 for i in files)
    if len(tops) == 1 and nested:
        return root / tops.pop()
    return root


def _patients_in(folder: Path) -> set[str]:
    """Every patient id the bundle's files name: the patients an import wrote for."""
    from caretally.ingest.pipeline import STEMS
    from caretally.ingest.sources import discover

    sources, _problems = discover(folder, STEMS, ignore_unknown=True)
    found: set[str] = set()
    for source in sources:
        for record in source.records():
            value = record.raw.get("patient_id")
            if isinstance(value, str) and value.strip():
                found.add(value.strip()[:64])
    return found


def import_zip(
    engine: Engine,
    actor: Actor,
    upload: IO[bytes] | Path,
    *,
    partial: bool = False,
    limits: UnpackLimits = UnpackLimits(),
    label: str = "bundle.zip",
    touched: Touched | None = None,
) -> ImportOutcome:
    """Import a zipped bundle for the actor's organization.

    All-or-nothing unless ``partial`` (the CLI's ``--skip-invalid``): then the valid
    rows are stored and the rejected ones are listed in the report.
    """
    from caretally.ingest import import_bundle

    def work(note: audit.AuditNote) -> ImportOutcome:
        workdir = Path(tempfile.mkdtemp(prefix="caretally-import-"))
        try:
            folder = unpack(upload, workdir / "bundle", limits)
            report = import_bundle(
                engine,
                actor.org_id,
                folder,
                skip_invalid=partial,
                rejects_path=workdir / "rejects",
                now=datetime.now(UTC),
            )
            if report.stored and report.batch_id is not None:
                source = f"upload {label[:80]} by {actor.actor}"
                with engine.begin() as conn:
                    b = schema.import_batches
                    conn.execute(update(b).where(b.c.batch_id == report.batch_id).values(source=source))
                report.source = source
                note.touch(_patients_in(folder))
            else:
                report.source = f"upload {label[:80]}"
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        body = report.to_json()
        body.pop("rejects", None)  # server-side temporary files: gone already
        total = len(body["problems"])
        if total > MAX_LISTED_PROBLEMS:
            body["problems"] = body["problems"][:MAX_LISTED_PROBLEMS]
        body["problems_total"] = total
        note.detail = {
            "batch_id": report.batch_id,
            "stored": report.stored,
            "problems": total,
            "partial": partial,
        }
        return ImportOutcome(report.stored, report.ok(), body)

    outcome = audit.audited_call(engine, actor, "import.create", "imports", work)
    if outcome.stored:
        after_commit(touched, actor.org_id)
    return outcome


def list_batches(engine: Engine, actor: Actor, limit: int | None = None) -> list[Any]:
    """The organization's import batches, newest first (counts only: no PHI, not audited)."""
    from caretally.billing.records import list_imports

    return list_imports(engine, actor.org_id, limit)

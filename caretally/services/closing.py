"""Closing a month: lock its current run, and download its claims.

Both call the billing layer the CLI's ``lock`` and ``export`` call. A refusal there (no
run to lock, a provisional run not accepted, no claim lines, no practice identity) is a
``Conflict`` carrying the refusal's stable code, so the API answers 409 with the same
words the CLI prints.

The 837P and FHIR claims need the practice identity (who bills, who submits, where each
payer's claims go). The service reads it from the server's ``CARETALLY_PRACTICE_FILE``:
a practice TOML file (``docs/exports.md``) for a server of one practice, or a folder
holding ``<organization id>.toml`` per organization. A file on the server, not a value an
API client sends: the identity decides where claims go and is an operator's setting, as
the database URL is.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory

from sqlalchemy import Engine

from caretally.errors import ProblemsError, Refusal
from caretally.model import PracticeIdentity
from caretally.services import audit
from caretally.services.context import Actor
from caretally.services.errors import Conflict, InvalidInput
from caretally.services.months import month_period

FORMATS = ("csv", "json", "x12", "fhir")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "x12": "application/edi-x12",
    "fhir": "application/fhir+json",
    "zip": "application/zip",
}
EXTENSIONS = {"csv": "csv", "json": "json", "x12": "x12", "fhir": "json"}
PRACTICE_SETTING = "CARETALLY_PRACTICE_FILE"
_SAFE_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class LockedRun:
    run_id: str
    month: str
    status: str
    locked_at: datetime | None
    provisional_accepted: bool


@dataclass(frozen=True)
class ClaimsFile:
    """What a download answers: the bytes, their media type and a file name."""

    content: bytes
    media_type: str
    filename: str
    run_id: str
    run_status: str
    lines: int
    interchanges: int  # 837P files (several receivers: zipped together)


def _conflict(exc: Refusal) -> Conflict:
    p = exc.problem
    return Conflict(p.message, hint=p.hint, code=p.code)


def lock_month(engine: Engine, actor: Actor, month: str, *, accept_provisional: bool = False) -> LockedRun:
    """Lock the month's current draft run (``caretally lock``); recorded in the audit trail."""
    from caretally.billing.run import RunError
    from caretally.billing.run import lock_month as _lock

    month_period(month)
    resource = f"months/{month}/lock"
    try:
        run = _lock(engine, actor.org_id, month, accept_provisional=accept_provisional)
    except RunError as exc:
        audit.record(
            engine, actor, "month.lock", resource, outcome=audit.INVALID, detail={"refused": exc.problem.code}
        )
        raise _conflict(exc) from None
    audit.record(
        engine,
        actor,
        "month.lock",
        resource,
        detail={"run_id": run.run_id, "accept_provisional": accept_provisional},
    )
    return LockedRun(
        run.run_id,
        run.month,
        run.status,
        run.locked_at,
        run.provisional_accepted,
    )


def practice_identity(practice_file: str | Path | None, org_id: str) -> PracticeIdentity | None:
    """The organization's practice identity from the server's practice file (or folder).

    ``None`` when none is configured for the organization; an unusable file is a
    ``Conflict`` listing every fault the loader found.
    """
    if not practice_file:
        return None
    from caretally.settings_practice import load_practice

    path = Path(practice_file)
    if path.is_dir():
        if not _SAFE_ORG.fullmatch(org_id):
            return None
        path = path / f"{org_id}.toml"
        if not path.is_file():
            return None
    try:
        return load_practice(path)
    except ProblemsError as exc:
        raise Conflict(
            "the server's practice identity for this organization is unusable "
            f"({len(exc.problems)} problem(s))",
            hint=f"an operator fixes the file {PRACTICE_SETTING} names; docs/exports.md lists each key",
            code="practice_unusable",
            problems=exc.problems,
        ) from None
    except OSError as exc:
        raise Conflict(
            f"the server cannot read its practice identity file: {exc.strerror or type(exc).__name__}",
            hint=f"check {PRACTICE_SETTING}",
            code="practice_unusable",
        ) from None


def export_claims(
    engine: Engine,
    actor: Actor,
    month: str,
    fmt: str,
    *,
    practice: PracticeIdentity | None = None,
) -> ClaimsFile:
    """The month's current run as CSV, JSON, an 837P or a FHIR bundle, in memory.

    An 837P whose claims go to several receivers is several interchanges: they come back
    zipped, one file per receiver, named as ``caretally export`` names them. The export
    discloses every patient with a line, and the audit event lists them.
    """
    from caretally.billing.exporting import ExportRefused, export_month
    from caretally.services.audit import run_patients

    month_period(month)
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {', '.join(FORMATS)}", code="invalid_format")

    def work(note: audit.AuditNote) -> ClaimsFile:
        with TemporaryDirectory(prefix="caretally-claims-") as folder:
            out = Path(folder) / f"claims-{month}.{EXTENSIONS[fmt]}"
            try:
                result = export_month(engine, actor.org_id, month, fmt, out, practice=practice)
            except ExportRefused as exc:
                if exc.problem.code == "practice_needed":
                    raise Conflict(
                        f"{fmt} claims need the practice identity, and the server has none for this "
                        "organization",
                        hint=f"an operator sets {PRACTICE_SETTING} (docs/api.md, Month close)",
                        code="practice_needed",
                    ) from None
                raise _conflict(exc) from None
            except ProblemsError as exc:
                raise Conflict(
                    f"the claims cannot be written: {len(exc.problems)} problem(s)",
                    hint="fix the practice identity or the data named below, then download again",
                    code="claims_unwritable",
                    problems=exc.problems,
                ) from None
            run = result.run
            note.touch(run_patients(engine, run.run_id))
            note.detail = {"format": fmt, "run_id": run.run_id, "lines": result.lines}
            paths = [f.path for f in result.files] or [result.path]
            if len(paths) == 1:
                content, media, name = paths[0].read_bytes(), MEDIA_TYPES[fmt], paths[0].name
            else:
                content, media, name = _zipped(paths), MEDIA_TYPES["zip"], f"claims-{month}.x12.zip"
        return ClaimsFile(content, media, name, run.run_id, run.status, result.lines, len(result.files))

    return audit.audited_call(engine, actor, "claims.export", f"months/{month}/claims", work)


def _zipped(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            archive.write(path, path.name)
    return buffer.getvalue()

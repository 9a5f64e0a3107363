"""``POST /imports``: a zipped bundle in, the CLI's per-file report out; and the batch list."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from caretally.api import problems
from caretally.api.deps import ImportsReader, ImportsWriter, ServiceDep
from caretally.api.schemas import ImportBatchPublic, ImportReportPublic
from caretally.services import imports
from caretally.services.errors import ServiceError

router = APIRouter(prefix="/imports", tags=["imports"])

ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
_SPOOL_IN_MEMORY = 8 * 1024**2


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


async def bundle_upload(request: Request) -> AsyncIterator[IO[bytes]]:
    """The request body spooled to a private temporary file as it streams in.

    The server's middleware counts the bytes and stops the request at the upload limit,
    so nothing larger is ever held.
    """
    given = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if given not in ZIP_TYPES:
        raise UnsupportedMediaType(
            "send the bundle as a zip archive",
            hint="Content-Type: application/zip",
            code="unsupported_media_type",
        )
    spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # noqa: SIM115 - closed below
    try:
        async for chunk in request.stream():
            spool.write(chunk)
        spool.seek(0)
        yield spool
    finally:
        spool.close()


BundleUpload = Annotated[IO[bytes], Depends(bundle_upload)]

_BODY = {
    "requestBody": {
        "required": True,
        "description": "The bundle files (CSV, JSON Lines or bundle.json), zipped; one top folder allowed.",
        "content": {
            t: {"schema": {"type": "string", "format": "binary"}} for t in ("application/zip", ZIP_TYPES[2])
        },
    }
}


def _item(p: dict[str, Any]) -> dict[str, Any]:
    where = p["file"] if p.get("line") is None else f"{p['file']}:{p['line']}"
    return {
        "code": p["code"],
        "message": p["message"],
        "pointer": None,
        "source": where,
        "field": p.get("field"),
    }


@router.post(
    "",
    response_model=ImportReportPublic,
    responses=problems.responses(*problems.GUARDED, 415),
    openapi_extra=_BODY,
    summary="Import a zipped bundle: the same validation and per-file report as `caretally import`",
)
def create_import(
    request: Request,
    actor: ImportsWriter,
    service: ServiceDep,
    upload: BundleUpload,
    partial: Annotated[
        bool, Query(description="Store the valid rows and report the rest (the CLI's --skip-invalid)")
    ] = False,
) -> Any:
    """All-or-nothing by default: a bundle with any problem stores nothing and answers 422
    with every problem; ``partial=true`` stores the valid rows and answers 200 with the
    rejected ones listed."""
    outcome = imports.import_zip(
        service.engine, actor, upload, partial=partial, limits=service.unpack, touched=service.touched
    )
    report = outcome.report
    body = {
        **{k: report[k] for k in ("ok", "stored", "batch_id", "source", "counts", "problems_total")},
        "problems": [_item(p) for p in report["problems"]],
        "warnings": [_item(w) for w in report["warnings"]],
    }
    if not outcome.stored:
        return problems.problem(
            422,
            "bundle_refused",
            f"nothing was stored: the bundle has {report['problems_total']} problem(s)",
            hint="fix them, or send partial=true to store the valid rows",
            request_id=problems.request_id_of(request),
            errors=body["problems"],
            report={k: body[k] for k in ("counts", "problems_total", "warnings")},
        )
    return JSONResponse(ImportReportPublic.model_validate(body).model_dump(mode="json"))


@router.get(
    "",
    response_model=list[ImportBatchPublic],
    responses=problems.responses(*problems.GUARDED),
    summary="Import batches, newest first, with their counts",
)
def list_batches(
    actor: ImportsReader,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ImportBatchPublic]:
    return [ImportBatchPublic.model_validate(b) for b in imports.list_batches(service.engine, actor, limit)]

"""Every error answer is RFC 9457 ``application/problem+json``, never a stack trace.

Service errors, request validation errors, unknown routes and oversized bodies all
become the same shape: ``type``, ``title``, ``status``, ``detail``, a stable ``code``, an
optional ``hint``, the ``request_id`` (to find the server's log line) and ``errors``,
every individual fault with a JSON pointer into the body or its source (``file:line`` or
``query.limit``). Input values are never echoed: they may be PHI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from caretally.api.schemas import ProblemPublic
from caretally.errors import Problem
from caretally.services.errors import ServiceError, TooManyAttempts, Unauthenticated

MEDIA_TYPE = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_item(p: Problem) -> dict[str, Any]:
    """A stored ``Problem`` (file, line, field) as an ``errors`` entry; its row is left out."""
    where = p.file if p.line is None else f"{p.file}:{p.line}"
    return {"code": p.code, "message": p.message, "pointer": None, "source": where, "field": p.field}


def problem_body(
    status: int,
    code: str,
    detail: str,
    *,
    hint: str | None = None,
    request_id: str | None = None,
    errors: Iterable[dict[str, Any]] = (),
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": f"urn:caretally:problem:{code}",
        "title": _title(status),
        "status": status,
        "detail": detail,
        "code": code,
        "hint": hint,
        "request_id": request_id,
        "errors": list(errors),
        **extra,
    }


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    request_id: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> ProblemResponse:
    return ProblemResponse(
        problem_body(status, code, detail, request_id=request_id, **kwargs),
        status_code=status,
        headers=headers,
    )


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def _validation_item(error: dict[str, Any]) -> dict[str, Any]:
    loc: Sequence[Any] = error.get("loc") or ()
    where = loc[0] if loc else None
    rest = [str(x) for x in loc[1:]]
    item: dict[str, Any] = {"code": str(error.get("type", "invalid")), "message": str(error.get("msg", ""))}
    if where == "body":
        item["pointer"] = "/" + "/".join(x.replace("~", "~0").replace("/", "~1") for x in rest)
    else:
        item["source"] = ".".join([str(where), *rest]) if where else None
        item["field"] = rest[-1] if rest else None
    return item


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> ProblemResponse:
        headers: dict[str, str] = {}
        if isinstance(exc, TooManyAttempts):
            headers["Retry-After"] = str(exc.retry_after)
        elif isinstance(getattr(exc, "retry_after", None), int):  # a busy database (503)
            headers["Retry-After"] = str(exc.retry_after)  # type: ignore[attr-defined]
        if isinstance(exc, Unauthenticated):
            headers["WWW-Authenticate"] = "Bearer"
        return problem(
            exc.status,
            exc.code,
            exc.message,
            hint=exc.hint,
            request_id=request_id_of(request),
            errors=[problem_item(p) for p in exc.problems],
            headers=headers or None,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> ProblemResponse:
        errors = [_validation_item(e) for e in exc.errors()]
        return problem(
            422,
            "invalid_request",
            f"the request has {len(errors)} problem(s)",
            request_id=request_id_of(request),
            errors=errors,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> ProblemResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        detail = exc.detail if isinstance(exc.detail, str) else _title(exc.status_code)
        return problem(
            exc.status_code,
            code,
            detail,
            request_id=request_id_of(request),
            headers=dict(exc.headers) if exc.headers else None,
        )


def _schema_ref() -> dict[str, Any]:
    return {"$ref": "#/components/schemas/ProblemPublic"}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the problem answers a route may give."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        out[status] = {
            "description": _title(status),
            "content": {MEDIA_TYPE: {"schema": _schema_ref()}},
            "model": ProblemPublic,
        }
    return out


#: What any route may answer besides its own success: a malformed request, a body too large.
COMMON = (400, 413, 422, 500)
#: A route behind a credential adds these.
GUARDED = (*COMMON, 401, 403)

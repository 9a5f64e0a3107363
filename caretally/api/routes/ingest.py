"""Live ingest over HTTP: readings, FHIR bundles, the Tenovi webhook, time entries.

Thin: each route reads the JSON body (the middleware has already refused one over the
body limit, by its Content-Length or while it streamed), hands it to
``caretally.services.ingest`` in the thread pool and shapes the answer. All-or-nothing
by default; ``partial=true`` stores the valid items and lists the rest. A refusal is an
RFC 9457 problem whose ``errors`` hold every fault with its JSON pointer and whose
``items`` say what happened to each item; the success body is the same result.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from caretally.api import problems
from caretally.api.deps import Access, ServiceDep, client_address, require
from caretally.errors import Problem
from caretally.ingest.live import LiveResult
from caretally.services import ingest
from caretally.services.context import Actor
from caretally.services.errors import InvalidInput
from caretally.services.permissions import Permission

router = APIRouter(tags=["ingest"])

ReadingsWriter = Annotated[Actor, Depends(require(Permission.READINGS_WRITE))]
TimeWriter = Annotated[Actor, Depends(require(Permission.TIME_WRITE))]
Partial = Annotated[
    bool, Query(description="Store the valid items and report the rest (default: all or nothing)")
]
WEBHOOK_HEADER = "X-Webhook-Secret"


# -- answers ------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemPublic(_Model):
    pointer: str = Field(description="JSON pointer to the item in the request body")
    status: str = Field(
        description="inserted, unchanged, updated, retracted, rejected, ignored or not_stored"
    )
    key: str | None = Field(default=None, description="The item's own id (reading_id, entry_id)")


class IngestProblemPublic(_Model):
    code: str
    message: str
    pointer: str | None = None
    field: str | None = None


class TouchedPublic(_Model):
    patient_id: str
    month: str


class IngestResultPublic(_Model):
    kind: str
    ok: bool = Field(description="Nothing was rejected")
    stored: bool
    batch_id: str | None
    counts: dict[str, int]
    items: list[ItemPublic]
    problems: list[IngestProblemPublic]
    warnings: list[IngestProblemPublic]
    touched: list[TouchedPublic] = Field(description="Patient-months whose stored data changed")
    changed_patients: list[str]


def _problem(p: Problem) -> dict[str, Any]:
    return {"code": p.code, "message": p.message, "pointer": p.pointer, "field": p.field}


def _body(result: LiveResult) -> dict[str, Any]:
    out = result.to_json()
    out.pop("files", None)
    out["problems"] = [_problem(p) for p in result.problems]
    out["warnings"] = [_problem(w) for w in result.warnings]
    return out


def _answer(request: Request, call: Callable[[], LiveResult]) -> Any:
    """Run the service call; shape its result, or its refusal with every problem and item."""
    try:
        result = call()
    except (ingest.IngestRefused, ingest.LockedMonth) as refused:
        body = _body(refused.result)
        return problems.problem(
            refused.status,
            refused.code,
            refused.message,
            hint=refused.hint,
            request_id=problems.request_id_of(request),
            errors=[{**e, "source": None} for e in body["problems"]],
            items=body["items"],
            counts=body["counts"],
            warnings=body["warnings"],
        )
    return JSONResponse(IngestResultPublic.model_validate(_body(result)).model_dump(mode="json"))


class _NotFinite(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


async def json_body(request: Request) -> Any:
    """The parsed JSON body. Its size was bounded by the middleware as it streamed in.

    Strict JSON: Python's parser would accept ``NaN``, ``Infinity`` and numbers too large
    for a float (read as infinity), none of which is JSON or a reading.
    """
    raw = await request.body()
    if not raw.strip():
        raise InvalidInput("the request has no body", hint="send JSON", code="empty_body")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except _NotFinite:
        raise InvalidInput(
            "the body holds NaN, Infinity or a number too large to be a measurement",
            code="bad_json",
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidInput(f"the body is not JSON{where}", code="bad_json") from None


JsonBody = Annotated[Any, Depends(json_body)]

_ANSWERS = problems.responses(*problems.GUARDED, 503)


def _request_body(description: str, schema: dict[str, Any], example: Any) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


_READING_EXAMPLE = {
    "reading_id": "cuff-7731",
    "patient_id": "P1",
    "device_id": "D1",
    "measured_at": "2026-03-05T08:00:00-06:00",
    "type": "blood_pressure",
    "value": "128/82",
    "unit": "mmHg",
    "transmission": "auto",
}
_TIME_EXAMPLE = {
    "entry_id": "T-991",
    "patient_id": "P1",
    "practitioner_id": "RN1",
    "program": "RPM",
    "started_at": "2026-03-05T10:00:00-06:00",
    "minutes": "12",
    "activity": "reviewed readings, called patient",
    "interactive": "true",
    "modality": "phone",
}
_ARRAY = {"type": "array", "items": {"type": "object"}}


# -- routes -------------------------------------------------------------------------------


@router.post(
    "/readings",
    response_model=IngestResultPublic,
    responses=_ANSWERS,
    openapi_extra=_request_body(
        "A JSON array of readings with the readings.csv fields", _ARRAY, [_READING_EXAMPLE]
    ),
    summary="Post readings: a known reading_id with the same content is unchanged, with other content "
    "an audited update",
)
async def post_readings(
    request: Request, actor: ReadingsWriter, service: ServiceDep, body: JsonBody, partial: Partial = False
) -> Any:
    return await run_in_threadpool(
        _answer,
        request,
        lambda: ingest.post_readings(service.engine, actor, body, partial=partial, touched=service.touched),
    )


@router.post(
    "/fhir",
    response_model=IngestResultPublic,
    responses=_ANSWERS,
    openapi_extra=_request_body(
        "A FHIR R4 Bundle (batch, transaction or collection) of vital-sign Observations",
        {"type": "object"},
        {"resourceType": "Bundle", "type": "collection", "entry": []},
    ),
    summary="Post a FHIR R4 Bundle of vital-sign Observations (an Observation without a device "
    "is a manual reading)",
)
async def post_fhir(
    request: Request, actor: ReadingsWriter, service: ServiceDep, body: JsonBody, partial: Partial = False
) -> Any:
    return await run_in_threadpool(
        _answer,
        request,
        lambda: ingest.post_fhir(service.engine, actor, body, partial=partial, touched=service.touched),
    )


def tenovi_actor(request: Request, service: ServiceDep) -> Actor:
    """The organization whose Tenovi secret the request carries; never one named in the body."""
    sent = request.headers.get(WEBHOOK_HEADER)
    return ingest.webhook_actor(
        service.engine,
        "tenovi",
        sent,
        request_id=getattr(request.state, "request_id", None),
        client_address=client_address(request),
    )


tenovi_actor.access = Access("webhook")  # type: ignore[attr-defined]
TenoviSender = Annotated[Actor, Depends(tenovi_actor)]


@router.post(
    "/webhooks/tenovi",
    response_model=IngestResultPublic,
    responses=_ANSWERS,
    openapi_extra={
        **_request_body(
            "Tenovi's measurement webhook: a JSON array of measurements (or one measurement)",
            {"oneOf": [_ARRAY, {"type": "object"}]},
            [
                {
                    "metric": "blood_pressure",
                    "hwi_device_id": "TNV-CUFF-1",
                    "value_1": 128,
                    "value_2": 82,
                    "timestamp": "2026-03-05T14:00:00Z",
                    "timezone_offset": -6,
                }
            ],
        ),
        "security": [],
    },
    summary="Tenovi's measurement webhook, authenticated by the organization's shared secret "
    f"in {WEBHOOK_HEADER}",
)
async def tenovi_webhook(
    request: Request, actor: TenoviSender, service: ServiceDep, body: JsonBody, partial: Partial = False
) -> Any:
    return await run_in_threadpool(
        _answer,
        request,
        lambda: ingest.post_tenovi(service.engine, actor, body, partial=partial, touched=service.touched),
    )


@router.post(
    "/time-entries",
    response_model=IngestResultPublic,
    responses=problems.responses(*problems.GUARDED, 409, 503),
    openapi_extra=_request_body(
        "A JSON array of time entries with the time_entries.csv fields", _ARRAY, [_TIME_EXAMPLE]
    ),
    summary="Log time entries (refused with 409 in a month a locked run billed)",
)
async def post_time_entries(
    request: Request, actor: TimeWriter, service: ServiceDep, body: JsonBody, partial: Partial = False
) -> Any:
    return await run_in_threadpool(
        _answer,
        request,
        lambda: ingest.post_time_entries(
            service.engine, actor, body, partial=partial, touched=service.touched
        ),
    )


EntryId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[^\s/]+$")]


@router.patch(
    "/time-entries/{entry_id}",
    response_model=IngestResultPublic,
    responses=problems.responses(*problems.GUARDED, 404, 409, 503),
    openapi_extra=_request_body(
        "The fields to change, with their new values", {"type": "object"}, {"minutes": "14"}
    ),
    summary="Correct a time entry: an audited amendment (409 in a month a locked run billed)",
)
async def amend_time_entry(
    request: Request, entry_id: EntryId, actor: TimeWriter, service: ServiceDep, body: JsonBody
) -> Any:
    return await run_in_threadpool(
        _answer,
        request,
        lambda: ingest.amend_time_entry(service.engine, actor, entry_id, body, touched=service.touched),
    )

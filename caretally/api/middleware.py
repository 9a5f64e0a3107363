"""What wraps every request: a request id, a body size limit, a last-resort error answer,
and an access log without PHI.

Written as plain ASGI so that (unlike Starlette's server-error middleware, which re-raises
for the server to log) an unexpected exception is answered here with a 500 problem and
logged here — as its type, the route's template and the stack frames, never its message,
which may quote a row (SQL parameters, a patient's name).

The access log prints the route *template* (``/api/v1/patients/{patient_id}``), never the
path or query string, because those carry patient ids; uvicorn's own access log is off
(``caretally serve`` runs it with ``access_log=False``).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caretally.api.problems import MEDIA_TYPE, problem_body

access_log = logging.getLogger("caretally.api.access")
error_log = logging.getLogger("caretally.api")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit.

    An ``HTTPException`` so that FastAPI's body parsing passes it on (it turns other
    exceptions met while reading a body into a 400) and it is answered as a 413 problem.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=_too_large(limit))
        self.limit = limit


class ServiceMiddleware:
    """Request id, body limit, catch-all error answer and access log, in one ASGI layer.

    ``upload_paths`` get ``upload_limit`` bytes; every other body gets ``body_limit``.
    A declared ``Content-Length`` over the limit is refused before any byte is read; a
    body without one is counted as it streams and refused the moment it passes the limit.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limit: int,
        upload_limit: int,
        upload_paths: frozenset[str],
        plain_paths: frozenset[str] = frozenset(),
        log_requests: bool = True,
    ) -> None:
        self.app = app
        self.body_limit = body_limit
        self.upload_limit = upload_limit
        self.upload_paths = upload_paths
        self.plain_paths = plain_paths  # paths without ids, logged as they are when no route matched
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder: dict[str, int] = {}
        response_started = False

        cacheable = str(scope.get("path", "")).startswith("/static/")

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder["status"] = message["status"]
                sent = list(message.get("headers", []))
                sent.append((b"x-request-id", request_id.encode()))
                if cacheable is False and not any(k.lower() == b"cache-control" for k, _ in sent):
                    # Answers may carry PHI: no browser or proxy keeps a copy.
                    sent.append((b"cache-control", b"no-store"))
                message["headers"] = sent
            await send(message)

        limit = self.upload_limit if scope.get("path") in self.upload_paths else self.body_limit
        try:
            declared = headers.get("content-length")
            if declared is not None:
                if not declared.isdigit():
                    await self._answer(
                        send_wrapper, 400, "bad_content_length", "Content-Length is not a number", request_id
                    )
                    return
                if int(declared) > limit:
                    await self._answer(send_wrapper, 413, "body_too_large", _too_large(limit), request_id)
                    return
            received = 0

            async def counting_receive() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            await self.app(scope, counting_receive, send_wrapper)
        except BodyTooLarge as exc:
            if not response_started:
                await self._answer(send_wrapper, 413, "body_too_large", _too_large(exc.limit), request_id)
        except Exception as exc:
            route = self._route(scope)
            frames = "".join(traceback.format_tb(exc.__traceback__))
            error_log.error(
                "unexpected %s in %s %s (request %s)\n%s",
                type(exc).__name__,
                scope.get("method"),
                route,
                request_id,
                frames,
            )
            if not response_started:
                await self._answer(
                    send_wrapper,
                    500,
                    "internal_error",
                    "the server failed to answer this request; it has been logged",
                    request_id,
                    hint=f"quote request id {request_id} when you report it",
                )
        finally:
            if self.log_requests:
                access_log.info(
                    '%s %s %s %s %.1fms "%s"',
                    _client(scope),
                    scope.get("method"),
                    self._route(scope),
                    status_holder.get("status", 0),
                    (time.perf_counter() - started) * 1000,
                    request_id,
                )

    def _route(self, scope: Scope) -> str:
        path = scope.get("path")
        if "route" not in scope and path in self.plain_paths:
            return str(path)
        return _route_template(scope)

    @staticmethod
    async def _answer(
        send: Send, status: int, code: str, detail: str, request_id: str, hint: str | None = None
    ) -> None:
        body = json.dumps(problem_body(status, code, detail, hint=hint, request_id=request_id)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _too_large(limit: int) -> str:
    return f"the request body is larger than this server accepts ({limit} bytes)"


def _route_template(scope: Scope) -> str:
    """The matched route's template, or a placeholder: never the raw path (it holds ids).

    Rebuilt from the path and the matched path parameters (each segment that is a
    parameter's value becomes ``{name}``), which holds however the router nests routes.
    """
    params: Any = scope.get("path_params")
    path = scope.get("path")
    if scope.get("route") is None or not isinstance(path, str):
        return "<unmatched>"
    if not params:
        return path
    names = {str(v): k for k, v in params.items()}
    return "/".join(f"{{{names[part]}}}" if part in names else part for part in path.split("/"))


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "-"

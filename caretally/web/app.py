"""The web app mounted on the service's FastAPI app: ``mount_web(app)`` from ``create_app``.

Pages live at ``/`` beside the API at ``/api/v1``; both call the same services. What
this module adds to the app:

- the page routers (``caretally.web.routes``) and ``/static`` (the package's own files);
- HTML answers for failures on web paths — a 403, 404, 405, 422 or 500 page with one
  clear line and never a traceback — while API paths keep their problem+json answers
  (the handlers installed by ``caretally.api.problems`` are wrapped, not replaced);
- a redirect to ``/signin`` (``?expired=1`` after inactivity) for a page asked for
  without a usable session.

The catch-all 500 page is written by a small ASGI layer inside ``ServiceMiddleware``:
it answers the browser, then lets the exception go on so the service middleware logs it
(type and frames only) exactly as it logs an API failure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from caretally.services.errors import ServiceError
from caretally.web import pages
from caretally.web.routes import ROUTERS
from caretally.web.routes.common import (
    PAGE_HEADERS,
    SESSION_COOKIE,
    SIGN_IN_URL,
    SignInRequired,
    Viewer,
    clear_session_cookie,
    current_viewer,
    page_response,
    render_error,
    signed_out_layout,
)
from caretally.web.templating import STATIC_DIR
from caretally.web.viewmodels import Link

STATIC_PREFIX = "/static"
#: Paths the API owns; everything else is the web app's.
API_PATHS = ("/api/", "/healthz")

Handler = Callable[[Request, Any], Awaitable[Response]]


def is_web_path(path: str) -> bool:
    """True for a page (or static file) path; the API and health check answer in JSON."""
    return not (path == "/api" or any(path == p.rstrip("/") or path.startswith(p) for p in API_PATHS))


TITLES = {
    400: "Cannot do that",
    401: "Please sign in",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed here",
    409: "Cannot do that now",
    413: "Too large",
    422: "Please check the request",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Not available right now",
}


def sentence(text: str | None) -> str | None:
    """A service's one-line message (lower-case, as the API gives it) as a sentence on a page."""
    if not text:
        return text
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def error_answer(request: Request, status: int, message: str, hint: str | None = None) -> Response:
    """The HTML error page: the signed-in frame when there is a viewer, else the plain one."""
    message, hint = sentence(message) or "", sentence(hint)
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    title = TITLES.get(status) or HTTPStatus(status).phrase
    layout = viewer.layout(title) if viewer is not None else signed_out_layout(title)
    back = Link("Go to your first page", "/") if viewer is not None else Link("Sign in", SIGN_IN_URL)
    return page_response(
        request, "error", layout, pages.error_page(status, message, hint, back), status=status
    )


def _install_errors(app: FastAPI) -> None:
    def wrap(kind: type[Exception], web: Handler) -> None:
        api: Handler | None = app.exception_handlers.get(kind)  # type: ignore[assignment]

        async def handler(request: Request, exc: Any) -> Response:
            if is_web_path(request.url.path) or api is None:
                return await web(request, exc)
            return await api(request, exc)

        app.add_exception_handler(kind, handler)

    async def service_error(request: Request, exc: ServiceError) -> Response:
        answer = error_answer(request, exc.status, exc.message, exc.hint)
        retry = getattr(exc, "retry_after", None)
        if retry is not None:
            answer.headers["Retry-After"] = str(retry)
        return answer

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted({str(e.get("loc", ("", "?"))[-1]) for e in exc.errors()})
        return error_answer(
            request,
            422,
            f"this address has a value the page cannot use ({', '.join(fields)})",
            "go back and choose again, or open the page from the menu",
        )

    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        if getattr(request.state, "viewer", None) is None and request.cookies.get(SESSION_COOKIE):
            # No route ran (an unknown address): find who is signed in, for their menu.
            with contextlib.suppress(SignInRequired):
                await run_in_threadpool(current_viewer, request, request.app.state.service)
        message = {
            404: "there is no page at this address",
            405: "this address does not take that kind of request",
        }.get(status, exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase)
        return error_answer(request, status, message, "use the menu, or go back")

    async def sign_in_required(request: Request, exc: SignInRequired) -> Response:
        query = {k: v for k, v in (("expired", "1" if exc.expired else ""), ("next", exc.next_url)) if v}
        answer = RedirectResponse(
            SIGN_IN_URL + (f"?{urlencode(query)}" if query else ""),
            status_code=303,
            headers={"Cache-Control": "no-store"},
        )
        clear_session_cookie(request, answer)
        return answer

    wrap(ServiceError, service_error)
    wrap(RequestValidationError, invalid)
    wrap(StarletteHTTPException, http_error)
    app.add_exception_handler(SignInRequired, sign_in_required)  # only page routes raise it


class WebErrorMiddleware:
    """A 500 page for an unexpected failure on a web path; the failure still propagates.

    ``ServiceMiddleware`` (outside this layer) logs it and, seeing the answer started,
    does not write its JSON one. API paths pass straight through.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_web_path(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not started:
                request_id = scope.get("state", {}).get("request_id", "")
                body = render_error(
                    500,
                    "the server failed to show this page; the failure has been logged",
                    f"quote request id {request_id} if you report it" if request_id else None,
                )
                headers = [(k.lower().encode(), v.encode()) for k, v in PAGE_HEADERS.items()]
                await watch(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            *headers,
                        ],
                    }
                )
                await watch({"type": "http.response.body", "body": body})
            raise


def mount_web(app: FastAPI) -> None:
    """Add the pages, static files and HTML error answers to the service's app.

    Call it before ``ServiceMiddleware`` is added, so the 500 layer sits inside it.
    """
    for router in ROUTERS:
        app.include_router(router)
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    _install_errors(app)
    app.add_middleware(WebErrorMiddleware)

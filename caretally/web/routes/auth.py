"""Signing in and out of the web app, and the front door (``/``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from caretally.api.deps import client_address
from caretally.services import accounts
from caretally.services.errors import TooManyAttempts, Unauthenticated
from caretally.services.permissions import allowed
from caretally.web import pages
from caretally.web.nav import home_for
from caretally.web.routes.common import (
    SESSION_COOKIE,
    SIGN_IN_URL,
    SIGN_OUT_URL,
    SIGNIN_COOKIE,
    CsrfRefused,
    PostedForm,
    PublicPage,
    ServiceDep,
    SignedInViewer,
    SignInRequired,
    clear_session_cookie,
    current_viewer,
    form_text,
    is_secure,
    page_response,
    redirect,
    request_flashes,
    safe_next,
    set_session_cookie,
    signed_out_layout,
    signin_nonce,
    signin_token,
    signin_token_matches,
)
from caretally.web.templating import CSRF_FIELD

router = APIRouter(include_in_schema=False)


def _sign_in_answer(
    request: Request,
    service: ServiceDep,
    *,
    email: str = "",
    error: str | None = None,
    expired: bool = False,
    next_url: str = "",
    status: int = 200,
) -> HTMLResponse:
    nonce, new = signin_nonce(request)
    layout = signed_out_layout(
        "Sign in",
        csrf_token=signin_token(service, nonce),
        idle_minutes=service.settings.session_idle_minutes,
        flashes=request_flashes(request),
    )
    page = replace(
        pages.sign_in_page(email=email, error=error, expired=expired, next_url=safe_next(next_url)),
        action=SIGN_IN_URL,
    )
    answer = page_response(request, "signin", layout, page, status=status)
    if new:
        answer.set_cookie(
            SIGNIN_COOKIE,
            nonce,
            max_age=3600,
            path="/",
            httponly=True,
            samesite="lax",
            secure=is_secure(request),
        )
    return answer


@router.get("/", dependencies=[PublicPage])
def front_door(request: Request, service: ServiceDep) -> RedirectResponse:
    """Signed in: the role's first page. Otherwise the sign-in page."""
    try:
        viewer = current_viewer(request, service)
    except SignInRequired:
        return RedirectResponse(SIGN_IN_URL, status_code=303)
    return RedirectResponse(home_for(viewer.role, allowed) or SIGN_IN_URL, status_code=303)


@router.get("/signin", dependencies=[PublicPage])
def sign_in_form(
    request: Request,
    service: ServiceDep,
    expired: Annotated[int, Query(ge=0, le=1)] = 0,
    next: Annotated[str, Query(max_length=2000)] = "",
) -> HTMLResponse:
    return _sign_in_answer(request, service, expired=bool(expired), next_url=next)


@router.post("/signin", dependencies=[PublicPage])
def sign_in(request: Request, service: ServiceDep, form: PostedForm) -> Response:
    """Check the pre-session token, then email and password; a session cookie on success."""
    email = form_text(form, "email")[:320]
    next_url = safe_next(form_text(form, "next"))
    if not signin_token_matches(service, request, form_text(form, CSRF_FIELD)):
        raise CsrfRefused(
            "the sign-in form was refused: it did not carry its security token",
            hint="open the sign-in page again (your browser must accept cookies from this site)",
        )
    try:
        signed = accounts.sign_in(
            service.engine,
            service.policy,
            email,
            form_text(form, "password"),
            kind="cookie",
            client_address=client_address(request),
            request_id=getattr(request.state, "request_id", None),
        )
    except TooManyAttempts as exc:
        answer = _sign_in_answer(
            request, service, email=email, error=exc.message, next_url=next_url, status=429
        )
        answer.headers["Retry-After"] = str(exc.retry_after)
        return answer
    except Unauthenticated:
        return _sign_in_answer(
            request,
            service,
            email=email,
            error="That email and password do not match an active account.",
            next_url=next_url,
            status=401,
        )
    role = signed.user.role
    home = home_for(role, allowed)
    if home is None:
        # An integration account has no page: its session is ended at once.
        actor, _ = accounts.session_actor(service.engine, service.policy, signed.token)
        accounts.end_session(service.engine, actor)
        return _sign_in_answer(
            request,
            service,
            email=email,
            error="This account's role has no pages in the web app; it is for API use only.",
            status=403,
        )
    _end_previous(request, service)
    answer = RedirectResponse(next_url or home, status_code=303, headers={"Cache-Control": "no-store"})
    set_session_cookie(request, answer, signed.token, service)
    answer.delete_cookie(SIGNIN_COOKIE, path="/", httponly=True, samesite="lax", secure=is_secure(request))
    return answer


def _end_previous(request: Request, service: ServiceDep) -> None:
    """A new sign-in replaces the browser's old session rather than leaving it open."""
    old = request.cookies.get(SESSION_COOKIE)
    if not old:
        return
    try:
        actor, _ = accounts.session_actor(service.engine, service.policy, old)
    except Unauthenticated:
        return
    accounts.end_session(service.engine, actor)


@router.post(SIGN_OUT_URL)
def sign_out(request: Request, service: ServiceDep, viewer: SignedInViewer) -> RedirectResponse:
    accounts.end_session(service.engine, viewer.actor)
    answer = redirect(request, SIGN_IN_URL, flash="You are signed out.", kind="info")
    clear_session_cookie(request, answer)
    return answer

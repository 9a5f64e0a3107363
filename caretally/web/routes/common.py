"""What every page route shares: the signed-in viewer, the CSRF check, rendering, redirects.

A page route declares exactly one access rule, as the API's routes do: ``page_actor(P)``
for a page or form that needs permission ``P``, ``signed_in`` for any signed-in user,
``public_page`` for the sign-in page. The rule is a dependency carrying the same
``Access`` marker as ``caretally.api.deps.require``, so ``tests/web/test_routes.py``
reads the declarations from the app and refuses a web route without one.

Sessions are the service's sessions (``caretally.services.accounts``) held in an
HttpOnly, SameSite=Lax cookie (Secure when the request came over https). Every POST is
checked against the session's CSRF secret here, in the same dependency that checks the
role, so no form route can forget it. A missing, ended or idle session is not an error
page: the browser is sent to ``/signin`` (with ``expired=1`` after inactivity) and comes
back to the page it asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Annotated, Any
from urllib.parse import quote, unquote, urlsplit

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from caretally.api.deps import Access, Service, client_address
from caretally.services import accounts, audit
from caretally.services.context import Actor
from caretally.services.errors import Forbidden, Unauthenticated
from caretally.services.permissions import Permission, allowed
from caretally.web import views
from caretally.web.templating import CSRF_FIELD, environment, render
from caretally.web.viewmodels import Flash, Layout

SESSION_COOKIE = "caretally_session"
#: The pre-session nonce behind the sign-in form's CSRF token (signed double submit).
SIGNIN_COOKIE = "caretally_signin"
#: A one-off message for the next page after a POST-redirect-GET (never PHI).
FLASH_COOKIE = "caretally_flash"
SIGN_IN_URL = "/signin"
SIGN_OUT_URL = "/signout"
FLASH_KINDS = ("success", "info", "error")

#: Headers on every HTML answer: pages hold PHI, so nothing is cached, framed or sniffed.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
}


class SignInRequired(Exception):
    """No usable session: answered by a redirect to the sign-in page, not an error page."""

    def __init__(self, next_url: str, *, expired: bool) -> None:
        super().__init__("sign in required")
        self.next_url = next_url
        self.expired = expired


class CsrfRefused(Forbidden):
    """A POST without the right CSRF token: refused with a 403 page, nothing done."""

    code = "csrf_failed"


@dataclass(frozen=True)
class Viewer:
    """The signed-in user of a page request: who, in which session, and their frame."""

    actor: Actor
    session: accounts.SessionRecord
    profile: accounts.Profile
    idle_minutes: int
    flashes: tuple[Flash, ...] = ()

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_secret

    @property
    def role(self) -> str:
        return self.actor.role.value if self.actor.role is not None else ""

    def may(self, permission: Permission) -> bool:
        return self.actor.may(permission)

    def layout(
        self,
        title: str,
        *,
        current: str | None = None,
        flashes: Sequence[Flash] = (),
        breadcrumbs: Sequence[tuple[str, str | None]] = (),
    ) -> Layout:
        """The frame of a page for this viewer: navigation from the role, the session's token."""
        built = views.page_layout(
            title,
            user=views.signed_in(self.profile.display_name, self.profile.email, self.role),
            org_name=self.profile.org_name,
            allowed=allowed,
            current=current,
            csrf_token=self.csrf_token,
            flashes=(*self.flashes, *flashes),
            idle_minutes=self.idle_minutes,
            breadcrumbs=breadcrumbs,
        )
        return _urls(built)


def _urls(layout: Layout) -> Layout:
    return replace(layout, sign_in_url=SIGN_IN_URL, sign_out_url=SIGN_OUT_URL)


def signed_out_layout(
    title: str, *, csrf_token: str = "", idle_minutes: int = 15, flashes: Sequence[Flash] = ()
) -> Layout:
    return _urls(
        views.page_layout(
            title,
            user=None,
            org_name=None,
            csrf_token=csrf_token,
            idle_minutes=idle_minutes,
            flashes=flashes,
        )
    )


# --------------------------------------------------------------------------------------
# Service state and form reading
# --------------------------------------------------------------------------------------


def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def read_form(request: Request) -> FormData | None:
    """The posted form (parsed once; Starlette caches it), ``None`` for other methods.

    Async so the sync dependencies that use it (and touch the database) run in the
    thread pool rather than on the event loop.
    """
    if request.method != "POST":
        return None
    return await request.form()


PostedForm = Annotated[FormData | None, Depends(read_form)]


def form_text(form: FormData | None, name: str) -> str:
    value = form.get(name) if form is not None else None
    return value if isinstance(value, str) else ""


# --------------------------------------------------------------------------------------
# Sessions and access rules
# --------------------------------------------------------------------------------------


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def safe_next(target: str | None) -> str:
    """A local path to return to after signing in; anything else (another site) is dropped."""
    if not target:
        return ""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return ""
    if "\\" in target or any(ord(c) < 32 for c in target):
        return ""
    return target


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def request_flashes(request: Request) -> tuple[Flash, ...]:
    """The one-off message a redirect left for this page, if any."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return ()
    kind, _, text = raw.partition(":")
    return (Flash(kind, unquote(text)[:300]),) if kind in FLASH_KINDS and text else ()


def current_viewer(request: Request, service: Service) -> Viewer:
    """The viewer behind the session cookie, or ``SignInRequired``."""
    credential = request.cookies.get(SESSION_COOKIE)
    back = _here(request) if request.method == "GET" else ""
    if not credential:
        raise SignInRequired(back, expired=False)
    try:
        actor, session = accounts.session_actor(
            service.engine,
            service.policy,
            credential,
            request_id=getattr(request.state, "request_id", None),
            client_address=client_address(request),
        )
        profile = accounts.profile(service.engine, actor)
    except Unauthenticated as exc:
        raise SignInRequired(back, expired=exc.code == "session_expired") from None
    viewer = Viewer(actor, session, profile, service.settings.session_idle_minutes, request_flashes(request))
    request.state.viewer = viewer
    return viewer


def _check_csrf(viewer: Viewer, form: FormData | None) -> None:
    if form is None:
        return
    if not accounts.csrf_matches(viewer.session, form_text(form, CSRF_FIELD) or None):
        raise CsrfRefused(
            "this form was refused: it did not carry this session's security token",
            hint="go back, reload the page and send the form again",
        )


def _signed_in(request: Request, service: ServiceDep, form: PostedForm) -> Viewer:
    viewer = current_viewer(request, service)
    _check_csrf(viewer, form)
    return viewer


_signed_in.access = Access("authenticated")  # type: ignore[attr-defined]

#: Any signed-in user (a POST also passes the CSRF check).
SignedInViewer = Annotated[Viewer, Depends(_signed_in)]


@cache
def page_actor(permission: Permission) -> Any:
    """A dependency giving the signed-in ``Viewer`` when their role grants ``permission``.

    No session: a redirect to sign in. A POST without the session's CSRF token: a 403
    page. A role without the permission: a 403 page, recorded in the audit trail as the
    API records it (``access.denied``).
    """

    def dependency(request: Request, service: ServiceDep, form: PostedForm) -> Viewer:
        viewer = current_viewer(request, service)
        _check_csrf(viewer, form)
        if not viewer.may(permission):
            audit.record(
                service.engine,
                viewer.actor,
                "access.denied",
                request.url.path,
                outcome=audit.DENIED,
                detail={"permission": permission.value, "method": request.method},
            )
            raise Forbidden(
                f"your role ({views.signed_in('', '', viewer.role).role_label}) cannot open this page",
                hint="ask an admin for a role that can; the menu shows the pages you may use",
                code="forbidden",
            )
        return viewer

    dependency.access = Access("permission", permission)  # type: ignore[attr-defined]
    dependency.__name__ = f"page_{permission.name.lower()}"
    return dependency


def public_page() -> None:
    """Marks a page anyone may open (the sign-in page)."""


public_page.access = Access("public")  # type: ignore[attr-defined]
PublicPage = Depends(public_page)


# --------------------------------------------------------------------------------------
# The sign-in form's pre-session token
# --------------------------------------------------------------------------------------


def signin_token(service: Service, nonce: str) -> str:
    """The sign-in form's CSRF token: the nonce cookie keyed with the server's secret."""
    key = service.policy.secret_key.encode()
    return hmac.new(key, b"signin:" + nonce.encode(), hashlib.sha256).hexdigest()


def signin_nonce(request: Request) -> tuple[str, bool]:
    """The nonce from the cookie, or a new one (``True`` when it must be set)."""
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    if len(nonce) >= 32 and nonce.isalnum():
        return nonce, False
    return secrets.token_hex(16), True


def signin_token_matches(service: Service, request: Request, presented: str) -> bool:
    nonce = request.cookies.get(SIGNIN_COOKIE, "")
    if not nonce or not presented:
        return False
    return hmac.compare_digest(signin_token(service, nonce), presented)


# --------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------


@cache
def _env() -> Any:
    return environment(static_prefix="/static/")


def page_response(
    request: Request, template: str, layout: Layout, page: Any, *, status: int = 200
) -> HTMLResponse:
    """Render ``pages/<template>.html``; a flash shown now is cleared from the browser."""
    body = render(_env(), f"pages/{template}.html", layout=layout, page=page)
    answer = HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)
    if request.cookies.get(FLASH_COOKIE):
        answer.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="lax")
    return answer


def redirect(
    request: Request, url: str, *, flash: str | None = None, kind: str = "success"
) -> RedirectResponse:
    """303 to ``url`` (POST-redirect-GET); ``flash`` is shown once on the next page (no PHI)."""
    answer = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    if flash:
        answer.set_cookie(
            FLASH_COOKIE,
            f"{kind}:{quote(flash)}",
            max_age=60,
            path="/",
            httponly=True,
            samesite="lax",
            secure=is_secure(request),
        )
    return answer


def set_session_cookie(request: Request, answer: Response, token: str, service: Service) -> None:
    answer.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(service.policy.max_lifetime.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_secure(request),
    )


def clear_session_cookie(request: Request, answer: Response) -> None:
    answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_secure(request))


def render_error(status: int, message: str, hint: str | None = None) -> bytes:
    """A bare error page (no viewer known), for the last-resort 500 answer."""
    from caretally.web import pages
    from caretally.web.viewmodels import Link

    layout = signed_out_layout("Something went wrong" if status >= 500 else "Cannot do that")
    page = pages.error_page(status, message, hint, Link("Go to the start page", "/"))
    return render(_env(), "pages/error.html", layout=layout, page=page).encode()


# --------------------------------------------------------------------------------------
# The access rules as named types: a route takes ``viewer: RunsViewer`` and is guarded.
# --------------------------------------------------------------------------------------

P = Permission
WorklistViewer = Annotated[Viewer, Depends(page_actor(P.WORKLIST_READ))]
PatientsViewer = Annotated[Viewer, Depends(page_actor(P.PATIENTS_READ))]
ExplainViewer = Annotated[Viewer, Depends(page_actor(P.EXPLAIN_READ))]
AlertsViewer = Annotated[Viewer, Depends(page_actor(P.ALERTS_READ))]
AlertsWriter = Annotated[Viewer, Depends(page_actor(P.ALERTS_WRITE))]
TimeWriter = Annotated[Viewer, Depends(page_actor(P.TIME_WRITE))]
RunsViewer = Annotated[Viewer, Depends(page_actor(P.RUNS_READ))]
RunsWriter = Annotated[Viewer, Depends(page_actor(P.RUNS_WRITE))]
RunsLocker = Annotated[Viewer, Depends(page_actor(P.RUNS_LOCK))]
ClaimsExporter = Annotated[Viewer, Depends(page_actor(P.CLAIMS_EXPORT))]
LeakageViewer = Annotated[Viewer, Depends(page_actor(P.LEAKAGE_READ))]
AuditViewer = Annotated[Viewer, Depends(page_actor(P.AUDIT_READ))]
UsersAdmin = Annotated[Viewer, Depends(page_actor(P.ADMIN_USERS))]
TokensAdmin = Annotated[Viewer, Depends(page_actor(P.ADMIN_TOKENS))]
SettingsAdmin = Annotated[Viewer, Depends(page_actor(P.ADMIN_SETTINGS))]
ComplianceViewer = Annotated[Viewer, Depends(page_actor(P.COMPLIANCE_READ))]

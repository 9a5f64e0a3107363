"""Admin: users (add, change role, deactivate, practitioner link) and API tokens.

Every change goes through ``caretally.services.accounts`` (audited there). A new token's
secret is shown once, on the page that answers the POST — never put in a redirect, a
cookie or a log.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from caretally.services import accounts, alerts, care
from caretally.services.errors import Conflict, InvalidInput
from caretally.web import pages
from caretally.web.routes.common import (
    PostedForm,
    ServiceDep,
    TokensAdmin,
    UsersAdmin,
    Viewer,
    form_text,
    page_response,
    redirect,
)
from caretally.web.viewmodels import Flash, Link

router = APIRouter(include_in_schema=False)
UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


def _answer(
    request: Request,
    viewer: Viewer,
    service: ServiceDep,
    *,
    new_token: str | None = None,
    errors: dict[str, str] | None = None,
    flashes: tuple[Flash, ...] = (),
    status: int = 200,
    add_user_role: str | None = None,
) -> HTMLResponse:
    engine, org = service.engine, viewer.actor.org_id
    users = accounts.list_users(engine, org)
    tokens = [t for t in accounts.list_tokens(engine, org) if t.active]
    links = care.linked_practitioners(engine, org)
    thresholds = alerts.list_thresholds(engine, viewer.actor)
    settings = (
        ("Organization", viewer.profile.org_name),
        ("Organization id", org),
        ("Session ends after", f"{service.settings.session_idle_minutes} minutes without activity"),
        ("Alert thresholds", f"{len(thresholds)} in force (set on the Alerts page)"),
        ("837P identity, locality, payer overlays", Link("Edit practice settings", "/admin/practice")),
    )
    page = pages.admin_page(
        users=[pages.UserRecord(str(u.user_id), u.email, u.display_name, u.role, u.active) for u in users],
        tokens=[
            pages.TokenRecord(str(t.token_id), t.name, t.role, t.created_at, t.last_used_at) for t in tokens
        ],
        settings=settings,
        new_token=new_token,
        add_user_errors=errors,
        practitioners=care.practitioner_choices(engine, org),
        links={str(k): v for k, v in links.items()},
        self_user_id=str(viewer.actor.user_id) if viewer.actor.user_id is not None else None,
        add_user_role=add_user_role,
    )
    layout = viewer.layout("Admin", current="admin", flashes=flashes)
    return page_response(request, "admin", layout, page, status=status)


@router.get("/admin")
def admin(request: Request, viewer: UsersAdmin, service: ServiceDep) -> HTMLResponse:
    return _answer(request, viewer, service)


_FIELD_OF_CODE = {
    "invalid_email": "email",
    "email_taken": "email",
    "weak_password": "password",
    "long_password": "password",
    "invalid_role": "role",
    "invalid_display_name": "display_name",
}


@router.post("/admin/users")
def add_user(request: Request, viewer: UsersAdmin, service: ServiceDep, form: PostedForm) -> Response:
    try:
        made = accounts.add_user(
            service.engine,
            viewer.actor,
            email=form_text(form, "email")[:254],
            password=form_text(form, "password")[: accounts.MAX_PASSWORD + 1],
            role=form_text(form, "role"),
            display_name=form_text(form, "display_name")[:200] or None,
        )
    except (InvalidInput, Conflict) as exc:
        field = _FIELD_OF_CODE.get(exc.code, "email")
        return _answer(
            request,
            viewer,
            service,
            errors={field: exc.message},
            flashes=(Flash("error", "The user was not added: see the form."),),
            status=422 if isinstance(exc, InvalidInput) else 409,
            add_user_role=form_text(form, "role"),  # the admin's choice stands on the form
        )
    return redirect(request, "/admin", flash=f"Added {made.email}.")


@router.post("/admin/users/{user_id}/role")
def change_role(
    request: Request, user_id: UserId, viewer: UsersAdmin, service: ServiceDep, form: PostedForm
) -> RedirectResponse:
    done = accounts.update_user(service.engine, viewer.actor, user_id, role=form_text(form, "role"))
    return redirect(request, "/admin", flash=f"{done.email} is now {done.role.replace('_', ' ')}.")


@router.post("/admin/users/{user_id}/deactivate")
def deactivate(
    request: Request, user_id: UserId, viewer: UsersAdmin, service: ServiceDep
) -> RedirectResponse:
    done = accounts.update_user(service.engine, viewer.actor, user_id, active=False)
    return redirect(request, "/admin", flash=f"{done.email} is deactivated and signed out.")


@router.post("/admin/practitioner-links")
def link_practitioner(
    request: Request, viewer: UsersAdmin, service: ServiceDep, form: PostedForm
) -> RedirectResponse:
    user = form_text(form, "user_id")
    if not user.isdigit():
        raise InvalidInput("choose a user to link", code="no_user")
    chosen = form_text(form, "practitioner_id") or None
    care.link_practitioner(service.engine, viewer.actor, int(user), chosen)
    return redirect(request, "/admin", flash="Practitioner link saved.")


@router.post("/admin/tokens")
def create_token(
    request: Request, viewer: TokensAdmin, service: ServiceDep, form: PostedForm
) -> HTMLResponse:
    made = accounts.create_token(
        service.engine, viewer.actor, name=form_text(form, "name")[:100], role=form_text(form, "role")
    )
    # Answered here, not redirected: the secret must not travel in a URL or a cookie.
    return _answer(
        request,
        viewer,
        service,
        new_token=made.secret,
        flashes=(Flash("success", f"Token {made.record.name} created. Copy it now: it is not shown again."),),
    )


@router.post("/admin/tokens/{token_id}/revoke")
def revoke_token(
    request: Request, token_id: TokenId, viewer: TokensAdmin, service: ServiceDep
) -> RedirectResponse:
    done = accounts.revoke_token(service.engine, viewer.actor, token_id=token_id)
    return redirect(request, "/admin", flash=f"Token {done.name} revoked.")

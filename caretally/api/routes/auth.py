"""Signing in for API clients: email and password in, a bearer session token out."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from caretally.api import problems
from caretally.api.deps import Authenticated, Public, ServiceDep, client_address
from caretally.api.schemas import MePublic, SessionTokenPublic, SignIn
from caretally.services import accounts
from caretally.services.permissions import permissions_of

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    dependencies=[Public],
    response_model=SessionTokenPublic,
    responses=problems.responses(*problems.COMMON, 401, 429),
    summary="Sign in with email and password; answers a bearer token",
)
def sign_in(body: SignIn, request: Request, service: ServiceDep) -> SessionTokenPublic:
    """Repeated failures lock the account for a while (429 with Retry-After)."""
    signed = accounts.sign_in(
        service.engine,
        service.policy,
        body.email,
        body.password,
        client_address=client_address(request),
        request_id=getattr(request.state, "request_id", None),
    )
    return SessionTokenPublic(
        access_token=signed.token,
        expires_in=int(signed.idle_timeout.total_seconds()),
        expires_at=signed.session.expires_at,
    )


@router.get(
    "/me",
    response_model=MePublic,
    responses=problems.responses(*problems.GUARDED),
    summary="Who the credential belongs to, and what it may do",
)
def me(actor: Authenticated) -> MePublic:
    return MePublic(
        org_id=actor.org_id,
        actor=actor.actor,
        name=actor.name,
        role=actor.role.value if actor.role else None,
        kind="token" if actor.token_id is not None else "user",
        permissions=sorted(p.value for p in permissions_of(actor.role or "")),
    )


@router.post(
    "/sign-out",
    status_code=204,
    responses=problems.responses(*problems.GUARDED),
    summary="End the session the bearer token belongs to (API tokens are revoked by an admin)",
)
def sign_out(actor: Authenticated, service: ServiceDep) -> Response:
    accounts.end_session(service.engine, actor)
    return Response(status_code=204)

"""Dependencies as named, typed aliases: the service state, the actor, and what each route requires.

Authorization is declared, not coded: every route names exactly one access rule among
its dependencies — ``Public``, ``Authenticated``, or a ``require(Permission)`` alias —
and ``tests/api/test_roles.py`` reads those declarations from the app and refuses a route
without one. A refusal is recorded in the audit trail (``access.denied``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from caretally.api.settings import Settings
from caretally.services import accounts, audit
from caretally.services.context import Actor
from caretally.services.errors import Forbidden, Unauthenticated
from caretally.services.imports import UnpackLimits
from caretally.services.permissions import Permission


@dataclass(frozen=True)
class Service:
    """What the application holds for its lifetime (made by ``create_app``, never at import)."""

    engine: Engine
    settings: Settings
    policy: accounts.SessionPolicy
    unpack: UnpackLimits
    queue: Any = None  # caretally.jobs.queue.JobQueue: month-close jobs (made by create_app)

    @property
    def touched(self) -> Callable[[str], object] | None:
        """What an ingest route passes its service to run after the commit: queue a
        refresh of the organization's kept worklist (``caretally.worklist_state``)."""
        return None if self.queue is None else self.queue.enqueue_worklist_refresh


@dataclass(frozen=True)
class Access:
    """The access rule a dependency stands for: public, any credential, or one permission."""

    kind: str  # public | authenticated | permission
    permission: Permission | None = None


async def get_service(request: Request) -> Service:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a hop
    (and a wait for a free thread under load) per request for a dictionary lookup."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API token (`caretally tokens create`) or a session token from POST /api/v1/auth/token.",
)


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def public() -> None:
    """Marks a route anyone may call."""


public.access = Access("public")  # type: ignore[attr-defined]


def current_actor(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    if credentials is None or not credentials.credentials:
        raise Unauthenticated(
            "this needs a credential", hint="send Authorization: Bearer <token>", code="no_credential"
        )
    return accounts.authenticate(
        service.engine,
        service.policy,
        credentials.credentials,
        request_id=getattr(request.state, "request_id", None),
        client_address=client_address(request),
    )


current_actor.access = Access("authenticated")  # type: ignore[attr-defined]

CurrentActor = Annotated[Actor, Depends(current_actor)]


@cache
def require(permission: Permission) -> Any:
    """A dependency that lets the request through only when the actor's role grants ``permission``."""

    async def dependency(request: Request, actor: CurrentActor, service: ServiceDep) -> Actor:
        # Async so an allowed request (nearly all) costs no thread-pool hop; the refusal's
        # audit write is blocking and goes to the pool.
        if not actor.may(permission):
            await run_in_threadpool(
                audit.record,
                service.engine,
                actor,
                "access.denied",
                request.url.path,
                outcome=audit.DENIED,
                detail={"permission": permission.value, "method": request.method},
            )
            raise Forbidden(
                f"the {actor.role} role does not have {permission.value}",
                hint="ask an admin for a role that does (docs/api.md lists them)",
                code="forbidden",
            )
        return actor

    dependency.access = Access("permission", permission)  # type: ignore[attr-defined]
    dependency.__name__ = f"require_{permission.name.lower()}"
    return dependency


P = Permission
Public = Depends(public)
Authenticated = CurrentActor
PatientsReader = Annotated[Actor, Depends(require(P.PATIENTS_READ))]
ExplainReader = Annotated[Actor, Depends(require(P.EXPLAIN_READ))]
WorklistReader = Annotated[Actor, Depends(require(P.WORKLIST_READ))]
LeakageReader = Annotated[Actor, Depends(require(P.LEAKAGE_READ))]
ComplianceReader = Annotated[Actor, Depends(require(P.COMPLIANCE_READ))]
RunsReader = Annotated[Actor, Depends(require(P.RUNS_READ))]
ImportsWriter = Annotated[Actor, Depends(require(P.IMPORTS_WRITE))]
ImportsReader = Annotated[Actor, Depends(require(P.IMPORTS_READ))]
AuditReader = Annotated[Actor, Depends(require(P.AUDIT_READ))]
UsersReader = Annotated[Actor, Depends(require(P.USERS_READ))]
UsersAdmin = Annotated[Actor, Depends(require(P.ADMIN_USERS))]
TokensAdmin = Annotated[Actor, Depends(require(P.ADMIN_TOKENS))]
RunsWriter = Annotated[Actor, Depends(require(P.RUNS_WRITE))]
RunsLocker = Annotated[Actor, Depends(require(P.RUNS_LOCK))]
ClaimsExporter = Annotated[Actor, Depends(require(P.CLAIMS_EXPORT))]


def access_of(dependency: Any) -> Access | None:
    return getattr(dependency, "access", None)


def declared_access(app: Any) -> dict[tuple[str, str], list[Access]]:
    """(method, path) → the access rules each API route declares among its own dependencies.

    Used by the route table test (and the web app's menus later). Newer FastAPI versions
    keep included routers apart (``iter_route_contexts``); older ones list plain routes.
    """
    from fastapi.routing import APIRoute

    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included routers were kept apart
        contexts: list[Any] = [r for r in app.routes if isinstance(r, APIRoute)]
    else:
        contexts = [c for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]
    found: dict[tuple[str, str], list[Access]] = {}
    for route in contexts:
        rules = [a for a in (access_of(d.call) for d in route.dependant.dependencies) if a is not None]
        for method in route.methods or ():
            found[(method, route.path)] = rules
    return found

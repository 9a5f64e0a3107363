"""Every route of the app, the access rule it must declare, and a valid request for it.

The role matrix test and the cross-tenant sweep both walk this table; each test first
checks that the table and the app list the same routes, so a route added without an
entry here (and so without a decided rule) fails them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route

from caretally.api.deps import declared_access
from caretally.services import accounts
from caretally.services.context import cli_actor
from caretally.services.permissions import Permission as P
from tests.api.world import MONTH, PASSWORD, World, tenant_bundle, zipped

PUBLIC, AUTHENTICATED = "public", "authenticated"
#: Routes FastAPI itself serves (documentation), public by design.
FRAMEWORK_ROUTES = {"/api/v1/openapi.json", "/api/docs"}
_unique = itertools.count(1)


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Entry:
    rule: str | P
    sample: Callable[[World, str, str, Path], Call]  # (world, target org, credential org, tmp) → call
    targets_resource: bool = False  # names a resource of the target organization in its path


def _fresh_token(world: World, org: str) -> int:
    made = accounts.create_token(
        world.engine, cli_actor(org), name=f"sacrifice-{next(_unique)}", role="auditor"
    )
    return made.record.token_id


def _import_call(world: World, target: str, cred: str, tmp: Path) -> Call:
    body = zipped(tenant_bundle(cred), tmp / f"bundle-{next(_unique)}")
    return Call("POST", "/api/v1/imports", content=body, headers={"Content-Type": "application/zip"})


V1 = "/api/v1"
ROUTES: dict[tuple[str, str], Entry] = {
    ("GET", "/healthz"): Entry(PUBLIC, lambda w, t, c, p: Call("GET", "/healthz")),
    ("POST", f"{V1}/auth/token"): Entry(
        PUBLIC,
        lambda w, t, c, p: Call(
            "POST", f"{V1}/auth/token", json={"email": w.emails[c], "password": PASSWORD}
        ),
    ),
    ("GET", f"{V1}/auth/me"): Entry(AUTHENTICATED, lambda w, t, c, p: Call("GET", f"{V1}/auth/me")),
    ("POST", f"{V1}/auth/sign-out"): Entry(
        AUTHENTICATED, lambda w, t, c, p: Call("POST", f"{V1}/auth/sign-out")
    ),
    ("GET", f"{V1}/patients"): Entry(P.PATIENTS_READ, lambda w, t, c, p: Call("GET", f"{V1}/patients")),
    ("GET", f"{V1}/patients/{{patient_id}}"): Entry(
        P.PATIENTS_READ, lambda w, t, c, p: Call("GET", f"{V1}/patients/{w.patient(t)}"), True
    ),
    ("GET", f"{V1}/patients/{{patient_id}}/readings"): Entry(
        P.PATIENTS_READ,
        lambda w, t, c, p: Call(
            "GET", f"{V1}/patients/{w.patient(t)}/readings?from=2026-03-01&to=2026-03-31"
        ),
        True,
    ),
    ("GET", f"{V1}/patients/{{patient_id}}/time-entries"): Entry(
        P.PATIENTS_READ,
        lambda w, t, c, p: Call(
            "GET", f"{V1}/patients/{w.patient(t)}/time-entries?from=2026-03-01&to=2026-03-31"
        ),
        True,
    ),
    ("GET", f"{V1}/patients/{{patient_id}}/months/{{month}}"): Entry(
        P.EXPLAIN_READ, lambda w, t, c, p: Call("GET", f"{V1}/patients/{w.patient(t)}/months/{MONTH}"), True
    ),
    ("GET", f"{V1}/worklist"): Entry(
        P.WORKLIST_READ, lambda w, t, c, p: Call("GET", f"{V1}/worklist?as_of=2026-03-20&include_done=true")
    ),
    ("GET", f"{V1}/months/{{month}}/leakage"): Entry(
        P.LEAKAGE_READ, lambda w, t, c, p: Call("GET", f"{V1}/months/{MONTH}/leakage")
    ),
    ("GET", f"{V1}/compliance/scan"): Entry(
        P.COMPLIANCE_READ, lambda w, t, c, p: Call("GET", f"{V1}/compliance/scan?year=2026&month={MONTH}")
    ),
    ("GET", f"{V1}/runs"): Entry(P.RUNS_READ, lambda w, t, c, p: Call("GET", f"{V1}/runs")),
    ("GET", f"{V1}/runs/{{run_id}}"): Entry(
        P.RUNS_READ, lambda w, t, c, p: Call("GET", f"{V1}/runs/{w.run_ids[t]}"), True
    ),
    ("POST", f"{V1}/imports"): Entry(P.IMPORTS_WRITE, _import_call),
    ("GET", f"{V1}/imports"): Entry(P.IMPORTS_READ, lambda w, t, c, p: Call("GET", f"{V1}/imports")),
    ("GET", f"{V1}/audit-events"): Entry(P.AUDIT_READ, lambda w, t, c, p: Call("GET", f"{V1}/audit-events")),
    ("GET", f"{V1}/users"): Entry(P.USERS_READ, lambda w, t, c, p: Call("GET", f"{V1}/users")),
    ("POST", f"{V1}/users"): Entry(
        P.ADMIN_USERS,
        lambda w, t, c, p: Call(
            "POST",
            f"{V1}/users",
            json={"email": f"new{next(_unique)}@{c}.example", "password": PASSWORD, "role": "auditor"},
        ),
    ),
    ("PATCH", f"{V1}/users/{{user_id}}"): Entry(
        P.ADMIN_USERS,
        lambda w, t, c, p: Call("PATCH", f"{V1}/users/{w.user_ids[t]}", json={"display_name": "Renamed"}),
        True,
    ),
    ("GET", f"{V1}/tokens"): Entry(P.USERS_READ, lambda w, t, c, p: Call("GET", f"{V1}/tokens")),
    ("POST", f"{V1}/tokens"): Entry(
        P.ADMIN_TOKENS,
        lambda w, t, c, p: Call(
            "POST", f"{V1}/tokens", json={"name": f"feed-{next(_unique)}", "role": "integration"}
        ),
    ),
    ("DELETE", f"{V1}/tokens/{{token_id}}"): Entry(
        P.ADMIN_TOKENS, lambda w, t, c, p: Call("DELETE", f"{V1}/tokens/{_fresh_token(w, t)}"), True
    ),
}


def declared_routes(app: FastAPI) -> dict[tuple[str, str], list[Any]]:
    """(method, path) → the access rules its top-level dependencies declare."""
    return declared_access(app)


def other_paths(app: FastAPI) -> set[str]:
    """Paths served by plain Starlette routes (FastAPI's documentation pages)."""
    return {getattr(r, "path", "") for r in app.routes if type(r) is Route}


def rule_of(declared: list[Any]) -> str | P:
    (only,) = declared
    return only.permission if only.kind == "permission" else only.kind

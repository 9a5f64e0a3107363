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
#: Routes a device vendor calls with the organization's shared secret instead of a bearer credential.
WEBHOOK = "webhook"
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


def job_of(world: World, org: str) -> str:
    """A month-run job of ``org`` (started through the service, as the API would)."""
    from caretally.services.jobs import start_month_run

    job, _new = start_month_run(world.engine, cli_actor(org), world.app.state.service.queue, MONTH)
    return job.job_id


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
    ("GET", f"{V1}/runs/{{run_id}}/warnings"): Entry(
        P.RUNS_READ, lambda w, t, c, p: Call("GET", f"{V1}/runs/{w.run_ids[t]}/warnings"), True
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
    # Month close (jobs, lock, claims).
    ("POST", f"{V1}/months/{{month}}/runs"): Entry(
        P.RUNS_WRITE, lambda w, t, c, p: Call("POST", f"{V1}/months/{MONTH}/runs")
    ),
    ("GET", f"{V1}/jobs/{{job_id}}"): Entry(
        P.RUNS_READ, lambda w, t, c, p: Call("GET", f"{V1}/jobs/{job_of(w, t)}"), True
    ),
    ("GET", f"{V1}/jobs"): Entry(P.RUNS_READ, lambda w, t, c, p: Call("GET", f"{V1}/jobs")),
    ("POST", f"{V1}/months/{{month}}/lock"): Entry(
        P.RUNS_LOCK,
        lambda w, t, c, p: Call("POST", f"{V1}/months/{MONTH}/lock", json={"accept_provisional": False}),
    ),
    ("GET", f"{V1}/months/{{month}}/claims"): Entry(
        P.CLAIMS_EXPORT, lambda w, t, c, p: Call("GET", f"{V1}/months/{MONTH}/claims?format=csv")
    ),
}

# -- live ingest (readings, FHIR, Tenovi webhook, time entries) ---------------------------

_WEBHOOK_SECRETS: dict[tuple[int, str], str] = {}


def webhook_secret(world: World, org: str) -> str:
    """The organization's Tenovi secret, set once per world."""
    from caretally.services import ingest

    key = (id(world), org)
    if key not in _WEBHOOK_SECRETS:
        _WEBHOOK_SECRETS[key] = ingest.set_webhook_secret(world.engine, cli_actor(org), "tenovi").secret
    return _WEBHOOK_SECRETS[key]


def _reading(org: str) -> dict[str, str]:
    n = next(_unique)
    return {
        "reading_id": f"{org}-live-{n}",
        "patient_id": f"{org}-P1",
        "device_id": f"{org}-D1",
        "measured_at": f"2026-03-{1 + n % 28:02d}T08:00:00-06:00",
        "type": "blood_pressure",
        "value": "124/80",
        "unit": "mmHg",
        "transmission": "auto",
    }


def _fhir(org: str) -> dict[str, Any]:
    n = next(_unique)
    observation = {
        "resourceType": "Observation",
        "id": f"obs-{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"identifier": {"value": f"{org}-P1"}},
        "device": {"identifier": {"system": "urn:caretally:device-id", "value": f"{org}-D1"}},
        "effectiveDateTime": f"2026-03-{1 + n % 28:02d}T09:00:00-06:00",
        "valueQuantity": {"value": 71, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    return {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": observation}]}


def _tenovi_call(world: World, target: str, cred: str, tmp: Path) -> Call:
    measurement = {
        "metric": "pulse",
        "hwi_device_id": f"{cred}-no-such-cuff",
        "value_1": 70,
        "timestamp": "2026-03-05T14:00:00Z",
        "timezone_offset": -6,
    }
    return Call(
        "POST",
        f"{V1}/webhooks/tenovi",
        json=[measurement],
        headers={"X-Webhook-Secret": webhook_secret(world, cred)},
    )


def _time_entry(org: str) -> dict[str, str]:
    n = next(_unique)
    return {
        "entry_id": f"{org}-TX{n}",
        "patient_id": f"{org}-P1",
        "practitioner_id": f"{org}-RN1",
        "program": "RPM",
        "started_at": f"2026-03-{1 + n % 28:02d}T10:00:00-06:00",
        "minutes": "5",
        "activity": "called patient",
        "interactive": "true",
        "modality": "phone",
    }


ROUTES.update(
    {
        ("POST", f"{V1}/readings"): Entry(
            P.READINGS_WRITE, lambda w, t, c, p: Call("POST", f"{V1}/readings", json=[_reading(c)])
        ),
        ("POST", f"{V1}/fhir"): Entry(
            P.READINGS_WRITE, lambda w, t, c, p: Call("POST", f"{V1}/fhir", json=_fhir(c))
        ),
        ("POST", f"{V1}/webhooks/tenovi"): Entry(WEBHOOK, _tenovi_call),
        ("POST", f"{V1}/time-entries"): Entry(
            P.TIME_WRITE, lambda w, t, c, p: Call("POST", f"{V1}/time-entries", json=[_time_entry(c)])
        ),
        ("PATCH", f"{V1}/time-entries/{{entry_id}}"): Entry(
            P.TIME_WRITE,
            lambda w, t, c, p: Call(
                "PATCH", f"{V1}/time-entries/{t}-T1", json={"note": f"amended {next(_unique)}"}
            ),
            True,
        ),
    }
)


def declared_routes(app: FastAPI) -> dict[tuple[str, str], list[Any]]:
    """(method, path) → the access rules its top-level dependencies declare.

    API routes only: the web app's pages (cookie sessions) have their own table,
    ``tests/web/test_routes.py``."""
    from caretally.web.app import is_web_path

    return {k: v for k, v in declared_access(app).items() if not is_web_path(k[1])}


def other_paths(app: FastAPI) -> set[str]:
    """Paths served by plain Starlette routes (FastAPI's documentation pages)."""
    return {getattr(r, "path", "") for r in app.routes if type(r) is Route}


def rule_of(declared: list[Any]) -> str | P:
    (only,) = declared
    return only.permission if only.kind == "permission" else only.kind

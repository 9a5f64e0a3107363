"""``GET /healthz``: the one route a load balancer calls; no credential, no PHI."""

from __future__ import annotations

from fastapi import APIRouter

from caretally.api import problems
from caretally.api.deps import Public, ServiceDep
from caretally.api.schemas import HealthPublic
from caretally.services import health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    dependencies=[Public],
    response_model=HealthPublic,
    responses=problems.responses(*problems.COMMON, 503),
    summary="Is the server able to answer (database reachable, schema current)?",
)
def healthz(service: ServiceDep) -> HealthPublic:
    health.check(service.engine)
    return HealthPublic(status="ok")

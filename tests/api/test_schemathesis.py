"""Property-based tests of the live OpenAPI document (schemathesis): every operation gets a
bounded number of generated requests, valid and invalid, and must answer each without a
server error and within its documented statuses, media types and schemas.

Schemathesis's pytest plugin does not run on this pytest, so its Python API drives the
operations directly: each operation's Hypothesis strategy feeds ``call_and_validate``.
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from caretally.services import accounts
from caretally.services.context import cli_actor
from tests.api.world import World

EXAMPLES = 10  # per operation, mode and database: enough to find crashes, small enough for CI
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
_names = itertools.count(1)


def _exercise(world: World, operation: schemathesis.schemas.APIOperation, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: schemathesis.Case) -> None:
        # A fresh admin token per request: generated calls may revoke tokens or end sessions.
        made = accounts.create_token(
            world.engine, cli_actor("north"), name=f"st-{next(_names)}", role="admin"
        )
        case.call_and_validate(headers={"Authorization": f"Bearer {made.secret}"}, checks=CHECKS)

    run()


@pytest.mark.slow
def test_no_operation_fails_or_breaks_its_schema(world: World) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", world.app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _exercise(world, operation, mode)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # an operation without inputs has no invalid request
            except Exception as exc:  # every operation is tried; all failures are reported together
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)

"""Tenants: the organization comes from the credential, and another organization's data
is indistinguishable from data that does not exist.

Every route is called with south's admin token (which may call every route) aimed at
north's resources: a route that names a resource answers exactly as it does for a
missing one; a route that lists or computes answers with south's data only.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.api.routes_table import ROUTES, Call, declared_routes
from tests.api.world import World

MISSING = {
    "patient_id": "nobody-here",
    "run_id": "00000000-0000-4000-8000-000000000000",
    "user_id": "999999",
    "token_id": "999999",
    "job_id": "00000000-0000-4000-8000-000000000000",
}


def _missing_call(call: Call, world: World, key: tuple[str, str]) -> Call:
    """The same request with north's resource id swapped for one that exists nowhere."""
    url = call.url
    for org_value, missing in (
        (world.patient("north"), MISSING["patient_id"]),
        (world.run_ids["north"], MISSING["run_id"]),
    ):
        url = url.replace(org_value, missing)
    if key[1].endswith("{user_id}"):
        url = url.rsplit("/", 1)[0] + "/" + MISSING["user_id"]
    if key[1].endswith("{token_id}"):
        url = url.rsplit("/", 1)[0] + "/" + MISSING["token_id"]
    if key[1].endswith("{job_id}"):
        url = url.rsplit("/", 1)[0] + "/" + MISSING["job_id"]
    if key[1].endswith("{entry_id}"):
        url = url.rsplit("/", 1)[0] + "/nobody-entry"
    return Call(call.method, url, call.json, call.content, call.headers)


def _send(client: TestClient, call: Call, headers: dict[str, str]) -> object:
    return client.request(
        call.method, call.url, json=call.json, content=call.content, headers={**call.headers, **headers}
    )


def _without_request_id(body: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if k != "request_id"}


def test_the_sweep_covers_every_route(world: World) -> None:
    assert set(declared_routes(world.app)) == set(ROUTES)


@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[0]} {k[1]}")
def test_south_never_sees_north(
    key: tuple[str, str], world: World, client: TestClient, tmp_path: Path
) -> None:
    entry = ROUTES[key]
    south_admin = world.auth("south", "admin")
    call = entry.sample(world, "north", "south", tmp_path)
    answer = _send(client, call, south_admin)
    assert answer.status_code < 500, answer.text
    if entry.targets_resource:
        missing = _send(client, _missing_call(call, world, key), south_admin)
        assert answer.status_code == 404, f"{key}: north's resource answered {answer.status_code}"
        assert missing.status_code == 404
        assert _without_request_id(answer.json()) == _without_request_id(missing.json()), (
            "another organization's resource must look exactly like a missing one"
        )
    else:
        assert "north" not in answer.text, f"{key} let north's data through to south: {answer.text[:300]}"


def test_north_still_sees_its_own(world: World, client: TestClient, tmp_path: Path) -> None:
    """The sweep's 404s are about the tenant, not broken samples: north's admin gets through."""
    north_admin = world.auth("north", "admin")
    for key, entry in ROUTES.items():
        if entry.targets_resource:
            answer = _send(client, entry.sample(world, "north", "north", tmp_path), north_admin)
            assert answer.status_code in (200, 204), f"{key}: {answer.status_code} {answer.text[:200]}"

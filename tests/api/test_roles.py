"""The role matrix, enforced: every route, every role and no credential, against docs/api.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from caretally.services.permissions import MATRIX, Role, matrix_markdown
from caretally.store import schema
from tests.api.routes_table import (
    AUTHENTICATED,
    FRAMEWORK_ROUTES,
    PUBLIC,
    ROUTES,
    WEBHOOK,
    declared_routes,
    other_paths,
    rule_of,
)
from tests.api.world import World

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_every_route_declares_exactly_the_rule_in_the_table(world: World) -> None:
    declared = declared_routes(world.app)
    assert set(declared) == set(ROUTES), (
        "routes without a decided access rule (add them to tests/api/routes_table.py): "
        f"{sorted(set(declared) - set(ROUTES))}; stale entries: {sorted(set(ROUTES) - set(declared))}"
    )
    for key, rules in declared.items():
        assert len(rules) == 1, f"{key} declares {len(rules)} access rules, not one: {rules}"
        assert rule_of(rules) == ROUTES[key].rule, (
            f"{key} declares {rule_of(rules)}, table says {ROUTES[key].rule}"
        )
    assert other_paths(world.app) <= FRAMEWORK_ROUTES, "a non-FastAPI route slipped in without a rule"


@pytest.mark.parametrize("key", sorted(ROUTES), ids=lambda k: f"{k[0]} {k[1]}")
def test_each_role_is_allowed_or_denied_as_the_matrix_says(
    key: tuple[str, str], world: World, client: TestClient, tmp_path: Path
) -> None:
    entry = ROUTES[key]
    wrong: list[str] = []
    for role in [None, *Role]:
        call = entry.sample(world, "north", "north", tmp_path)
        headers = {**call.headers, **(world.auth("north", role.value) if role else {})}
        answer = client.request(call.method, call.url, json=call.json, content=call.content, headers=headers)
        who = role.value if role else "no credential"
        if answer.status_code >= 500:
            wrong.append(f"{who}: server error {answer.status_code}")
            continue
        if entry.rule in (PUBLIC, WEBHOOK):  # a webhook's credential is its secret, in the sample
            allowed = True
        elif role is None:
            allowed = False
        elif entry.rule == AUTHENTICATED:
            allowed = True
        else:
            allowed = entry.rule in MATRIX[role]
        if allowed and answer.status_code in (401, 403):
            wrong.append(f"{who}: refused with {answer.status_code} but the matrix allows it")
        if not allowed:
            expected = 401 if role is None else 403
            if answer.status_code != expected:
                wrong.append(f"{who}: answered {answer.status_code}, expected {expected}")
            elif answer.headers["content-type"] != "application/problem+json":
                wrong.append(f"{who}: the refusal is not a problem document")
    assert not wrong, f"{key}: " + "; ".join(wrong)


def test_a_refusal_is_recorded_in_the_audit_trail(world: World, client: TestClient) -> None:
    answer = client.get("/api/v1/audit-events", headers=world.auth("north", "care_staff"))
    assert answer.status_code == 403
    e = schema.audit_events
    with world.engine.connect() as conn:
        row = conn.execute(
            select(e.c.outcome, e.c.detail, e.c.actor).where(
                e.c.org_id == "north",
                e.c.action == "access.denied",
                e.c.request_id == answer.headers["x-request-id"],
            )
        ).one()
    assert row.outcome == "denied"
    assert row.detail["permission"] == "audit:read"
    assert row.actor == f"token:{world.token_ids['north']['care_staff']}"


def test_docs_api_md_holds_the_matrix_the_code_enforces() -> None:
    assert matrix_markdown() in DOC.read_text(encoding="utf-8"), (
        "docs/api.md's role matrix differs from caretally/services/permissions.py; "
        "paste the output of `python -m caretally.services.permissions` into it"
    )


def test_integration_reads_no_phi_and_auditor_writes_nothing() -> None:
    from caretally.services.permissions import Permission as P

    reads_of_phi = {
        P.PATIENTS_READ,
        P.EXPLAIN_READ,
        P.WORKLIST_READ,
        P.LEAKAGE_READ,
        P.AUDIT_READ,
        P.ALERTS_READ,
    }
    assert not MATRIX[Role.INTEGRATION] & reads_of_phi
    writes = {
        p for p in P if p.value.endswith((":write", ":lock", ":export")) or p.value.startswith("admin:")
    }
    assert not MATRIX[Role.AUDITOR] & writes
    assert P.RUNS_LOCK not in MATRIX[Role.CARE_STAFF]


def test_the_role_check_takes_text_as_the_web_pages_name_it() -> None:
    from caretally.services.permissions import allowed

    assert allowed("care_staff", "worklist:read") and not allowed("care_staff", "runs:read")
    assert allowed("biller", "runs:read") and not allowed("biller", "patients:read")
    assert not allowed("auditor", "admin:users") and allowed("auditor", "audit:read")
    assert not allowed("integration", "worklist:read")
    assert not allowed("nobody", "worklist:read") and not allowed("admin", "no:such")

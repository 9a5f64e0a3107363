"""A run's warnings over HTTP: the detail shows the first 100 and the total; the rest come a
page at a time from ``GET /runs/{run_id}/warnings``, each read audited with the patients
it showed — on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, stored_warnings
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.services import accounts
from caretally.services.context import cli_actor
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize
from tests.api.world import World
from tests.billing.test_run_warnings import MONTH, overlapping

V1 = "/api/v1"
ORG = "warned"


@pytest.fixture(scope="module")
def warned(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """A third organization whose run has well over 100 warnings: (run id, role → secret)."""
    out = tmp_path_factory.mktemp("warned")
    synthesize(SynthConfig(patients=120, start=date(2026, 3, 1), months=2, seed=8, lead_in_days=29), out)
    accounts.add_org(world.engine, ORG, "Warned Clinic")
    assert import_bundle(world.engine, ORG, overlapping(Path(out))).ok()
    run = bill_month(world.engine, ORG, parse_month(MONTH), PayerRules.load())
    secrets = {
        role: accounts.create_token(world.engine, cli_actor(ORG), name=f"w-{role}", role=role).secret
        for role in ("biller", "auditor", "care_staff")
    }
    yield run.run_id, secrets


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_the_detail_caps_the_warnings_and_pages_give_the_rest(
    world: World, client: TestClient, warned: tuple[str, dict[str, str]]
) -> None:
    run_id, secrets = warned
    every = [w.to_json() for w in stored_warnings(world.engine, run_id).items]
    assert len(every) > 100, "the run must have more warnings than the detail shows"
    biller = _auth(secrets["biller"])

    detail = client.get(f"{V1}/runs/{run_id}", headers=biller).json()
    assert detail["warnings"] == every[:100] and detail["warnings_total"] == len(every)

    pages, offset = [], 0
    while True:
        answer = client.get(
            f"{V1}/runs/{run_id}/warnings", params={"offset": offset, "limit": 37}, headers=biller
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["run_id"], body["total"], body["offset"], body["limit"]) == (
            run_id,
            len(every),
            offset,
            37,
        )
        if not body["warnings"]:
            break
        pages.extend(body["warnings"])
        offset += 37
    assert pages == every

    # Each page is audited with the patients it showed, and only those.
    auditor = _auth(secrets["auditor"])
    shown = client.get(
        f"{V1}/runs/{run_id}/warnings", params={"offset": 50, "limit": 3}, headers=biller
    ).json()
    events = client.get(f"{V1}/audit-events", params={"action": "run.warnings.read"}, headers=auditor).json()
    newest = events["items"][0]
    assert newest["resource"] == f"runs/{run_id}/warnings"
    assert sorted(newest["patient_ids"]) == sorted({w["patient_id"] for w in shown["warnings"]})


def test_warnings_pages_refuse_bad_pages_other_roles_and_unknown_runs(
    world: World, client: TestClient, warned: tuple[str, dict[str, str]]
) -> None:
    run_id, secrets = warned
    biller = _auth(secrets["biller"])
    for params in ({"limit": 0}, {"limit": 1001}, {"offset": -1}):
        bad = client.get(f"{V1}/runs/{run_id}/warnings", params=params, headers=biller)
        assert bad.status_code == 422 and bad.headers["content-type"].startswith("application/problem+json")
    nurse = client.get(f"{V1}/runs/{run_id}/warnings", headers=_auth(secrets["care_staff"]))
    assert nurse.status_code == 403
    missing = client.get(f"{V1}/runs/no-such-run/warnings", headers=biller)
    assert missing.status_code == 404 and missing.json()["code"] == "no_such_run"
    # Another organization's run is not there for this one.
    other = client.get(f"{V1}/runs/{world.run_ids['north']}/warnings", headers=biller)
    assert other.status_code == 404
    path = client.get(f"{V1}/openapi.json").json()["paths"][f"{V1}/runs/{{run_id}}/warnings"]["get"]
    assert {"200", "404", "422"} <= set(path["responses"])

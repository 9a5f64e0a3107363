"""visits.csv through the API's bundle upload, and ``GET /api/v1/compliance/scan`` reading it."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.api.world import World, tenant_bundle, zipped

V1 = "/api/v1"


def test_uploaded_visits_reach_the_scan_and_roles_decide_who_sees_it(
    world: World, client: TestClient, tmp_path: Path
) -> None:
    bundle = tenant_bundle("north")
    bundle["visits"] = [
        {
            "visit_id": "north-V1",
            "patient_id": "north-P1",
            "practitioner_id": "north-DR1",
            "date": "2026-02-10",
            "code": "99214",
            "place_of_service": "11",
            "telehealth": "false",
        }
    ]
    upload = client.post(
        f"{V1}/imports",
        content=zipped(bundle, tmp_path / "b"),
        headers={"Content-Type": "application/zip", **world.auth("north", "integration")},
    )
    assert upload.status_code == 200, upload.json()
    assert upload.json()["counts"]["visits"]["inserted"] == 1

    answer = client.get(f"{V1}/compliance/scan", params={"year": 2026}, headers=world.auth("north", "biller"))
    assert answer.status_code == 200, answer.json()
    report = answer.json()
    assert report["sources"]["visits"] == 1
    assert [m["id"] for m in report["measures"]] == ["A2", "B1", "B2", "B3", "B4", "B5", "C11"]
    b2 = next(m for m in report["measures"] if m["id"] == "B2")
    assert b2["status"] != "not_judged"  # the uploaded visit makes the relationship measure judgeable

    other = client.get(f"{V1}/compliance/scan", params={"year": 2026}, headers=world.auth("south", "auditor"))
    assert other.status_code == 200 and other.json()["sources"]["visits"] == 0  # another tenant's visits
    refused = client.get(
        f"{V1}/compliance/scan", params={"year": 2026}, headers=world.auth("north", "care_staff")
    )
    assert refused.status_code == 403
    wrong = client.get(
        f"{V1}/compliance/scan",
        params={"year": 2026, "month": "2025-03"},
        headers=world.auth("north", "admin"),
    )
    assert wrong.status_code == 422 and wrong.json()["code"] == "month_outside_year"

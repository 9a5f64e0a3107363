"""PHI never reaches the application log: not from paths, queries, errors or sign-ins."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from caretally.ingest import import_records
from tests.api.world import CLOCK, World, tenant_bundle

V1 = "/api/v1"
PATIENT = "phi-7781-zebediah"
FAMILY, GIVEN, BORN = "Quixotica", "Zebediah", "1931-07-04"
MISSING = "ssn-123-45-6789"
EMAIL = "zebediah.quixotica@home.example"


@pytest.fixture(scope="module")
def phi_patient(world: World) -> str:
    bundle = tenant_bundle("north")
    patient = {**bundle["patients"][0], "patient_id": PATIENT, "family_name": FAMILY, "given_name": GIVEN}
    patient["birth_date"] = BORN
    reading = {**bundle["readings"][0], "patient_id": PATIENT, "reading_id": "phi-r1"}
    device = {**bundle["devices"][0], "device_id": "phi-d1", "patient_id": PATIENT}
    reading["device_id"] = "phi-d1"
    enrollment = {**bundle["enrollments"][0], "enrollment_id": "phi-e1", "patient_id": PATIENT}
    report = import_records(
        world.engine,
        "north",
        {
            "practitioners": bundle["practitioners"],
            "patients": [patient],
            "enrollments": [enrollment],
            "devices": [device],
            "readings": [reading],
        },
        now=CLOCK,
    )
    assert report.ok(), report.problems
    return PATIENT


def test_no_phi_in_the_application_log(
    world: World,
    client: TestClient,
    phi_patient: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING)
    for name in ("caretally", "uvicorn"):
        caplog.set_level(logging.DEBUG, logger=name)
    nurse, auditor = world.auth("north", "care_staff"), world.auth("north", "auditor")
    seen = client.get(f"{V1}/patients/{phi_patient}", headers=nurse)
    assert seen.status_code == 200 and seen.json()["family_name"] == FAMILY
    assert client.get(f"{V1}/patients", headers=nurse).status_code == 200
    march = {"from": "2026-02-01", "to": "2026-03-31"}
    assert client.get(f"{V1}/patients/{phi_patient}/readings", params=march, headers=nurse).status_code == 200
    assert client.get(f"{V1}/patients/{phi_patient}/months/2026-03", headers=nurse).status_code == 200
    assert client.get(f"{V1}/patients/{MISSING}", headers=nurse).status_code == 404
    assert (
        client.get(f"{V1}/audit-events", params={"patient_id": phi_patient}, headers=nurse).status_code == 403
    )
    assert (
        client.get(f"{V1}/audit-events", params={"patient_id": phi_patient}, headers=auditor).status_code
        == 200
    )
    bad = client.get(
        f"{V1}/patients/{phi_patient}/readings", params={"from": FAMILY, "to": BORN}, headers=nurse
    )
    assert bad.status_code == 422
    signin = client.post(f"{V1}/auth/token", json={"email": EMAIL, "password": f"{GIVEN} {BORN} password"})
    assert signin.status_code == 401

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"row for {GIVEN} {FAMILY} born {BORN} ({PATIENT}) broke")

    monkeypatch.setattr("caretally.services.patients.get_patient", explode)
    crashed = client.get(f"{V1}/patients/{phi_patient}", headers=nurse)
    assert crashed.status_code == 500
    assert crashed.headers["content-type"] == "application/problem+json"
    assert GIVEN not in crashed.text and "Traceback" not in crashed.text

    logged = caplog.text
    for secret in (PATIENT, FAMILY, GIVEN, BORN, MISSING, EMAIL):
        assert secret not in logged, f"{secret!r} reached the log"
    assert "GET /api/v1/patients/{patient_id} 200" in logged
    assert "unexpected RuntimeError in GET /api/v1/patients/{patient_id}" in logged
    assert "sign-in failed: no account has the address given" in logged

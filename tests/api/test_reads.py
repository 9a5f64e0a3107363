"""Reads through the API give what the CLI gives: patients, readings, time, a month, the
worklist, leakage and runs — and each read of PHI leaves an audit event naming the patients."""

from __future__ import annotations

from fastapi.testclient import TestClient

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import stored_decisions
from caretally.billing.serialize import decision_to_json
from caretally.dates import parse_month
from caretally.leakage import leakage_report
from tests.api.world import MONTH, World

V1 = "/api/v1"


def _events(client: TestClient, world: World, **params: str) -> list[dict[str, object]]:
    answer = client.get(f"{V1}/audit-events", params=params, headers=world.auth("north", "auditor"))
    assert answer.status_code == 200, answer.text
    return answer.json()["items"]


def test_patients_are_listed_a_page_at_a_time(world: World, client: TestClient) -> None:
    nurse = world.auth("north", "care_staff")
    first = client.get(f"{V1}/patients", params={"limit": 1}, headers=nurse).json()
    assert [p["patient_id"] for p in first["items"]] == ["north-P1"]
    assert set(first["items"][0]) == {
        "patient_id", "family_name", "given_name", "birth_date", "sex", "payer", "timezone",
    }  # fmt: skip
    second = client.get(
        f"{V1}/patients", params={"limit": 1, "cursor": first["next_cursor"]}, headers=nurse
    ).json()
    assert [p["patient_id"] for p in second["items"]] == ["north-P2"]
    assert second["next_cursor"] is None
    bad = client.get(f"{V1}/patients", params={"cursor": "bm90LWEtY3Vyc29y"}, headers=nurse)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"
    listed = _events(client, world, action="patients.list")
    assert [e["patient_ids"] for e in listed[:2]] == [["north-P2"], ["north-P1"]]


def test_a_patient_with_enrollments_devices_and_consent_state(world: World, client: TestClient) -> None:
    answer = client.get(f"{V1}/patients/north-P1", headers=world.auth("north", "care_staff"))
    body = answer.json()
    assert answer.status_code == 200
    assert (body["family_name"], body["member_id"]) == ("Lopez", "1EG4TE5MK73")
    programs = {e["program"]: e for e in body["enrollments"]}
    assert programs["RPM"]["consent"] == "recorded" and programs["RPM"]["consent_date"] == "2026-01-05"
    assert programs["CCM"]["consent"] == "missing"
    assert programs["CCM"]["diagnoses"] == ["I10", "E11.9"]
    assert [d["device_id"] for d in body["devices"]] == ["north-D1"]
    assert "extra" not in body and "password_hash" not in answer.text
    (event,) = [e for e in _events(client, world, patient_id="north-P1", action="patient.read")][:1]
    assert event["resource"] == "patients/north-P1" and event["outcome"] == "success"


def test_readings_and_time_entries_over_a_date_range(world: World, client: TestClient) -> None:
    nurse = world.auth("north", "care_staff")
    march = {"from": "2026-03-01", "to": "2026-03-31"}
    readings = client.get(f"{V1}/patients/north-P1/readings", params=march, headers=nurse).json()
    # 05:30Z on March 1st is still February 28th in Chicago: ranges are patient-local dates.
    assert [r["local_date"] for r in readings["items"]] == ["2026-03-01", "2026-03-08"]
    february = client.get(
        f"{V1}/patients/north-P1/readings", params={"from": "2026-02-28", "to": "2026-02-28"}, headers=nurse
    ).json()
    assert [r["measured_at"] for r in february["items"]] == ["2026-03-01T05:30:00Z"]
    paged = client.get(f"{V1}/patients/north-P1/readings", params={**march, "limit": 1}, headers=nurse).json()
    rest = client.get(
        f"{V1}/patients/north-P1/readings",
        params={**march, "limit": 1, "cursor": paged["next_cursor"]},
        headers=nurse,
    ).json()
    assert [r["reading_key"] for r in paged["items"] + rest["items"]] == [
        r["reading_key"] for r in readings["items"]
    ]
    one_day = client.get(
        f"{V1}/patients/north-P1/readings", params={"from": "2026-03-08", "to": "2026-03-08"}, headers=nurse
    ).json()
    assert [r["type"] for r in one_day["items"]] == ["pulse"]
    entries = client.get(f"{V1}/patients/north-P1/time-entries", params=march, headers=nurse).json()
    assert [(t["entry_id"], t["seconds"]) for t in entries["items"]] == [
        ("north-T1", 1199),
        ("north-T2", 1860),
    ]
    backwards = client.get(
        f"{V1}/patients/north-P1/readings", params={"from": "2026-03-31", "to": "2026-03-01"}, headers=nurse
    )
    assert backwards.status_code == 422 and backwards.json()["code"] == "invalid_range"
    missing = client.get(f"{V1}/patients/north-P1/readings", params={"from": "2026-03-01"}, headers=nurse)
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["source"] == "query.to"


def test_a_month_comes_from_the_stored_run_or_live_and_says_which(world: World, client: TestClient) -> None:
    biller = world.auth("north", "biller")
    stored = client.get(f"{V1}/patients/north-P1/months/{MONTH}", headers=biller).json()
    assert (stored["source"], stored["run_id"], stored["run_status"]) == (
        "run",
        world.run_ids["north"],
        "draft",
    )
    assert stored["decisions"] == stored_decisions(world.engine, world.run_ids["north"], "north-P1")
    live = client.get(
        f"{V1}/patients/north-P1/months/{MONTH}", params={"source": "live"}, headers=biller
    ).json()
    engine_now = [
        decision_to_json(d)
        for _, ds in evaluate_month(
            world.engine, "north", parse_month(MONTH), PayerRules.load(), patients={"north-P1"}
        )
        for d in ds
    ]
    assert live["source"] == "live" and live["run_id"] is None
    assert live["decisions"] == engine_now
    no_run = client.get(f"{V1}/patients/north-P1/months/2026-02", headers=biller).json()
    assert no_run["source"] == "live"
    forced = client.get(f"{V1}/patients/north-P1/months/2026-02", params={"source": "run"}, headers=biller)
    assert forced.status_code == 404 and forced.json()["code"] == "no_run"
    unruled = client.get(f"{V1}/patients/north-P1/months/2031-02", headers=biller)
    assert unruled.status_code == 422 and unruled.json()["code"] == "rules_unavailable"
    assert client.get(f"{V1}/patients/north-P1/months/2026-13", headers=biller).status_code == 422


def test_worklist_is_paged_in_the_clis_order(world: World, client: TestClient) -> None:
    nurse = world.auth("north", "care_staff")
    whole = client.get(
        f"{V1}/worklist", params={"as_of": "2026-03-20", "include_done": "true"}, headers=nurse
    ).json()
    assert whole["as_of"] == "2026-03-20" and whole["items"], whole
    seen: list[dict[str, object]] = []
    cursor = None
    while True:
        params = {
            "as_of": "2026-03-20",
            "include_done": "true",
            "limit": 1,
            **({"cursor": cursor} if cursor else {}),
        }
        page = client.get(f"{V1}/worklist", params=params, headers=nurse).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole["items"]
    replayed = client.get(
        f"{V1}/worklist", params={"as_of": "2026-03-21", "cursor": cursor or "x"}, headers=nurse
    )
    assert replayed.status_code == 422
    rpm = client.get(
        f"{V1}/worklist",
        params={"as_of": "2026-03-20", "program": "RPM", "include_done": "true"},
        headers=nurse,
    ).json()
    assert {r["program"] for r in rpm["items"]} == {"RPM"}
    event = _events(client, world, action="worklist.read")[0]
    assert set(event["patient_ids"]) <= {"north-P1", "north-P2"} and event["patient_ids"]


def test_leakage_matches_the_engines_report(world: World, client: TestClient) -> None:
    answer = client.get(f"{V1}/months/{MONTH}/leakage", headers=world.auth("north", "biller"))
    expected = leakage_report(world.engine, "north", parse_month(MONTH), PayerRules.load()).to_json()
    assert answer.status_code == 200
    assert answer.json() == expected


def test_runs_list_and_summary(world: World, client: TestClient) -> None:
    biller = world.auth("north", "biller")
    runs = client.get(f"{V1}/runs", params={"month": MONTH}, headers=biller).json()
    assert [r["run_id"] for r in runs] == [world.run_ids["north"]]
    detail = client.get(f"{V1}/runs/{world.run_ids['north']}", headers=biller).json()
    assert detail["month"] == MONTH and detail["status"] == "draft"
    assert sum(c["lines"] for c in detail["by_code"]) == detail["lines"] == runs[0]["lines"]
    total = sum(float(c["expected_payment"]) for c in detail["by_code"])
    assert abs(total - float(detail["expected_revenue"])) < 0.005
    assert client.get(f"{V1}/runs", params={"month": "2026-3"}, headers=biller).status_code == 422


def test_the_audit_trail_filters_by_patient_actor_and_time(world: World, client: TestClient) -> None:
    nurse_token = world.token_ids["north"]["care_staff"]
    client.get(f"{V1}/patients/north-P2", headers=world.auth("north", "care_staff"))
    by_patient = _events(client, world, patient_id="north-P2")
    assert by_patient and all("north-P2" in e["patient_ids"] for e in by_patient)
    by_actor = _events(client, world, actor=f"token:{nurse_token}")
    assert by_actor and {e["actor"] for e in by_actor} == {f"token:{nurse_token}"}
    by_name = _events(client, world, actor="north-care_staff")
    assert [e["event_id"] for e in by_name] == [e["event_id"] for e in by_actor]
    newest = by_actor[0]["occurred_at"]
    assert _events(client, world, actor=f"token:{nurse_token}", since="2999-01-01T00:00:00Z") == []
    assert (
        _events(client, world, actor=f"token:{nurse_token}", until=newest.replace("Z", "+00:00"))[0][
            "occurred_at"
        ]
        < newest
    )
    naive = client.get(
        f"{V1}/audit-events", params={"since": "2026-01-01T00:00:00"}, headers=world.auth("north", "auditor")
    )
    assert naive.status_code == 422
    page = client.get(
        f"{V1}/audit-events", params={"limit": 2}, headers=world.auth("north", "auditor")
    ).json()
    following = client.get(
        f"{V1}/audit-events",
        params={"limit": 2, "cursor": page["next_cursor"]},
        headers=world.auth("north", "auditor"),
    ).json()
    assert page["items"][-1]["seq"] > following["items"][0]["seq"]


def test_answers_that_may_hold_phi_are_kept_by_no_cache(world: World, client: TestClient) -> None:
    nurse = world.auth("north", "care_staff")
    for path in (f"{V1}/patients/north-P1", f"{V1}/patients", f"{V1}/patients/nobody"):
        answer = client.get(path, headers=nurse)
        assert answer.headers["cache-control"] == "no-store", path
    assert client.get(f"{V1}/patients").headers["cache-control"] == "no-store"  # a refusal too

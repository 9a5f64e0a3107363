"""The live-ingest routes through the real application, on SQLite and PostgreSQL.

A small practice (``tests.ingest.live_practice``: P1 with a Tenovi cuff and a cellular
scale) served by ``create_app``; each route is called happy and bad, and what it stored
is read back from the database, the audit trail and ``explain``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url

from caretally.api.app import create_app
from caretally.api.settings import load_settings
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, lock_month
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.services import accounts, ingest
from caretally.services.context import cli_actor
from caretally.store import schema
from tests.api.world import SECRET
from tests.ingest.live_practice import CUFF, ORG, SCALE_IMEI, open_practice, practice_records, stored_readings

V1 = "/api/v1"
OTHER = "other"
BODY_LIMIT = 8 * 1024


@dataclass
class Practice:
    url: str
    engine: Engine
    client: TestClient
    tokens: dict[str, str]  # role → bearer token of ORG
    token_ids: dict[str, int]
    secrets: dict[str, str]  # org → Tenovi secret

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}


@pytest.fixture
def practice(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Practice]:
    # A short lock wait, read when the engine is made and at each write: a busy database
    # answers within a second instead of after the default 30 s.
    monkeypatch.setenv("CARETALLY_LOCK_TIMEOUT", "0.5")
    engine = open_practice(db_url)
    accounts.add_org(engine, OTHER, "Other Clinic")
    assert import_records(engine, OTHER, practice_records()).stored
    app = create_app(load_settings(database_url=db_url, secret_key=SECRET, max_body_bytes=BODY_LIMIT))
    served = app.state.service.engine
    tokens, ids = {}, {}
    for role in ("integration", "care_staff", "biller", "auditor"):
        made = accounts.create_token(served, cli_actor(ORG), name=role, role=role)
        tokens[role], ids[role] = made.secret, made.record.token_id
    keys = {org: ingest.set_webhook_secret(served, cli_actor(org), "tenovi").secret for org in (ORG, OTHER)}
    with TestClient(app) as client:
        yield Practice(db_url, served, client, tokens, ids, keys)
    engine.dispose()


def reading(n: int = 1, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "reading_id": f"scale-{n}",
        "patient_id": "P1",
        "device_id": "D2",
        "measured_at": f"2026-03-{n:02d}T07:30:00-06:00",
        "type": "weight",
        "value": "182.4",
        "unit": "lbs",
        "transmission": "auto",
    }
    item.update(changes)
    return item


def events(engine: Engine, action: str, org: str = ORG) -> list[tuple[str, str, list[str], dict[str, Any]]]:
    """(actor, outcome, patients, detail) of each audit event with ``action``, oldest first."""
    e, p = schema.audit_events, schema.audit_event_patients
    with engine.connect() as conn:
        rows = conn.execute(
            select(e.c.event_id, e.c.actor, e.c.outcome, e.c.detail)
            .where(e.c.org_id == org, e.c.action == action)
            .order_by(e.c.seq)
        ).all()
        out = []
        for row in rows:
            patients = conn.execute(
                select(p.c.patient_id).where(p.c.event_id == row.event_id).order_by(p.c.patient_id)
            ).scalars()
            out.append((row.actor, row.outcome, list(patients), row.detail or {}))
    return out


def changes(engine: Engine, table: str) -> list[dict[str, Any]]:
    a = schema.audit_changes
    with engine.connect() as conn:
        query = select(a).where(a.c.org_id == ORG, a.c.table_name == table).order_by(a.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


# -- readings -------------------------------------------------------------------------------


def test_readings_insert_then_unchanged_then_an_audited_update(practice: Practice) -> None:
    nurse = practice.auth("care_staff")
    first = practice.client.post(f"{V1}/readings", json=[reading(1), reading(2)], headers=nurse)
    assert first.status_code == 200, first.text
    body = first.json()
    assert (body["ok"], body["stored"], body["counts"]["inserted"]) == (True, True, 2)
    assert [(i["pointer"], i["status"], i["key"]) for i in body["items"]] == [
        ("/0", "inserted", "scale-1"),
        ("/1", "inserted", "scale-2"),
    ]
    assert body["touched"] == [{"patient_id": "P1", "month": "2026-03"}]

    again = practice.client.post(f"{V1}/readings", json=[reading(1), reading(2)], headers=nurse).json()
    assert [i["status"] for i in again["items"]] == ["unchanged", "unchanged"] and again["touched"] == []

    fixed = practice.client.post(f"{V1}/readings", json=[reading(2, value="181.0")], headers=nurse).json()
    assert [i["status"] for i in fixed["items"]] == ["updated"]
    stored = {r["reading_id"]: r["value"] for r in stored_readings(practice.engine)}
    assert stored == {"scale-1": "182.4", "scale-2": "181.0"}
    [change] = changes(practice.engine, "readings")
    assert change["actor"] == f"token:{practice.token_ids['care_staff']}"
    assert (change["old_values"]["value"], change["new_values"]["value"]) == ("182.4", "181.0")
    written = events(practice.engine, "readings.write")
    assert [(actor, outcome, patients) for actor, outcome, patients, _ in written] == [
        (f"token:{practice.token_ids['care_staff']}", "success", ["P1"]),
        (f"token:{practice.token_ids['care_staff']}", "success", []),  # nothing changed: no patient
        (f"token:{practice.token_ids['care_staff']}", "success", ["P1"]),
    ]
    assert written[2][3]["counts"] == {"updated": 1}


def test_bad_readings_list_every_problem_and_store_nothing_unless_partial(practice: Practice) -> None:
    feed = practice.auth("integration")
    sent = [
        reading(1),
        reading(2, measured_at="2026-03-02T07:30:00"),
        reading(3, patient_id="P9"),
        reading(4, transmission="carrier pigeon"),
    ]
    refused = practice.client.post(f"{V1}/readings", json=sent, headers=feed)
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["code"] == "ingest_refused" and "Traceback" not in refused.text
    pointers = {(e["pointer"], e["code"]) for e in problem["errors"]}
    assert {("/1/measured_at", "naive_timestamp"), ("/2/patient_id", "unknown_patient")} <= pointers
    assert ("/3/transmission", "bad_enum") in pointers, pointers
    assert [i["status"] for i in problem["items"]] == ["not_stored", "rejected", "rejected", "rejected"]
    assert stored_readings(practice.engine) == []
    assert [o for _, o, _, _ in events(practice.engine, "readings.write")] == ["invalid"]

    kept = practice.client.post(f"{V1}/readings", params={"partial": "true"}, json=sent, headers=feed)
    assert kept.status_code == 200, kept.text
    body = kept.json()
    assert (body["ok"], body["stored"]) == (False, True)
    assert [i["status"] for i in body["items"]] == ["inserted", "rejected", "rejected", "rejected"]
    assert {e["pointer"] for e in body["problems"]} >= {"/1/measured_at", "/2/patient_id"}
    assert [r["reading_id"] for r in stored_readings(practice.engine)] == ["scale-1"]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"[{", "bad_json"), (b"", "empty_body"), (b'{"reading_id": "x"}', "ingest_refused")],
)
def test_a_body_that_is_not_a_json_array_is_one_clear_problem(
    practice: Practice, body: bytes, code: str
) -> None:
    answer = practice.client.post(
        f"{V1}/readings",
        content=body,
        headers={**practice.auth("integration"), "Content-Type": "application/json"},
    )
    assert answer.status_code == 422 and answer.json()["code"] == code, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_body_over_the_limit_is_refused_before_it_is_read_whole(practice: Practice) -> None:
    many = [reading(1 + n % 28, reading_id=f"big-{n}") for n in range(200)]
    raw = json.dumps(many).encode()
    assert len(raw) > BODY_LIMIT
    headers = {**practice.auth("integration"), "Content-Type": "application/json"}
    declared = practice.client.post(f"{V1}/readings", content=raw, headers=headers)
    assert declared.status_code == 413 and declared.json()["code"] == "body_too_large"
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(raw), 1024):
            sent.append(start)
            yield raw[start : start + 1024]

    streamed = practice.client.post(f"{V1}/readings", content=chunks(), headers=headers)
    assert streamed.status_code == 413 and streamed.json()["code"] == "body_too_large"
    assert stored_readings(practice.engine) == []


# -- FHIR and Tenovi, then explain ----------------------------------------------------------


def observation(oid: str, code: str, when: str, value: Any, unit: str, device: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"identifier": {"system": "urn:caretally:patient-id", "value": "P1"}},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }
    if device is not None:
        resource["device"] = {"identifier": {"system": "urn:caretally:hardware-id", "value": device}}
    return resource


def fhir_bundle(*resources: dict[str, Any], kind: str = "collection") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": [{"resource": r} for r in resources]}


def measurement(day: int, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "metric": "blood_pressure",
        "device_name": "Tenovi BPM - L",
        "hwi_device_id": CUFF,
        "patient_id": "P1",
        "hardware_uuid": "A1B2C3D4E5F6",
        "sensor_code": "10",
        "value_1": 128,
        "value_2": 82,
        "created": f"2026-03-{day:02d}T14:00:00Z",
        "timestamp": f"2026-03-{day:02d}T14:00:00Z",
        "timezone_offset": -6 if day < 8 else -5,  # Chicago; daylight time from 2026-03-08
        "estimated_timestamp": False,
    }
    item.update(changes)
    return item


def supply_decisions(practice: Practice) -> dict[str, Any]:
    """Explain's device-supply decisions for P1's 30-day period 2026-03-03 – 04-01.

    The period began with the device on 2026-02-01, so its second one starts on 03-03 and,
    with its date of service on 04-01, belongs to April: that is the month to explain.
    """
    answer = practice.client.get(
        f"{V1}/patients/P1/months/2026-04", params={"source": "live"}, headers=practice.auth("care_staff")
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "live"
    return {
        d["code"]: d
        for d in answer.json()["decisions"]
        if d["code"] in ("99445", "99454") and d["period"]["start"] == "2026-03-03"
    }


def test_a_fhir_bundle_and_a_tenovi_webhook_post_readings_that_explain_counts(practice: Practice) -> None:
    feed = practice.auth("integration")
    scale_days = [
        observation(f"w{d}", "29463-7", f"2026-03-{d:02d}T08:00:00-06:00", 82.5, "kg", SCALE_IMEI)
        for d in range(3, 11)
    ]
    manual = observation("m19", "29463-7", "2026-03-19T08:00:00-05:00", 82.0, "kg", None)
    posted = practice.client.post(
        f"{V1}/fhir", json=fhir_bundle(*scale_days, manual, kind="batch"), headers=feed
    )
    assert posted.status_code == 200, posted.text
    assert posted.json()["counts"]["inserted"] == 9

    webhook = {"X-Webhook-Secret": practice.secrets[ORG]}
    cuff = [measurement(d) for d in range(11, 15)]  # the cuff went back on 03-15
    scale = [
        measurement(d, metric="weight", hwi_device_id=SCALE_IMEI, value_1=181, value_2=None)
        for d in (15, 16, 17, 18)
    ]
    battery = measurement(18, metric="battery_percentage", value_1=80, value_2=None)
    sent = practice.client.post(f"{V1}/webhooks/tenovi", json=[*cuff, *scale, battery], headers=webhook)
    assert sent.status_code == 200, sent.text
    body = sent.json()
    assert body["counts"]["inserted"] == 8 and body["counts"]["ignored"] == 1
    assert [w["code"] for w in body["warnings"]] == ["ignored_metric"]

    rows = stored_readings(practice.engine)
    assert len(rows) == 17
    assert {r["transmission"] for r in rows if r["reading_id"] == "w1" or r["device_id"] == "D1"} == {"auto"}
    assert [r["device_id"] for r in rows if r.get("reading_id") == "m19"] == [None]
    supply = supply_decisions(practice)["99454"]
    # 03-03 … 03-18 from the scale (FHIR, then Tenovi) and the cuff; the manual 03-19 is no device day
    assert (supply["status"], supply["measures"]["days"]) == ("billable", 16)
    who = {actor for actor, _, _, _ in events(practice.engine, "tenovi.write")}
    assert who == {"webhook:tenovi"}
    assert events(practice.engine, "fhir.write")[0][2] == ["P1"]


def test_a_bad_fhir_bundle_points_into_the_bundle(practice: Practice) -> None:
    feed = practice.auth("integration")
    good = observation("ok1", "29463-7", "2026-03-03T08:00:00-06:00", 82, "kg", SCALE_IMEI)
    naive = observation("bad1", "29463-7", "2026-03-04T08:00:00", 82, "kg", SCALE_IMEI)
    unknown_code = observation("bad2", "1234-5", "2026-03-05T08:00:00-06:00", 82, "kg", SCALE_IMEI)
    stranger = {"resourceType": "Condition", "id": "c1"}
    answer = practice.client.post(
        f"{V1}/fhir", json=fhir_bundle(good, naive, unknown_code, stranger), headers=feed
    )
    assert answer.status_code == 422, answer.text
    pointers = [e["pointer"] for e in answer.json()["errors"]]
    assert all(p.startswith(("/entry/1/", "/entry/2/", "/entry/3/")) for p in pointers), pointers
    assert {p.split("/")[2] for p in pointers} == {"1", "2", "3"}
    assert stored_readings(practice.engine) == []
    not_a_bundle = practice.client.post(f"{V1}/fhir", json={"resourceType": "Patient"}, headers=feed)
    assert not_a_bundle.status_code == 422 and not_a_bundle.json()["errors"]


def test_the_webhook_organization_comes_from_its_secret_only(practice: Practice) -> None:
    body = [measurement(10)]
    url = f"{V1}/webhooks/tenovi"
    for headers in (
        {},
        {"X-Webhook-Secret": "not-the-secret-" + "x" * 30},
        practice.auth("integration"),  # an API token is not the webhook's credential
    ):
        refused = practice.client.post(url, json=body, headers=headers)
        assert refused.status_code == 401 and refused.json()["code"] == "bad_webhook_secret"
    # Other's secret with a body naming our patient: the readings go to other's P1, never ours.
    theirs = practice.client.post(url, json=body, headers={"X-Webhook-Secret": practice.secrets[OTHER]})
    assert theirs.status_code == 200, theirs.text
    assert stored_readings(practice.engine) == []
    assert len(stored_readings(practice.engine, OTHER)) == 1
    # A new secret retires the old one.
    old = practice.secrets[ORG]
    new = ingest.set_webhook_secret(practice.engine, cli_actor(ORG), "tenovi").secret
    assert practice.client.post(url, json=body, headers={"X-Webhook-Secret": old}).status_code == 401
    assert practice.client.post(url, json=body, headers={"X-Webhook-Secret": new}).status_code == 200
    with practice.engine.connect() as conn:
        digests = conn.execute(select(schema.webhook_secrets.c.digest)).scalars().all()
    assert old not in digests and new not in digests and len(digests) == 2


# -- time entries ---------------------------------------------------------------------------


def entry(entry_id: str, started_at: str, **changes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "entry_id": entry_id,
        "patient_id": "P1",
        "practitioner_id": "RN1",
        "program": "RPM",
        "started_at": started_at,
        "minutes": "12",
        "activity": "reviewed readings, called patient",
        "interactive": "true",
        "modality": "phone",
    }
    item.update(changes)
    return item


def test_time_entries_are_logged_amended_and_refused_in_a_locked_month(practice: Practice) -> None:
    nurse = practice.auth("care_staff")
    logged = practice.client.post(
        f"{V1}/time-entries",
        json=[entry("T-1", "2026-03-05T10:00:00-06:00"), entry("T-2", "2026-04-02T10:00:00-05:00")],
        headers=nurse,
    )
    assert logged.status_code == 200, logged.text
    assert [i["status"] for i in logged.json()["items"]] == ["inserted", "inserted"]

    amended = practice.client.patch(f"{V1}/time-entries/T-1", json={"minutes": "21"}, headers=nurse)
    assert amended.status_code == 200, amended.text
    assert amended.json()["items"] == [{"pointer": "", "status": "updated", "key": "T-1"}]
    [change] = changes(practice.engine, "time_entries")
    assert change["record_key"] == "T-1" and change["actor"] == f"token:{practice.token_ids['care_staff']}"
    assert events(practice.engine, "time_entry.amend")[-1][1:3] == ("success", ["P1"])

    bad = practice.client.patch(
        f"{V1}/time-entries/T-1", json={"minutes": "-3", "colour": "red"}, headers=nurse
    )
    assert bad.status_code == 422 and {e["pointer"] for e in bad.json()["errors"]} == {"/colour"}
    missing = practice.client.patch(f"{V1}/time-entries/T-404", json={"minutes": "5"}, headers=nurse)
    assert missing.status_code == 404 and missing.json()["code"] == "no_such_time_entry"

    run = bill_month(practice.engine, ORG, parse_month("2026-03"), PayerRules.load())
    lock_month(practice.engine, ORG, "2026-03", accept_provisional=True)
    refused = practice.client.patch(f"{V1}/time-entries/T-1", json={"minutes": "25"}, headers=nurse)
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "locked_month" and run.run_id in refused.json()["detail"]
    late = practice.client.post(
        f"{V1}/time-entries", json=[entry("T-3", "2026-03-20T10:00:00-05:00")], headers=nurse
    )
    assert late.status_code == 409 and run.run_id in late.json()["detail"]
    assert late.json()["errors"][0]["pointer"].startswith("/0")
    # A month that is not locked still takes changes.
    april = practice.client.patch(f"{V1}/time-entries/T-2", json={"minutes": "15"}, headers=nurse)
    assert april.status_code == 200, april.text
    # The one that was refused was not changed.
    t = schema.time_entries
    with practice.engine.connect() as conn:
        seconds = conn.execute(select(t.c.seconds).where(t.c.entry_id == "T-1")).scalar_one()
    assert seconds == 21 * 60


def test_the_integration_role_posts_but_reads_nothing(practice: Practice) -> None:
    feed = practice.auth("integration")
    assert practice.client.post(f"{V1}/readings", json=[reading(4)], headers=feed).status_code == 200
    assert practice.client.get(f"{V1}/patients/P1", headers=feed).status_code == 403
    assert practice.client.get(f"{V1}/patients/P1/months/2026-03", headers=feed).status_code == 403
    assert (
        practice.client.post(
            f"{V1}/readings", json=[reading(5)], headers=practice.auth("auditor")
        ).status_code
        == 403
    )
    assert (
        practice.client.post(f"{V1}/time-entries", json=[], headers=practice.auth("biller")).status_code
        == 403
    )


# -- a busy database ------------------------------------------------------------------------


def _hold_write_lock(url: str) -> Any:
    """Another process's long write: SQLite's one write lock, or PostgreSQL's table lock."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        return conn
    engine = create_engine(url)
    conn = engine.connect()
    conn.execute(text("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE"))
    return conn


def test_a_locked_database_is_503_with_retry_after_and_the_retry_succeeds(practice: Practice) -> None:
    feed = practice.auth("integration")
    assert practice.client.post(f"{V1}/readings", json=[reading(1)], headers=feed).status_code == 200
    holder = _hold_write_lock(practice.url)
    try:
        busy = practice.client.post(f"{V1}/readings", json=[reading(2)], headers=feed)
    finally:
        holder.rollback()
        holder.close()
    assert busy.status_code == 503, busy.text
    assert busy.json()["code"] == "database_busy" and int(busy.headers["Retry-After"]) >= 1
    assert busy.headers["content-type"] == "application/problem+json"
    assert [r["reading_id"] for r in stored_readings(practice.engine)] == ["scale-1"]
    retried = practice.client.post(f"{V1}/readings", json=[reading(2)], headers=feed)
    assert retried.status_code == 200 and retried.json()["counts"]["inserted"] == 1


def test_explain_counts_nothing_in_that_period_before_ingest(practice: Practice) -> None:
    """The explain assertions above are about the posted readings, not the practice's own."""
    supply = supply_decisions(practice)["99454"]
    assert (supply["status"], supply["measures"]["days"]) == ("not_billable", 0)

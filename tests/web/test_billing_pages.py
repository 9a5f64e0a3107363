"""Month close, leakage, packets and practice settings through the served app, on SQLite and
PostgreSQL: real sign-in, real forms with their CSRF tokens, real month-run jobs.

The practice is synthesized (12 patients, February–March 2026) into the web world's
organization; March is billed as a draft before the tests run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, current_run
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.services import audit, practice
from caretally.services.context import cli_actor
from caretally.store import schema
from caretally.synth import SynthConfig, synthesize
from caretally.web.routes.packets import packet_link
from tests.export.x12check import validate_x12
from tests.web.webapp import ORG, WebWorld, build_web_world, csrf_of

MONTH = "2026-03"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[WebWorld]:
    built = build_web_world(db_url, queue_file=str(tmp_path / "jobs.queue"), job_heartbeat_seconds=1)
    synthesize(SynthConfig(patients=12, start=date(2026, 2, 1), months=2, seed=3), tmp_path / "bundle")
    report = import_bundle(built.engine, ORG, tmp_path / "bundle")
    assert report.ok(), report.problems[:3]
    bill_month(built.engine, ORG, parse_month(MONTH), PayerRules.load())
    yield built
    built.close()


def events(world: WebWorld, action: str) -> list[audit.AuditEvent]:
    found, _ = audit.list_events(
        world.engine, cli_actor(ORG), audit.EventFilter(None, None, action, None, None), limit=100
    )
    return found


def test_month_close_shows_the_run_its_reasons_and_a_packet_link_per_line(world: WebWorld) -> None:
    biller = world.signed_in("biller")
    page = biller.get(f"/month-close?month={MONTH}")
    assert page.status_code == 200, page.text[:300]
    run = current_run(world.engine, ORG, MONTH)
    assert run is not None and run.run_id in page.text
    for name in ("Claims CSV", "837P (X12)", "FHIR claims", "Claims JSON", "Explanations (JSON Lines)"):
        assert f">{name}</a>" in page.text
    assert "Codes not billed, by the rule that stopped them" in page.text
    assert f'href="/claims/{run.run_id}/lines/1"' in page.text
    assert f">Lock {MONTH}</button>" in page.text
    (read,) = events(world, "month_close.read")
    assert read.patient_ids  # the page disclosed the run's patients, and says whom

    auditor = world.signed_in("auditor")
    seen = auditor.get(f"/month-close?month={MONTH}").text
    assert "Lock " not in seen and "Run the month" not in seen and "Claims CSV" not in seen
    assert world.signed_in("care_staff").get("/month-close").status_code == 403


def test_a_month_run_job_then_lock_refused_without_csrf_then_locked(world: WebWorld) -> None:
    biller = world.signed_in("biller")
    token = csrf_of(biller.get(f"/month-close?month={MONTH}").text)
    started = biller.post(f"/month-close/{MONTH}/runs", data={"csrf_token": token})
    assert started.status_code == 303
    page = biller.get(started.headers["location"]).text
    assert f'<label for="job-progress">Billing {MONTH}</label>' in page
    (job_url,) = re.findall(r'data-job-url="([^"]+)"', page)
    deadline = time.monotonic() + 90
    while True:
        state = biller.get(job_url).json()
        assert set(state) >= {"state", "done", "total", "percent", "finished"}
        if state["finished"]:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.3)
    assert state["state"] == "succeeded", state

    assert biller.post(f"/month-close/{MONTH}/lock", data={}).status_code == 403  # no CSRF token
    run = current_run(world.engine, ORG, MONTH)
    assert run is not None and run.status == "draft"
    locked = biller.post(f"/month-close/{MONTH}/lock", data={"csrf_token": token})
    assert locked.status_code == 303
    assert current_run(world.engine, ORG, MONTH).status == "locked"  # type: ignore[union-attr]
    again = biller.post(f"/month-close/{MONTH}/lock", data={"csrf_token": token})
    assert again.status_code == 409 and "<h1" in again.text and "Traceback" not in again.text


def test_practice_settings_are_checked_stored_and_used_by_the_837p_and_the_run(world: WebWorld) -> None:
    biller = world.signed_in("biller")
    refused = biller.get(f"/month-close/{MONTH}/claims?format=x12")
    assert refused.status_code == 409 and "practice identity" in refused.text
    assert biller.get("/admin/practice").status_code == 403

    admin = world.signed_in("admin")
    form = admin.get("/admin/practice")
    assert form.status_code == 200 and "None yet" in form.text
    token = csrf_of(form.text)
    bad = admin.post(
        "/admin/practice",
        data={
            "csrf_token": token,
            "identity_toml": '[practice]\nname = "CHANGEME"\n',
            "locality": "",
            "payer_overlays": "",
        },
    )
    assert bad.status_code == 422 and 'aria-invalid="true"' in bad.text and "problem" in bad.text
    assert not practice.get_settings(world.engine, cli_actor(ORG)).has_identity
    wrong = admin.post(
        "/admin/practice",
        data={"csrf_token": token, "identity_toml": "", "locality": "", "payer_overlays": "commercial=nope"},
    )
    assert wrong.status_code == 422 and "overlay" in wrong.text
    saved = admin.post(
        "/admin/practice",
        data={
            "csrf_token": token,
            "identity_toml": practice.demo_identity_toml(),
            "locality": "",
            "payer_overlays": "commercial=example-commercial",
        },
    )
    assert saved.status_code == 303
    shown = admin.get("/admin/practice").text
    assert "CARETALLY DEMO CLINIC" in shown and "commercial=example-commercial" in shown
    (event,) = events(world, "practice_settings.update")
    assert event.outcome == audit.SUCCESS

    x12 = biller.get(f"/month-close/{MONTH}/claims?format=x12")
    assert x12.status_code == 200, x12.text[:300]
    text = x12.content.decode("ascii")
    assert "CARETALLY DEMO CLINIC" in text
    result = validate_x12(text)
    assert result.accepted, result.errors

    token = csrf_of(biller.get(f"/month-close?month={MONTH}").text)
    assert biller.post(f"/month-close/{MONTH}/runs", data={"csrf_token": token}).status_code == 303
    deadline = time.monotonic() + 90
    while True:
        with world.engine.connect() as conn:
            job = conn.execute(
                select(schema.jobs.c.state, schema.jobs.c.run_id).order_by(schema.jobs.c.created_at.desc())
            ).first()
        if job is not None and job.state in ("succeeded", "failed"):
            break
        assert time.monotonic() < deadline
        time.sleep(0.3)
    assert job.state == "succeeded"
    with world.engine.connect() as conn:
        settings = conn.execute(
            select(schema.billing_runs.c.settings).where(schema.billing_runs.c.run_id == job.run_id)
        ).scalar_one()
    assert settings["payer_overlays"] == {"commercial": "example-commercial"}


def test_packet_page_and_json_for_auditor_and_biller_not_care_staff(world: WebWorld) -> None:
    run = current_run(world.engine, ORG, MONTH)
    assert run is not None
    href = f"/claims/{run.run_id}/lines/1"
    for role in ("auditor", "biller", "admin"):
        client = world.signed_in(role)
        page = client.get(href)
        assert page.status_code == 200, (role, page.text[:300])
        assert "Download JSON" in page.text and "Rule checks, values and citations" in page.text
        doc = client.get(f"{href}/packet.json")
        assert doc.status_code == 200 and doc.json()["line"]["number"] == 1
        assert doc.json()["run"]["run_id"] == run.run_id
    assert world.signed_in("care_staff").get(href).status_code == 403
    auditor = world.signed_in("auditor")
    missing = auditor.get(f"/claims/{run.run_id}/lines/99999")
    assert missing.status_code == 404 and "Traceback" not in missing.text
    line = auditor.get(f"{href}/packet.json").json()["line"]
    found = auditor.get(packet_link(run.run_id, line["patient_id"], line["code"], line["enrollment_id"]))
    assert found.status_code == 303 and found.headers["location"] == href
    assert auditor.get(packet_link(run.run_id, line["patient_id"], "99999")).status_code == 404
    reads = events(world, "packet.read")
    assert (
        len([e for e in reads if e.outcome == audit.SUCCESS]) == 7
    )  # three roles, page and JSON each, and one more JSON


def test_leakage_page_has_the_trend_and_the_month_by_reason(world: WebWorld) -> None:
    biller = world.signed_in("biller")
    page = biller.get(f"/leakage?month={MONTH}")
    assert page.status_code == 200, page.text[:300]
    assert 'role="img"' in page.text and "Money missed in March 2026, by reason" in page.text
    assert biller.get("/leakage?month=2026-13").status_code == 422
    (read,) = events(world, "leakage.read")
    assert read.detail["months"][-1] == MONTH


@pytest.fixture
def proposed_world(db_url: str, tmp_path: Path) -> Iterator[WebWorld]:
    """January 2027, judged by the proposed 2027 rule-year: a provisional draft."""
    built = build_web_world(db_url, queue_file=str(tmp_path / "jobs.queue"))
    synthesize(SynthConfig(patients=8, start=date(2027, 1, 1), months=1, seed=4), tmp_path / "bundle")
    assert import_bundle(built.engine, ORG, tmp_path / "bundle").ok()
    bill_month(built.engine, ORG, parse_month("2027-01"), PayerRules.load())
    yield built
    built.close()


def test_locking_a_provisional_run_needs_the_acceptance_box(proposed_world: WebWorld) -> None:
    biller = proposed_world.signed_in("biller")
    page = biller.get("/month-close?month=2027-01").text
    assert "proposed rule-year" in page
    assert re.search(r'<input type="checkbox" value="true" id="[^"]+" name="accept_provisional"', page)
    assert "Accept the proposed rule-year (provisional)</label>" in page
    token = csrf_of(page)
    refused = biller.post("/month-close/2027-01/lock", data={"csrf_token": token})
    assert refused.status_code == 409 and "Traceback" not in refused.text
    assert current_run(proposed_world.engine, ORG, "2027-01").status == "draft"  # type: ignore[union-attr]
    locked = biller.post(
        "/month-close/2027-01/lock", data={"csrf_token": token, "accept_provisional": "true"}
    )
    assert locked.status_code == 303
    run = current_run(proposed_world.engine, ORG, "2027-01")
    assert run is not None and run.status == "locked" and run.provisional_accepted


def test_a_billed_decision_on_the_patient_page_links_to_its_packet(world: WebWorld) -> None:
    run = current_run(world.engine, ORG, MONTH)
    assert run is not None
    auditor = world.signed_in("auditor")
    line = auditor.get(f"/claims/{run.run_id}/lines/1/packet.json").json()["line"]
    page = auditor.get(f"/patients/{line['patient_id']}?as_of=2026-03-31")
    assert page.status_code == 200, page.text[:300]
    links = dict(
        (code, href.replace("&amp;", "&"))
        for href, code in re.findall(r'<a href="(/claims/[^"]+)">Audit packet for (\w+)</a>', page.text)
    )
    assert line["code"] in links
    opened = auditor.get(links[line["code"]])
    assert opened.status_code == 303
    assert auditor.get(opened.headers["location"]).status_code == 200
    nurse = world.signed_in("care_staff").get(f"/patients/{line['patient_id']}?as_of=2026-03-31")
    assert nurse.status_code == 200 and "Audit packet for" not in nurse.text  # no runs:read

"""The biller's and the auditor's day in a real browser, against a real ``caretally serve --demo``.

The practice is the demo's (``serve_demo.prepare_demo``: synthesized, imported, its last
complete month billed as a draft, a user per role, the demo 837P identity stored as the
organization's practice settings), kept small. The server is started with ``--demo`` on
that database, so it must keep the users it finds (and say so), then:

- a biller runs the month again, watches the named progress bar, locks the month after
  the confirmation, and downloads the 837P (validated by pyx12) and the CSV;
- an auditor opens a claim line's packet from Month close, downloads its JSON, and finds
  the packet views in the Audit access log;
- a nurse (care staff) has no Month close link and gets a 403 page at its address.

Screenshots of Month close, Leakage and the packet go to ``docs/screenshots`` with
``CARETALLY_SCREENSHOTS=1`` (the README's), else to the test's folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from caretally.cli.serve_demo import DemoUser, prepare_demo
from caretally.services import audit, care
from caretally.services.context import cli_actor
from caretally.store import schema
from caretally.store.db import DEFAULT_ORG, open_database
from tests.export.x12check import validate_x12
from tests.web.browser import Server


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, DemoUser], str]:
    folder = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{folder / 'demo.db'}"
    url, users, built = prepare_demo(url, patients=24, months=2, seed=5)
    assert built and all(u.password for u in users)
    again_url, again, rebuilt = prepare_demo(url, patients=24, months=2, seed=5)
    assert again_url == url and not rebuilt and all(u.password is None for u in again)
    engine = open_database(url, DEFAULT_ORG)
    with engine.connect() as conn:
        month = conn.execute(select(schema.billing_runs.c.month)).scalar_one()
    assert len(care.linked_practitioners(engine, DEFAULT_ORG)) == 1  # the nurse logs time as staff
    engine.dispose()
    return url, {u.role: u for u in users}, month


@pytest.fixture
def server(demo: tuple[str, dict[str, DemoUser], str], caretally_server: Callable[..., Server]) -> Server:
    started = caretally_server(demo[0], "--demo")
    assert "exists already" in started.output()  # restart: the users are kept, not made again
    assert "password:" not in started.output()
    return started


SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def shots(tmp_path: Path) -> Path:
    """``docs/screenshots`` with ``CARETALLY_SCREENSHOTS=1`` (as test_served.py), else the test's folder."""
    folder = SHOTS if os.environ.get("CARETALLY_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in(page: Page, server: Server, user: DemoUser) -> None:
    page.goto(server.url("/signin"))
    page.get_by_label("Email").fill(user.email)
    page.get_by_label("Password").fill(user.password or "")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def test_a_biller_runs_locks_and_downloads_the_month(
    page: Page, server: Server, demo: tuple[str, dict[str, DemoUser], str], tmp_path: Path
) -> None:
    _url, users, month = demo
    sign_in(page, server, users["biller"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Month close").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Month close")
    page.get_by_label("Month", exact=True).fill(month)
    page.get_by_role("button", name="Show month").click()

    page.get_by_role("button", name="Run the month again").click()
    bar = page.get_by_role("progressbar", name=f"Billing {month}")
    expect(bar).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="patients")).to_contain_text("patients")
    # The script follows the job and reloads when it ends: the Lock button comes back.
    lock = page.get_by_role("button", name=f"Lock {month}")
    expect(lock).to_be_visible(timeout=60_000)
    expect(bar).to_have_count(0)
    expect(page.get_by_role("table", name=re.compile("^Claim lines by code and payer"))).to_be_visible()
    expect(page.get_by_role("table", name="Codes not billed, by the rule that stopped them")).to_be_visible()
    page.screenshot(path=str(shots(tmp_path) / "month-close.png"), full_page=True)

    page.once("dialog", lambda dialog: dialog.accept())
    lock.click()
    expect(page.get_by_text(f"{month} is locked")).to_be_visible()
    flash = page.get_by_text(f"{month} is locked").inner_text()
    locked_run = re.search(r"run ([0-9a-f-]{36})", flash).group(1)  # type: ignore[union-attr]
    expect(page.get_by_role("button", name=f"Lock {month}")).to_have_count(0)

    with page.expect_download() as x12:
        page.get_by_role("link", name="837P (X12)").click()
    text = Path(x12.value.path()).read_text(encoding="ascii")
    assert text.startswith("ISA*") and "*837*" in text
    result = validate_x12(text)
    assert result.accepted, result.errors

    with page.expect_download() as claims_csv:
        page.get_by_role("link", name="Claims CSV").click()
    rows = list(csv.DictReader(io.StringIO(Path(claims_csv.value.path()).read_text(encoding="utf-8"))))
    assert rows, "the month has claim lines"
    assert {r["run_id"] for r in rows} == {locked_run}  # the run just locked
    assert text.count("SV1*") == len(rows)  # one 837P service line per CSV line

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Leakage").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Leakage")
    expect(page.get_by_role("img", name=re.compile("."))).not_to_have_count(0)
    page.screenshot(path=str(shots(tmp_path) / "leakage.png"), full_page=True)


def test_an_auditor_opens_a_packet_and_the_access_log_shows_it(
    page: Page, server: Server, demo: tuple[str, dict[str, DemoUser], str], tmp_path: Path
) -> None:
    url, users, month = demo
    sign_in(page, server, users["auditor"])
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Month close").click()
    expect(page.get_by_role("button", name=re.compile("^(Run the month|Lock )"))).to_have_count(0)
    page.get_by_text("Show every line with its audit packet").click()
    page.get_by_role("link", name="Packet for line 1", exact=True).click()
    heading = page.get_by_role("heading", level=1)
    expect(heading).to_contain_text("Claim line")
    patient = re.search(r" for (\S+),", heading.inner_text())
    assert patient is not None
    expect(page.get_by_role("heading", name="Rule checks, values and citations")).to_be_visible()
    page.screenshot(path=str(shots(tmp_path) / "packet.png"))  # the top: line, patient, enrollment

    with page.expect_download() as packet_json:
        page.get_by_role("link", name="Download JSON").click()
    doc = json.loads(Path(packet_json.value.path()).read_text(encoding="utf-8"))
    assert doc["line"]["number"] == 1 and doc["line"]["patient_id"] == patient.group(1)
    assert doc["run"]["month"] == month

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    page.get_by_label("Patient id").fill(patient.group(1))
    page.get_by_role("button", name="Search").click()
    log = page.get_by_role("table")
    expect(log.get_by_text("packet.read").first).to_be_visible()
    assert log.get_by_text("packet.read").count() >= 2  # the page and its JSON

    engine = open_database(url, DEFAULT_ORG)
    try:
        events, _ = audit.list_events(
            engine,
            cli_actor(DEFAULT_ORG),
            audit.EventFilter(patient.group(1), users["auditor"].email, None, None, None),
            limit=50,
        )
    finally:
        engine.dispose()
    assert {e.action for e in events} >= {"packet.read", "month_close.read"}


def test_a_nurse_cannot_reach_month_close(
    page: Page, server: Server, demo: tuple[str, dict[str, DemoUser], str]
) -> None:
    sign_in(page, server, demo[1]["care_staff"])
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Worklist")).to_be_visible()
    expect(nav.get_by_role("link", name="Month close")).to_have_count(0)
    answer = page.goto(server.url("/month-close"))
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    answer = page.goto(server.url(f"/month-close/{demo[2]}/claims?format=csv"))
    assert answer is not None and answer.status == 403

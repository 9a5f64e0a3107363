"""Journeys in Chromium against a real ``caretally serve`` over a synthetic practice.

The practice is synthesized, imported and partly billed into a SQLite file, then served by
``caretally serve`` on a loopback port (a separate process). The browser signs in through
the form and finds everything by role and accessible name. Screenshots of each page land
in ``docs/screenshots/`` (only with ``CARETALLY_SCREENSHOTS=1``: a test run leaves the checkout as it was).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from caretally.services import alerts
from caretally.services.context import cli_actor
from tests.web.browser import VIEWPORT, Server, free_port, serve_command, server_env, start_server
from tests.web.webapp import ORG, PASSWORD, TODAY, CareWorld, build_care_world, email_of

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

#: Example alert thresholds for the served practice (configuration a practice sets; not advice).
EXAMPLE_THRESHOLDS = (
    ("RPM", "blood_pressure.systolic", "160", None),
    ("RPM", "blood_pressure.systolic", None, "90"),
    ("RPM", "glucose", "250", "70"),
    ("RPM", "weight", "300", None),
)


@pytest.fixture(scope="module")
def practice(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CareWorld]:
    folder = tmp_path_factory.mktemp("served")
    world = build_care_world(f"sqlite:///{folder / 'practice.db'}", folder, patients=16)
    for program, measure, high, low in EXAMPLE_THRESHOLDS:
        alerts.add_threshold(
            world.engine, cli_actor(ORG), program=program, measure=measure, at_or_above=high, at_or_below=low
        )
    world.close()
    yield world


def _serve(world: CareWorld, folder: Path, **env: str) -> Iterator[Server]:
    port = free_port()
    server = start_server(
        serve_command(world.url, port),
        port=port,
        log=folder / f"serve-{port}.log",
        env=server_env(**env),
        cwd=folder,
    )
    yield server
    server.stop()
    output = server.output()
    assert "Traceback" not in output, output[-3000:]
    # The access log names route templates, never a patient id from a path or a query.
    assert "GET /patients/{patient_id}" in output or "GET /worklist" in output
    leaked = re.findall(r"P0000\d\d", output)
    assert not leaked, f"patient ids in the server's log: {sorted(set(leaked))}"


@pytest.fixture(scope="module")
def served(practice: CareWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from _serve(practice, tmp_path_factory.mktemp("serve"))


def shot(page: Page, name: str, *, height: int | None = None) -> None:
    """``height`` keeps only the top of a long page (the part a reviewer needs to see)."""
    if os.environ.get("CARETALLY_SCREENSHOTS") != "1":
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    clip = {"x": 0, "y": 0, "width": VIEWPORT["width"], "height": height} if height else None
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, clip=clip)  # type: ignore[arg-type]


def sign_in(page: Page, server: Server, role: str, *, next_path: str = "") -> None:
    page.goto(server.url("/signin" + (f"?next={next_path}" if next_path else "")))
    page.get_by_label("Email", exact=True).fill(email_of(role))
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, locale="en-US", timezone_id="UTC")
    context.set_default_timeout(20_000)
    opened = context.new_page()
    yield opened
    context.close()


def test_a_nurse_works_the_worklist_times_a_call_and_sees_the_row_change(page: Page, served: Server) -> None:
    page.goto(served.url("/"))
    expect(page).to_have_url(re.compile(r"/signin$"))
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    shot(page, "signin")
    sign_in(page, served, "care_staff")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Worklist", "Patients", "Alerts"])
    expect(nav.get_by_role("link", name="Month close")).to_have_count(0)
    # the worklist as of mid-September, from its own filter form
    page.get_by_label("As of").fill(TODAY.isoformat())
    page.get_by_label("Program").select_option("RPM")
    page.get_by_role("button", name="Show").click()
    table = page.get_by_role("table", name=re.compile("^Open periods"))
    header = table.get_by_role("row").first
    for name in ("Patient", "Program", "Deadline", "Next step"):
        expect(header.get_by_role("columnheader", name=name)).to_be_visible()
    shot(page, "worklist")
    rows = table.get_by_role("row")
    # a month row that still needs its live call: its minutes and call state must change
    target = rows.filter(has_text=re.compile("live call")).filter(has_text="Not yet").first
    expect(target).to_be_visible()
    link = target.get_by_role("rowheader").get_by_role("link")
    patient_id = link.get_attribute("href").rsplit("/", 1)[-1]  # type: ignore[union-attr]
    # cells after the row header: Program, Deadline, Days, Minutes, Live call, Next step …
    program, deadline, _, minutes_before, call_before = target.get_by_role("cell").all_inner_texts()[:5]
    assert call_before.strip() == "Not yet"
    link.click()
    # the patient's page as of the same day
    page.goto(served.url(f"/patients/{patient_id}?as_of={TODAY}"))
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("minutes in"))).to_be_visible()
    shot(page, "patient")
    page.get_by_role("link", name="Log time").click()
    page.get_by_role("button", name="Start timer").click()
    expect(page.get_by_role("timer")).to_be_visible()
    expect(page.get_by_role("button", name="Stop timer")).to_be_visible()
    # a second tab shows the same running timer: it is kept on the server
    other = page.context.new_page()
    other.goto(page.url)
    expect(other.get_by_role("button", name="Pause timer")).to_be_visible()
    other.close()
    page.reload()
    expect(page.get_by_role("button", name="Stop timer")).to_be_visible()
    shot(page, "log-time")
    page.get_by_role("button", name="Stop timer").click()
    expect(page.get_by_role("button", name="Start timer")).to_be_visible()
    expect(page.get_by_label("Started at")).not_to_have_value("")  # filled from the timer
    # the call itself happened on the worklist's day; the nurse records it
    page.get_by_label("Program").select_option("RPM")
    page.get_by_label("Activity").fill("reviewed readings, called the patient")
    page.get_by_label("Started at").fill(f"{TODAY}T10:00")
    page.get_by_label("Minutes").fill("25")
    page.get_by_label("Live call with the patient (real-time, interactive)").check()
    page.get_by_label("How").select_option("phone")
    page.get_by_role("button", name="Save time").click()
    expect(page.get_by_role("status").filter(has_text="Saved 25 minutes")).to_be_visible()
    # back on the worklist, the patient's row has changed
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Worklist").click()
    page.get_by_label("As of").fill(TODAY.isoformat())
    page.get_by_label("Program").select_option("RPM")
    page.get_by_role("button", name="Show").click()
    table = page.get_by_role("table", name=re.compile("^Open periods"))
    # the same row (patient, program, deadline) now counts the 25 minutes and the call
    same = (
        table.get_by_role("row")
        .filter(has=page.locator(f'a[href="/patients/{patient_id}"]'))
        .filter(has=page.get_by_role("cell", name=program, exact=True))
        .filter(has=page.get_by_role("cell", name=deadline, exact=True))
    )
    expect(same).to_have_count(1)
    cells = same.get_by_role("cell").all_inner_texts()
    assert int(cells[3]) == int(minutes_before.strip() if minutes_before.strip().isdigit() else 0) + 25
    assert cells[4].strip() == "Done"


def test_a_nurse_cannot_reach_audit_or_month_close(page: Page, served: Server) -> None:
    sign_in(page, served, "care_staff")
    nav = page.get_by_role("navigation", name="Main")
    for name in ("Month close", "Leakage", "Compliance", "Audit", "Admin"):
        expect(nav.get_by_role("link", name=name)).to_have_count(0)
    answer = page.goto(served.url("/audit"))
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", level=1, name="Not allowed")).to_be_visible()
    expect(page.get_by_text("Traceback")).to_have_count(0)
    shot(page, "forbidden")
    answer = page.goto(served.url("/month-close"))
    assert answer is not None
    if answer.status == 404:
        pytest.skip("Month close is built on another branch (h-webbill); here it does not exist yet")
    assert answer.status == 403


def test_a_form_without_its_csrf_token_is_refused(page: Page, served: Server) -> None:
    sign_in(page, served, "care_staff")
    page.goto(served.url("/patients"))
    page.get_by_role("table").get_by_role("link").first.click()
    page.get_by_role("link", name="Log time").click()
    start = page.get_by_role("button", name="Start timer")
    start.evaluate("b => b.form.querySelector('input[name=csrf_token]').remove()")
    start.click()
    expect(page.get_by_role("heading", level=1, name="Not allowed")).to_be_visible()
    expect(page.get_by_text("security token")).to_be_visible()
    page.go_back()
    page.reload()
    expect(page.get_by_role("button", name="Start timer")).to_be_visible()  # nothing was started


def test_alerts_are_acknowledged_with_a_note(page: Page, served: Server) -> None:
    sign_in(page, served, "care_staff")
    page.goto(served.url(f"/alerts?as_of={TODAY}"))
    notes = page.get_by_label(re.compile("^Note on the alert for "))
    buttons = page.get_by_role("button", name=re.compile("^Acknowledge the alert for "))
    expect(page.get_by_text("not medical advice")).to_be_visible()
    shot(page, "alerts")
    count = buttons.count()
    assert notes.count() == count > 0, "the example thresholds catch some synthetic readings"
    notes.first.fill("called, feeling fine")
    buttons.first.click()
    expect(page.get_by_role("status").filter(has_text="Alert acknowledged")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("^Acknowledge the alert for "))).to_have_count(
        count - 1
    )


def test_the_audit_log_shows_the_page_views(page: Page, served: Server) -> None:
    # the nurse opens a patient; the auditor finds that view by patient
    sign_in(page, served, "care_staff")
    page.goto(served.url("/patients"))
    first = page.get_by_role("table").get_by_role("link").first
    patient_id = first.get_attribute("href").rsplit("/", 1)[-1]  # type: ignore[union-attr]
    page.goto(served.url(f"/patients/{patient_id}?as_of={TODAY}"))
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/signin$"))
    sign_in(page, served, "auditor")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit").click()
    page.get_by_label("Patient id").fill(patient_id)
    page.get_by_role("button", name="Search").click()
    log = page.get_by_role("table", name=re.compile("^Access log"))
    views = log.get_by_role("row").filter(has_text="patient.view").filter(has_text=email_of("care_staff"))
    expect(views.first).to_be_visible()
    shot(page, "audit")


def test_admin_and_patients_pages(page: Page, served: Server) -> None:
    sign_in(page, served, "admin")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Admin").click()
    expect(page.get_by_label("Role", exact=True)).to_have_count(1)
    expect(page.get_by_label("Token role", exact=True)).to_have_count(1)
    expect(page.get_by_role("button", name=f"Deactivate {email_of('biller')}")).to_be_visible()
    expect(page.get_by_label(f"Role for {email_of('auditor')}")).to_have_value("auditor")
    page.get_by_label("Token name").fill("Tenovi webhook")
    page.get_by_label("Token role").select_option("integration")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label("New API token")
    expect(secret).to_have_value(re.compile("^ctk_"))
    page.goto(served.url("/admin"))
    expect(page.get_by_label("New API token")).to_have_count(0)
    shot(page, "admin")  # without the secret: screenshots are committed
    page.goto(served.url("/patients"))
    expect(page.get_by_role("table", name="Patients")).to_be_visible()
    shot(page, "patients")
    missing = page.goto(served.url("/no-such-page"))
    assert missing is not None and missing.status == 404
    expect(page.get_by_role("heading", level=1, name="Page not found")).to_be_visible()


def test_an_idle_session_is_signed_out(
    page: Page, practice: CareWorld, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A server with a one-minute idle limit: the page goes to sign-in and the server agrees."""
    for server in _serve(practice, tmp_path_factory.mktemp("idle"), CARETALLY_SESSION_IDLE_MINUTES="1"):
        sign_in(page, server, "care_staff")
        expect(page.get_by_text("after 1 minutes without activity")).to_be_visible()
        page.wait_for_url(re.compile(r"/signin\?expired=1$"), timeout=90_000)
        expect(page.get_by_text("You were signed out after 1 minutes")).to_be_visible()
        jar = {c["name"]: c["value"] for c in page.context.cookies()}
        answer = httpx.get(server.url("/worklist"), cookies=jar, follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin?expired=1")


def test_an_auditor_scans_the_year_and_sees_a_finding(page: Page, served: Server) -> None:
    sign_in(page, served, "auditor")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Compliance").click()
    page.get_by_label("Year", exact=True).fill(str(TODAY.year))
    page.get_by_label("Month", exact=True).select_option(label="Whole year")
    page.get_by_role("button", name="Scan").click()
    expect(page.get_by_role("heading", level=1, name=f"Compliance scan, {TODAY.year}")).to_be_visible()
    overview = page.get_by_role("table", name=re.compile("^OIG measures"))
    for mid in ("A2", "B1", "B2", "B3", "B4", "B5", "C11"):
        expect(overview.get_by_role("rowheader", name=re.compile(f"^{mid} "))).to_be_visible()
    # the synthetic practice's first month has no set-up line before it: A2 lists patients
    a2 = overview.get_by_role("row").filter(has=page.get_by_role("link", name=re.compile("^A2 ")))
    expect(a2.get_by_text("Findings to review")).to_be_visible()
    findings = page.get_by_role("table", name=re.compile(r"^A2: \d+ findings?$"))
    first = findings.get_by_role("rowheader").get_by_role("link").first
    expect(first).to_be_visible()
    shot(page, "compliance", height=2400)
    # keyboard: the overview's link moves to the measure; the patient link opens the patient
    a2.get_by_role("link").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("#measure-a2$"))
    patient_id = first.inner_text()
    first.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(f"/patients/{patient_id}$"))
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    # the JSON download is the same report
    page.go_back()
    with page.expect_download() as got:
        page.get_by_role("link", name="Download JSON").click()
    assert got.value.suggested_filename == f"caretally-compliance-{TODAY.year}.json"

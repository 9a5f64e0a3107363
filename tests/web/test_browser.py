"""Pages in a real browser: found by role and accessible name, used from the keyboard.

Until routes are wired to the service (the next step of issue 12), the pages are the
review site rendered from a synthetic practice, served by ``python -m http.server``
through the same ``start_server`` that runs ``caretally serve``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from caretally.web.phrasing import row_phrase
from tests.web.browser import Server
from tests.web.conftest import Site
from tests.web.practice import TODAY


@pytest.fixture
def served(site: Site, static_server: Callable[[Path], Server]) -> Server:
    return static_server(site.folder)


def open_page(page: Page, served: Server, name: str) -> None:
    answer = page.goto(served.url(f"/{name}.html"))
    assert answer is not None and answer.ok


def test_the_static_server_answers_health_and_pages(served: Server) -> None:
    assert httpx.get(served.url("/healthz")).text == "ok\n"
    assert httpx.get(served.url("/worklist.html")).status_code == 200
    assert httpx.get(served.url("/static/app.css")).headers["content-type"].startswith("text/css")


def test_sign_in_by_label_and_button_name(page: Page, served: Server) -> None:
    open_page(page, served, "signin")
    expect(page.get_by_role("heading", level=1, name="Sign in")).to_be_visible()
    page.get_by_label("Email", exact=True).fill("nurse@example.org")
    page.get_by_label("Password", exact=True).fill("a long passphrase")
    expect(page.get_by_label("Email", exact=True)).to_have_attribute("type", "email")
    expect(page.get_by_role("button", name="Sign in", exact=True)).to_be_enabled()
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)


def test_worklist_is_a_table_with_a_header_row_and_steps_in_words(
    page: Page, served: Server, site: Site
) -> None:
    open_page(page, served, "worklist")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link")).to_have_text(["Worklist", "Patients", "Alerts"])
    expect(nav.get_by_role("link", name="Worklist", exact=True)).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="Month close")).to_have_count(0)
    table = page.get_by_role("table", name=re.compile("^Open periods"))
    header = table.get_by_role("row").first
    expect(header.get_by_role("columnheader", name="Next step")).to_be_visible()
    expect(header.get_by_role("columnheader", name="Patient")).to_be_visible()
    first = next(r for r in site.practice.worklist if r.next_step is not None)
    row = table.get_by_role("row").nth(1)
    expect(row.get_by_role("rowheader")).to_contain_text(first.patient_id)
    expect(row.get_by_role("cell", name=row_phrase(first, today=TODAY), exact=True)).to_be_visible()
    expect(page.get_by_label("Program")).to_have_value("")
    expect(page.get_by_role("button", name="Show")).to_be_visible()


def test_the_skip_link_comes_first_and_focus_is_visible(page: Page, served: Server) -> None:
    open_page(page, served, "worklist")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    outline = skip.evaluate("e => getComputedStyle(e).outlineStyle + ' ' + getComputedStyle(e).outlineWidth")
    assert outline.startswith("solid") and not outline.endswith(" 0px")
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    # Onwards from the skip target, the keyboard reaches the filters before anything else.
    page.keyboard.press("Tab")
    expect(page.get_by_label("Program")).to_be_focused()


def test_the_timer_is_reached_and_pressed_from_the_keyboard(page: Page, served: Server) -> None:
    open_page(page, served, "log-time")
    stop = page.get_by_role("button", name="Stop timer")
    for _ in range(30):
        page.keyboard.press("Tab")
        if stop.evaluate("e => e === document.activeElement"):
            break
    expect(stop).to_be_focused()
    outline = stop.evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline == "solid"
    expect(page.get_by_role("button", name="Pause timer")).to_be_visible()
    # The page's timer runs while the keyboard walks to it: under load that takes seconds.
    expect(page.get_by_role("timer")).to_have_text(re.compile(r"^1[2-3]:\d\d$"))


def test_a_running_timer_ticks_on_screen(page: Page, served: Server) -> None:
    page.clock.install()
    open_page(page, served, "log-time")
    expect(page.get_by_role("timer")).to_have_text("12:34")
    page.clock.run_for(5_000)
    expect(page.get_by_role("timer")).to_have_text("12:39")


def test_inactivity_warns_then_signs_out(page: Page, served: Server) -> None:
    page.clock.install()
    open_page(page, served, "worklist")
    warning = page.get_by_role("alert").filter(has_text="signed out")
    expect(warning).to_be_hidden()
    page.clock.run_for(13 * 60_000 + 1_000)
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("signed out in 2 minutes")
    expect(warning.get_by_role("link", name="Stay signed in")).to_be_visible()
    page.clock.run_for(2 * 60_000)
    page.wait_for_url(re.compile(r"/signin\?expired=1$"))


def test_patient_decisions_open_to_their_reasons_and_charts_have_names(page: Page, served: Server) -> None:
    open_page(page, served, "patient")
    expect(page.get_by_role("img", name=re.compile("days of readings"))).to_be_visible()
    expect(page.get_by_role("img", name=re.compile("minutes in"))).to_be_visible()
    decisions = page.get_by_role("region", name=re.compile("^Decisions for ")).get_by_role("group")
    first = decisions.first
    reason_list = first.get_by_role("list")
    expect(reason_list).to_be_hidden()
    code = first.get_by_text(re.compile(r"^\d{5}$")).first
    code.click()  # the summary opens its decision
    expect(reason_list).to_be_visible()
    code.click()
    expect(reason_list).to_be_hidden()
    page.keyboard.press("Enter")  # the summary kept focus: the keyboard opens it again
    expect(reason_list).to_be_visible()
    expect(reason_list.get_by_role("listitem").first).to_be_visible()
    table_toggle = page.get_by_text(re.compile("days of readings, .* as a table$")).first
    table_toggle.click()
    expect(page.get_by_role("table", name=re.compile("day by day$")).first).to_be_visible()


def test_month_run_progress_is_a_named_progress_bar(page: Page, served: Server) -> None:
    open_page(page, served, "month-close-running")
    bar = page.get_by_role("progressbar", name="Billing 2026-08")
    expect(bar).to_be_visible()
    assert 0 < float(bar.get_attribute("value") or 0) < float(bar.get_attribute("max") or 0)


def test_the_packet_prints_without_navigation_and_section_by_section(page: Page, served: Server) -> None:
    open_page(page, served, "packet")
    expect(page.get_by_role("button", name="Print")).to_be_visible()  # shown only with a script
    page.emulate_media(media="print")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.get_by_role("link", name="Download JSON")).to_be_hidden()
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    rules = page.get_by_role("heading", name="Rule checks, values and citations")
    expect(rules).to_be_visible()
    section_break = rules.evaluate("h => getComputedStyle(h.closest('section')).breakBefore")
    assert section_break == "page"
    width = page.locator("main").evaluate("m => m.getBoundingClientRect().width")
    assert width >= 1200  # full width: the screen layout's 80rem cap is lifted


def test_alert_controls_name_their_alert(page: Page, served: Server) -> None:
    open_page(page, served, "alerts")
    notes = page.get_by_label(re.compile("^Note on the alert for "))
    buttons = page.get_by_role("button", name=re.compile("^Acknowledge the alert for "))
    assert notes.count() == buttons.count() > 0
    names = [n.evaluate("e => e.labels[0].textContent") for n in notes.all()]
    assert len(set(names)) == len(names), "each note's name is its own"


def test_admin_controls_are_named_for_what_they_act_on(page: Page, served: Server) -> None:
    open_page(page, served, "admin")
    expect(page.get_by_label("Role", exact=True)).to_have_count(1)  # the new user's
    expect(page.get_by_label("Token role", exact=True)).to_have_count(1)
    expect(page.get_by_role("button", name="Deactivate care_staff@example.org")).to_be_visible()
    expect(page.get_by_role("button", name="Change role for biller@example.org")).to_be_visible()
    expect(page.get_by_label("Role for auditor@example.org")).to_have_value("auditor")
    expect(page.get_by_role("button", name="Add user")).to_be_visible()


def test_caretally_serve_answers_health(caretally_server: Callable[..., Server], tmp_path: Path) -> None:
    """The fixture the wired-up journeys will use: a real ``caretally serve`` on a loopback port."""
    from caretally.cli.main import COMMAND_NAMES

    if "serve" not in COMMAND_NAMES:
        pytest.skip("caretally serve is not on this branch yet (issue 11)")
    server = caretally_server(f"sqlite:///{tmp_path / 'serve.db'}")
    answer = httpx.get(server.url("/healthz"))
    assert answer.status_code == 200 and answer.json()["status"] == "ok"

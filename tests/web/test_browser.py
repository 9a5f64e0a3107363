"""Pages in a real browser: found by role and accessible name, used from the keyboard.

These run over the review site (every page rendered from a synthetic practice, served by
``python -m http.server``): keyboard use, the ticking timer and the inactivity warning
with Playwright's clock, charts and decisions, the month run's progress bar and the
packet's print media. The journeys against a real ``caretally serve`` are in
``tests/web/test_served.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web.browser import Server
from tests.web.conftest import Site


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

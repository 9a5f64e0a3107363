"""Every page, rendered from a synthetic practice, is accessible by construction.

These checks read the HTML (no browser): one h1, a main landmark and a skip link to it,
a visible label for every control, headers on every table, unique ids, references that
resolve, a CSRF field in every POST form, and links only where the role may go.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

import pytest
from bs4 import BeautifulSoup, Tag

from caretally.leakage import BUCKETS
from caretally.web import pages, views
from caretally.web.nav import PAGES
from caretally.web.phrasing import row_phrase
from caretally.web.templating import CSRF_FIELD, environment, render
from caretally.web.viewmodels import Timer
from tests.web.conftest import Site
from tests.web.practice import TODAY, book_for
from tests.web.roles import allowed

PAGE_NAMES = (
    "signin",
    "signin-expired",
    "worklist",
    "patients",
    "patient",
    "log-time",
    "alerts",
    "month-close",
    "month-close-running",
    "leakage",
    "packet",
    "admin",
    "audit",
    "forbidden",
    "compliance",
)


def soup_of(site: Site, name: str) -> BeautifulSoup:
    _, path = site.pages[name]
    return BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def text(tag: Tag) -> str:
    return " ".join(tag.get_text(" ", strip=True).split())


def test_every_page_was_rendered(site: Site) -> None:
    assert sorted(site.pages) == sorted(PAGE_NAMES)


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_page_frame(site: Site, name: str) -> None:
    doc = soup_of(site, name)
    assert doc.html is not None and doc.html.get("lang") == "en"
    assert doc.title is not None and text(doc.title)
    h1 = doc.find_all("h1")
    assert len(h1) == 1 and text(h1[0])
    mains = doc.find_all("main")
    assert len(mains) == 1 and mains[0].get("id") == "main"
    first_link = doc.body.find("a")  # type: ignore[union-attr]
    assert first_link is not None and first_link.get("href") == "#main"
    assert text(first_link) == "Skip to main content"
    assert doc.find(attrs={"role": "status", "aria-live": "polite"}) is not None


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_headings_do_not_skip_levels(site: Site, name: str) -> None:
    levels = [int(h.name[1]) for h in soup_of(site, name).find_all(re.compile(r"^h[1-6]$"))]
    for before, after in itertools.pairwise(levels):
        assert after <= before + 1, levels


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_ids_are_unique_and_references_resolve(site: Site, name: str) -> None:
    doc = soup_of(site, name)
    ids = [t["id"] for t in doc.find_all(id=True)]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    known = set(ids)
    for attr in ("aria-describedby", "aria-labelledby"):
        for tag in doc.find_all(attrs={attr: True}):
            for ref in str(tag[attr]).split():
                assert ref in known, f"{attr}={ref} on <{tag.name}>"
    for label in doc.find_all("label", attrs={"for": True}):
        assert label["for"] in known


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_control_has_a_visible_label(site: Site, name: str) -> None:
    doc = soup_of(site, name)
    controls = [
        c
        for c in doc.find_all(["input", "select", "textarea"])
        if c.name != "input" or c.get("type") not in ("hidden", "submit", "button")
    ]
    for c in controls:
        label = doc.find("label", attrs={"for": c.get("id")}) if c.get("id") else None
        assert label is not None, f"<{c.name} name={c.get('name')}> has no label"
        assert text(label), f"the label of {c.get('name')} is empty"


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_button_and_link_has_a_name(site: Site, name: str) -> None:
    doc = soup_of(site, name)
    for tag in doc.find_all(["button", "a"]):
        assert text(tag) or tag.get("aria-label"), tag


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_tables_have_captions_and_header_rows(site: Site, name: str) -> None:
    for table in soup_of(site, name).find_all("table"):
        assert table.caption is not None and text(table.caption)
        head = table.find("thead")
        assert head is not None
        headers = head.find_all("th")
        assert headers and all(th.get("scope") == "col" for th in headers)
        for row_header in table.tbody.find_all("th"):  # type: ignore[union-attr]
            assert row_header.get("scope") == "row"


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_post_form_carries_the_csrf_field(site: Site, name: str) -> None:
    for form in soup_of(site, name).find_all("form"):
        field = form.find("input", attrs={"name": CSRF_FIELD})
        if form.get("method", "get").lower() == "post":
            assert field is not None and field.get("type") == "hidden", form.get("action")
            assert field.get("value") == "review-token"
        else:
            assert field is None, "a GET form must not put the token in a URL"


@pytest.mark.parametrize("name", PAGE_NAMES)
def test_nothing_undefined_leaks_into_a_page(site: Site, name: str) -> None:
    doc = soup_of(site, name)
    for cell in doc.find_all(["td", "dd", "th", "p", "span"]):
        assert text(cell) not in ("None", "Undefined", "nan"), cell


@pytest.mark.parametrize("name", [n for n in PAGE_NAMES if not n.startswith("signin")])
def test_navigation_shows_exactly_the_pages_the_role_may_open(site: Site, name: str) -> None:
    item, _ = site.pages[name]
    assert item.layout.user is not None
    nav = soup_of(site, name).find("nav", attrs={"aria-label": "Main"})
    assert nav is not None
    shown = [text(a) for a in nav.find_all("a")]
    assert shown == [p.label for p in PAGES if allowed(item.layout.user.role, p.permission)]
    current = nav.find_all(attrs={"aria-current": "page"})
    assert len(current) <= 1


def test_the_sign_in_page_has_the_contract_names(site: Site) -> None:
    doc = soup_of(site, "signin")
    labels = {text(label): label for label in doc.find_all("label")}
    email, password = labels.get("Email"), labels.get("Password")
    assert email is not None and password is not None
    assert doc.find(id=email["for"]).get("type") == "email"  # type: ignore[union-attr]
    assert doc.find(id=password["for"]).get("type") == "password"  # type: ignore[union-attr]
    assert [text(b) for b in doc.find_all("button")] == ["Sign in"]
    assert doc.find("nav", attrs={"aria-label": "Main"}) is None


def test_the_worklist_table_says_each_next_step_in_words(site: Site) -> None:
    doc = soup_of(site, "worklist")
    table = doc.find("table", id="worklist")
    assert table is not None
    headers = [text(th) for th in table.thead.find_all("th")]  # type: ignore[union-attr]
    assert headers[0] == "Patient" and "Next step" in headers
    rows = [r for r in site.practice.worklist if r.next_step is not None][:25]
    body = table.tbody.find_all("tr")  # type: ignore[union-attr]
    assert len(body) == len(rows)
    col = headers.index("Next step")
    for tr, row in zip(body, rows, strict=True):
        cells = tr.find_all(["th", "td"])
        assert text(cells[col]) == row_phrase(row, today=TODAY)
        assert row.patient_id in text(cells[0])


@pytest.mark.parametrize(
    ("state", "buttons"),
    [
        ("idle", ["Start timer"]),
        ("running", ["Pause timer", "Stop timer"]),
        ("paused", ["Resume timer", "Stop timer"]),
    ],
)
def test_the_timer_offers_the_buttons_its_state_allows(site: Site, state: str, buttons: list[str]) -> None:
    item, _ = site.pages["log-time"]
    patient = next(iter(site.practice.patients.values()))
    started = datetime(2026, 9, 20, 14, 0, tzinfo=UTC) if state == "running" else None
    page = pages.log_time_page(
        patient=patient, programs=patient.programs, timer=Timer(state, 95, started), entries=[]
    )
    doc = BeautifulSoup(
        render(environment(), "pages/log_time.html", layout=item.layout, page=page), "html.parser"
    )
    timer = doc.find(attrs={"role": "timer"})
    assert timer is not None and text(timer) == "1:35"
    shown = [text(b) for b in doc.find(id="timer-heading").parent.find_all("button")]  # type: ignore[union-attr]
    assert shown == buttons


def test_month_close_while_the_run_is_going(site: Site) -> None:
    doc = soup_of(site, "month-close-running")
    bar = doc.find("progress")
    assert bar is not None and doc.find("label", attrs={"for": bar["id"]}) is not None
    assert int(bar["value"]) < int(bar["max"])
    assert doc.find("meta", attrs={"http-equiv": "refresh"}) is not None
    buttons = [text(b) for b in doc.find_all("button")]
    assert not any(b.startswith(("Lock", "Run the month")) for b in buttons), (
        "no second run or lock while running"
    )


def test_month_close_of_a_draft_offers_lock_and_downloads(site: Site) -> None:
    doc = soup_of(site, "month-close")
    buttons = [text(b) for b in doc.find_all("button")]
    assert "Lock 2026-08" in buttons and "Run the month again" in buttons
    lock_form = next(f for f in doc.find_all("form") if f.get("action", "").endswith("/lock"))
    assert lock_form.get("data-confirm")
    downloads = {text(a): a["href"] for a in doc.find_all("a", attrs={"download": True})}
    assert downloads["837P (X12)"].endswith("/2026-08/claims?format=x12")
    assert downloads["Claims CSV"].endswith("/2026-08/claims?format=csv")


def test_month_close_reasons_are_counted_as_the_month_run_counts_them(site: Site) -> None:
    """The page reads stored decisions; the run summary read live ones. They must agree."""
    from caretally.billing.run import current_run, stored_decisions
    from caretally.store.db import DEFAULT_ORG

    practice = site.practice
    for month, result in practice.runs.items():
        run = current_run(practice.engine, DEFAULT_ORG, month)
        assert run is not None
        counts, examples, words = pages.not_billable_summary(
            stored_decisions(practice.engine, run.run_id), book_for(practice)
        )
        assert counts == result.summary.not_billable_reasons, month
        assert words.keys() == counts.keys()
        assert all(1 <= len(examples[k]) <= 3 for k in counts)


def test_the_leakage_page_shows_each_reason_of_the_month(site: Site) -> None:
    doc = soup_of(site, "leakage")
    item, _ = site.pages["leakage"]
    shown = {text(tr.find("th")) for tr in doc.find_all("table")[1].tbody.find_all("tr")}  # type: ignore[union-attr]
    focus = item.page.by_reason.rows
    assert shown == {row[0] for row in focus}
    assert shown <= set(BUCKETS.values())
    assert doc.find("svg", attrs={"role": "img"}) is not None


def test_the_packet_prints_section_by_section_and_offers_json(site: Site) -> None:
    doc = soup_of(site, "packet")
    sections = doc.find_all("section", class_="print-section")
    headings = [text(s.find("h2")) for s in sections]
    assert headings[:3] == ["Claim line", "Patient", "Enrollment, consent and order"]
    assert "Minutes and the live call" in headings  # a 99457 line: who, when, credential, modality
    assert headings[-2:] == ["Rule checks, values and citations", "Run and digests"]
    assert doc.find("a", string="Download JSON") is not None
    assert doc.find("link", attrs={"media": "print"}) is not None


def test_the_patient_page_draws_every_chart_with_a_table_alternative(site: Site) -> None:
    doc = soup_of(site, "patient")
    figures = doc.find_all("figure")
    assert len(figures) >= 3  # day calendar, minutes bar, at least one reading chart
    for fig in figures:
        svg = fig.find("svg")
        assert svg is not None and svg.get("role") == "img"
        assert fig.find("figcaption") is not None and text(fig.find("figcaption"))
        assert fig.find("details").find("table") is not None  # type: ignore[union-attr]
    decisions = doc.find_all("details", class_="decision")
    assert decisions and all(d.find("summary") for d in decisions)


def test_patient_page_links_from_the_worklist_resolve_to_worklist_patients(site: Site) -> None:
    doc = soup_of(site, "worklist")
    hrefs = {a["href"] for a in doc.find("table", id="worklist").find_all("a")}  # type: ignore[union-attr]
    assert hrefs == {
        pages.patient_href(r.patient_id) for r in site.practice.worklist if r.next_step
    }.intersection(hrefs)
    assert all(h.startswith("/patients/") for h in hrefs)


def test_a_signed_in_page_needs_the_role_check() -> None:
    user = views.signed_in("A", "a@example.org", "care_staff")
    with pytest.raises(ValueError, match="role check"):
        views.page_layout("X", user=user, org_name="Org")


def test_templates_refuse_a_missing_field() -> None:
    from jinja2 import UndefinedError

    layout = views.page_layout("X", user=None, org_name=None)
    with pytest.raises(UndefinedError):
        render(environment(), "pages/error.html", layout=layout, page=object())

"""The Compliance page: records built from a real scan, and the route on a real database.

The practice is the compliance service test's (tests/compliance/test_scan_service.py):
three RPM patients billed for March 2026 by the real month run, one seen in February,
two with CCM (one whose diagnoses are a single chronic condition). The page must show
what the scan computed, figure by figure, and nothing a role may not open.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from bs4 import BeautifulSoup

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.services import audit, compliance
from caretally.services.context import cli_actor
from caretally.web import pages
from caretally.web.templating import environment, render
from caretally.web.viewmodels import Badge, Layout, Link, Tone
from tests.compliance.test_scan_service import _practice as scanned_practice
from tests.web.webapp import ORG, WebWorld, build_web_world, email_of


@pytest.fixture
def world(db_url: str) -> Any:
    """A web app over the billed practice, one user per role."""
    made = build_web_world(db_url)
    report = import_records(made.engine, ORG, scanned_practice(), now=datetime(2026, 4, 2, tzinfo=UTC))
    assert report.ok, report.problems
    bill_month(made.engine, ORG, parse_month("2026-03"), PayerRules.load())
    yield made
    made.close()


def _measure(report: dict[str, Any], mid: str) -> dict[str, Any]:
    return next(m for m in report["measures"] if m["id"] == mid)


def _cells(row: tuple[Any, ...]) -> list[str]:
    return [c.text if isinstance(c, (Link, Badge)) else str(c) for c in row]


def test_the_page_record_shows_every_measure_as_the_scan_computed_it(world: WebWorld) -> None:
    report = compliance.scan(world.engine, cli_actor(ORG), 2026)
    page = pages.compliance_page(report, patient_links=True, json_href="/compliance/scan.json?year=2026")
    assert [m.measure_id for m in page.measures] == [m["id"] for m in report["measures"]]
    # the overview: each measure's status in words, the practice beside the nation
    for row, m in zip(page.overview.rows, report["measures"], strict=True):
        link, status, practice, national, findings = row
        assert isinstance(link, Link) and link.href == f"#measure-{m['id'].lower()}"
        assert isinstance(status, Badge) and status.text == pages.SCAN_STATUS[m["status"]].text
        assert (practice, national, findings) == (m["practice"], m["national"], len(m["findings"]))
    # C11: the one CCM line below two chronic conditions, its patient linked, its line as stored
    c11 = _measure(report, "C11")
    view = next(v for v in page.measures if v.measure_id == "C11")
    assert view.status.text == "Findings to review" and view.status.tone is Tone.WARN
    [finding] = view.findings.rows
    assert finding[0] == Link("P2", "/patients/P2") and finding[2] == c11["findings"][0]["evidence"]
    [line] = view.lines.rows
    stored = c11["findings"][0]["lines"][0]
    assert _cells(line)[1:3] == [stored["code"], str(stored["units"])]
    assert line[6] == f"${stored['expected_payment']}" and str(stored["line_id"]) == _cells(line)[-1]
    # thresholds with their values and meanings; the source with its address as a link
    facts = dict(view.facts)
    assert facts["National (OIG)"] == c11["national"]
    assert '<a href="https://oig.hhs.gov/' in str(facts["Source"])
    [threshold] = view.thresholds.rows
    assert threshold == ("min_conditions", "2", c11["thresholds"]["min_conditions"]["doc"])
    b2 = next(v for v in page.measures if v.measure_id == "B2")
    assert b2.thresholds.rows[0][:2] == ("practice_share", "0.80")
    assert [f[0].text for f in b2.findings.rows] == _measure(report, "B2")["patients"]  # type: ignore[union-attr]
    # the runs read, and the summary names the measures to review
    assert [r[1] for r in page.runs.rows] == [r["run_id"] for r in report["sources"]["runs"]]
    assert "findings to review on A2, B2, B3, C11" in page.summary


def test_without_patient_pages_the_ids_are_text_and_long_tables_are_cut(world: WebWorld) -> None:
    report = compliance.scan(world.engine, cli_actor(ORG), 2026, "2026-03")
    page = pages.compliance_page(report, patient_links=False, json_href="/x", rows=1)
    a2 = next(v for v in page.measures if v.measure_id == "A2")
    assert len(_measure(report, "A2")["findings"]) == 2 and len(a2.findings.rows) == 1
    assert a2.note is not None and "first 1 of 2 findings" in a2.note
    cells = [c for v in page.measures for t in (v.findings, v.lines) for r in t.rows for c in r]
    assert not [c for c in cells if isinstance(c, Link)]
    assert page.picker.fields[1].options[3].selected  # March chosen
    html = render(environment(), "pages/compliance.html", layout=Layout("Compliance scan"), page=page)
    doc = BeautifulSoup(html, "html.parser")
    assert len(doc.find_all("h1")) == 1
    for table in doc.find_all("table"):
        assert table.caption is not None and table.thead.find_all("th", scope="col")  # type: ignore[union-attr]
    for control in doc.select("main input, main select"):
        assert doc.find("label", attrs={"for": control["id"]}) is not None


def test_auditor_and_biller_open_compliance_care_staff_may_not(world: WebWorld) -> None:
    auditor = world.signed_in("auditor")
    answer = auditor.get("/compliance", params={"year": "2026"})
    assert answer.status_code == 200
    doc = BeautifulSoup(answer.text, "html.parser")
    assert doc.h1 is not None and doc.h1.get_text(strip=True) == "Compliance scan, 2026"
    nav = doc.find("nav", attrs={"aria-label": "Main"})
    current = nav.find("a", attrs={"aria-current": "page"})  # type: ignore[union-attr]
    assert current is not None and current.get_text(strip=True) == "Compliance"
    c11 = doc.find(id="measure-c11")
    assert c11 is not None and c11.find("a", href="/patients/P2") is not None
    assert "Findings to review" in c11.get_text(" ")
    # the view is in the access log with the patients it showed
    events, _ = audit.list_events(world.engine, cli_actor(ORG), audit.EventFilter(patient_id="P3"))
    assert any(e.action == "compliance.scan" and e.actor_name == email_of("auditor") for e in events)

    biller = world.signed_in("biller").get("/compliance", params={"year": "2026", "month": "03"})
    assert biller.status_code == 200 and "Compliance scan, 2026-03" in biller.text
    assert 'href="/patients/' not in biller.text  # a biller cannot open patient pages

    nurse = world.signed_in("care_staff")
    refused = nurse.get("/compliance", params={"year": "2026"})
    assert refused.status_code == 403 and "Traceback" not in refused.text
    assert 'href="/compliance"' not in nurse.get("/worklist").text
    assert nurse.get("/compliance/scan.json", params={"year": "2026"}).status_code == 403


def test_the_json_download_is_the_scan_report(world: WebWorld) -> None:
    auditor = world.signed_in("auditor")
    page = auditor.get("/compliance", params={"year": "2026", "month": "03"}).text
    href = re.search(r'href="(/compliance/scan\.json\?[^"]+)"[^>]*download', page)
    assert href is not None
    answer = auditor.get(href.group(1).replace("&amp;", "&"))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert 'filename="caretally-compliance-2026-03.json"' in answer.headers["content-disposition"]
    assert answer.headers["cache-control"] == "no-store"
    got = json.loads(answer.text)
    assert got == compliance.scan(world.engine, cli_actor(ORG), 2026, "2026-03")


def test_bad_years_and_months_are_one_line_pages(world: WebWorld) -> None:
    auditor = world.signed_in("auditor")
    for params in ({"year": "twenty"}, {"year": "2026", "month": "13"}, {"year": "2026", "month": "2025-12"}):
        answer = auditor.get("/compliance", params=params)
        assert answer.status_code == 422, params
        assert "Traceback" not in answer.text and "<h1>" in answer.text
    april = auditor.get("/compliance", params={"year": "2026", "month": "4"})
    assert april.status_code == 200 and "no measure flagged" in april.text

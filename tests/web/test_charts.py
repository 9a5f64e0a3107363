"""The SVG renderers: well-formed, labelled, escaped, never colour alone, values passed in."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from caretally.web.charts import (
    DAY_LETTER,
    DAY_WORDS,
    day_calendar,
    leakage_trend,
    minutes_bar,
    readings_chart,
)
from caretally.web.viewmodels import (
    Band,
    CalendarDay,
    Chart,
    DayMark,
    DayThreshold,
    LeakMonth,
    ReadingPoint,
    Tier,
)

SVG = "{http://www.w3.org/2000/svg}"
START = date(2026, 10, 1)
TODAY = date(2026, 10, 14)


def parse(chart: Chart) -> ET.Element:
    root = ET.fromstring(str(chart.svg))
    assert root.tag == f"{SVG}svg"
    return root


def texts(root: ET.Element) -> list[str]:
    return ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


def calendar_days(marks: list[DayMark]) -> list[CalendarDay]:
    return [
        CalendarDay(START + timedelta(days=i), m, ("D1",) if m is DayMark.COUNTED else ())
        for i, m in enumerate(marks)
    ]


def a_calendar(counted: int = 8, thresholds: tuple[DayThreshold, ...] | None = None) -> Chart:
    kinds = [DayMark.MANUAL, DayMark.NON_MEDICAL, DayMark.OUTSIDE_ASSIGNMENT, DayMark.BEFORE_CONSENT]
    kinds += [DayMark.OUTSIDE_ENROLLMENT, DayMark.NO_DATA]
    marks = [DayMark.COUNTED] * counted + kinds
    marks += [DayMark.NO_DATA] * (14 - len(marks)) + [DayMark.TO_COME] * (30 - 14)
    return day_calendar(
        calendar_days(marks[:30]),
        today=TODAY,
        thresholds=thresholds or (DayThreshold(2, ("99445",)), DayThreshold(16, ("99454",))),
        chart_id="cal-test",
    )


def a_minutes_bar(minutes: int = 15, interactive: bool | None = False) -> Chart:
    tiers = (Tier(10, "99470"), Tier(20, "99457"), Tier(40, "99458"), Tier(60, "99458 ×2"))
    return minutes_bar(minutes, tiers, interactive=interactive, chart_id="min-test", call_for="99457")


def a_readings_chart(label: str = "systolic at or above 160") -> Chart:
    at = datetime(2026, 10, 1, 8, 30)
    points = [
        ReadingPoint(at + timedelta(days=i), 150 + 3 * i, "systolic", manual=(i % 4 == 3)) for i in range(12)
    ]
    return readings_chart(
        points,
        (Band(label, 160, None),),
        start=START,
        end=START + timedelta(days=29),
        unit="mmHg",
        chart_id="rd-test",
        today=TODAY,
    )


def a_leakage_trend() -> Chart:
    months = [
        LeakMonth("2026-07", {"days_short": Decimal("104.22"), "no_live_call": Decimal("51.77")}),
        LeakMonth("2026-08", {"days_short": Decimal("52.11"), "minutes_short": Decimal("0.50")}),
        LeakMonth("2026-09", {}),
    ]
    reasons = {
        "days_short": "a few days short",
        "minutes_short": "a few minutes short",
        "no_live_call": "no call",
    }
    return leakage_trend(months, reasons, chart_id="leak-test")


ALL = {
    "calendar": a_calendar,
    "minutes": a_minutes_bar,
    "readings": a_readings_chart,
    "leakage": a_leakage_trend,
}


@pytest.mark.parametrize("name", ALL)
def test_every_chart_is_an_image_named_by_its_title_and_description(name: str) -> None:
    chart = ALL[name]()
    root = parse(chart)
    assert root.get("role") == "img"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.text == chart.title
    assert desc is not None and desc.text
    assert root.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
    ids = [e.get("id") for e in root.iter() if e.get("id")]
    assert len(ids) == len(set(ids)), "ids inside a chart are unique"
    assert all(i.startswith(chart.chart_id) for i in ids), "ids are prefixed, so charts can share a page"
    assert chart.summary and chart.table.rows, "a text and a table alternative"


@pytest.mark.parametrize("bad", ["", "1abc", "a b", 'x"onload="y', "a" * 65])
def test_a_chart_id_that_could_break_the_markup_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="chart id"):
        minutes_bar(5, (), interactive=None, chart_id=bad)


def test_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & "quotes"'
    chart = a_readings_chart(hostile)
    root = parse(chart)
    assert hostile in texts(root)
    assert "<script" not in str(chart.svg)
    assert not list(root.iter(f"{SVG}script"))


# --- day calendar ----------------------------------------------------------------------


def test_calendar_has_a_cell_per_day_each_saying_why_in_words_and_a_table_row() -> None:
    chart = a_calendar()
    root = parse(chart)
    tips = ["".join(g.find(f"{SVG}title").itertext()) for g in root.iter(f"{SVG}g")]  # type: ignore[union-attr]
    assert len(tips) == 30
    for mark in DayMark:
        assert any(DAY_WORDS[mark] in tip for tip in tips), mark
    assert sum("(today)" in tip for tip in tips) == 1
    assert len(chart.table.rows) == 30
    assert [r[1] for r in chart.table.rows].count("yes") == 8
    assert [r[1] for r in chart.table.rows].count("not yet") == 16


def test_days_that_did_not_count_carry_a_letter_and_a_pattern_not_only_a_colour() -> None:
    root = parse(a_calendar())
    cells = [g for g in root.iter(f"{SVG}g")]
    for mark, letter in DAY_LETTER.items():
        cell = next(g for g in cells if DAY_WORDS[mark] in "".join(g.find(f"{SVG}title").itertext()))  # type: ignore[union-attr]
        assert letter in texts(cell)
        assert any((r.get("fill") or "").startswith("url(#cal-test-") for r in cell.iter(f"{SVG}rect"))
    counted = next(g for g in cells if ": counted" in "".join(g.find(f"{SVG}title").itertext()))  # type: ignore[union-attr]
    assert counted.find(f"{SVG}path") is not None, "a counted day has a check mark"


def test_thresholds_are_said_in_words_with_what_is_left() -> None:
    words = " ".join(texts(parse(a_calendar(counted=8))))
    assert "99445 needs 2 days: met" in words
    assert "99454 needs 16 days: 8 more, within reach" in words
    assert "16 days · 99454" in words  # the tick on the progress strip


def test_a_threshold_out_of_reach_says_so() -> None:
    # 3 counted and 11 other days up to today, 16 to come: a minimum of 25 needs 22 more.
    chart = a_calendar(counted=3, thresholds=(DayThreshold(25, ("99999",)),))
    assert "99999 needs 25 days: 22 more, out of reach this period" in texts(parse(chart))


def test_thresholds_come_from_the_caller() -> None:
    chart = a_calendar(counted=8, thresholds=(DayThreshold(5, ("X1", "X2")), DayThreshold(12, ("X3",))))
    words = " ".join(texts(parse(chart)))
    assert "X1 and X2 need 5 days: met" in words
    assert "X3 needs 12 days: 4 more" in words
    assert "16" not in " ".join(t for t in texts(parse(chart)) if "needs" in t or "need " in t)


# --- minutes bar -------------------------------------------------------------------------


def test_minutes_bar_marks_each_tier_it_is_given_and_the_next_one() -> None:
    chart = a_minutes_bar(minutes=15)
    words = texts(parse(chart))
    for label in ("10", "20", "40", "60", "99470", "99457", "99458", "99458 ×2"):
        assert label in words
    assert words[0] == "15 minutes this month · 5 more for 99457 at 20"
    assert [r[2] for r in chart.table.rows] == ["yes", "no, 5 to go", "no, 25 to go", "no, 45 to go"]


def test_minutes_bar_tiers_are_not_built_in() -> None:
    chart = minutes_bar(9, (Tier(7, "A"), Tier(13, "B")), interactive=None, chart_id="m2")
    words = texts(parse(chart))
    assert "7" in words and "13" in words and "20" not in words
    assert words[0] == "9 minutes this month · 4 more for B at 13"


@pytest.mark.parametrize(
    ("interactive", "words"),
    [
        (True, "Live call this month: done"),
        (False, "Live call this month: not yet — 99457 needs one"),
        (None, "No live call needed for these codes"),
    ],
)
def test_minutes_bar_says_the_call_state(interactive: bool | None, words: str) -> None:
    chart = a_minutes_bar(interactive=interactive)
    assert words in texts(parse(chart))
    assert words in chart.summary


def test_every_tier_met() -> None:
    assert texts(parse(a_minutes_bar(minutes=64)))[0] == "64 minutes this month · every tier met"


# --- readings ------------------------------------------------------------------------------


def test_manual_readings_are_hollow_and_listed_as_manual() -> None:
    chart = a_readings_chart()
    root = parse(chart)
    markers = [c for c in root.iter(f"{SVG}circle") if c.get("r") == "4"]
    hollow = [c for c in markers if c.get("fill") == "#ffffff"]
    manual_rows = [r for r in chart.table.rows if r[3] == "manual"]
    assert len(manual_rows) == 3
    assert len(hollow) == len(manual_rows) + 1  # the legend's hollow marker
    assert "manual reading (does not count)" in texts(root)


def test_alert_band_is_patterned_labelled_and_counts_its_readings() -> None:
    chart = a_readings_chart()
    root = parse(chart)
    assert "systolic at or above 160" in texts(root)
    assert any((r.get("fill") or "") == "url(#rd-test-diag)" for r in root.iter(f"{SVG}rect"))
    inside = [r for r in chart.table.rows if r[4] == "systolic at or above 160"]
    assert len(inside) == 8  # 150 + 3i ≥ 160 for i = 4..11
    assert "8 readings inside an alert band" in chart.summary


# --- leakage trend ---------------------------------------------------------------------------


def test_leakage_trend_totals_each_month_in_exact_money() -> None:
    chart = a_leakage_trend()
    words = texts(parse(chart))
    assert "$155.99" in words and "$52.61" in words and "$0.00" in words
    assert chart.table.rows[0] == ("2026-07", "$104.22", "$0.00", "$51.77", "$155.99")
    assert "Jul 2026" in words
    for label in ("a few days short", "a few minutes short", "no call"):
        assert label in words


def test_leakage_segments_differ_by_pattern_as_well_as_colour() -> None:
    root = parse(a_leakage_trend())
    patterns = {p.get("id") for p in root.iter(f"{SVG}pattern")}
    assert patterns == {"leak-test-r1", "leak-test-r2"}  # the first reason is solid, the others patterned


def ccm_bar(minutes: int) -> Chart:
    """The CCM ladder as the patient page draws it: tiers from the 2026 rule-year."""
    from caretally.web import views
    from tests.rules.factories import medicare

    year = medicare().for_date(date(2026, 12, 31))
    codes = ["99487", "99489", "99490", "99439", "99491", "99437"]
    tiers = views.minute_tiers(year, codes, minutes)
    assert len({t.minutes for t in tiers}) < len(tiers), "the ladder has codes sharing a tick"
    return minutes_bar(minutes, tiers, interactive=None, chart_id="min-ccm")


def code_labels(root: ET.Element, codes: set[str]) -> list[tuple[str, float, float]]:
    found = []
    for t in root.iter(f"{SVG}text"):
        words = "".join(t.itertext())
        if words.split(" ")[0] in codes:
            found.append((words, float(t.get("x", "0")), float(t.get("y", "0"))))
    return found


@pytest.mark.parametrize("minutes", [0, 35, 95])
def test_minutes_bar_code_labels_never_share_a_line_and_a_place(minutes: int) -> None:
    chart = ccm_bar(minutes)
    labels = code_labels(parse(chart), {"99487", "99489", "99490", "99439", "99491", "99437"})
    assert {w for w, _, _ in labels} >= {"99487", "99489", "99490", "99439", "99491", "99437"}
    # a code's text takes at least 0.55 em a character at 12 px: two on one line must not touch
    for i, (a, ax, ay) in enumerate(labels):
        for b, bx, by in labels[i + 1 :]:
            if ay == by:
                first, second = sorted([(ax, a), (bx, b)])
                assert first[0] + len(first[1]) * 12 * 0.55 < second[0] - 12, (a, b, ax, bx, ay)


def test_minutes_bar_labels_do_not_overlap_in_chromium(page) -> None:  # type: ignore[no-untyped-def]
    """Measured by the browser: no two texts of the CCM bar intersect, in the font it picks."""
    chart = ccm_bar(35)
    page.set_content(f"<!doctype html><html><body>{chart.svg}</body></html>")
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('svg text')].map(t => {
            const b = t.getBBox(); return [t.textContent, b.x, b.y, b.width, b.height];
        })"""
    )
    assert len(boxes) > 10
    for i, (a, ax, ay, aw, ah) in enumerate(boxes):
        for b, bx, by, bw, bh in boxes[i + 1 :]:
            apart = ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay
            assert apart, f"{a!r} overlaps {b!r}"
    if os.environ.get("CARETALLY_SCREENSHOTS") == "1":
        page.locator("svg").screenshot(path="/tmp/webfix/ccm-bar.png")

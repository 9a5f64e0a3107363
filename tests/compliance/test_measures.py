"""The OIG measures as pure functions: each threshold on both sides of its edge.

Lines and visits are plain values here (the service test feeds stored runs); the
thresholds are the cited ones in caretally/compliance/oig_measures.yaml.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from caretally.compliance import config
from caretally.compliance.measures import ScanLine, ScanVisit, Window, scan

YEAR = Window(2026, None, date(2026, 1, 1), date(2026, 12, 31))
_ids = iter(range(1, 1_000_000))


def line(pid: str, code: str, day: date, dx: str = "I10", npi: str = "1234567893") -> ScanLine:
    n = next(_ids)
    return ScanLine(
        "run-1",
        "draft",
        n,
        f"k{n}",
        pid,
        f"E-{pid}",
        "RPM",
        code,
        1,
        day,
        npi,
        tuple(dx.split(";")),
        Decimal("50"),
    )


def full_rpm(pid: str, day: date) -> list[ScanLine]:
    return [line(pid, "99453", day), line(pid, "99454", day), line(pid, "99457", day)]


def measure(report: object, mid: str) -> dict:
    return next(m for m in report.to_json()["measures"] if m["id"] == mid)  # type: ignore[attr-defined]


def book(**options: object) -> config.MeasureBook:
    return config.load().with_options(**options)


def test_b1_spike_needs_both_the_rise_and_a_hundred_new_enrollees() -> None:
    jan = [line(f"J{i}", "99454", date(2026, 1, 10)) for i in range(5)]  # first month: not judged
    feb = [line(f"F{i}", "99454", date(2026, 2, 10)) for i in range(40)]
    mar = [line(f"M{i}", "99454", date(2026, 3, 10)) for i in range(100)]
    b1 = measure(scan(book(), YEAR, jan + feb + mar, []), "B1")
    assert b1["status"] == "flagged"
    assert [f["values"]["month"] for f in b1["findings"]] == ["2026-03"]
    assert len(b1["findings"][0]["values"]["patients"]) == 100
    assert b1["numbers"]["months"]["2026-01"]["judged"] is False
    # 100 against 41: a rise of less than 150% (100 < 2.5 × 41)
    feb41 = [*feb, line("F40", "99454", date(2026, 2, 11))]
    assert measure(scan(book(), YEAR, jan + feb41 + mar, []), "B1")["status"] == "clear"
    # 99 new after none: fewer than 100
    assert measure(scan(book(), YEAR, jan + mar[:99], []), "B1")["status"] == "clear"


def test_b2_prior_relationship_share_and_the_lookback_option() -> None:
    lines = [x for i in range(5) for x in full_rpm(f"P{i}", date(2026, 3, 5))]
    old_visit = [ScanVisit("V0", "P0", "DR1", date(2022, 6, 1), "99214", False)]
    # P0's visit lies after 2021-01-01 but more than three years before 2026-03-05
    since = measure(scan(book(), YEAR, lines, old_visit), "B2")
    assert since["status"] == "findings" and since["numbers"]["without_prior_visit"] == 4  # 80%: not above
    assert sorted(since["patients"]) == ["P1", "P2", "P3", "P4"]
    three = measure(scan(book(prior_relationship_lookback="three_years"), YEAR, lines, old_visit), "B2")
    assert three["status"] == "flagged" and three["numbers"]["without_prior_visit"] == 5
    assert "no visit from 2023-03-05 to the first RPM line on 2026-03-05" in three["findings"][0]["evidence"]
    none = measure(scan(book(), YEAR, lines, []), "B2")
    assert none["status"] == "not_judged"


def test_b3_no_treatment_management_above_three_quarters() -> None:
    tm = full_rpm("P0", date(2026, 4, 2))
    bare = [line(f"P{i}", "99454", date(2026, 4, 2)) for i in range(1, 4)]
    three_of_four = measure(scan(book(), YEAR, tm + bare, []), "B3")
    assert three_of_four["status"] == "findings" and three_of_four["numbers"]["share"] == "0.750"
    four_of_four = measure(scan(book(), YEAR, [*bare, line("P4", "99454", date(2026, 4, 2))], []), "B3")
    assert four_of_four["status"] == "flagged"


def test_b5_repeated_multiple_device_lines_follows_its_named_option() -> None:
    lines = [line("P1", "99454", date(2026, 7, 1)), line("P1", "99454", date(2026, 7, 31))]
    lines += [line("P2", "99445", date(2026, 7, 5))]
    default = measure(scan(book(), YEAR, lines, []), "B5")
    assert default["status"] == "findings" and default["patients"] == ["P1"]
    assert [x["line_id"] for x in default["findings"][0]["lines"]] == [lines[0].line_id, lines[1].line_id]
    assert measure(scan(book(multiple_devices_repeated=1), YEAR, lines, []), "B5")["status"] == "flagged"


def test_b4_is_not_computable_and_reports_its_proxy() -> None:
    lines = [line("P1", "99454", date(2026, 5, 1)), line("P1", "99457", date(2026, 5, 31), npi="1987654328")]
    b4 = measure(scan(book(shared_patients_practice_share="0.3"), YEAR, lines, []), "B4")
    assert b4["status"] == "not_computable" and b4["patients"] == ["P1"]
    assert b4["options"] == {"shared_patients_practice_share": "0.3"}


def test_a2_three_components_counts_an_earlier_setup_and_marks_missing_management_high() -> None:
    lines = [line("P1", "99453", date(2025, 11, 3)), line("P1", "99454", date(2026, 2, 2))]
    lines += full_rpm("P2", date(2026, 2, 2))
    a2 = measure(scan(book(), YEAR, lines, []), "A2")
    assert a2["patients"] == ["P1"]
    finding = a2["findings"][0]
    assert finding["values"]["missing"] == ["treatment management"] and finding["severity"] == "high"
    assert a2["numbers"] == {
        "enrollees": 2,
        "not_all_three": 1,
        "no_setup": 0,
        "no_device_supply": 0,
        "no_treatment_management": 1,
    }


@pytest.mark.parametrize(
    ("dx", "found", "words"),
    [
        ("I10;E11.9", False, ""),
        ("E11.9;E11.65", True, "1 chronic condition(s) (E11)"),
        ("I10;U07.1", True, "not in the FY2019 CCI table: U07.1"),
        ("Z79.4", True, "0 chronic condition(s) (none)"),
    ],
)
def test_c11_ccm_needs_two_chronic_categories_by_the_cci(dx: str, found: bool, words: str) -> None:
    ccm = line("P1", "99490", date(2026, 3, 31), dx=dx)
    c11 = measure(scan(book(), YEAR, [ccm], []), "C11")
    assert bool(c11["findings"]) is found
    if found:
        assert words in c11["findings"][0]["evidence"]


def test_the_month_window_and_lines_after_it() -> None:
    march = Window(2026, "2026-03", date(2026, 3, 1), date(2026, 3, 31))
    lines = [line("P1", "99454", date(2026, 3, 30)), line("P1", "99454", date(2026, 3, 31))]
    lines += [line("P2", "99454", date(2026, 4, 1)), line("P2", "99454", date(2026, 4, 2))]
    report = scan(book(), march, lines, [])
    assert measure(report, "B5")["patients"] == ["P1"]
    assert report.to_json()["population"]["rpm_enrollees"] == 1


def test_unknown_or_out_of_range_options_are_refused() -> None:
    with pytest.raises(config.ConfigError):
        book(prior_relationship_lookback="forever")
    with pytest.raises(config.ConfigError):
        book(shared_patients_practice_share="1.5")
    with pytest.raises(config.ConfigError):
        book(no_such_option=1)


def test_every_threshold_and_option_is_cited() -> None:
    b = config.load()
    for m in b.measures.values():
        assert m.cite and m.national and all(c.doc for c in m.thresholds.values())
        assert b.citation(m.cite)
    assert all(o.cite and o.doc for o in b.options.values())
    assert b.measures["B2"].value("practice_share") == Decimal("0.80")
    assert b.measures["B1"].value("rise_ratio") == Decimal("2.5")


def test_a2_says_when_a_missing_setup_may_precede_the_stored_runs() -> None:
    lines = [line("P1", "99454", date(2026, 1, 5)), line("P2", "99454", date(2026, 3, 5))]
    found = {f["patient_id"]: f["evidence"] for f in measure(scan(book(), YEAR, lines, []), "A2")["findings"]}
    assert "a set-up may precede them" in found["P1"]
    assert "a set-up may precede them" not in found["P2"]

"""The rule loader: shipped rule-years load cleanly, and every kind of mistake is caught.

Broken fixtures live in tests/rules/broken/. Each is a small, otherwise valid rule file
(or a folder of files loaded together) with ``# expect: CODE`` on every line that must be
reported. The test demands exactly those problems: a fixture that tripped an
unintended check would fail too, so each fixture proves one check and nothing else.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from caretally.model import Modality, PerformerClass, Program
from caretally.rules.loader import (
    RULESETS_ROOT,
    RuleLoadError,
    check_rulesets,
    load_rule_files,
    load_rulebook,
)
from caretally.rules.params import RuleYear

BROKEN = Path(__file__).parent / "broken"
EXPECT = re.compile(r"#\s*expect:\s*([a-z_, ]+)")

Found = set[tuple[Path, int | None, str]]


def _cases() -> list[Path]:
    return sorted(p for p in BROKEN.iterdir() if p.suffix == ".yaml" or p.is_dir())


def _expected(case: Path) -> Found:
    files = [case] if case.is_file() else sorted(case.rglob("*.yaml"))
    out: Found = set()
    for f in files:
        for number, line in enumerate(f.read_text().splitlines(), start=1):
            m = EXPECT.search(line)
            if m:
                out.update(
                    (f.resolve(), number, code.strip()) for code in m.group(1).split(",") if code.strip()
                )
    return out


def _found(case: Path) -> Found:
    if case.is_file():
        _, problems = load_rule_files([case])
    elif (case / "imports").is_dir():  # rulesets and a rules folder of imported layers
        problems = check_rulesets(case / "rulesets", case / "imports")
    elif any(p.is_dir() for p in case.iterdir()):
        problems = check_rulesets(case)  # a whole rulesets root: placement is checked too
    else:
        _, problems = load_rule_files(sorted(case.glob("*.yaml")))
    return {(Path(p.file).resolve(), p.line, p.code) for p in problems}


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_broken_fixture_reports_exactly_its_problem(case: Path) -> None:
    expected = _expected(case)
    assert expected, f"{case.name} declares no '# expect:' line"
    assert _found(case) == expected


def test_every_problem_kind_the_brief_names_has_a_fixture() -> None:
    kinds = {code for case in _cases() for _, _, code in _expected(case)}
    required = {
        "unknown_key",
        "duplicate_key",
        "bad_date",
        "wrong_type",
        "float_not_decimal",
        "overlapping_dates",
        "missing_citation",
        "unknown_source",
        "unknown_code",
        "unknown_option",
        "unknown_family",
        "unknown_program",
        "unknown_period",
        "unknown_performer",
    }
    assert required <= kinds, sorted(required - kinds)


def test_problems_of_one_file_all_come_back_in_one_pass(tmp_path: Path) -> None:
    text = (BROKEN / "float_money.yaml").read_text()
    text = text.replace("year: 2030", "year: 2030\nyear: 2030").replace(
        "period: thirty_day", "period: weekly"
    )
    path = tmp_path / "2030.yaml"
    path.write_text(text)
    _, problems = load_rule_files([path])
    assert {p.code for p in problems} == {"duplicate_key", "unknown_period", "float_not_decimal"}
    assert all(p.line is not None and p.file for p in problems)


def test_load_rulebook_refuses_a_broken_folder(tmp_path: Path) -> None:
    folder = tmp_path / "medicare"
    folder.mkdir()
    (folder / "2030.yaml").write_text((BROKEN / "unknown_source.yaml").read_text())
    with pytest.raises(RuleLoadError) as err:
        load_rulebook(root=tmp_path)
    assert [p.code for p in err.value.problems] == ["unknown_source"]


# --------------------------------------------------------------------------------------
# The shipped rule-years
# --------------------------------------------------------------------------------------

CODES_2025 = {
    "99453", "99454", "99457", "99458", "99091", "98975", "98976", "98977", "98978", "98980", "98981",
    "99490", "99439", "99491", "99437", "99487", "99489", "99424", "99425", "99426", "99427",
    "G0556", "G0557", "G0558", "99484", "99492", "99493", "99494",
}  # fmt: skip
NEW_IN_2026 = {"99445", "99470", "98979", "98984", "98985", "98986", "G0568", "G0569", "G0570"}


def test_shipped_rulesets_have_no_problems() -> None:
    assert check_rulesets() == []


@pytest.fixture(scope="module")
def medicare() -> dict[int, RuleYear]:
    book = load_rulebook()
    return {y.year: y for y in book.years}


def test_medicare_years_and_codes(medicare: dict[int, RuleYear]) -> None:
    assert sorted(medicare) == [2025, 2026, 2027]
    assert set(medicare[2025].codes) == CODES_2025
    assert set(medicare[2026].codes) == CODES_2025 | NEW_IN_2026
    assert set(medicare[2027].codes) == set(medicare[2026].codes)  # carried forward
    y25 = medicare[2025]
    assert (y25.effective_from, y25.effective_to) == (date(2025, 1, 1), date(2025, 12, 31))
    assert load_rulebook().for_date(date(2026, 1, 1)).year == 2026


#: The files each shipped year is stacked from: 2027 is "2026 + its differences".
LAYERS = {2025: ("medicare/2025",), 2026: ("medicare/2026",), 2027: ("medicare/2026", "medicare/2027")}


@pytest.mark.parametrize("year", [2025, 2026, 2027])
def test_every_value_is_cited_and_traceable(medicare: dict[int, RuleYear], year: int) -> None:
    ry = medicare[year]
    assert ry.layers == LAYERS[year]
    params = [p for c in ry.codes.values() for p in c.params.values()]
    params += [*ry.options.values(), *ry.globals.values()]
    for p in params:
        keys = [k.strip() for k in p.citation.split(",")]
        assert keys and all(k in ry.sources for k in keys), (p.name, p.citation)
        assert p.layer in LAYERS[year]
        file, _, line = p.source.rpartition(":")
        assert file == f"{p.layer}.yaml" and int(line) > 0
    for code in ry.codes.values():
        assert "amount" in code.params and "max_units" in code.params, code.code
        # Minutes have performers; days of data do not (device and set-up codes), and an
        # add-on counts its base's minutes.
        timed = code.family not in ("setup", "device_supply", "apcm") and not ry.is_add_on(code.code)
        assert ("performers" in code.params) is timed, code.code


def test_source_lines_point_at_the_value(medicare: dict[int, RuleYear]) -> None:
    lines = (RULESETS_ROOT / "medicare" / "2026.yaml").read_text().splitlines()
    p = medicare[2026].code("99445").param("max_days")
    assert lines[int(p.source.rsplit(":", 1)[1]) - 1].strip().startswith("max_days:")


def test_values_have_engine_types(medicare: dict[int, RuleYear]) -> None:
    ry = medicare[2026]
    assert ry.code("99454").amount == Decimal("52.11")
    assert ry.code("98978").amount is None  # contractor-priced: no national amount
    assert ry.globals["conversion_factor"].value == Decimal("33.4009")
    assert ry.code("99457").value("performers") == (PerformerClass.STAFF, PerformerClass.PRACTITIONER)
    assert ry.code("99457").value("interactive_modalities") == (Modality.PHONE, Modality.VIDEO)
    assert ry.code("99457").param("interactive_modalities").option == "interactive_modalities"
    assert ry.globals["never_together"].value == ((Program.RPM, Program.RTM),)
    assert isinstance(ry.code("99454").value("min_days"), int)


def test_2025_to_2026_differences(medicare: dict[int, RuleYear]) -> None:
    y25, y26 = medicare[2025], medicare[2026]
    assert y25.option("setup_min_days").value == 16 and y26.option("setup_min_days").value == 2
    assert y26.code("99453").value("min_days") == 2  # through the option
    assert (y26.code("99445").value("min_days"), y26.code("99445").value("max_days")) == (2, 15)
    assert (y26.code("99454").value("min_days"), y26.code("99454").value("max_days")) == (16, 30)
    assert y25.code("99454").value("max_days") is None
    assert y26.code("99470").value("max_minutes") == 19
    assert y26.code("99439").value("max_units") == 2
    assert y26.code("99458").value("max_units") is None


def test_amounts_with_rvus_equal_rvu_times_conversion_factor(medicare: dict[int, RuleYear]) -> None:
    """Where a total RVU is recorded, the amount must be that RVU × the year's CF in cents."""
    checked = 0
    for ry in medicare.values():
        cf = ry.globals["conversion_factor"].value
        for code in ry.codes.values():
            rvu = code.get("rvu")
            if rvu and "total" in rvu and code.amount is not None:
                assert (rvu["total"] * cf).quantize(Decimal("0.01")) == code.amount, (ry.year, code.code)
                checked += 1
    assert checked >= 15


def test_add_on_ladders_start_at_base_plus_step(medicare: dict[int, RuleYear]) -> None:
    for ry in medicare.values():
        for code in ry.codes.values():
            if not ry.is_add_on(code.code):
                continue
            for base in ry.bases_of(code.code):
                b = ry.code(base)
                if code.family == "behavioral_health":
                    # Collaborative care: units beyond the base's full time, each from more than half.
                    assert b.value("full_minutes") >= b.value("min_minutes")
                    assert code.value("min_step_minutes") * 2 > code.value("step_minutes")
                    continue
                assert code.value("min_minutes") == b.value("min_minutes") + code.value("step_minutes")
                assert code.get("requires_interactive") in (False, None)


def test_an_add_on_may_ride_on_several_bases(medicare: dict[int, RuleYear]) -> None:
    """99494 goes with 99492 or 99493; the APCM add-ons ride on any APCM level of the practitioner."""
    y26 = medicare[2026]
    assert y26.bases_of("99494") == ("99492", "99493")
    assert y26.add_ons_of("99492") == ("99494",) and y26.add_ons_of("99493") == ("99494",)
    assert {"99492", "99493", "99494", "G0568", "G0569"} <= y26.either_or_group("99494")
    assert y26.rides_on("G0570") == ("G0556", "G0557", "G0558")
    bases = load_rulebook().add_on_bases()
    assert bases["99494"] == {"99492", "99493"} and bases["G0568"] == {"G0556", "G0557", "G0558"}
    assert "G0570" not in medicare[2025].codes


def test_exclusions_are_mutual(medicare: dict[int, RuleYear]) -> None:
    for ry in medicare.values():
        for code in ry.codes.values():
            for other in code.get("exclusive_with", ()):
                assert code.code in ry.code(other).value("exclusive_with"), (ry.year, code.code, other)


# --------------------------------------------------------------------------------------
# The overlay
# --------------------------------------------------------------------------------------


def test_overlay_layers_and_attribution() -> None:
    book = load_rulebook(overlay="example-commercial")
    assert book.name == "example-commercial"
    y25, y26 = book.for_date(date(2025, 6, 1)), book.for_date(date(2026, 6, 1))
    assert y25.layers == ("medicare/2025",)
    assert y26.layers == ("medicare/2026", "payers/example-commercial")
    cap = y26.code("99458").param("max_units")
    assert (cap.value, cap.layer, cap.citation) == (2, "payers/example-commercial", "example-contract-2026")
    setup = y26.code("99453").param("min_days")
    assert (setup.value, setup.layer, setup.option) == (16, "payers/example-commercial", "setup_min_days")
    assert y26.code("99457").param("min_minutes").layer == "medicare/2026"
    assert not y26.codes_for(Program.RTM)
    assert y25.codes_for(Program.RTM)  # the overlay's span is 2026 only
    assert "example-contract-2026" in y26.sources


def test_overlay_by_payer_name_and_content_hash() -> None:
    by_name = load_rulebook("example-commercial")
    by_overlay = load_rulebook(overlay="example-commercial")
    assert by_name.years == by_overlay.years
    medicare = load_rulebook()
    assert medicare.years[0].content_hash == by_name.years[0].content_hash
    assert medicare.years[1].content_hash != by_name.years[1].content_hash
    assert len({y.content_hash for y in medicare.years}) == 3


def test_overlay_splits_a_base_year_at_its_span(tmp_path: Path) -> None:
    base = (RULESETS_ROOT / "medicare" / "2026.yaml").read_text()
    overlay = (RULESETS_ROOT / "payers" / "example-commercial.yaml").read_text()
    overlay = overlay.replace("effective_from: 2026-01-01", "effective_from: 2026-04-01").replace(
        "effective_to: 2026-12-31", "effective_to: 2026-09-30"
    )
    (tmp_path / "medicare").mkdir()
    (tmp_path / "payers").mkdir()
    (tmp_path / "medicare" / "2026.yaml").write_text(base)
    (tmp_path / "payers" / "example-commercial.yaml").write_text(overlay)
    book = load_rulebook(overlay="example-commercial", root=tmp_path)
    spans = [(y.effective_from, y.effective_to, len(y.layers)) for y in book.years]
    assert spans == [
        (date(2026, 1, 1), date(2026, 3, 31), 1),
        (date(2026, 4, 1), date(2026, 9, 30), 2),
        (date(2026, 10, 1), date(2026, 12, 31), 1),
    ]
    assert book.for_date(date(2026, 3, 31)).code("99453").value("min_days") == 2
    assert book.for_date(date(2026, 4, 1)).code("99453").value("min_days") == 16


def test_load_rulebook_is_cached_and_rejects_unknown_payers() -> None:
    assert load_rulebook() is load_rulebook()
    with pytest.raises(RuleLoadError) as err:
        load_rulebook("no-such-payer")
    assert err.value.problems[0].code == "unknown_payer"


# --------------------------------------------------------------------------------------
# Add-ons and bases, modifier rules, manual readings
# --------------------------------------------------------------------------------------


def test_one_reader_of_add_on_to(medicare: dict[int, RuleYear]) -> None:
    """Base, add-ons, exclusions and either/or groups all come from ``add_on_to`` once."""
    y26 = medicare[2026]
    assert (y26.base_of("99458"), y26.base_of("99457"), y26.is_add_on("99458")) == ("99457", "99457", True)
    assert y26.add_ons_of("99490") == ("99439",)
    # An add-on follows its base's exclusions; excluding a base excludes its add-ons.
    assert y26.excludes("99458") == y26.excludes("99457") == {"99470", "99091"}
    assert y26.excludes("99470") == {"99457", "99458", "99091"}
    assert y26.either_or_group("99458") == {"99457", "99458", "99470", "99091"}
    assert load_rulebook().add_on_bases()["99439"] == {"99490"}


def test_modifier_rules_and_manual_readings_are_cited_data(medicare: dict[int, RuleYear]) -> None:
    y26 = medicare[2026]
    discipline = y26.modifiers["therapy_discipline"]
    assert discipline.layer == "medicare/2026" and discipline.citation and discipline.doc
    assert discipline.source.startswith("medicare/2026.yaml:")
    assert y26.modifiers_for(Program.RTM, "98980", {"rendering": "PTA", "billing": "PT"}) == ("GP", "CQ")
    # CQ when an assistant furnished part of the service (when: any_part), GP from the renderer only.
    assert y26.modifiers["therapy_assistant"].when == "any_part"
    assert y26.modifiers["therapy_discipline"].when == "rendering"
    assert y26.modifiers_for(Program.RTM, "98981", {"rendering": "PT", "billing": "PT"}, ("PT", "PTA")) == (
        "GP",
        "CQ",
    )
    assert y26.modifiers_for(Program.RTM, "98977", {"rendering": "", "billing": "PT"}, ("PTA",)) == ("GP",)
    assert y26.modifiers_for(Program.RTM, "98977", {"rendering": "", "billing": "OT"}) == ("GO",)
    assert y26.modifiers_for(Program.RTM, "98980", {"rendering": "RN", "billing": "MD"}) == ()
    assert y26.modifiers_for(Program.RPM, "99457", {"rendering": "PT", "billing": "PT"}) == ()
    assert medicare[2025].modifiers["therapy_assistant"].codes == ("98980", "98981")
    assert [str(p) for p in y26.rule_global("manual_readings_count").value] == ["RTM"]


def test_an_overlay_replaces_a_modifier_rule_and_a_global() -> None:
    overlays = Path(__file__).parents[1] / "scenarios" / "overlays"
    y = load_rulebook(overlay=overlays / "example-no-assistant-modifiers.yaml").for_date(date(2026, 6, 1))
    rule = y.modifiers["therapy_assistant"]
    assert (rule.programs, rule.layer) == ((), "payers/example-no-assistant-modifiers")
    assert y.modifiers["therapy_discipline"].layer == "medicare/2026"
    assert y.modifiers_for(Program.RTM, "98980", {"rendering": "PTA", "billing": "PT"}) == ("GP",)
    y = load_rulebook(overlay=overlays / "example-no-manual-readings.yaml").for_date(date(2026, 6, 1))
    manual = y.rule_global("manual_readings_count")
    assert (manual.value, manual.layer) == ((), "payers/example-no-manual-readings")

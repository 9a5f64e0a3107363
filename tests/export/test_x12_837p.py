"""The 837P writer: every interchange it produces must pass the pyx12 validator.

pyx12 checks structure, loop order, element sizes, code lists and control counts; it does
not check what we meant to say, so each test also reads back the segments it cares about.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretally.export.claims import ExportError, claim_id
from caretally.export.x12_837p import ProviderName, build_837p, money
from caretally.model import Address, Payer, Program
from caretally.settings_practice import demo_practice
from tests.export.factories import BILLING_NPI, OTHER_NPI, THIRD_NPI, line, patient
from tests.export.x12check import segments, validate_x12

CREATED = datetime(2026, 4, 2, 14, 5, tzinfo=UTC)
NAMES = {OTHER_NPI: ProviderName("Rivera", "Sam"), THIRD_NPI: ProviderName("Okafor", "Lee")}


def build(lines, patients=None, practice=None, **kw):
    patients = patients or {p: patient(p) for p in {ln.patient_id for ln in lines}}
    kw.setdefault("control_number", 7)
    kw.setdefault("created", CREATED)
    return build_837p(lines, patients, practice or demo_practice(), **kw)


def assert_valid(text: str) -> None:
    result = validate_x12(text)
    assert result.accepted, "pyx12 rejected the interchange:\n" + "\n".join(result.errors) + "\n" + text


def seg(text: str, seg_id: str, *prefix: str) -> list[list[str]]:
    return [s for s in segments(text) if s[0] == seg_id and s[1 : 1 + len(prefix)] == list(prefix)]


def test_one_patient_one_line_is_valid_and_says_what_was_billed():
    text = build([line("99454", charge=Decimal("47.43"), date_of_service=date(2026, 3, 28))])
    assert_valid(text)
    (clm,) = seg(text, "CLM")
    assert clm[1] == "P001-202603" and clm[2] == "47.43" and clm[5] == "11:B:1"
    (sv1,) = seg(text, "SV1")
    assert sv1[1:5] == ["HC:99454", "47.43", "UN", "1"] and sv1[7] == "1"
    assert seg(text, "DTP", "472") == [["DTP", "472", "D8", "20260328"]]
    assert seg(text, "HI") == [["HI", "ABK:I10"]]
    assert seg(text, "NM1", "85")[0][-2:] == ["XX", BILLING_NPI]
    assert seg(text, "REF", "EI")[0][2] == demo_practice().tin
    assert seg(text, "NM1", "IL")[0][-2:] == ["MI", "1EG4TE5MK73"]
    assert seg(text, "SBR")[0] == ["SBR", "P", "18", "", "", "", "", "", "", "MB"]
    assert not seg(text, "NM1", "82"), "no rendering provider when it is the biller"


def test_several_patients_each_get_a_subscriber_loop_under_the_one_billing_provider():
    lines = [
        line("99454", "P001"),
        line("99457", "P001", charge=Decimal("51.77")),
        line("99490", "P002", diagnosis_codes=("E11.9", "I50.22")),
        line("99454", "P003", place_of_service="12"),
    ]
    text = build(lines)
    assert_valid(text)
    hls = seg(text, "HL")
    assert [h[1:] for h in hls] == [
        ["1", "", "20", "1"],
        ["2", "1", "22", "0"],
        ["3", "1", "22", "0"],
        ["4", "1", "22", "0"],
    ]
    assert [c[1] for c in seg(text, "CLM")] == ["P001-202603", "P002-202603", "P003-202603"]
    assert [c[2] for c in seg(text, "CLM")] == ["99.2", "47.43", "47.43"]
    assert seg(text, "CLM")[2][5] == "12:B:1"
    body = segments(text)
    st_at = next(i for i, s in enumerate(body) if s[0] == "ST")
    se = seg(text, "SE")[0]
    assert int(se[1]) == len(body) - st_at - 2  # ST..SE inclusive, GE and IEA after


def test_addon_units_go_on_the_same_claim_as_their_base():
    lines = [
        line("99457", charge=Decimal("51.77")),
        line("99458", units=2, charge=Decimal("82.84")),
    ]
    text = build(lines)
    assert_valid(text)
    assert len(seg(text, "CLM")) == 1
    assert seg(text, "CLM")[0][2] == "134.61"
    sv1 = {s[1]: s for s in seg(text, "SV1")}
    assert sv1["HC:99458"][2:5] == ["82.84", "UN", "2"]


def test_addon_without_its_base_is_refused():
    with pytest.raises(ExportError) as err:
        build([line("99458", units=2)])
    assert [p.code for p in err.value.problems] == ["addon_without_base"]
    assert "99457" in str(err.value)


def test_modifiers_are_components_of_the_procedure():
    lines = [
        line("98977", program=Program.RTM, modifiers=("GP",), diagnosis_codes=("M54.50",)),
        line("98980", program=Program.RTM, modifiers=("GP", "CQ"), diagnosis_codes=("M54.50",)),
    ]
    text = build(lines)
    assert_valid(text)
    assert [s[1] for s in seg(text, "SV1")] == ["HC:98977:GP", "HC:98980:GP:CQ"]
    assert seg(text, "HI") == [["HI", "ABK:M5450"]]


@pytest.mark.parametrize(("test_data", "usage"), [(True, "T"), (False, "P")])
def test_usage_indicator_follows_the_practice(test_data, usage):
    text = build([line()], practice=replace(demo_practice(), test_data=test_data))
    assert_valid(text)
    isa = segments(text)[0]
    assert isa[15] == usage
    assert len(text.split("~")[0]) + 1 == 106, "ISA is fixed width"


@pytest.mark.parametrize(
    ("payer", "indicator"),
    [
        (Payer.MEDICARE, "MB"),
        (Payer.MEDICARE_ADVANTAGE, "16"),
        (Payer.MEDICAID, "MC"),
        (Payer.COMMERCIAL, "CI"),
    ],
)
def test_claim_filing_indicator_per_payer(payer, indicator):
    text = build([line(payer=payer)], {"P001": patient(payer=payer)})
    assert_valid(text)
    assert seg(text, "SBR")[0][9] == indicator


def test_diagnoses_are_pooled_per_claim_and_lines_point_into_them():
    lines = [
        line("99454", diagnosis_codes=("E11.9", "I10")),
        line("99457", diagnosis_codes=("I10", "E78.5", "N18.30"), charge=Decimal("51.77")),
    ]
    text = build(lines)
    assert_valid(text)
    assert seg(text, "HI") == [["HI", "ABK:E119", "ABF:I10", "ABF:E785", "ABF:N1830"]]
    assert [s[7] for s in seg(text, "SV1")] == ["1:2", "2:3:4"]


def test_more_than_twelve_diagnoses_on_one_claim_is_refused():
    pool = [
        "E11.9",
        "I10",
        "E78.5",
        "N18.30",
        "I50.22",
        "J44.9",
        "E66.9",
        "F32.9",
        "K21.9",
        "M54.50",
        "G47.33",
        "I48.91",
        "E03.9",
    ]
    lines = [
        line("99454", diagnosis_codes=tuple(pool[i : i + 4]), date_of_service=date(2026, 3, 1 + i))
        for i in range(0, 13, 4)
    ]
    with pytest.raises(ExportError) as err:
        build(lines)
    assert "too_many_diagnoses" in {p.code for p in err.value.problems}


def test_months_split_into_separate_claims_under_one_subscriber():
    lines = [
        line("99454", date_of_service=date(2026, 3, 31)),
        line("99454", date_of_service=date(2026, 4, 30)),
    ]
    text = build(lines)
    assert_valid(text)
    assert [c[1] for c in seg(text, "CLM")] == ["P001-202603", "P001-202604"]
    assert len(seg(text, "HL", "2")) == 1 and len(seg(text, "HL")) == 2


def test_rendering_provider_loops_when_someone_else_rendered():
    lines = [
        line("98977", rendering_npi=OTHER_NPI, modifiers=("GP",)),
        line("98980", rendering_npi=OTHER_NPI, modifiers=("GP",)),
        line("98981", rendering_npi=THIRD_NPI, modifiers=("GP",)),
    ]
    text = build(lines, provider_names=NAMES)
    assert_valid(text)
    nm82 = seg(text, "NM1", "82")
    assert nm82[0] == ["NM1", "82", "1", "RIVERA", "SAM", "", "", "", "XX", OTHER_NPI]  # 2310B
    assert nm82[1][3] == "OKAFOR" and nm82[1][-1] == THIRD_NPI  # 2420A on the third line
    body = [s[0] for s in segments(text)]
    assert body.index("NM1", body.index("HI")) < body.index("LX"), "2310B sits before the first line"


def test_split_by_rendering_gives_each_claim_one_renderer():
    lines = [
        line("99454", rendering_npi=OTHER_NPI),
        line("99490", rendering_npi=THIRD_NPI, program=Program.CCM),
    ]
    text = build(lines, provider_names=NAMES, grouping="patient_month_rendering")
    assert_valid(text)
    assert [c[1] for c in seg(text, "CLM")] == sorted(
        [f"P001-202603-{OTHER_NPI}", f"P001-202603-{THIRD_NPI}"]
    )
    assert len(seg(text, "NM1", "82")) == 2


def test_rendering_provider_without_a_name_is_refused():
    with pytest.raises(ExportError) as err:
        build([line(rendering_npi=OTHER_NPI)])
    assert [p.code for p in err.value.problems] == ["missing_provider_name"]


def test_line_pos_is_stated_only_where_it_differs_from_the_claim():
    lines = [line("99454"), line("99457", charge=Decimal("51.77")), line("99091", place_of_service="02")]
    text = build(lines)
    assert_valid(text)
    assert seg(text, "CLM")[0][5] == "11:B:1"
    assert [s[5] if len(s) > 5 else "" for s in seg(text, "SV1")] == ["02", "", ""]


def test_patient_without_address_still_validates():
    text = build([line()], {"P001": patient(address=None, sex="U")})
    assert_valid(text)
    nm1_il = next(i for i, s in enumerate(segments(text)) if s[:2] == ["NM1", "IL"])
    assert segments(text)[nm1_il + 1] == ["DMG", "D8", "19480312", "U"]


def test_every_fault_is_listed_at_once():
    lines = [line("99454", "P001"), line("99458", "P002", units=0), line("99454", "P404")]
    patients = {"P001": patient("P001", member_id=None), "P002": patient("P002")}
    with pytest.raises(ExportError) as err:
        build(lines, patients)
    codes = {p.code for p in err.value.problems}
    assert codes == {"missing_member_id", "addon_without_base", "bad_units", "unknown_patient"}


def test_practice_and_run_inputs_are_checked():
    practice = replace(
        demo_practice(),
        npi="1234567890",
        address=Address(line1="1 A St", city="Springfield", state="IL", postal_code="62701"),
    )
    with pytest.raises(ExportError) as err:
        build([line()], practice=practice, control_number=0, created=datetime(2026, 4, 1))
    assert {p.code for p in err.value.problems} == {
        "bad_npi",
        "zip_not_9_digits",
        "bad_control_number",
        "naive_timestamp",
        "missing_provider_name",  # the lines' NPI is no longer the billing NPI
    }


def test_same_lines_give_the_same_bytes_and_created_is_stated_in_utc():
    lines = [line("99457", "P002", charge=Decimal("51.77")), line("99454", "P001")]
    local = CREATED.astimezone(timezone(timedelta(hours=-5)))
    assert build(lines) == build(list(reversed(lines)), created=local)
    assert segments(build(lines))[1][4:6] == ["20260402", "1405"]


def test_text_is_made_safe_for_x12():
    p = patient(family_name="O'Brien*Smith~", given_name="Zoë")
    text = build([line()], {"P001": p})
    assert_valid(text)
    assert seg(text, "NM1", "IL")[0][3:5] == ["O'BRIEN SMITH", "ZOE"]


def test_claim_ids_are_deterministic_and_fit_clm01():
    assert claim_id("P001", date(2026, 3, 1)) == "P001-202603"
    long_id = claim_id("patient/with spaces and a very long identifier indeed", date(2026, 3, 1))
    assert long_id == claim_id("patient/with spaces and a very long identifier indeed", date(2026, 3, 1))
    assert len(long_id) <= 38 and "." in long_id
    assert claim_id("a b", date(2026, 3, 1)) != claim_id("a_b", date(2026, 3, 1))


def test_money_is_x12_decimal():
    assert [money(Decimal(v)) for v in ("47.43", "47.40", "50.00", "0", "0.005")] == [
        "47.43",
        "47.4",
        "50",
        "0",
        "0.01",
    ]


# -- the validator must be able to say no ------------------------------------------------


def _valid_sample() -> str:
    return build([line("99457", charge=Decimal("51.77")), line("99458", units=2, charge=Decimal("82.84"))])


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda t: t.replace("SE*", "SE*9", 1), id="wrong SE segment count"),
        pytest.param(
            lambda t: "\n".join(s for s in t.splitlines() if not s.startswith("NM1*85")),
            id="no billing provider",
        ),
        pytest.param(
            lambda t: t.replace("DTP*472*D8*20260331", "DTP*472*D8*20261331", 1), id="impossible date"
        ),
        pytest.param(lambda t: t.replace(":B:1", ":Z:1"), id="bad facility qualifier"),
        pytest.param(lambda t: t.replace("GE*1*", "GE*2*"), id="wrong GE count"),
    ],
)
def test_a_broken_interchange_is_rejected(breakage):
    good = _valid_sample()
    assert validate_x12(good).accepted
    result = validate_x12(breakage(good))
    assert not result.accepted


# -- any reasonable input validates ------------------------------------------------------

DX = ["E11.9", "I10", "E78.5", "N18.30", "I50.22", "J44.9"]
BASES = ["99454", "99445", "99453", "99490", "99091", "98977"]


@st.composite
def claim_lines(draw):
    lines = []
    for pid in draw(st.lists(st.sampled_from(["P001", "P002", "P003"]), min_size=1, max_size=3, unique=True)):
        payer = draw(st.sampled_from(list(Payer)))
        for code in draw(st.lists(st.sampled_from(BASES), min_size=1, max_size=3, unique=True)):
            lines.append(
                line(
                    code,
                    pid,
                    payer=payer,
                    units=draw(st.integers(1, 3)),
                    charge=Decimal(draw(st.integers(0, 50_000))) / 100,
                    diagnosis_codes=tuple(
                        draw(st.lists(st.sampled_from(DX), min_size=1, max_size=4, unique=True))
                    ),
                    modifiers=tuple(
                        draw(st.lists(st.sampled_from(["GP", "CQ", "25", "59"]), max_size=2, unique=True))
                    ),
                    place_of_service=draw(st.sampled_from(["11", "12", "02"])),
                    date_of_service=date(2026, draw(st.integers(1, 3)), draw(st.integers(1, 28))),
                    rendering_npi=draw(st.sampled_from([None, OTHER_NPI, THIRD_NPI])),
                )
            )
    return lines


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=claim_lines(), control=st.integers(1, 999_999_999), test_data=st.booleans())
def test_generated_claims_always_validate_and_add_up(lines, control, test_data):
    patients = {ln.patient_id: patient(ln.patient_id, payer=ln.payer) for ln in lines}
    practice = replace(demo_practice(), test_data=test_data)
    text = build(lines, patients, practice, control_number=control, provider_names=NAMES)
    assert_valid(text)
    totals: dict[str, Decimal] = {}
    current = ""
    for s in segments(text):
        if s[0] == "CLM":
            current = s[1]
            totals[current] = Decimal(s[2])
        elif s[0] == "SV1":
            totals[current] -= Decimal(s[2])
    assert set(totals.values()) == {Decimal(0)}, "each CLM02 is the sum of its SV102"
    assert sum(Decimal(c[2]) for c in seg(text, "CLM")) == sum(ln.charge for ln in lines)
    assert len(seg(text, "SV1")) == len(lines)
    assert sum(int(s[4]) for s in seg(text, "SV1")) == sum(ln.units for ln in lines)


def test_a_line_rendered_by_the_biller_keeps_the_claim_level_on_the_biller():
    lines = [line("99454"), line("99457", rendering_npi=OTHER_NPI, charge=Decimal("51.77"))]
    text = build(lines, provider_names=NAMES)
    assert_valid(text)
    body = segments(text)
    nm82 = [i for i, s in enumerate(body) if s[:2] == ["NM1", "82"]]
    assert len(nm82) == 1 and body[nm82[0]][-1] == OTHER_NPI
    assert body[nm82[0] - 1][:2] == ["DTP", "472"], "named on its line (2420A), not the claim (2310B)"

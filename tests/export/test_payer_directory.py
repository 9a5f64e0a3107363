"""The payer directory: each claim goes to its patient's payer, with that payer's filing indicator.

Every interchange is validated with pyx12 and then read back: for each claim (CLM), the
subscriber loop above it must name the payer (2010BB NM1*PR) and filing indicator (SBR09)
the directory gives for that patient.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from caretally.billing.exporting import interchange_paths
from caretally.export.claims import ExportError
from caretally.export.fhir_claim import build_claim_bundle
from caretally.export.routing import plan_interchanges
from caretally.export.x12_837p import build_837p, render_837p, routed_claims
from caretally.model import Payer
from caretally.settings_practice import PracticeSettingsError, demo_practice, load_practice
from tests.export.factories import line, patient
from tests.export.test_settings_practice import GOOD
from tests.export.x12check import segments, validate_x12

CREATED = datetime(2026, 4, 2, 14, 5, tzinfo=UTC)

HEAD = GOOD.split("[payer]")[0]  # identity, submitter and default receiver of the good file

DIRECTORY = (
    HEAD
    + """
[receivers.state]
id = "ILMEDICAID"
name = "Illinois Medicaid"

[payers.medicare]
name = "Example MAC"
id = "12502"

[payers.medicaid]
name = "Illinois Medicaid"
id = "IL770"
receiver = "state"

[payers.commercial]
name = "Blue Example"
id = "BX001"

[payers.medicare_advantage]
name = "Example Advantage"
id = "MA001"

[[payers.medicare_advantage.plans]]
plan = "acme-hmo"
name = "Acme Senior HMO"
id = "ACME1"
filing_indicator = "hm"

[[payers.medicare_advantage.plans]]
member_id_pattern = "HUM[0-9]{9}"
name = "Example Humble MA"
id = "HUM01"
receiver = "state"
own_interchange = true
"""
)

PEOPLE = {
    # patient id → (payer, member id, payer_plan)
    "A1": (Payer.MEDICARE, "1EG4TE5MK73", None),
    "B2": (Payer.MEDICAID, "123456789A", None),
    "C3": (Payer.COMMERCIAL, "BCB0123456789", None),
    "D4": (Payer.MEDICARE_ADVANTAGE, "XJH123456789", "acme-hmo"),
    "E5": (Payer.MEDICARE_ADVANTAGE, "HUM123456789", None),
    "F6": (Payer.MEDICARE_ADVANTAGE, "UHC123456789", None),
}
#: What the directory above must make of each patient: (payer id, SBR09, receiver id).
EXPECTED = {
    "A1": ("12502", "MB", "CLEARHOUSE01"),
    "B2": ("IL770", "MC", "ILMEDICAID"),
    "C3": ("BX001", "CI", "CLEARHOUSE01"),
    "D4": ("ACME1", "HM", "CLEARHOUSE01"),
    "E5": ("HUM01", "16", "ILMEDICAID"),
    "F6": ("MA001", "16", "CLEARHOUSE01"),
}


def practice_file(tmp_path: Path, text: str = DIRECTORY):
    path = tmp_path / "practice.toml"
    path.write_text(text, encoding="utf-8")
    return load_practice(path)


def mixed(practice_npi: str, people=PEOPLE):
    lines = [
        line("99454", pid, payer=payer, member_id=member, billing_npi=practice_npi)
        for pid, (payer, member, _) in people.items()
    ]
    patients = {
        pid: patient(pid, payer=payer, member_id=member, payer_plan=plan)
        for pid, (payer, member, plan) in people.items()
    }
    return lines, patients


def claims_read_back(text: str) -> dict[str, tuple[str, str, str]]:
    """CLM01 → (payer id in 2010BB, SBR09, ISA08 receiver) as the file states them."""
    out: dict[str, tuple[str, str, str]] = {}
    receiver = sbr09 = payer_id = ""
    for s in segments(text):
        if s[0] == "ISA":
            receiver = s[8].strip()
        elif s[0] == "SBR":
            sbr09 = s[9]
        elif s[:2] == ["NM1", "PR"]:
            payer_id = s[9]
        elif s[0] == "CLM":
            out[s[1]] = (payer_id, sbr09, receiver)
    return out


def test_each_claim_goes_to_its_patients_payer_and_receiver(tmp_path: Path):
    practice = practice_file(tmp_path)
    lines, patients = mixed(practice.npi)
    plans = plan_interchanges(routed_claims(lines, patients, practice))
    # Default clearinghouse; the state's receiver; and the plan that wants its own interchange.
    assert [(p.receiver.id, p.payer_label) for p in plans] == [
        ("CLEARHOUSE01", None),
        ("ILMEDICAID", None),
        ("ILMEDICAID", "medicare_advantage/Example Humble MA"),
    ]
    found: dict[str, tuple[str, str, str]] = {}
    for number, plan in enumerate(plans, start=1):
        text = render_837p(plan, practice, control_number=number, created=CREATED)
        result = validate_x12(text)
        assert result.accepted, "\n".join(result.errors) + "\n" + text
        found |= claims_read_back(text)
    assert found == {f"{pid}-202603": expected for pid, expected in EXPECTED.items()}
    assert [p.name for p in interchange_paths(tmp_path / "claims-2026-03.x12", plans)] == [
        "claims-2026-03.CLEARHOUSE01.x12",
        "claims-2026-03.ILMEDICAID.x12",
        "claims-2026-03.ILMEDICAID.medicare_advantage-Example-Humble-MA.x12",
    ]
    assert interchange_paths(tmp_path / "claims.x12", plans[:1]) == [tmp_path / "claims.x12"]


def test_one_receiver_still_gives_one_interchange_from_build_837p(tmp_path: Path):
    practice = practice_file(tmp_path, DIRECTORY.replace('receiver = "state"\n', ""))
    lines, patients = mixed(practice.npi)
    plans = plan_interchanges(routed_claims(lines, patients, practice))
    assert len(plans) == 2 and plans[1].payer_label  # only the own-interchange plan is apart
    no_own = practice_file(
        tmp_path, DIRECTORY.replace('receiver = "state"\n', "").replace("own_interchange = true", "")
    )
    text = build_837p(lines, patients, no_own, control_number=3, created=CREATED)
    assert validate_x12(text).accepted
    assert {k: v[:2] for k, v in claims_read_back(text).items()} == {
        f"{pid}-202603": expected[:2] for pid, expected in EXPECTED.items()
    }
    with pytest.raises(ExportError) as err:
        build_837p(lines, patients, practice, control_number=3, created=CREATED)
    assert [p.code for p in err.value.problems] == ["several_interchanges"]


def test_demo_practice_routes_every_payer_of_the_synthetic_practice():
    demo = demo_practice()
    people = {**PEOPLE, "D4": (Payer.MEDICARE_ADVANTAGE, "XJH123456789", None)}
    lines, patients = mixed(demo.npi, people)
    text = build_837p(lines, patients, demo, control_number=9, created=CREATED)
    assert validate_x12(text).accepted
    back = claims_read_back(text)
    assert {k: v[1] for k, v in back.items()} == {
        "A1-202603": "MB",
        "B2-202603": "MC",
        "C3-202603": "CI",
        "D4-202603": "16",
        "E5-202603": "HM",  # the named plan, by member-id pattern
        "F6-202603": "16",
    }
    assert len({v[0] for v in back.values()}) == 5, "five directory entries, five payer ids"


def test_a_patient_without_a_directory_entry_stops_the_export_listing_them(tmp_path: Path):
    text = DIRECTORY.split("[payers.medicaid]")[0]  # medicare only, plus a receiver
    practice = practice_file(tmp_path, text)
    lines, patients = mixed(practice.npi)
    with pytest.raises(ExportError) as err:
        routed_claims(lines, patients, practice)
    messages = sorted(p.message for p in err.value.problems)
    assert {p.code for p in err.value.problems} == {"no_payer_entry"}
    assert len(messages) == 4  # commercial, medicaid, MA, MA plan 'acme-hmo'
    assert any("medicaid" in m and "B2" in m for m in messages)
    assert any("'acme-hmo'" in m and "D4" in m for m in messages)
    assert any("medicare_advantage" in m and "E5, F6" in m for m in messages)
    assert not any("A1" in m for m in messages)
    with pytest.raises(ExportError):  # the FHIR writer routes the same way
        build_claim_bundle(lines, patients, practice, created=CREATED)


def test_an_explicit_plan_never_falls_back_to_the_payers_default(tmp_path: Path):
    practice = practice_file(tmp_path)
    lines, patients = mixed(practice.npi, {"D4": (Payer.MEDICARE_ADVANTAGE, "XJH1", "other-plan")})
    with pytest.raises(ExportError) as err:
        routed_claims(lines, patients, practice)
    assert "'other-plan'" in str(err.value) and "D4" in str(err.value)


def test_the_old_single_payer_file_means_medicare(tmp_path: Path):
    practice = practice_file(tmp_path, GOOD)
    assert [(r.payer, r.payer_id, r.filing_indicator, r.receiver.id) for r in practice.payers] == [
        (Payer.MEDICARE, "12502", "MB", "CLEARHOUSE01")
    ]
    lines, patients = mixed(practice.npi, {"A1": PEOPLE["A1"], "C3": PEOPLE["C3"]})
    with pytest.raises(ExportError) as err:
        routed_claims(lines, patients, practice)
    assert "commercial" in str(err.value) and "C3" in str(err.value)
    lines, patients = mixed(practice.npi, {"A1": PEOPLE["A1"]})
    text = build_837p(lines, patients, practice, control_number=1, created=CREATED)
    assert validate_x12(text).accepted and claims_read_back(text)["A1-202603"][:2] == ("12502", "MB")


@pytest.mark.parametrize(
    ("change", "field", "code"),
    [
        (("[payers.commercial]", "[payers.medicare_part_z]"), "payers.medicare_part_z", "unknown_payer"),
        (('filing_indicator = "hm"', 'filing_indicator = "QQ"'), "payers.medicare_advantage.plans[1]"
         ".filing_indicator", "invalid"),
        (('receiver = "state"\n', 'receiver = "nowhere"\n'), "payers.medicaid.receiver", "unknown_receiver"),
        (('"HUM[0-9]{9}"', '"HUM[0-9"'), "payers.medicare_advantage.plans[2].member_id_pattern", "invalid"),
        (('plan = "acme-hmo"\n', ""), "payers.medicare_advantage.plans[1]", "no_match"),
        (("own_interchange = true", 'own_interchange = "yes"'), "payers.medicare_advantage.plans[2]"
         ".own_interchange", "not_bool"),
        (('id = "BX001"', 'id = "BX001"\ncolour = "blue"'), "payers.commercial.colour", "unknown_key"),
        (('name = "Blue Example"\n', ""), "payers.commercial.name", "missing"),
    ],
)  # fmt: skip
def test_directory_mistakes_are_named(tmp_path: Path, change, field, code):
    path = tmp_path / "practice.toml"
    path.write_text(DIRECTORY.replace(*change, 1), encoding="utf-8")
    with pytest.raises(PracticeSettingsError) as err:
        load_practice(path)
    assert {(p.field, p.code) for p in err.value.problems} == {(field, code)}


def test_old_and_new_spelling_of_medicare_together_is_a_conflict(tmp_path: Path):
    path = tmp_path / "practice.toml"
    path.write_text(GOOD + '\n[payers.medicare]\nname = "Other MAC"\nid = "99999"\n', encoding="utf-8")
    with pytest.raises(PracticeSettingsError) as err:
        load_practice(path)
    assert [(p.field, p.code) for p in err.value.problems] == [("payer", "conflict")]


def test_x12_text_is_transliterated_and_an_empty_name_names_the_patient():
    demo = demo_practice()
    people = {
        "P001": patient("P001", family_name="Nguyễn", given_name="Łukasz"),
        "P002": patient("P002", family_name="王", given_name="Zoë"),
    }
    lines = [line("99454", pid, billing_npi=demo.npi) for pid in people]
    text = build_837p(lines, people, demo, control_number=1, created=CREATED)
    assert validate_x12(text).accepted
    names = [s[3:5] for s in segments(text) if s[:2] == ["NM1", "IL"]]
    assert names == [["NGUYEN", "LUKASZ"], ["WANG", "ZOE"]]
    broken = {**people, "P002": replace(people["P002"], family_name="☃☃", given_name="\u200b")}
    with pytest.raises(ExportError) as err:
        build_837p(lines, broken, demo, control_number=1, created=CREATED)
    assert [(p.code, p.field) for p in err.value.problems] == [
        ("empty_after_transliteration", "family_name"),
        ("empty_after_transliteration", "given_name"),
    ]
    assert all("patient P002" in p.message for p in err.value.problems)

"""The practice settings file: a good one loads, a bad one names every fault at once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from caretally.export.x12_837p import build_837p
from caretally.ingest.values import is_valid_npi
from caretally.model import Address
from caretally.settings_practice import (
    PracticeSettingsError,
    demo_practice,
    load_practice,
)
from tests.export.factories import line, patient
from tests.export.x12check import validate_x12

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "practice.example.toml"

GOOD = """
[practice]
name = "Prairie Family Medicine"
tin = "12-3456780"
npi = "1245319599"
taxonomy = "207q00000x"

[practice.address]
line1 = "200 W Monroe St"
line2 = "Suite 4"
city = "Springfield"
state = "il"
postal_code = "62704-1234"

[submitter]
id = "PFM001"
name = "Prairie Family Medicine"
contact_name = "Dana Biller"
contact_phone = "(217) 555-0199"

[receiver]
id = "CLEARHOUSE01"
name = "Example Clearinghouse"

[payer]
name = "Example MAC"
id = "12502"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "practice.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> dict[str, str]:
    with pytest.raises(PracticeSettingsError) as err:
        load_practice(path)
    return {p.field or "": p.code for p in err.value.problems}


def test_a_complete_file_loads_and_is_normalized(tmp_path: Path):
    practice = load_practice(write(tmp_path, GOOD))
    assert practice.tin == "123456780" and practice.npi == "1245319599"
    assert practice.taxonomy_code == "207Q00000X"
    assert practice.address == Address("200 W Monroe St", "Springfield", "IL", "627041234", "Suite 4")
    assert practice.submitter_contact_phone == "2175550199"
    assert practice.test_data is False


def test_usage_test_marks_the_identity_as_test_data(tmp_path: Path):
    text = GOOD.replace('contact_phone = "(217) 555-0199"', 'contact_phone = "2175550199"\nusage = "test"')
    assert load_practice(write(tmp_path, text)).test_data is True


def test_a_loaded_practice_produces_a_valid_837p(tmp_path: Path):
    practice = load_practice(write(tmp_path, GOOD))
    lines = [line(billing_npi=practice.npi)]
    text = build_837p(lines, {"P001": patient()}, practice, control_number=1, created=datetime.now(UTC))
    assert validate_x12(text).accepted
    assert "*P*:~" in text.split("\n")[0]


def test_the_shipped_example_refuses_to_load_until_filled_in():
    found = problems_of(EXAMPLE)
    assert found == {
        "practice.name": "placeholder",
        "practice.tin": "placeholder",
        "practice.npi": "placeholder",
        "practice.address.line1": "placeholder",
        "practice.address.city": "placeholder",
        "practice.address.state": "invalid",
        "practice.address.postal_code": "placeholder",
        "submitter.id": "placeholder",
        "submitter.name": "placeholder",
        "submitter.contact_name": "placeholder",
        "submitter.contact_phone": "placeholder",
        "receiver.id": "placeholder",
        "receiver.name": "placeholder",
        "payers.medicare.name": "placeholder",
        "payers.medicare.id": "placeholder",
        "fees.99453": "bad_money",
        "fees.99454": "bad_money",
        "fees.99457": "bad_money",
        "fees.99458": "bad_money",
    }


def test_every_problem_is_listed_in_one_error(tmp_path: Path):
    text = (
        GOOD.replace('tin = "12-3456780"', 'tin = "12345678"')
        .replace('npi = "1245319599"', 'npi = "1245319598"')
        .replace('state = "il"', 'state = "Illinois"')
        .replace('name = "Example MAC"\n', "")
        .replace('id = "PFM001"', 'id = "TODO"')
        .replace('postal_code = "62704-1234"', 'postal_code = "62704"')
        .replace("[receiver]", 'fax = "none"\n\n[receiver]')
    )
    found = problems_of(write(tmp_path, text))
    assert found == {
        "practice.tin": "invalid",
        "practice.npi": "invalid",
        "practice.address.state": "invalid",
        "payer.name": "missing",
        "submitter.id": "placeholder",
        "practice.address.postal_code": "invalid",
        "submitter.fax": "unknown_key",
    }
    with pytest.raises(PracticeSettingsError) as err:
        load_practice(write(tmp_path, text))
    message = str(err.value)
    assert "check digit" in message and "practice.tin" in message and "payer.name: is required" in message


def test_missing_tables_and_files_and_bad_toml(tmp_path: Path):
    found = problems_of(write(tmp_path, '[practice]\nname = "X Clinic"\n'))
    assert found["practice.address"] == "missing_table" and found["payers"] == "missing_table"
    assert found["practice.npi"] == "missing"
    assert problems_of(tmp_path / "nope.toml") == {"": "not_found"}
    assert problems_of(write(tmp_path, "[practice\n")) == {"": "toml_syntax"}


@pytest.mark.parametrize("value", ["CHANGEME", "todo", "XXX", "000000000", "<your TIN>"])
def test_placeholders_are_refused(tmp_path: Path, value: str):
    found = problems_of(write(tmp_path, GOOD.replace('tin = "12-3456780"', f'tin = "{value}"')))
    assert found == {"practice.tin": "placeholder"}


def test_x12_separators_are_refused_in_values(tmp_path: Path):
    found = problems_of(write(tmp_path, GOOD.replace('name = "Example MAC"', 'name = "Example*MAC"')))
    assert found == {"payer.name": "delimiter"}


def test_npi_check_digit():
    assert is_valid_npi("1234567893") and is_valid_npi("1245319599")
    assert not is_valid_npi("1234567890") and not is_valid_npi("124531959") and not is_valid_npi("12453195a9")


def test_demo_practice_is_test_data_with_a_valid_identity():
    demo = demo_practice()
    assert demo.test_data is True
    assert is_valid_npi(demo.npi) and len(demo.tin) == 9 and len(demo.address.postal_code) == 9


def test_fees_load_as_exact_decimals_per_code(tmp_path: Path):
    text = GOOD + '\n[fees]\n99454 = 47.43\n99457 = 50\ng0556 = "12.10"\n'
    practice = load_practice(write(tmp_path, text))
    assert practice.fees == (
        ("99454", Decimal("47.43")),
        ("99457", Decimal("50")),
        ("G0556", Decimal("12.10")),
    )
    assert practice.fee("99454") == Decimal("47.43") and practice.fee("99091") is None


@pytest.mark.parametrize(
    ("entry", "code"),
    [("99454 = 0", "bad_money"), ("99454 = -5.00", "bad_money"), ("99454 = 1.005", "bad_money"),
     ('99454 = "lots"', "bad_money"), ("99454 = true", "bad_money"), ("9945 = 10", "bad_code")],
)  # fmt: skip
def test_bad_fees_are_named(tmp_path: Path, entry: str, code: str):
    found = problems_of(write(tmp_path, GOOD + f"\n[fees]\n{entry}\n"))
    assert list(found.values()) == [code] and next(iter(found)).startswith("fees.")

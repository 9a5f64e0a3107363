"""NPIs and MBIs in a bundle pass the real format checks, and the checks themselves bite."""

from __future__ import annotations

import random

import pytest

from caretally.model import CREDENTIAL_CLASS, PerformerClass
from caretally.synth.identifiers import MBI_UNIQUE_SPACE, make_mbi, make_npi, npi_from_base
from tests.synth.bundle import Bundle, valid_mbi, valid_npi


def test_the_independent_validators_accept_known_good_and_reject_near_misses() -> None:
    # 1234567893 is the worked example in the CMS NPI check-digit specification.
    assert valid_npi("1234567893")
    assert not valid_npi("1234567890")
    assert not valid_npi("123456789")
    assert not valid_npi("3234567893")
    # The example MBI from the CMS MBI format page, then one bad letter at a time.
    assert valid_mbi("1EG4TE5MK73")
    for bad in ("0EG4TE5MK73", "1SG4TE5MK73", "1EG4TE5MK7", "1EGATE5MK73", "1EG4TE5ML73", "1EG4TE5MK7O"):
        assert not valid_mbi(bad), bad


def test_generated_npis_are_valid_for_many_draws() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        assert valid_npi(make_npi(rng))
    assert npi_from_base("123456789") == "1234567893"
    with pytest.raises(ValueError):
        npi_from_base("323456789")


def test_generated_mbis_are_valid_and_distinct_per_ordinal() -> None:
    rng = random.Random(7)
    mbis = [make_mbi(rng, n, salt=12345) for n in range(1, 20001)]
    assert all(valid_mbi(m) for m in mbis)
    assert len(set(mbis)) == len(mbis)
    assert MBI_UNIQUE_SPACE > 1_000_000


def test_every_npi_and_medicare_mbi_in_a_bundle_validates(panel: Bundle) -> None:
    npis = [r["npi"] for r in panel.rows["practitioners"] if r["npi"]]
    assert npis and all(valid_npi(n) for n in npis)
    assert len(set(npis)) == len(npis)
    medicare = [r["member_id"] for r in panel.rows["patients"] if r["payer"] == "medicare"]
    assert medicare and all(valid_mbi(m) for m in medicare)
    assert len(set(medicare)) == len(medicare)


def test_validators_agree_with_the_importer_when_it_is_present(panel: Bundle) -> None:
    ingest = pytest.importorskip("caretally.ingest")
    for row in panel.rows["practitioners"]:
        if row["npi"]:
            assert ingest.is_valid_npi(row["npi"])
    for row in panel.rows["patients"]:
        if row["payer"] == "medicare":
            assert ingest.is_valid_mbi(row["member_id"])


def test_the_practice_has_billers_staff_and_therapists(panel: Bundle) -> None:
    people = panel.rows["practitioners"]
    classes = [CREDENTIAL_CLASS[r["credential"]] for r in people]
    billers = [r for r, c in zip(people, classes, strict=True) if c is PerformerClass.PRACTITIONER]
    staff = [r for r, c in zip(people, classes, strict=True) if c is PerformerClass.STAFF]
    therapists = [r for r, c in zip(people, classes, strict=True) if c is PerformerClass.THERAPIST]
    assert 3 <= len(billers) <= 6
    assert {r["credential"] for r in billers} <= {"MD", "DO", "NP", "PA"}
    assert all(r["npi"] for r in billers + therapists)  # the importer requires them
    assert len(staff) >= 4
    assert {r["credential"] for r in staff} <= {"RN", "LPN", "MA"}
    assert any(not r["npi"] for r in staff)
    assert {"PT", "OT"} <= {r["credential"] for r in therapists}
    assert len({r["name"] for r in people}) == len(people)

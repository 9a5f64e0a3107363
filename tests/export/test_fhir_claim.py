"""The FHIR Claim bundle, parsed and validated by fhir.resources.

fhir.resources 8 ships R5 as its default package and R4B under ``fhir.resources.R4B``;
there is no plain R4 package. R4B kept R4's Claim, Coverage, Patient, Organization and
Bundle unchanged, so R4B is the closest validator available for our R4 output. It checks
required elements, cardinality and datatypes but not terminology bindings, so the tests
also assert the codes and systems themselves.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.claim import Claim as FhirClaim
from fhir.resources.R4B.coverage import Coverage
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from caretally.export.claims import ExportError
from caretally.export.fhir_claim import (
    CPT,
    HCPCS,
    ICD10CM,
    NPI,
    POS,
    build_claim_bundle,
    bundle_json,
)
from caretally.model import Payer, Program
from caretally.settings_practice import demo_practice
from tests.export.factories import BILLING_NPI, OTHER_NPI, line, patient

CREATED = datetime(2026, 4, 2, 14, 5, tzinfo=UTC)


def bundle_for(lines, patients=None) -> dict[str, Any]:
    patients = patients or {p: patient(p) for p in {ln.patient_id for ln in lines}}
    return build_claim_bundle(lines, patients, demo_practice(), created=CREATED)


def parse(bundle: dict[str, Any]) -> Bundle:
    """Both the dict and its JSON text must pass; the text is what leaves the system."""
    Bundle.model_validate(bundle)
    return Bundle.model_validate_json(bundle_json(bundle))


SAMPLE = [
    line("99457", "P001", charge=Decimal("51.77"), diagnosis_codes=("E11.9", "I10")),
    line("99458", "P001", units=2, charge=Decimal("82.85"), diagnosis_codes=("I10",)),
    line(
        "98977",
        "P002",
        program=Program.RTM,
        modifiers=("GP", "59"),
        rendering_npi=OTHER_NPI,
        diagnosis_codes=("M5450",),
        place_of_service="02",
    ),
    line("G0556", "P003", program=Program.APCM, date_of_service=date(2026, 4, 30)),
]


def test_bundle_validates_and_has_one_claim_per_patient_month():
    parsed = parse(bundle_for(SAMPLE))
    assert parsed.type == "collection"
    claims = [e.resource for e in parsed.entry]
    assert all(isinstance(c, FhirClaim) for c in claims)
    assert [c.identifier[0].value for c in claims] == ["P001-202603", "P002-202603", "P003-202604"]
    assert all(e.fullUrl == f"urn:uuid:{e.resource.id}" for e in parsed.entry)


def test_claim_header_fields():
    claim = parse(bundle_for(SAMPLE)).entry[0].resource
    assert (claim.status, claim.use) == ("active", "claim")
    assert claim.type.coding[0].code == "professional"
    assert claim.priority.coding[0].code == "normal"
    assert claim.provider.identifier.system == NPI and claim.provider.identifier.value == BILLING_NPI
    assert claim.created.isoformat() == "2026-04-02T14:05:00+00:00"
    assert claim.total.value == Decimal("134.62") and claim.total.currency == "USD"
    kinds = {type(r).__name__: r for r in claim.contained}
    assert set(kinds) == {"Patient", "Organization", "Coverage"}
    coverage = kinds["Coverage"]
    assert isinstance(coverage, Coverage) and coverage.subscriberId == "1EG4TE5MK73"
    assert claim.insurance[0].coverage.reference == f"#{coverage.id}" and claim.insurance[0].focal
    assert isinstance(kinds["Patient"], Patient) and kinds["Patient"].gender == "female"


def test_diagnoses_and_items():
    p1, p2, _ = (e.resource for e in parse(bundle_for(SAMPLE)).entry)
    assert [
        (d.diagnosisCodeableConcept.coding[0].system, d.diagnosisCodeableConcept.coding[0].code)
        for d in p1.diagnosis
    ] == [
        (ICD10CM, "E11.9"),
        (ICD10CM, "I10"),
    ]
    assert [i.diagnosisSequence for i in p1.item] == [[1, 2], [2]]
    addon = p1.item[1]
    assert (addon.productOrService.coding[0].system, addon.productOrService.coding[0].code) == (CPT, "99458")
    assert addon.quantity.value == 2
    assert addon.unitPrice.value == Decimal("41.43") and addon.net.value == Decimal("82.85")
    assert addon.servicedDate == date(2026, 3, 31)
    assert addon.locationCodeableConcept.coding[0].system == POS
    assert addon.locationCodeableConcept.coding[0].code == "11"
    rtm = p2.item[0]
    assert [(m.coding[0].system, m.coding[0].code) for m in rtm.modifier] == [(HCPCS, "GP"), (CPT, "59")]
    assert rtm.locationCodeableConcept.coding[0].code == "02"
    assert p2.diagnosis[0].diagnosisCodeableConcept.coding[0].code == "M54.50"
    assert p2.careTeam[0].provider.identifier.value == OTHER_NPI and rtm.careTeamSequence == [1]


def test_hcpcs_level_two_codes_use_the_hcpcs_system():
    claim = parse(bundle_for(SAMPLE)).entry[2].resource
    assert claim.item[0].productOrService.coding[0].system == HCPCS


@pytest.mark.parametrize(("payer", "sopt"), [(Payer.MEDICARE, "1"), (Payer.COMMERCIAL, "5")])
def test_coverage_type_follows_the_payer(payer, sopt):
    bundle = bundle_for([line(payer=payer)], {"P001": patient(payer=payer)})
    coverage = next(r for r in parse(bundle).entry[0].resource.contained if isinstance(r, Coverage))
    assert coverage.type.coding[0].code == sopt


def test_json_text_keeps_money_exact():
    text = bundle_json(bundle_for(SAMPLE))
    data = json.loads(text, parse_float=Decimal)
    item = data["entry"][0]["resource"]["item"][1]
    assert item["net"]["value"] == Decimal("82.85") and '"value": 82.85' in text


def test_same_lines_give_the_same_bundle():
    assert bundle_json(bundle_for(SAMPLE)) == bundle_json(bundle_for(list(reversed(SAMPLE))))


def _drop_status(b):
    del b["entry"][0]["resource"]["status"]


def _text_quantity(b):
    b["entry"][0]["resource"]["item"][0]["quantity"]["value"] = "two"


def _contained_coverage_without_beneficiary(b):
    del b["entry"][0]["resource"]["contained"][3]["beneficiary"]


def _bad_date(b):
    b["entry"][0]["resource"]["item"][0]["servicedDate"] = "2026-13-01"


def _bundle_without_type(b):
    del b["type"]


@pytest.mark.parametrize(
    "breakage",
    [_drop_status, _text_quantity, _contained_coverage_without_beneficiary, _bad_date, _bundle_without_type],
)
def test_a_broken_bundle_is_rejected(breakage):
    good = bundle_for(SAMPLE)
    parse(good)
    broken = copy.deepcopy(good)
    breakage(broken)
    with pytest.raises(ValidationError):
        Bundle.model_validate(broken)


def test_faults_are_reported_not_written():
    with pytest.raises(ExportError) as err:
        bundle_for([line("99458", units=2)])
    assert [p.code for p in err.value.problems] == ["addon_without_base"]
    with pytest.raises(ExportError):
        build_claim_bundle([line()], {"P001": patient()}, demo_practice(), created=datetime(2026, 4, 2))


def test_each_claims_payer_organization_comes_from_the_directory():
    lines = [
        line("99454", "P001"),
        line("99454", "P002", payer=Payer.MEDICAID, member_id="123456789A"),
        line("99454", "P003", payer=Payer.MEDICARE_ADVANTAGE, member_id="HUM123456789"),
    ]
    patients = {ln.patient_id: patient(ln.patient_id, payer=ln.payer, member_id=ln.member_id) for ln in lines}
    patients["P001"] = patient("P001")
    payers = {}
    for entry in parse(bundle_for(lines, patients)).entry:
        org = next(
            r for r in entry.resource.contained if r.get_resource_type() == "Organization" and r.id == "payer"
        )
        payers[entry.resource.identifier[0].value] = (org.name, org.identifier[0].value)
    assert payers == {
        "P001-202603": ("DEMO MEDICARE CONTRACTOR", "00000DEMO"),
        "P002-202603": ("DEMO STATE MEDICAID", "00000DEMOM"),
        "P003-202603": ("DEMO MEDICARE ADVANTAGE HMO", "00000DEMOH"),
    }

"""FHIR R4 Claim resources, one per patient-month, in a ``collection`` Bundle.

The claims group exactly like the 837P (see :mod:`caretally.export.claims`) so an X12
claim and its FHIR twin carry the same business identifier. Each Claim is self-contained:
the Patient, the billing Organization, the payer Organization and the Coverage sit in
``Claim.contained``, because a collection bundle sent to a payer API or archived for an
audit must not depend on resources stored elsewhere.

Money stays ``Decimal`` in the returned dict (FHIR decimals are exact); use
:func:`bundle_json` to serialise it, which writes them as JSON numbers without passing
through ``float``.

Code systems: CPT ``http://www.ama-assn.org/go/cpt`` for numeric codes and modifiers;
HCPCS Level II (codes such as G0556 and modifiers such as GP) under the CMS HCPCS system
URI; diagnoses ICD-10-CM with the dot; place of service from the CMS POS code set.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from caretally.errors import Problem
from caretally.export.claims import Claim, ExportError, group_claims, rendering_of
from caretally.export.routing import route_claims
from caretally.model import Address, ClaimLine, ClaimPatient, Payer, PracticeIdentity

PRODUCER = "fhir_claim"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
NPI = "http://hl7.org/fhir/sid/us-npi"
MBI = "http://hl7.org/fhir/sid/us-mbi"
EIN = "urn:oid:2.16.840.1.113883.4.4"
SOPT = "https://nahdo.org/sopt"
CLAIM_ID_SYSTEM = "urn:caretally:claim-id"
PATIENT_ID_SYSTEM = "urn:caretally:patient-id"
PAYER_ID_SYSTEM = "urn:caretally:payer-id"
#: Fixed namespace so the same claim id always yields the same resource id.
_NAMESPACE = uuid.UUID("6f1f9a7e-3c2b-5d4e-9a61-0c7a1e2b3d4f")

#: Source of Payment Typology code per payer kind (Coverage.type).
PAYMENT_TYPOLOGY: dict[Payer, tuple[str, str]] = {
    Payer.MEDICARE: ("1", "MEDICARE"),
    Payer.MEDICARE_ADVANTAGE: ("11", "Medicare (Managed Care)"),
    Payer.MEDICAID: ("2", "MEDICAID"),
    Payer.COMMERCIAL: ("5", "PRIVATE HEALTH INSURANCE"),
}
_GENDER = {"F": "female", "M": "male", "U": "unknown"}
_CENT = Decimal("0.01")


def _coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _procedure_system(code: str) -> str:
    """Level II HCPCS codes and modifiers start with a letter; CPT ones with a digit."""
    return HCPCS if code[:1].isalpha() else CPT


def _icd10_dotted(code: str) -> str:
    text = code.strip().upper()
    return text if "." in text or len(text) <= 3 else f"{text[:3]}.{text[3:]}"


def _money(amount: Decimal) -> dict[str, Any]:
    return {"value": amount.quantize(_CENT, rounding=ROUND_HALF_UP), "currency": "USD"}


def _address(addr: Address) -> dict[str, Any]:
    zip_code = addr.postal_code
    if len(zip_code) == 9 and zip_code.isdigit():
        zip_code = f"{zip_code[:5]}-{zip_code[5:]}"
    lines = [addr.line1] + ([addr.line2] if addr.line2 else [])
    return {"line": lines, "city": addr.city, "state": addr.state, "postalCode": zip_code, "country": "US"}


def resource_id(claim_id: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, claim_id))


def _contained(claim: Claim, practice: PracticeIdentity) -> list[dict[str, Any]]:
    patient = claim.patient
    patient_res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "patient",
        "identifier": [{"system": PATIENT_ID_SYSTEM, "value": patient.patient_id}],
        "name": [{"family": patient.family_name, "given": [patient.given_name]}],
        "gender": _GENDER.get(patient.sex, "unknown"),
        "birthDate": patient.birth_date.isoformat(),
    }
    if patient.address is not None:
        patient_res["address"] = [_address(patient.address)]
    billing = {
        "resourceType": "Organization",
        "id": "billing",
        "identifier": [{"system": NPI, "value": practice.npi}, {"system": EIN, "value": practice.tin}],
        "name": practice.name,
        "address": [_address(practice.address)],
    }
    route = claim.route
    assert route is not None  # build_claim_bundle routes every claim
    payer = {
        "resourceType": "Organization",
        "id": "payer",
        "identifier": [{"system": PAYER_ID_SYSTEM, "value": route.payer_id}],
        "name": route.name,
    }
    code, display = PAYMENT_TYPOLOGY[claim.payer]
    coverage: dict[str, Any] = {
        "resourceType": "Coverage",
        "id": "coverage",
        "status": "active",
        "type": _coding(SOPT, code, display),
        "subscriberId": claim.member_id,
        "beneficiary": {"reference": "#patient"},
        "relationship": _coding("http://terminology.hl7.org/CodeSystem/subscriber-relationship", "self"),
        "payor": [{"reference": "#payer"}],
    }
    if claim.payer is Payer.MEDICARE:
        coverage["identifier"] = [{"system": MBI, "value": claim.member_id}]
    return [patient_res, billing, payer, coverage]


def _item(
    sequence: int, line: ClaimLine, pointers: tuple[int, ...], care_team: Mapping[str, int]
) -> dict[str, Any]:
    item: dict[str, Any] = {"sequence": sequence}
    npi = rendering_of(line)
    if npi in care_team:
        item["careTeamSequence"] = [care_team[npi]]
    item["diagnosisSequence"] = list(pointers)
    item["productOrService"] = _coding(_procedure_system(line.code), line.code)
    if line.modifiers:
        item["modifier"] = [_coding(_procedure_system(m), m) for m in line.modifiers]
    item["servicedDate"] = line.date_of_service.isoformat()
    item["locationCodeableConcept"] = _coding(POS, line.place_of_service)
    item["quantity"] = {"value": line.units}
    # The line charge is the total for all units; the unit price is derived from it.
    item["unitPrice"] = _money(line.charge / line.units)
    item["net"] = _money(line.charge)
    return item


def _claim_resource(claim: Claim, practice: PracticeIdentity, created: datetime) -> dict[str, Any]:
    renderers: list[str] = []
    for line in claim.lines:
        npi = rendering_of(line)
        if npi and npi != practice.npi and npi not in renderers:
            renderers.append(npi)
    care_team = {npi: i for i, npi in enumerate(renderers, start=1)}
    resource: dict[str, Any] = {
        "resourceType": "Claim",
        "id": resource_id(claim.claim_id),
        "contained": _contained(claim, practice),
        "identifier": [{"system": CLAIM_ID_SYSTEM, "value": claim.claim_id}],
        "status": "active",
        "type": _coding("http://terminology.hl7.org/CodeSystem/claim-type", "professional"),
        "use": "claim",
        "patient": {"reference": "#patient"},
        "billablePeriod": {
            "start": min(ln.period_start for ln in claim.lines).isoformat(),
            "end": max(ln.period_end for ln in claim.lines).isoformat(),
        },
        "created": created.astimezone(UTC).isoformat(),
        "provider": {"reference": "#billing", "identifier": {"system": NPI, "value": practice.npi}},
        "priority": _coding("http://terminology.hl7.org/CodeSystem/processpriority", "normal"),
    }
    if care_team:
        resource["careTeam"] = [
            {
                "sequence": seq,
                "provider": {"identifier": {"system": NPI, "value": npi}},
                "role": _coding("http://terminology.hl7.org/CodeSystem/claimcareteamrole", "primary"),
            }
            for npi, seq in care_team.items()
        ]
    resource["diagnosis"] = [
        {
            "sequence": i,
            "diagnosisCodeableConcept": _coding(ICD10CM, _icd10_dotted(dx)),
            **(
                {"type": [_coding("http://terminology.hl7.org/CodeSystem/ex-diagnosistype", "principal")]}
                if i == 1
                else {}
            ),
        }
        for i, dx in enumerate(claim.diagnoses, start=1)
    ]
    resource["insurance"] = [{"sequence": 1, "focal": True, "coverage": {"reference": "#coverage"}}]
    resource["item"] = [
        _item(i, line, pointers, care_team)
        for i, (line, pointers) in enumerate(zip(claim.lines, claim.pointers, strict=True), start=1)
    ]
    resource["total"] = _money(claim.total_charge)
    return resource


def build_claim_bundle(
    lines: Sequence[ClaimLine],
    patients: Mapping[str, ClaimPatient],
    practice: PracticeIdentity,
    *,
    created: datetime,
) -> dict[str, Any]:
    """A ``collection`` Bundle with one Claim per patient-month; raises ``ExportError``."""
    if created.tzinfo is None:
        raise ExportError(
            [Problem(f"<{PRODUCER}>", None, "created", "naive_timestamp", "created must be timezone-aware")]
        )
    claims = route_claims(group_claims(lines, patients, practice.npi, producer=PRODUCER), practice, PRODUCER)
    entries = []
    for claim in claims:
        resource = _claim_resource(claim, practice, created)
        entries.append({"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource})
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": created.astimezone(UTC).isoformat(),
        "entry": entries,
    }


def bundle_json(bundle: Mapping[str, Any], *, indent: int | None = 2) -> str:
    """JSON text of a bundle, writing ``Decimal`` as an exact JSON number."""
    return _dump(bundle, indent, 0) + "\n"


def _dump(value: Any, indent: int | None, depth: int) -> str:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, Mapping):
        items = [f"{json.dumps(str(k))}: {_dump(v, indent, depth + 1)}" for k, v in value.items()]
        return _wrap("{", "}", items, indent, depth)
    if isinstance(value, list | tuple):
        return _wrap("[", "]", [_dump(v, indent, depth + 1) for v in value], indent, depth)
    return json.dumps(value, ensure_ascii=False)


def _wrap(open_: str, close: str, items: list[str], indent: int | None, depth: int) -> str:
    if not items:
        return open_ + close
    if indent is None:
        return open_ + ", ".join(items) + close
    pad = " " * (indent * (depth + 1))
    return open_ + "\n" + ",\n".join(pad + item for item in items) + "\n" + " " * (indent * depth) + close

"""Small builders for claim lines and patients, so each test states only what it varies."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from caretally.model import Address, ClaimLine, ClaimPatient, Payer, Program

BILLING_NPI = "1234567893"  # demo practice NPI (the CMS check-digit example)
OTHER_NPI = "1245319599"  # passes the NPI check digit; used as a second practitioner
THIRD_NPI = "1003000126"


def patient(patient_id: str = "P001", **changes: Any) -> ClaimPatient:
    base = ClaimPatient(
        patient_id=patient_id,
        family_name="Testperson",
        given_name="Ada",
        birth_date=date(1948, 3, 12),
        sex="F",
        member_id="1EG4TE5MK73",
        payer=Payer.MEDICARE,
        address=Address(line1="12 Elm St", city="Springfield", state="IL", postal_code="62704"),
    )
    return replace(base, **changes)


def line(code: str = "99454", patient_id: str = "P001", **changes: Any) -> ClaimLine:
    base = ClaimLine(
        patient_id=patient_id,
        code=code,
        units=1,
        date_of_service=date(2026, 3, 31),
        period_start=date(2026, 3, 1),
        period_end=date(2026, 3, 31),
        billing_npi=BILLING_NPI,
        rendering_npi=None,
        diagnosis_codes=("I10",),
        place_of_service="11",
        modifiers=(),
        charge=Decimal("47.43"),
        expected_payment=Decimal("47.43"),
        run_id="run-2026-03",
        enrollment_id=f"{patient_id}-RPM",
        program=Program.RPM,
        payer=Payer.MEDICARE,
        member_id=None,
    )
    return replace(base, **changes)

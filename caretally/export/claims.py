"""Grouping claim lines into claims, shared by the X12 and FHIR writers.

Both formats must agree on which lines travel together and under which claim id, or a
remittance for one could not be matched to the other. The rules that hold for every
format live here:

* one claim per patient per calendar month of the date of service (``patient_month``),
  or additionally split by rendering NPI (``patient_month_rendering``) for payers that
  refuse line-level rendering providers;
* an add-on code travels on the same claim as its base code (medicare-rules.md 4.2);
* the claim id is derived only from patient, month (and rendering NPI when split on it),
  never from the run, so exporting the same run twice, or the run that amends it, gives
  the same ids — which is what lets a correction point at the claim it corrects. A
  patient-month has one payer, so the payer and billing provider add nothing to the key.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from caretally.errors import Problem, ProblemsError
from caretally.model import ClaimLine, ClaimPatient, Payer, PayerRoute

GROUPINGS = ("patient_month", "patient_month_rendering")


def addon_bases() -> Mapping[str, frozenset[str]]:
    """Add-on code → base codes, derived from the Medicare rule-years' ``add_on_to``."""
    from caretally.rules.loader import load_rulebook

    return load_rulebook("medicare").add_on_bases()


#: Lines per claim (837P loop 2400 repeat limit); FHIR follows so both split alike.
MAX_LINES = 50
#: Diagnosis codes per claim (837P HI segment on a professional claim).
MAX_DIAGNOSES = 12
#: Diagnosis pointers per line (SV107).
MAX_POINTERS = 4
#: Procedure modifiers per line (SV101-3..6).
MAX_MODIFIERS = 4

_SAFE_ID = re.compile(r"[A-Za-z0-9-]{1,30}")
_ICD10 = re.compile(r"[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?")


class ExportError(ProblemsError):
    """The lines cannot be written as a valid claim; ``problems`` says which and why."""


@dataclass(frozen=True, slots=True)
class Claim:
    """Lines that go out together as one claim, with everything both writers derive."""

    claim_id: str
    patient: ClaimPatient
    payer: Payer
    member_id: str
    month: date  # first day of the month of service
    lines: tuple[ClaimLine, ...]
    diagnoses: tuple[str, ...]  # ICD-10-CM with dot as given, claim order, primary first
    pointers: tuple[tuple[int, ...], ...]  # per line, 1-based indexes into diagnoses
    place_of_service: str  # claim level: most frequent among the lines
    billing_npi: str  # the billing provider (practice) NPI
    rendering_npi: str | None  # claim level: most frequent renderer among the lines
    route: PayerRoute | None = None  # the payer directory entry, set by export.routing
    frequency: str = "1"  # CLM05-3: 1 original, 7 replacement, 8 void
    original_reference: str | None = None  # REF*F8 for a replacement or void

    @property
    def total_charge(self) -> Decimal:
        return sum((line.charge for line in self.lines), Decimal("0"))

    @property
    def claim_rendering_npi(self) -> str | None:
        """The claim-level rendering provider to state, or None when it is the biller itself."""
        return None if self.rendering_npi == self.billing_npi else self.rendering_npi

    def line_rendering_npi(self, line: ClaimLine) -> str | None:
        """The rendering NPI to state on this line, or None when the claim level covers it."""
        npi = rendering_of(line)
        return None if npi is None or npi == self.rendering_npi else npi


def rendering_of(line: ClaimLine) -> str | None:
    """Who rendered: the line's rendering NPI, else the billing practitioner's.

    Incident-to services by clinical staff go out under the billing practitioner
    (medicare-rules.md 4.2), so a line without its own rendering NPI names the biller.
    """
    return line.rendering_npi or line.billing_npi


def claim_id(patient_id: str, month: date, rendering_npi: str | None = None) -> str:
    """Deterministic patient control number (CLM01, at most 38 characters).

    Readable ``<patient>-<YYYYMM>`` when the patient id is short and plain; otherwise a
    hash, marked by a ``.`` that the readable form never contains, so the two cannot clash.
    """
    suffix = f"{month:%Y%m}" + (f"-{rendering_npi}" if rendering_npi else "")
    if _SAFE_ID.fullmatch(patient_id) and len(patient_id) + 1 + len(suffix) <= 38:
        return f"{patient_id}-{suffix}"
    digest = hashlib.sha256(patient_id.encode()).hexdigest()[: 37 - len(suffix)]
    return f"{suffix}.{digest}"


def icd10_ok(code: str) -> bool:
    return bool(_ICD10.fullmatch(code))


def _most_common(values: Sequence[str]) -> str:
    # Ties go to the value seen first, so the choice does not depend on hash order.
    counts = Counter(values)
    best = max(counts.values())
    return next(v for v in values if counts[v] == best)


def _group_key(line: ClaimLine, grouping: str) -> tuple[str, date, str | None]:
    month = line.date_of_service.replace(day=1)
    return (line.patient_id, month, rendering_of(line) if grouping == "patient_month_rendering" else None)


def _problem(producer: str, field: str | None, code: str, message: str) -> Problem:
    return Problem(f"<{producer}>", None, field, code, message)


def group_claims(
    lines: Sequence[ClaimLine],
    patients: Mapping[str, ClaimPatient],
    billing_npi: str,
    *,
    grouping: str = "patient_month",
    producer: str = "export",
) -> list[Claim]:
    """Lines → claims in a stable order (patient, month); raises with every fault found."""
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    problems: list[Problem] = []
    add_ons = addon_bases()

    def fault(field: str | None, code: str, message: str) -> None:
        problems.append(_problem(producer, field, code, message))

    if not lines:
        fault(None, "no_lines", "no claim lines to export")
    buckets: dict[tuple[str, date, str | None], list[ClaimLine]] = {}
    for line in lines:
        buckets.setdefault(_group_key(line, grouping), []).append(line)

    claims: list[Claim] = []
    for key in sorted(buckets, key=lambda k: (k[0], k[1], k[2] or "")):
        patient_id, month, split_npi = key
        group = sorted(buckets[key], key=lambda ln: (ln.date_of_service, ln.code, ln.modifiers))
        where = f"{patient_id} {month:%Y-%m}"
        patient = patients.get(patient_id)
        if patient is None:
            fault("patient_id", "unknown_patient", f"{where}: no ClaimPatient for patient {patient_id!r}")
            continue
        payers = {ln.payer for ln in group}
        if len(payers) > 1:
            fault("payer", "mixed_payers", f"{where}: lines for several payers {sorted(payers)} on one claim")
            continue
        member_ids = {ln.member_id for ln in group if ln.member_id} | (
            {patient.member_id} if patient.member_id else set()
        )
        if not member_ids:
            fault("member_id", "missing_member_id", f"{where}: no member id (MBI) for the subscriber")
            continue
        if len(member_ids) > 1:
            fault("member_id", "mixed_member_ids", f"{where}: several member ids {sorted(member_ids)}")
            continue
        if len(group) > MAX_LINES:
            fault(None, "too_many_lines", f"{where}: {len(group)} lines, a claim holds at most {MAX_LINES}")
            continue

        codes = {ln.code for ln in group}
        for ln in group:
            bases = add_ons.get(ln.code)
            if bases is not None and not bases & codes:
                fault(
                    "code",
                    "addon_without_base",
                    f"{where}: add-on {ln.code} needs one of {', '.join(sorted(bases))} on the same claim",
                )
            if ln.units < 1:
                fault("units", "bad_units", f"{where}: {ln.code} has {ln.units} units")
            if ln.charge < 0:
                fault("charge", "negative_charge", f"{where}: {ln.code} charge {ln.charge} is negative")
            if len(ln.modifiers) > MAX_MODIFIERS:
                fault("modifiers", "too_many_modifiers", f"{where}: {ln.code} has more than 4 modifiers")
            if not ln.diagnosis_codes:
                fault("diagnosis_codes", "no_diagnosis", f"{where}: {ln.code} has no diagnosis code")
            if len(ln.diagnosis_codes) > MAX_POINTERS:
                fault(
                    "diagnosis_codes", "too_many_pointers", f"{where}: {ln.code} points at more than 4 codes"
                )
            for dx in ln.diagnosis_codes:
                if not icd10_ok(dx):
                    fault("diagnosis_codes", "bad_icd10", f"{where}: {dx!r} is not an ICD-10-CM code")
            if not re.fullmatch(r"[0-9]{2}", ln.place_of_service):
                fault("place_of_service", "bad_pos", f"{where}: place of service {ln.place_of_service!r}")

        diagnoses: list[str] = []
        for ln in group:
            for dx in ln.diagnosis_codes:
                if dx not in diagnoses:
                    diagnoses.append(dx)
        if len(diagnoses) > MAX_DIAGNOSES:
            fault(
                "diagnosis_codes", "too_many_diagnoses", f"{where}: {len(diagnoses)} diagnosis codes (max 12)"
            )
        pointers = tuple(tuple(diagnoses.index(dx) + 1 for dx in ln.diagnosis_codes) for ln in group)
        renderers = [npi for ln in group if (npi := rendering_of(ln)) is not None]
        # When the biller rendered any line, the claim level stays the biller (no 2310B) and
        # only the others are named per line; otherwise the most frequent renderer is the default.
        if split_npi or not renderers:
            claim_npi = split_npi
        elif billing_npi in renderers:
            claim_npi = billing_npi
        else:
            claim_npi = _most_common(renderers)
        claims.append(
            Claim(
                claim_id=claim_id(patient_id, month, split_npi),
                patient=patient,
                payer=payers.pop(),
                member_id=member_ids.pop(),
                month=month,
                lines=tuple(group),
                diagnoses=tuple(diagnoses),
                pointers=pointers,
                place_of_service=_most_common([ln.place_of_service for ln in group]),
                billing_npi=billing_npi,
                rendering_npi=claim_npi,
            )
        )
    if problems:
        raise ExportError(problems)
    return claims

"""Which payer directory entry each claim goes to, and which claims share an interchange.

A claim sent to the wrong payer is denied weeks later, or worse paid and recouped, so a
patient whose payer (or named plan) has no entry stops the export: the practice adds the
entry rather than caretally guessing. The order of choice is the one a biller applies by
hand: the plan the practice recorded for the patient, else a plan whose member-id pattern
fits, else the payer's default entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from caretally.errors import Problem
from caretally.export.claims import Claim, ExportError
from caretally.model import ClaimPatient, Payer, PayerRoute, PracticeIdentity, Receiver


def route_for(
    practice: PracticeIdentity, patient: ClaimPatient, payer: Payer, member_id: str
) -> PayerRoute | None:
    """The directory entry for this subscriber, or None when the practice has none."""
    routes = [r for r in practice.payers if r.payer is payer]
    if patient.payer_plan:
        # An explicit plan never falls back to the payer's default: that would be a guess.
        return next((r for r in routes if r.plan == patient.payer_plan), None)
    for r in routes:
        if r.member_id_pattern and re.fullmatch(r.member_id_pattern, member_id):
            return r
    return next((r for r in routes if r.plan is None and r.member_id_pattern is None), None)


def route_claims(claims: Sequence[Claim], practice: PracticeIdentity, producer: str) -> list[Claim]:
    """Each claim with its route set; raises listing every patient without one, by payer."""
    missing: dict[str, list[str]] = {}
    routed: list[Claim] = []
    for claim in claims:
        route = route_for(practice, claim.patient, claim.payer, claim.member_id)
        if route is None:
            plan = claim.patient.payer_plan
            wanted = claim.payer.value + (f" plan {plan!r}" if plan else "")
            patients = missing.setdefault(wanted, [])
            if claim.patient.patient_id not in patients:
                patients.append(claim.patient.patient_id)
            continue
        routed.append(replace(claim, route=route))
    if missing:
        raise ExportError(
            [
                Problem(
                    f"<{producer}>",
                    None,
                    "payer",
                    "no_payer_entry",
                    f"the practice file's payer directory has no entry for {wanted} "
                    f"(add it under [payers.{wanted.split()[0]}]); patients: {', '.join(patients)}",
                )
                for wanted, patients in sorted(missing.items())
            ]
        )
    return routed


@dataclass(frozen=True, slots=True)
class InterchangePlan:
    """The claims that go out in one ISA/IEA envelope to one receiver."""

    receiver: Receiver
    payer_label: str | None  # set when the receiver wants this payer's claims on their own
    claims: tuple[Claim, ...]


def plan_interchanges(claims: Sequence[Claim]) -> list[InterchangePlan]:
    """One interchange per receiver, or per payer where the entry asks for its own."""
    buckets: dict[tuple[str, str, str], list[Claim]] = {}
    for claim in claims:
        route = claim.route
        if route is None:
            raise ValueError(f"claim {claim.claim_id} has no route; call route_claims first")
        key = (route.receiver.id, route.receiver.name, route.label if route.own_interchange else "")
        buckets.setdefault(key, []).append(claim)
    return [
        InterchangePlan(Receiver(rec_id, rec_name), label or None, tuple(buckets[(rec_id, rec_name, label)]))
        for rec_id, rec_name, label in sorted(buckets)
    ]

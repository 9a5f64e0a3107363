"""The practice's people: who bills, who does the staff time, who runs RTM.

Built once from the master seed, before any patient, so every patient generator sees the
same roster and can be run independently (or in another process).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from caretally.model import CREDENTIAL_CLASS, PerformerClass
from caretally.synth import catalog
from caretally.synth.identifiers import make_npi


@dataclass(frozen=True, slots=True)
class Clinician:
    practitioner_id: str
    npi: str  # "" when the person has none (common for medical assistants)
    name: str
    credential: str

    @property
    def performer(self) -> PerformerClass:
        return CREDENTIAL_CLASS[self.credential]


@dataclass(frozen=True, slots=True)
class Practice:
    billing: tuple[Clinician, ...]  # MD/DO/NP/PA: may bill every program
    staff: tuple[Clinician, ...]  # RN/LPN/MA: time incident to a billing practitioner
    therapists: tuple[Clinician, ...]  # PT/OT/PTA: furnish and (PT/OT) bill RTM

    @property
    def everyone(self) -> tuple[Clinician, ...]:
        return self.billing + self.staff + self.therapists

    @property
    def rtm_billers(self) -> tuple[Clinician, ...]:
        """Therapists who may bill in their own name: assistants never do."""
        return tuple(t for t in self.therapists if t.credential in ("PT", "OT"))


def _staff_count(patients: int, rng: random.Random) -> int:
    """A handful of staff for a small panel, more for a large one (one per ~2,500)."""
    return 4 + rng.randint(0, 3) + min(patients // 2500, 60)


def build_practice(rng: random.Random, patients: int) -> Practice:
    used_npis: set[str] = set()
    used_names: set[str] = set()

    def npi() -> str:
        while True:
            value = make_npi(rng)
            if value not in used_npis:
                used_npis.add(value)
                return value

    def person(prefix: str, number: int, credential: str, with_npi: bool) -> Clinician:
        while True:
            given = rng.choice(catalog.FEMALE_GIVEN if rng.random() < 0.55 else catalog.MALE_GIVEN)
            name = f"{given} {rng.choice(catalog.FAMILY)}"
            if name not in used_names:
                used_names.add(name)
                break
        return Clinician(f"{prefix}{number:03d}", npi() if with_npi else "", name, credential)

    billing_credentials = ["MD", rng.choice(["MD", "DO"])]
    billing_credentials += rng.choices(["MD", "DO", "NP", "PA"], weights=[3, 1, 3, 2], k=rng.randint(1, 4))
    billing = tuple(person("PRV", i + 1, c, True) for i, c in enumerate(billing_credentials))

    staff_list: list[Clinician] = []
    for i in range(_staff_count(patients, rng)):
        credential = rng.choices(["RN", "LPN", "MA"], weights=[5, 2, 3])[0]
        # RNs and LPNs often have an NPI of their own; medical assistants rarely do.
        has_npi = rng.random() < {"RN": 0.7, "LPN": 0.4, "MA": 0.05}[credential]
        staff_list.append(person("STF", i + 1, credential, has_npi))
    # At least one staff member without an NPI, so that case always exists in a bundle.
    if all(s.npi for s in staff_list):
        first = staff_list[0]
        staff_list[0] = Clinician(first.practitioner_id, "", first.name, first.credential)

    therapist_credentials = ["PT", "OT"] + (["PTA"] if rng.random() < 0.7 else [])
    therapists = tuple(person("THR", i + 1, c, True) for i, c in enumerate(therapist_credentials))
    return Practice(billing, tuple(staff_list), therapists)

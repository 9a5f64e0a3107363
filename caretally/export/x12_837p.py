"""ASC X12 837 professional claim (005010X222A1) from claim lines.

One interchange holds one functional group with one transaction: the practice is the
billing provider (loop 2000A), each patient is the subscriber (2000B, no separate patient
loop), and each patient-month is a claim (2300) whose lines are the service lines (2400).
Claims go to the payer the practice's payer directory names for the patient (2010BB), and
each receiver gets its own interchange (:mod:`caretally.export.routing`).
The output is checked in the tests with the pyx12 validator, so the layout here follows
the implementation guide rather than any one clearinghouse's habits.

Choices a reviewer may want to know (docs/exports.md explains them for billers):

* SBR09 claim filing indicator: the directory entry's, by default Medicare ``MB`` (Part B),
  Medicare Advantage ``16`` (Medicare risk HMO; a plan that wants ``HM`` says so in its
  entry), Medicaid ``MC``, commercial ``CI``.
* CLM05 is ``<POS>:B:<frequency>`` (1 original, 7 replacement, 8 void; a correction also
  carries ``REF*F8`` with the claim it corrects); CLM06–CLM09 = Y, A, Y, Y (signature on
  file, assignment accepted, benefits assigned, release of information).
* Text is transliterated to the X12 basic character set with ``anyascii`` (Zoë → ZOE,
  Nguyễn → NGUYEN, 王 → WANG); a name that would come out empty is refused.
* A line's POS goes on SV105 only when it differs from the claim's.
* The rendering provider (2310B) is stated when it differs from the billing NPI; a line
  rendered by someone else gets its own 2420A. Those loops need the person's name, which
  the claim lines do not carry, so the caller passes ``provider_names``.
* Separators: segment ``~``, element ``*``, component ``:``, repetition ``^``; one segment
  per line (a newline after ``~``), which X12 readers skip.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from anyascii import anyascii

from caretally.errors import Problem
from caretally.export.claims import Claim, ExportError, group_claims, rendering_of
from caretally.export.routing import InterchangePlan, plan_interchanges, route_claims
from caretally.ingest.values import is_valid_npi
from caretally.model import Address, ClaimLine, ClaimPatient, Payer, PracticeIdentity

SEGMENT = "~"
ELEMENT = "*"
COMPONENT = ":"
REPETITION = "^"
VERSION = "005010X222A1"
PRODUCER = "x12_837p"

#: SBR09 claim filing indicator code per payer kind, unless the directory entry says otherwise.
FILING_INDICATOR: dict[Payer, str] = {
    Payer.MEDICARE: "MB",
    Payer.MEDICARE_ADVANTAGE: "16",
    Payer.MEDICAID: "MC",
    Payer.COMMERCIAL: "CI",
}
#: Every SBR09 code 005010X222A1 allows (Claim Filing Indicator Code list).
# fmt: off
FILING_CODES = frozenset({
    "11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS",
    "FI", "HM", "LM", "MA", "MB", "MC", "OF", "TV", "VA", "WC", "ZZ",
})
# fmt: on
FREQUENCIES = ("1", "7", "8")

# After transliteration: anything outside printable ASCII, and our own separators.
_UNSAFE = re.compile(r"[*~:^\r\n\t]|[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class ProviderName:
    """A rendering practitioner's name as NPPES knows it (NM103/NM104)."""

    family: str
    given: str | None = None


def clean(value: str, limit: int) -> str:
    """Printable ASCII, upper case, no separators, squeezed and cut to the element's size.

    Letters are transliterated (Zoë → ZOE, Łukasz → LUKASZ, 王 → WANG) rather than dropped,
    so a name still matches the payer's eligibility file as closely as ASCII allows;
    symbols, emoji and invisible format characters carry no name and are dropped.
    """
    # Symbols and emoji go first: anyascii would spell them out (☃ → ":snowman:").
    kept = "".join(c for c in value if unicodedata.category(c)[0] in "LMNPZ")
    text = _UNSAFE.sub(" ", anyascii(kept).upper())
    return " ".join(text.split())[:limit].strip()


def money(amount: Decimal) -> str:
    """X12 decimal ``R``: no trailing zeros or exponent (47.40 → 47.4, 50.00 → 50)."""
    quantized = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    text = format(quantized, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def d8(day: date) -> str:
    return f"{day:%Y%m%d}"


class _Segments:
    """Collects segments; counting them is how SE01 stays right."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, *elements: str) -> None:
        values = list(elements)
        while values and values[-1] == "":
            values.pop()  # trailing empty elements are not sent
        self.items.append(ELEMENT.join(values) + SEGMENT)


def _check_inputs(
    plan: InterchangePlan,
    practice: PracticeIdentity,
    names: Mapping[str, ProviderName],
    control_number: int,
    created: datetime,
) -> None:
    claims = plan.claims
    problems: list[Problem] = []

    def fault(field: str, code: str, message: str) -> None:
        problems.append(Problem(f"<{PRODUCER}>", None, field, code, message))

    if not 1 <= control_number <= 999_999_999:
        fault("control_number", "bad_control_number", f"must be 1..999999999, got {control_number}")
    if created.tzinfo is None:
        fault("created", "naive_timestamp", "created must be timezone-aware")
    if not is_valid_npi(practice.npi):
        fault("practice.npi", "bad_npi", f"billing NPI {practice.npi!r} fails the NPI check digit")
    if not re.fullmatch(r"[0-9]{9}", practice.tin):
        fault("practice.tin", "bad_tin", f"TIN {practice.tin!r} is not 9 digits")
    if not re.fullmatch(r"[0-9]{9}", practice.address.postal_code):
        fault(
            "practice.address.postal_code",
            "zip_not_9_digits",
            "the billing provider address needs the 9-digit ZIP+4 (837P loop 2010AA N403)",
        )
    for field, value in (("submitter_id", practice.submitter_id), ("receiver_id", plan.receiver.id)):
        if not value or len(value) > 15 or clean(value, 15) != value.upper():
            fault(f"practice.{field}", "bad_interchange_id", f"{value!r} must be 1-15 plain characters")
    needed: set[str] = set()
    seen: set[str] = set()
    for claim in claims:
        if claim.patient.patient_id not in seen:
            seen.add(claim.patient.patient_id)
            for field, message in _empty_texts(claim.patient):
                fault(field, "empty_after_transliteration", f"patient {claim.patient.patient_id}: {message}")
        if claim.frequency not in FREQUENCIES:
            fault("frequency", "bad_frequency", f"{claim.claim_id}: frequency {claim.frequency!r}")
        if claim.frequency != "1" and not claim.original_reference:
            fault("original_reference", "missing_reference", f"{claim.claim_id}: a correction needs REF*F8")
        if claim.claim_rendering_npi:
            needed.add(claim.claim_rendering_npi)
        needed.update(npi for ln in claim.lines if (npi := claim.line_rendering_npi(ln)))
        for ln in claim.lines:
            npi = rendering_of(ln)
            if npi is not None and not is_valid_npi(npi):
                fault("rendering_npi", "bad_npi", f"{claim.claim_id}: NPI {npi!r} fails the check digit")
    for npi in sorted(needed):
        if npi not in names:
            fault(
                "provider_names",
                "missing_provider_name",
                f"rendering provider {npi} differs from the billing NPI and needs a name",
            )
    if problems:
        raise ExportError(problems)


def _empty_texts(patient: ClaimPatient) -> list[tuple[str, str]]:
    """Names and address parts that had text but none left in the X12 basic character set."""
    values = [("family_name", patient.family_name, 60), ("given_name", patient.given_name, 35)]
    if patient.address is not None:
        values += [("address_line", patient.address.line1, 55), ("city", patient.address.city, 30)]
    return [
        (field, f"{field} {value!r} has no letters or digits left after transliteration to X12 text")
        for field, value, limit in values
        if value.strip() and not clean(value, limit).strip(" .,'-/&()")
    ]


def routed_claims(
    lines: Sequence[ClaimLine],
    patients: Mapping[str, ClaimPatient],
    practice: PracticeIdentity,
    *,
    grouping: str = "patient_month",
) -> list[Claim]:
    """Lines grouped into claims, each routed to its payer directory entry."""
    claims = group_claims(lines, patients, practice.npi, grouping=grouping, producer=PRODUCER)
    return route_claims(claims, practice, PRODUCER)


def build_837p(
    lines: Sequence[ClaimLine],
    patients: Mapping[str, ClaimPatient],
    practice: PracticeIdentity,
    *,
    control_number: int,
    created: datetime,
    grouping: str = "patient_month",
    provider_names: Mapping[str, ProviderName] | None = None,
) -> str:
    """The interchange as text, when every claim goes to one receiver; raises otherwise.

    ``ExportError`` lists every fault at once. ``control_number`` becomes ISA13, GS06 and
    BHT03 and must be unique per submitter, so the caller keeps the sequence. ``created``
    dates the interchange (UTC). Several receivers need :func:`plan_interchanges` and one
    :func:`render_837p` per plan, each with its own control number.
    """
    plans = plan_interchanges(routed_claims(lines, patients, practice, grouping=grouping))
    if len(plans) != 1:
        receivers = ", ".join(p.receiver.id + (f" ({p.payer_label})" if p.payer_label else "") for p in plans)
        raise ExportError(
            [
                Problem(
                    f"<{PRODUCER}>",
                    None,
                    "receiver",
                    "several_interchanges",
                    f"the claims go to {len(plans)} interchanges ({receivers}); render one per plan",
                )
            ]
        )
    return render_837p(
        plans[0], practice, control_number=control_number, created=created, provider_names=provider_names
    )


def render_837p(
    plan: InterchangePlan,
    practice: PracticeIdentity,
    *,
    control_number: int,
    created: datetime,
    provider_names: Mapping[str, ProviderName] | None = None,
) -> str:
    """One interchange for one receiver's routed claims; raises ``ExportError`` listing faults."""
    names = provider_names or {}
    _check_inputs(plan, practice, names, control_number, created)
    # A void goes before the original that takes its place (a claim moving to another payer).
    claims = sorted(
        plan.claims,
        key=lambda c: (c.patient.patient_id, c.month, c.claim_id, FREQUENCIES[::-1].index(c.frequency)),
    )
    when = created.astimezone(UTC)

    out = _Segments()
    sender = clean(practice.submitter_id, 15)
    receiver = clean(plan.receiver.id, 15)
    out.add(
        "ISA", "00", " " * 10, "00", " " * 10,
        "ZZ", sender.ljust(15), "ZZ", receiver.ljust(15),
        f"{when:%y%m%d}", f"{when:%H%M}", REPETITION, "00501", f"{control_number:09d}",
        "0", "T" if practice.test_data else "P", COMPONENT,
    )  # fmt: skip
    out.add("GS", "HC", sender, receiver, f"{when:%Y%m%d}", f"{when:%H%M}", str(control_number), "X", VERSION)
    st_start = len(out.items)
    out.add("ST", "837", "0001", VERSION)
    out.add("BHT", "0019", "00", str(control_number), f"{when:%Y%m%d}", f"{when:%H%M}", "CH")
    # 1000A submitter, 1000B receiver
    out.add("NM1", "41", "2", clean(practice.submitter_name, 60), "", "", "", "", "46", sender)
    out.add(
        "PER", "IC", clean(practice.submitter_contact_name, 60),
        "TE", re.sub(r"[^0-9]", "", practice.submitter_contact_phone),
    )  # fmt: skip
    out.add("NM1", "40", "2", clean(plan.receiver.name, 60), "", "", "", "", "46", receiver)
    # 2000A billing provider
    out.add("HL", "1", "", "20", "1")
    if practice.taxonomy_code:
        out.add("PRV", "BI", "PXC", clean(practice.taxonomy_code, 50))
    out.add("NM1", "85", "2", clean(practice.name, 60), "", "", "", "", "XX", practice.npi)
    _address(out, practice.address)
    out.add("REF", "EI", practice.tin)

    hl = 1
    subscriber_key: tuple[str, Payer, str, str] | None = None
    for claim in claims:  # sorted by patient, so a subscriber's claims are adjacent
        assert claim.route is not None  # plan_interchanges refuses unrouted claims
        key = (claim.patient.patient_id, claim.payer, claim.member_id, claim.route.label)
        if key != subscriber_key:
            subscriber_key = key
            hl += 1
            _subscriber(out, hl, claim)
        _claim(out, claim, names)

    out.add("SE", str(len(out.items) - st_start + 1), "0001")
    out.add("GE", "1", str(control_number))
    out.add("IEA", "1", f"{control_number:09d}")
    return "\n".join(out.items) + "\n"


def _address(out: _Segments, addr: Address) -> None:
    out.add("N3", clean(addr.line1, 55), clean(addr.line2, 55) if addr.line2 else "")
    out.add("N4", clean(addr.city, 30), clean(addr.state, 2), re.sub(r"[^0-9]", "", addr.postal_code))


def _subscriber(out: _Segments, hl: int, claim: Claim) -> None:
    patient = claim.patient
    route = claim.route
    assert route is not None
    out.add("HL", str(hl), "1", "22", "0")
    out.add("SBR", "P", "18", "", "", "", "", "", "", route.filing_indicator)
    out.add(
        "NM1", "IL", "1", clean(patient.family_name, 60), clean(patient.given_name, 35),
        "", "", "", "MI", clean(claim.member_id, 80),
    )  # fmt: skip
    if patient.address is not None:
        _address(out, patient.address)
    out.add("DMG", "D8", d8(patient.birth_date), patient.sex if patient.sex in ("F", "M") else "U")
    out.add("NM1", "PR", "2", clean(route.name, 60), "", "", "", "", "PI", clean(route.payer_id, 80))


def _person(out: _Segments, npi: str, name: ProviderName) -> None:
    given = clean(name.given, 35) if name.given else ""
    out.add("NM1", "82", "1", clean(name.family, 60), given, "", "", "", "XX", npi)


def _claim(out: _Segments, claim: Claim, names: Mapping[str, ProviderName]) -> None:
    out.add(
        "CLM", claim.claim_id, money(claim.total_charge), "", "",
        COMPONENT.join((claim.place_of_service, "B", claim.frequency)), "Y", "A", "Y", "Y",
    )  # fmt: skip
    if claim.original_reference:
        out.add("REF", "F8", clean(claim.original_reference, 50))
    codes = [dx.replace(".", "").upper() for dx in claim.diagnoses]
    out.add("HI", *(f"{'ABK' if i == 0 else 'ABF'}{COMPONENT}{code}" for i, code in enumerate(codes)))
    if claim.claim_rendering_npi:
        _person(out, claim.claim_rendering_npi, names[claim.claim_rendering_npi])
    for number, (line, pointers) in enumerate(zip(claim.lines, claim.pointers, strict=True), start=1):
        out.add("LX", str(number))
        procedure = COMPONENT.join(("HC", line.code, *line.modifiers))
        pos = line.place_of_service if line.place_of_service != claim.place_of_service else ""
        out.add(
            "SV1", procedure, money(line.charge), "UN", str(line.units), pos, "",
            COMPONENT.join(str(p) for p in pointers),
        )  # fmt: skip
        out.add("DTP", "472", "D8", d8(line.date_of_service))
        other = claim.line_rendering_npi(line)
        if other:
            _person(out, other, names[other])

"""Domain vocabulary shared by every layer.

The enums here are the closed sets the input formats accept; the dataclasses are the
immutable records the rules engine reasons about. Nothing in this module touches the
database, the network or the environment, so the engine can import it freely.

Units are fixed by type: money is ``Decimal``, durations are ``int`` seconds or minutes,
calendar days are ``date`` and instants are timezone-aware UTC ``datetime``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum


class Program(StrEnum):
    """Care programs a patient can be enrolled in (one enrollment = one episode).

    ``BHI`` is general behavioral health integration (99484); ``COCM`` the psychiatric
    collaborative care model (99492–99494), a program of its own because it has its own
    team (a psychiatric consultant), consent and episode (an initial month).
    """

    RPM = "RPM"
    RTM = "RTM"
    CCM = "CCM"
    PCM = "PCM"
    APCM = "APCM"
    BHI = "BHI"
    COCM = "COCM"


class Payer(StrEnum):
    MEDICARE = "medicare"
    MEDICARE_ADVANTAGE = "medicare_advantage"
    MEDICAID = "medicaid"
    COMMERCIAL = "commercial"


class PerformerClass(StrEnum):
    """Who furnished a minute decides which codes it may count toward.

    ``practitioner`` is a physician or qualified health professional who may bill E/M;
    ``staff`` is clinical staff working incident to the billing practitioner;
    ``therapist`` is a PT/OT/SLP (or assistant), who may furnish and bill RTM.
    """

    PRACTITIONER = "practitioner"
    STAFF = "staff"
    THERAPIST = "therapist"


#: Credential → performer class. Assistants (PTA, OTA, SLPA) are therapists; which
#: modifiers their lines carry is a rule-year's ``modifiers:`` section, not code.
#: Clinical staff never bill themselves.
CREDENTIAL_CLASS: dict[str, PerformerClass] = {
    "MD": PerformerClass.PRACTITIONER,
    "DO": PerformerClass.PRACTITIONER,
    "NP": PerformerClass.PRACTITIONER,
    "PA": PerformerClass.PRACTITIONER,
    "CNS": PerformerClass.PRACTITIONER,
    "CNM": PerformerClass.PRACTITIONER,
    "RN": PerformerClass.STAFF,
    "LPN": PerformerClass.STAFF,
    "LVN": PerformerClass.STAFF,
    "MA": PerformerClass.STAFF,
    "CMA": PerformerClass.STAFF,
    "RMA": PerformerClass.STAFF,
    "CHW": PerformerClass.STAFF,
    "PHARMD": PerformerClass.STAFF,
    "RD": PerformerClass.STAFF,
    "RRT": PerformerClass.STAFF,
    "LCSW": PerformerClass.STAFF,
    "PT": PerformerClass.THERAPIST,
    "OT": PerformerClass.THERAPIST,
    "SLP": PerformerClass.THERAPIST,
    "PTA": PerformerClass.THERAPIST,
    "OTA": PerformerClass.THERAPIST,
    "SLPA": PerformerClass.THERAPIST,
}


class Transmission(StrEnum):
    AUTO = "auto"
    MANUAL = "manual"


class Modality(StrEnum):
    PHONE = "phone"
    VIDEO = "video"
    IN_PERSON = "in_person"
    TEXT = "text"
    PORTAL = "portal"
    OTHER = "other"


class RtmKind(StrEnum):
    RESPIRATORY = "respiratory"
    MUSCULOSKELETAL = "musculoskeletal"
    COGNITIVE_BEHAVIORAL = "cognitive_behavioral"


class Status(StrEnum):
    """A decision's verdict; ``reachable`` only exists while the period is still open."""

    BILLABLE = "billable"
    NOT_BILLABLE = "not_billable"
    REACHABLE = "reachable"


class PeriodKind(StrEnum):
    CALENDAR_MONTH = "calendar_month"
    THIRTY_DAY = "thirty_day"
    EPISODE = "episode"


# --------------------------------------------------------------------------------------
# Facts: what the store knows about one patient in one program over one period.
# Built by SQL in caretally.facts; consumed by the pure rules in caretally.rules.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    kind: PeriodKind
    start: date
    end: date  # inclusive

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


@dataclass(frozen=True, slots=True)
class TimeFact:
    """One time entry as the rules see it: who, when (patient-local date), how long."""

    entry_id: str
    local_date: date
    seconds: int
    practitioner_id: str
    performer: PerformerClass
    credential: str
    program: Program | None  # None = unassigned, open to allocation
    interactive: bool
    modality: Modality | None
    started_at: datetime | None = None
    #: Set by the engine when part of the interval was already logged by the same performer
    #: for this patient: ``seconds`` then counts only the rest, ``logged_seconds`` what was logged.
    logged_seconds: int | None = None
    overlaps: tuple[str, ...] = ()  # earlier entries of this patient whose interval it repeats
    #: Entries of *other* patients by the same performer whose intervals overlap this one's:
    #: both cannot be true, so the decisions and the run summary flag them (billing stays).
    other_patient_overlaps: tuple[str, ...] = ()
    #: The performer's employment by the billing practice: ``employee`` or ``contractor``.
    #: Read by the CY2027 proposal ``staff_minutes_employed_only``; every performer is an
    #: employee until practitioners carry an employment field (issue 14).
    employment: str = "employee"

    @property
    def ended_at(self) -> datetime | None:
        if self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=self.logged_seconds or self.seconds)


@dataclass(frozen=True, slots=True)
class DeviceFact:
    device_id: str
    program: Program
    kind: str
    medical_device: bool
    setup_date: date | None
    assigned_date: date
    returned_date: date | None


@dataclass(frozen=True, slots=True)
class EnrollmentFact:
    enrollment_id: str
    patient_id: str
    program: Program
    start_date: date
    end_date: date | None
    consent_date: date | None
    billing_practitioner_id: str
    billing_npi: str | None
    billing_credential: str
    diagnoses: tuple[str, ...]
    complexity: str | None
    order_date: date | None
    established_patient: bool | None  # None: not recorded (option established_patient_when_missing)
    initiating_visit_date: date | None
    #: Qualified Medicare Beneficiary during the enrollment (APCM level 3); None: not recorded.
    qmb: bool | None = None
    #: A payer's prior authorization for the episode: its number and the days it covers
    #: (a missing start or end means the enrollment's own).
    authorization_id: str | None = None
    authorization_start: date | None = None
    authorization_end: date | None = None


@dataclass(frozen=True, slots=True)
class BilledCode:
    """A line of an earlier month's current run: once-per-episode and one-practitioner rules.

    ``line_key`` names the stored claim line so a reason can point an auditor at it.
    """

    code: str
    date_of_service: date
    enrollment_id: str
    run_id: str
    period_start: date | None = None
    period_end: date | None = None
    month: str = ""
    line_key: str = ""
    units: int = 1


@dataclass(frozen=True, slots=True)
class ProgramFacts:
    """One enrollment (program episode) as seen from one calendar month.

    ``device_periods`` are the 30-day periods whose date of service may fall in the month
    (their windows can start in the previous month). ``data_days`` maps each
    patient-local date with at least one qualifying reading, inside the enrollment and in
    any of those periods, to the device ids that produced it: the day set is the evidence
    for device-supply and set-up codes. ``excluded_days`` counts dates that had readings
    which did not qualify, by reason (manual, non-medical device, outside enrollment), so
    a negative decision can say why the days are missing.

    Set-up belongs to the episode's first qualifying period, which may lie before this
    month: ``prior_periods`` are the episode's earlier 30-day periods (those ending on or
    after the set-up date), ``prior_days`` the qualifying days in them (filled only when
    they can matter), and ``data_from`` the first day of data the organization holds —
    a period ending before it cannot be judged from what caretally has.

    ``first_activity`` is the first patient-local date of a time entry logged for the
    enrollment's program inside the episode (any month): collaborative care bills its
    initial-month code in the first calendar month of care-manager activity. Filled only
    for programs with such a month (CoCM).
    """

    enrollment: EnrollmentFact
    device_periods: tuple[Period, ...]
    data_days: dict[date, tuple[str, ...]]
    devices: tuple[DeviceFact, ...]
    excluded_days: dict[str, tuple[date, ...]] = field(default_factory=dict)
    prior_periods: tuple[Period, ...] = ()
    prior_days: tuple[date, ...] = ()
    data_from: date | None = None
    first_activity: date | None = None


@dataclass(frozen=True, slots=True)
class VisitFact:
    """One encounter from visits.csv: who saw the patient, on which local date, billed how.

    Read by the initiating-visit rule (option ``initiating_visit_source: from_visits``) and
    the same-day E/M rule of 99091; which codes count as what is rule-year data.
    """

    visit_id: str
    local_date: date
    practitioner_id: str
    code: str
    place_of_service: str | None
    telehealth: bool


@dataclass(frozen=True, slots=True)
class PatientMonthFacts:
    """Everything the rules may know about one patient for one calendar month.

    ``time`` holds every time entry of the patient in the month (and in the device
    periods that reach into it), assigned or not: allocation across programs and the
    no-minute-twice rule need the whole picture at once. ``as_of`` is the last day whose
    data is known; any period ending after it is still open.
    """

    patient_id: str
    payer: Payer
    timezone: str
    month: Period
    as_of: date
    programs: tuple[ProgramFacts, ...]
    time: tuple[TimeFact, ...]
    billed_history: tuple[BilledCode, ...]
    #: The patient's date of death (patients.death_date); no service dated after it is billed.
    death_date: date | None = None
    #: The patient's visits up to the end of the month (all of them: an initiating visit
    #: may lie long before), in date order.
    visits: tuple[VisitFact, ...] = ()


# --------------------------------------------------------------------------------------
# Decisions: what the rules conclude, with the reasons and evidence behind it.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """The facts a reason rests on, so an auditor can retrace it without the engine."""

    dates: tuple[date, ...] = ()
    time_entry_ids: tuple[str, ...] = ()
    interactive_entry_ids: tuple[str, ...] = ()
    device_ids: tuple[str, ...] = ()
    values: tuple[tuple[str, str], ...] = ()  # (name, value) pairs, e.g. ("minutes", "19")


@dataclass(frozen=True, slots=True)
class ParameterUse:
    """One rule-year value a decision used, and which layer supplied it."""

    name: str
    value: str
    layer: str  # e.g. "medicare/2026" or "payers/example-commercial"
    citation: str


class Verdict(StrEnum):
    """How one check came out; ``pending`` is not met yet but still reachable this period."""

    PASS = "passed"
    FAIL = "failed"
    PENDING = "pending"


class ReasonKind(StrEnum):
    """What a reason does to its decision.

    ``requirement`` — a rule the code must meet; a failed one decides the status.
    ``advisory`` — a note that never changes the status (documentation gap, missing price,
    how time was credited, the period still open).
    ``conflict`` — another service won a concurrency rule; the decision lost its claim.
    """

    REQUIREMENT = "requirement"
    ADVISORY = "advisory"
    CONFLICT = "conflict"


#: The one list of advisory rule families: every consumer reads ``Reason.kind`` instead.
ADVISORY_PREFIXES = ("docs.", "pricing.", "time.", "period.", "rules.")
CONFLICT_PREFIXES = ("concurrency.",)


def kind_of(rule_id: str) -> ReasonKind:
    if rule_id.startswith(ADVISORY_PREFIXES):
        return ReasonKind.ADVISORY
    if rule_id.startswith(CONFLICT_PREFIXES):
        return ReasonKind.CONFLICT
    return ReasonKind.REQUIREMENT


@dataclass(frozen=True, slots=True)
class Reason:
    """One check or note behind a decision.

    ``verdict`` and ``kind`` are typed so that worklists, leakage and summaries never read
    the sentence; left out, they follow from ``passed`` and the rule id's family.
    """

    rule_id: str
    passed: bool
    message: str
    citation: str
    evidence: Evidence = Evidence()
    verdict: Verdict = None  # type: ignore[assignment]  # derived in __post_init__ when None
    kind: ReasonKind = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.verdict is None:
            object.__setattr__(self, "verdict", Verdict.PASS if self.passed else Verdict.FAIL)
        if self.kind is None:
            object.__setattr__(self, "kind", kind_of(self.rule_id))

    @property
    def blocking(self) -> bool:
        """A requirement or conflict that is not met: it is why a code does not bill (yet)."""
        return self.verdict is not Verdict.PASS and self.kind is not ReasonKind.ADVISORY


@dataclass(frozen=True, slots=True)
class Measures:
    """The numbers a decision was judged on, typed, so no consumer parses a sentence.

    ``None`` means the code does not count that quantity (a device code has no minutes).
    ``entry_ids`` are the time entries the decision counts; ``dates`` the counted days.
    ``min_minutes`` of an add-on is what its first unit needs (base + one step).
    """

    days: int | None = None
    min_days: int | None = None
    days_left: int | None = None
    minutes: int | None = None
    seconds: int | None = None
    min_minutes: int | None = None
    max_minutes: int | None = None
    next_unit_minutes: int | None = None  # add-ons: total minutes the next unit needs (None at the cap)
    interactive: bool | None = None
    entry_ids: tuple[str, ...] = ()
    dates: tuple[date, ...] = ()

    def merged(self, other: Measures) -> Measures:
        """Fields set in ``other`` win; used to fold several checks into one decision."""
        out = {}
        for name in self.__slots__:  # type: ignore[attr-defined]
            mine, theirs = getattr(self, name), getattr(other, name)
            out[name] = theirs if theirs not in (None, ()) else mine
        return Measures(**out)


@dataclass(frozen=True, slots=True)
class Decision:
    patient_id: str
    enrollment_id: str
    program: Program
    code: str
    status: Status
    units: int
    date_of_service: date | None
    period: Period
    reasons: tuple[Reason, ...]
    parameters: tuple[ParameterUse, ...] = ()
    billing_practitioner_id: str | None = None
    rendering_practitioner_id: str | None = None
    expected_payment: Decimal | None = None
    documentation_gaps: tuple[str, ...] = ()
    rule_year: str = ""  # the rule-year layers that judged it, e.g. "medicare/2026"; pricing uses the same
    measures: Measures = Measures()
    #: Judged by a proposed (not final) rule-year: a ``rules.provisional`` reason says which.
    provisional: bool = False

    @property
    def blocking(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.blocking)


# --------------------------------------------------------------------------------------
# Claims: what the month run emits and the exporters write.
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    line1: str
    city: str
    state: str  # two letters
    postal_code: str  # 5 or 9 digits
    line2: str | None = None


@dataclass(frozen=True, slots=True)
class Receiver:
    """Who an interchange is addressed to (ISA08/GS03, loop 1000B): a clearinghouse or a payer."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class PayerRoute:
    """One entry of the practice's payer directory: where a patient's claims go and how.

    A route without ``plan`` and ``member_id_pattern`` is the default for its payer kind;
    one with either is a named plan, chosen before the default when it matches the patient.
    ``own_interchange`` is for receivers that want each payer's claims in a file of its own.
    """

    payer: Payer
    label: str  # "medicare", or "medicare_advantage/<plan or name>": how messages and file names call it
    name: str  # NM103 of loop 2010BB
    payer_id: str  # NM109 of loop 2010BB
    filing_indicator: str  # SBR09
    receiver: Receiver
    plan: str | None = None
    member_id_pattern: str | None = None
    own_interchange: bool = False


@dataclass(frozen=True, slots=True)
class PracticeIdentity:
    """Who submits the claims and where they go; comes from the practice settings file.

    ``test_data`` marks synthetic identities (the demo): X12 usage indicator ``T``.
    ``payers`` is the payer directory, named plans before their kind's default; ``fees`` is
    the practice's charge per unit by code, as (code, amount) pairs so the identity stays
    hashable.
    """

    name: str
    tin: str  # 9 digits, employer identification number
    npi: str  # billing provider (group) NPI
    address: Address
    submitter_id: str
    submitter_name: str
    submitter_contact_name: str
    submitter_contact_phone: str
    receiver_id: str
    receiver_name: str
    payers: tuple[PayerRoute, ...] = ()
    taxonomy_code: str | None = None
    test_data: bool = False
    fees: tuple[tuple[str, Decimal], ...] = ()

    @property
    def receiver(self) -> Receiver:
        return Receiver(self.receiver_id, self.receiver_name)

    def fee(self, code: str) -> Decimal | None:
        return next((amount for c, amount in self.fees if c == code), None)


@dataclass(frozen=True, slots=True)
class ClaimPatient:
    """The subscriber/patient demographics a claim needs (patient is the subscriber)."""

    patient_id: str
    family_name: str
    given_name: str
    birth_date: date
    sex: str  # "F", "M" or "U"
    member_id: str | None
    payer: Payer
    address: Address | None = None
    payer_plan: str | None = None  # the named plan, when the practice records it (patients.extra)


@dataclass(frozen=True, slots=True)
class ClaimLine:
    patient_id: str
    code: str
    units: int
    date_of_service: date
    period_start: date
    period_end: date
    billing_npi: str | None
    rendering_npi: str | None
    diagnosis_codes: tuple[str, ...]  # ICD-10-CM, primary first, at most four
    place_of_service: str
    modifiers: tuple[str, ...]
    charge: Decimal
    expected_payment: Decimal
    run_id: str
    enrollment_id: str
    program: Program
    payer: Payer
    member_id: str | None

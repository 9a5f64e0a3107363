"""The month run: facts → decisions → priced claim lines, stored as one reproducible run.

A run records what it used (engine version, rule-pack hash, input digest, settings) so
that billing the same month again on the same data can prove it produced the same lines.
Runs are never edited once locked: a later run of a locked month is a new run that lists
its differences from the locked one as amendments.
"""

from __future__ import annotations

import gc
import hashlib
import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import orjson
from sqlalchemy import Connection, Engine, Text, and_, cast, func, insert, select, update
from sqlalchemy.sql.expression import ColumnElement, FromClause

from caretally import __version__
from caretally.billing.evaluate import map_month
from caretally.billing.payers import PayerRules
from caretally.billing.pricing import Pricing, price
from caretally.billing.serialize import decision_to_json, stored_decisions_json, stored_text
from caretally.billing.touchmarks import mark_run
from caretally.errors import UNUSABLE_SETTINGS, Problem, Refusal
from caretally.model import (
    ClaimLine,
    Decision,
    EnrollmentFact,
    PatientMonthFacts,
    Payer,
    Period,
    Program,
    Status,
)
from caretally.rules.families.common import layer_name, service_parts

if TYPE_CHECKING:
    from caretally.columnar.decide import Outcome
from caretally.rules.params import MissingParameter, RuleBook, RuleYear
from caretally.store import schema
from caretally.store.db import (
    LOCK_TIMEOUT_ENV,
    JsonText,
    LockTimeout,
    SerialTransaction,
    require_json_text,
    serial_transaction,
)

DRAFT, LOCKED, SUPERSEDED, VOID = "draft", "locked", "superseded", "void"


class RunError(Refusal):
    """The month cannot be billed or locked as asked; ``problem`` says why and what to do."""


def run_problem(
    code: str, message: str, *, month: str | None, run_id: str | None = None, hint: str | None = None
) -> Problem:
    """A refusal of the month run or the lock, in the one error shape."""
    return Problem("<month run>", None, None, code, message, hint=hint, run_id=run_id, month=month)


@dataclass(frozen=True)
class BillingSettings:
    """What a practice decides about its claims, beyond the payer's rules."""

    place_of_service: str = "11"
    pricing: Pricing = field(default_factory=Pricing)
    payer_overlays: Mapping[str, str] = field(default_factory=dict)
    #: Re-evaluate only the patients touched since the month's last run (``bill --incremental``,
    #: ``billing.incremental``). How a run is made, not what it decides: not in ``to_json``.
    incremental: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "place_of_service": self.place_of_service,
            "locality": self.pricing.locality,
            "qualifying_apm": self.pricing.qualifying_apm,
            "fee_schedule": {k: str(v) for k, v in sorted(self.pricing.fee_schedule.items())},
            "payer_overlays": dict(sorted(self.payer_overlays.items())),
        }


@dataclass(frozen=True)
class LineChange:
    kind: str  # added | removed | changed
    key: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@dataclass
class RunSummary:
    patients: int = 0
    decisions: int = 0
    lines: int = 0
    units_by_code: Counter[str] = field(default_factory=Counter)
    lines_by_code: Counter[str] = field(default_factory=Counter)
    payment_by_code: dict[str, Decimal] = field(default_factory=lambda: defaultdict(Decimal))
    not_billable_reasons: Counter[str] = field(default_factory=Counter)
    reason_examples: dict[str, str] = field(default_factory=dict)
    reachable: int = 0
    payers_on_medicare_rules: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    #: How many warnings the run stored, by advisory rule id. The warnings themselves are
    #: stored per patient (``run_warnings``, migration 0019) and read page by page
    #: (:func:`stored_warnings`): 334,277 of them were 145 MB of JSON in the summary at
    #: 100,000 synthetic patients, parsed whole by every reader.
    warnings_by_code: Counter[str] = field(default_factory=Counter)
    #: Proposed (not final) rule-years that judged decisions of the run: layers → citation.
    provisional: dict[str, str] = field(default_factory=dict)
    #: program → enrollments of the month that no rule-year decides (no code for the program
    #: in the rule-year judging the patient: a program the rules do not cover yet, or one a
    #: payer overlay removed); the rule-years, by layer name, that left them undecided.
    undecided: Counter[str] = field(default_factory=Counter)
    undecided_by: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: The highest ``readings.id`` of the organization in the run's snapshot: a reading with a
    #: higher id was stored after the run, so an audit packet can leave it out (readings carry
    #: no stored-at time; their ids are the only order the store keeps).
    readings_through: int | None = None

    def to_json(self) -> dict[str, Any]:
        """What the run stores about itself beyond its lines (``billing_runs.summary``)."""
        out: dict[str, Any] = {
            "patients": self.patients,
            "decisions": self.decisions,
            "lines": self.lines,
            "problems": [p.to_json() for p in self.problems],
            "warnings_total": self.warnings_total,
            "warnings_by_code": dict(sorted(self.warnings_by_code.items())),
        }
        if self.provisional:
            out["provisional"] = provisional_json(self.provisional)
        if self.undecided:
            out["undecided_programs"] = self.undecided_json()
        if self.readings_through is not None:
            out["readings_through"] = self.readings_through
        return out

    def undecided_json(self) -> dict[str, dict[str, Any]]:
        return {
            program: {"enrollments": n, "rule_years": sorted(self.undecided_by[program])}
            for program, n in sorted(self.undecided.items())
        }

    def undecided_notes(self) -> list[str]:
        """One sentence per program that imported but that no rule-year decides, so a run
        never stays silent about enrollments it could not judge."""
        out = []
        for program, n in sorted(self.undecided.items()):
            years = ", ".join(sorted(self.undecided_by[program]))
            noun = "enrollment" if n == 1 else "enrollments"
            out.append(f"{program}: {n} {noun} imported, no rule-year decides {program} ({years})")
        return out

    @property
    def warnings_total(self) -> int:
        return sum(self.warnings_by_code.values())

    @property
    def expected_revenue(self) -> Decimal:
        return sum(self.payment_by_code.values(), Decimal("0.00"))

    def absorb(self, other: RunSummary) -> None:
        """Add a patient's partial summary (made in a worker) to the run's."""
        self.patients += other.patients
        self.decisions += other.decisions
        self.reachable += other.reachable
        self.not_billable_reasons.update(other.not_billable_reasons)
        for rule_id, message in other.reason_examples.items():
            self.reason_examples.setdefault(rule_id, message)
        self.payers_on_medicare_rules.update(other.payers_on_medicare_rules)
        self.warnings_by_code.update(other.warnings_by_code)
        for layers, citation in other.provisional.items():
            self.provisional.setdefault(layers, citation)
        self.undecided.update(other.undecided)
        for program, years in other.undecided_by.items():
            self.undecided_by[program].update(years)


def provisional_json(years: Mapping[str, str]) -> dict[str, Any]:
    """How a run (stored summary, ``bill --json``) says it was judged by a proposed year."""
    return {
        "rule_years": sorted(years),
        "citations": {k: years[k] for k in sorted(years)},
        "accepted_at": None,
    }


@dataclass(frozen=True)
class RunWarning:
    """Something an auditor should see that does not change what is billed (overlapping time …)."""

    code: str  # the advisory rule id, e.g. time.overlap_other_patient
    patient_id: str
    message: str
    entry_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "patient_id": self.patient_id,
            "message": self.message,
            "entry_ids": list(self.entry_ids),
        }

    def row_json(self) -> dict[str, Any]:
        """As the patient's decisions row stores it: the row names the patient already."""
        return {"code": self.code, "message": self.message, "entry_ids": list(self.entry_ids)}

    @classmethod
    def from_row(cls, patient_id: str, item: Mapping[str, Any]) -> RunWarning:
        return cls(item["code"], patient_id, item["message"], tuple(item.get("entry_ids") or ()))


def warnings_text(warnings: Sequence[RunWarning]) -> JsonText | None:
    """A patient's warnings as ``run_warnings.warnings`` stores them; None for none (no row).

    Made where the patient was evaluated, so a forked or remote worker ships a short
    string with the decisions row instead of objects in its partial summary.
    """
    if not warnings:
        return None
    return JsonText(orjson.dumps([w.row_json() for w in warnings]).decode())


#: Patients whose stored warnings are read in one statement.
WARNINGS_CHUNK = 500


def _warning_rows() -> tuple[FromClause, ColumnElement[Any]]:
    """``run_warnings`` joined to the rows it refers to, and the warnings each row stands for.

    A carried patient's row of an incremental run holds no array of its own: ``stored_in``
    names the run whose row of the same patient does (as ``run_decisions`` does).
    """
    w = schema.run_warnings
    source = w.alias("warnings_source")
    joined = w.outerjoin(
        source, and_(source.c.run_id == w.c.stored_in, source.c.patient_id == w.c.patient_id)
    )
    value = func.coalesce(source.c.warnings, w.c.warnings, type_=w.c.warnings.type)
    return joined, value.label("warnings")


def warning_counts(bind: Bind, run_id: str) -> list[tuple[str, int]]:
    """(patient, how many warnings) of every patient of the run with any, in patient order.

    Only ids and counts are read, so a page far into a large run reads the few arrays it
    shows. Sorted here: Python's order is the run's patient order, whatever the
    database's collation.
    """
    w = schema.run_warnings
    stmt = select(w.c.patient_id, w.c.warning_count).where(w.c.run_id == run_id)
    with _connected(bind) as conn:
        return sorted((patient, int(n)) for patient, n in conn.execute(stmt).all())


def warnings_of(bind: Bind, run_id: str, patients: Sequence[str]) -> Iterator[RunWarning]:
    """The stored warnings of ``patients`` (in the order given), as the run made them."""
    w = schema.run_warnings
    joined, value = _warning_rows()
    with _connected(bind) as conn:
        for start in range(0, len(patients), WARNINGS_CHUNK):
            chunk = patients[start : start + WARNINGS_CHUNK]
            found = dict(
                conn.execute(
                    select(w.c.patient_id, value)
                    .select_from(joined)
                    .where(w.c.run_id == run_id, w.c.patient_id.in_(chunk))
                ).all()
            )
            for patient in chunk:
                for item in found.get(patient) or ():
                    yield RunWarning.from_row(patient, item)


def stored_warnings(bind: Bind, run_id: str, offset: int = 0, limit: int | None = None) -> WarningPage:
    """A page of the run's warnings, in the order the run met them (patient order)."""
    counts = warning_counts(bind, run_id)
    total = sum(n for _, n in counts)
    end = total if limit is None else min(total, offset + limit)
    wanted: list[str] = []
    skip = seen = 0
    for patient, n in counts:
        if seen + n > offset and seen < end:
            if not wanted:
                skip = offset - seen
            wanted.append(patient)
        seen += n
    items = list(warnings_of(bind, run_id, wanted))[skip : skip + max(end - offset, 0)]
    return WarningPage(total, offset, items)


@dataclass(frozen=True)
class WarningPage:
    """Some of a run's warnings: ``total`` in the run, these from position ``offset``."""

    total: int
    offset: int
    items: list[RunWarning]


class StoredLines(Sequence[ClaimLine]):
    """A stored run's claim lines, read from the store the first time a caller looks.

    A run of 100,000 patients makes about a million lines; holding them all until the run
    returns, for the few callers that print or export them, was a third of its peak
    memory. A run's lines never change once stored, so reading them later gives exactly
    the lines the run wrote, in the same (patient) order.
    """

    def __init__(self, engine: Engine, run_id: str) -> None:
        self._engine, self._run_id = engine, run_id
        self._lines: list[ClaimLine] | None = None

    @property
    def engine(self) -> Engine:
        return self._engine

    def _loaded(self) -> list[ClaimLine]:
        if self._lines is None:
            self._lines = stored_lines(self._engine, self._run_id)
        return self._lines

    @overload
    def __getitem__(self, index: int) -> ClaimLine: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ClaimLine]: ...
    def __getitem__(self, index: int | slice) -> ClaimLine | Sequence[ClaimLine]:
        return self._loaded()[index]

    def __len__(self) -> int:
        return len(self._loaded())

    def __iter__(self) -> Iterator[ClaimLine]:
        return iter(self._loaded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self._loaded() == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"StoredLines(run_id={self._run_id!r})"


@dataclass
class RunResult:
    run_id: str
    month: str
    outcome: str  # created | unchanged
    status: str
    #: The run's claim lines in stored order (a created run: :class:`StoredLines`, read on demand).
    lines: Sequence[ClaimLine]
    summary: RunSummary
    previous_run_id: str | None = None
    amends_run_id: str | None = None
    changes: list[LineChange] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        return self.summary.problems

    def warnings(self, limit: int | None = None) -> WarningPage:
        """The run's stored warnings (the first ``limit``), read from the store when asked:
        the summary counts them (``summary.warnings_by_code``) without holding them."""
        if not isinstance(self.lines, StoredLines):
            return WarningPage(self.summary.warnings_total, 0, [])
        return stored_warnings(self.lines.engine, self.run_id, 0, limit)

    @property
    def changes_nothing(self) -> bool:
        """An amendment whose every claim line equals the locked run's: nothing to correct.

        It is still stored when the data changed (its decisions carry the new evidence),
        but there is no claim to send: its 837P export is refused.
        """
        return self.amends_run_id is not None and not self.changes


# ----------------------------------------------------------------------------------------
# Building claim lines from decisions
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directory:
    """Patients and practitioners a run needs to fill claim lines."""

    members: Mapping[str, tuple[Payer, str | None]]
    npis: Mapping[str, str | None]
    credentials: Mapping[str, str]


def _directory(engine: Engine, org_id: str, patients: Iterable[str] | None = None) -> _Directory:
    """Payers, member ids and practitioners for claim lines (``patients``: only theirs)."""
    p, pr = schema.patients, schema.practitioners
    query = select(p.c.patient_id, p.c.payer, p.c.member_id).where(p.c.org_id == org_id)
    if patients is not None:
        query = query.where(p.c.patient_id.in_(sorted(patients)))
    with engine.connect() as conn:
        members = {r.patient_id: (Payer(r.payer), r.member_id) for r in conn.execute(query)}
        people = conn.execute(
            select(pr.c.practitioner_id, pr.c.npi, pr.c.credential).where(pr.c.org_id == org_id)
        ).all()
    return _Directory(
        members,
        {r.practitioner_id: (r.npi or None) for r in people},
        {r.practitioner_id: r.credential.upper() for r in people},
    )


def _modifiers(
    d: Decision | _LineSource, directory: _Directory, year: RuleYear, parts: tuple[str, ...]
) -> tuple[str, ...]:
    """The line's modifiers, by the ``modifiers:`` rules of the rule-year that judged it.

    ``parts`` are the credentials of everyone who furnished a counted minute of the line's
    service (``rules.families.common.service_parts``).
    """
    credentials = {
        "rendering": directory.credentials.get(d.rendering_practitioner_id or "", ""),
        "billing": directory.credentials.get(d.billing_practitioner_id or "", ""),
    }
    return year.modifiers_for(d.program, d.code, credentials, parts)


def _rendering_npi(d: Decision | _LineSource, directory: _Directory, billing_npi: str | None) -> str | None:
    """The rendering provider: the practitioner who furnished it when they have an NPI.

    Clinical staff work incident to the billing practitioner, so their lines render
    under the billing NPI.
    """
    rid = d.rendering_practitioner_id
    if rid and directory.npis.get(rid) and directory.credentials.get(rid, "") not in _STAFF_CREDENTIALS:
        return directory.npis[rid]
    return billing_npi


_STAFF_CREDENTIALS = frozenset({"RN", "LPN", "LVN", "MA", "CMA", "RMA", "CHW", "PHARMD", "RD", "RRT", "LCSW"})


def claim_lines_for(
    facts: PatientMonthFacts,
    decisions: Iterable[Decision],
    rules: PayerRules,
    settings: BillingSettings,
    directory: _Directory,
    run_id: str,
) -> list[ClaimLine]:
    payer, member_id = directory.members[facts.patient_id]
    enrollments = {p.enrollment.enrollment_id: p.enrollment for p in facts.programs}
    lines = []
    decisions = list(decisions)
    for d in decisions:
        if d.status is not Status.BILLABLE or d.units <= 0 or d.date_of_service is None:
            continue
        year = judging_year(rules.for_payer(payer), d)
        lines.append(
            _claim_line(
                d,
                enrollments[d.enrollment_id],
                year,
                service_parts(d, decisions, facts, year),
                (d.units, d.date_of_service, d.period.start, d.period.end),
                _LineContext(facts.patient_id, payer, member_id, settings, directory, run_id),
            )
        )
    return lines


@dataclass(frozen=True, slots=True)
class _LineContext:
    """What every claim line of one patient-month shares."""

    patient_id: str
    payer: Payer
    member_id: str | None
    settings: BillingSettings
    directory: _Directory
    run_id: str


def _claim_line(
    source: Decision | _LineSource,
    enrollment: EnrollmentFact,
    year: RuleYear,
    parts: Any,
    billed: tuple[int, date, date, date],
    context: _LineContext,
) -> ClaimLine:
    """One claim line, built the same way from an engine decision or a columnar outcome.

    ``billed`` is (units, date of service, period start, period end); ``parts`` what the
    modifiers read of the minutes (``service_parts`` or the pass's own).
    """
    units, date_of_service, period_start, period_end = billed
    cost = price(year.code(source.code), year, units, context.settings.pricing)
    billing_npi = enrollment.billing_npi
    return ClaimLine(
        patient_id=context.patient_id,
        code=source.code,
        units=units,
        date_of_service=date_of_service,
        period_start=period_start,
        period_end=period_end,
        billing_npi=billing_npi,
        rendering_npi=_rendering_npi(source, context.directory, billing_npi),
        diagnosis_codes=tuple(enrollment.diagnoses[:4]),
        place_of_service=context.settings.place_of_service,
        modifiers=_modifiers(source, context.directory, year, parts),
        charge=cost.charge,
        expected_payment=cost.expected_payment,
        run_id=context.run_id,
        enrollment_id=enrollment.enrollment_id,
        program=source.program,
        payer=context.payer,
        member_id=context.member_id,
    )


@dataclass(frozen=True, slots=True)
class _LineSource:
    """What a claim line reads of a decision the columnar pass made (no reasons needed)."""

    code: str
    program: Program
    rendering_practitioner_id: str | None
    billing_practitioner_id: str | None


def columnar_claim_lines(
    facts: PatientMonthFacts,
    outcomes: Iterable[Outcome],
    rules: PayerRules,
    settings: BillingSettings,
    directory: _Directory,
    run_id: str,
) -> list[ClaimLine]:
    """:func:`claim_lines_for` over the columnar pass's outcomes: the same lines, field for field.

    The outcome carries what the engine's reasons would have given the line: who rendered
    it and the credentials of everyone who furnished a counted minute (modifiers).
    """
    payer, member_id = directory.members[facts.patient_id]
    enrollments = {p.enrollment.enrollment_id: p.enrollment for p in facts.programs}
    book = rules.for_payer(payer)
    context = _LineContext(facts.patient_id, payer, member_id, settings, directory, run_id)
    lines = []
    for o in outcomes:
        if o.status is not Status.BILLABLE or o.units <= 0 or o.date_of_service is None:
            continue
        enrollment = enrollments[o.enrollment_id]
        source = _LineSource(
            o.code,
            enrollment.program,
            o.rendering_practitioner_id,
            enrollment.billing_practitioner_id or None,
        )
        lines.append(
            _claim_line(
                source,
                enrollment,
                book.for_date(o.period_end),
                o.parts,
                (o.units, o.date_of_service, o.period_start, o.period_end),
                context,
            )
        )
    return lines


def judging_year(book: RuleBook, d: Decision) -> RuleYear:
    """The rule-year that judged ``d``: a line is priced by the same layer, never by its DOS's year.

    A 30-day period from December into January is judged by January's rules; with
    ``device_dos=threshold_day`` its date of service can fall in December, whose year may
    not even have the code.
    """
    year = book.for_date(d.period.end)
    if d.rule_year and layer_name(year) != d.rule_year:
        message = f"{d.code} for {d.patient_id} was judged by {d.rule_year}, not {layer_name(year)}"
        raise RunError(
            run_problem(
                "rule_year_mismatch",
                message,
                month=None,
                hint="the rule-years changed under the run; run it again, and report it if it repeats",
            ),
            UNUSABLE_SETTINGS,
        )
    return year


def line_key(line: ClaimLine) -> str:
    return f"{line.patient_id}|{line.enrollment_id}|{line.code}|{line.period_start}|{line.date_of_service}"


def line_content(line: ClaimLine) -> dict[str, Any]:
    """The fields that make two runs' lines "the same" (run id excluded)."""
    return {
        "patient_id": line.patient_id,
        "enrollment_id": line.enrollment_id,
        "program": line.program.value,
        "code": line.code,
        "units": line.units,
        "date_of_service": line.date_of_service.isoformat(),
        "period_start": line.period_start.isoformat(),
        "period_end": line.period_end.isoformat(),
        "billing_npi": line.billing_npi,
        "rendering_npi": line.rendering_npi,
        "diagnosis_codes": ";".join(line.diagnosis_codes),
        "place_of_service": line.place_of_service,
        "modifiers": ";".join(line.modifiers),
        "charge": str(line.charge),
        "expected_payment": str(line.expected_payment),
        "payer": line.payer.value,
        "member_id": line.member_id,
    }


def diff_lines(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[LineChange]:
    changes = [LineChange("added", k, None, dict(after[k])) for k in sorted(after.keys() - before.keys())]
    changes += [LineChange("removed", k, dict(before[k]), None) for k in sorted(before.keys() - after.keys())]
    changes += [
        LineChange("changed", k, dict(before[k]), dict(after[k]))
        for k in sorted(before.keys() & after.keys())
        if dict(before[k]) != dict(after[k])
    ]
    return changes


# ----------------------------------------------------------------------------------------
# Reading stored runs
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    month: str
    status: str
    created_at: datetime
    locked_at: datetime | None
    amends_run_id: str | None
    ruleset_hash: str
    input_digest: str
    lines_digest: str
    engine_version: str
    summary: Mapping[str, Any] | None = None
    decisions_digest: str | None = None
    #: How its digests combine their parts (:data:`DIGEST_SCHEME`); None: chained, in order.
    digest_scheme: int | None = None

    @property
    def problems(self) -> list[dict[str, Any]]:
        return list((self.summary or {}).get("problems") or [])

    @property
    def provisional(self) -> dict[str, Any] | None:
        """``{"rule_years", "citations", "accepted_at"}`` when a proposed year judged the run."""
        found = (self.summary or {}).get("provisional")
        return dict(found) if found else None

    @property
    def provisional_accepted(self) -> bool:
        """Judged by a proposed year and locked with ``--accept-provisional``."""
        found = self.provisional
        return bool(found and found.get("accepted_at"))


def stored_run(row: Any) -> StoredRun:
    return StoredRun(
        row.run_id,
        row.month,
        row.status,
        row.created_at,
        row.locked_at,
        row.amends_run_id,
        row.ruleset_hash,
        row.input_digest,
        row.lines_digest,
        row.engine_version,
        row._mapping.get("summary"),
        row.decisions_digest,
        row.digest_scheme,
    )


Bind = Engine | Connection


@contextmanager
def _connected(bind: Bind) -> Iterator[Connection]:
    """``bind`` itself when it is a connection (a run's own transaction, its snapshot), else a new one."""
    if isinstance(bind, Connection):
        yield bind
        return
    with bind.connect() as conn:
        yield conn


def run_by_id(engine: Bind, org_id: str, run_id: str, month: str | None = None) -> StoredRun | None:
    """One stored run (of ``month`` when given), read alone: a summary can be large."""
    r = schema.billing_runs
    query = select(r).where(r.c.org_id == org_id, r.c.run_id == run_id)
    if month is not None:
        query = query.where(r.c.month == month)
    with _connected(engine) as conn:
        row = conn.execute(query).first()
    return None if row is None else stored_run(row)


def _newest(engine: Bind, org_id: str, month: str, keep: Callable[[str], bool]) -> StoredRun | None:
    """The month's newest run whose status ``keep`` accepts, with its summary read for it alone.

    Summaries of runs stored before migration 0019 held the run's warnings: 145 MB of
    JSON for the 100,000 patients of the synthetic benchmark practice. Every month run asks
    for the current and the locked run; reading every run's summary to pick one made each
    rerun of a month read (and hold) the summaries of all the runs before it.
    """
    r = schema.billing_runs
    light = [column for column in r.c if column.name != "summary"]
    with _connected(engine) as conn:
        query = select(*light).where(r.c.org_id == org_id, r.c.month == month)
        rows = conn.execute(query.order_by(r.c.created_at, r.c.run_id)).all()
        chosen = [row for row in rows if keep(row.status)]
        if not chosen:
            return None
        summary = conn.execute(select(r.c.summary).where(r.c.run_id == chosen[-1].run_id)).scalar_one()
    return replace(stored_run(chosen[-1]), summary=summary)


def current_run(engine: Bind, org_id: str, month: str) -> StoredRun | None:
    """The newest run of the month that has not been superseded."""
    return _newest(engine, org_id, month, lambda status: status not in (SUPERSEDED, VOID))


def latest_locked(engine: Bind, org_id: str, month: str) -> StoredRun | None:
    return _newest(engine, org_id, month, lambda status: status == LOCKED)


def stored_line_contents(engine: Bind, run_id: str) -> dict[str, dict[str, Any]]:
    return {line_key(line): line_content(line) for line in stored_lines(engine, run_id)}


def stored_lines(engine: Bind, run_id: str) -> list[ClaimLine]:
    c = schema.claim_lines
    with _connected(engine) as conn:
        rows = conn.execute(select(c).where(c.c.run_id == run_id).order_by(c.c.id)).mappings().all()
    return [stored_line(r) for r in rows]


def stored_line(r: Mapping[str, Any], run_id: str | None = None) -> ClaimLine:
    """A ``claim_lines`` row as the line it was stored from (``run_id``: as another run's line)."""
    return ClaimLine(
        patient_id=r["patient_id"],
        code=r["code"],
        units=r["units"],
        date_of_service=r["date_of_service"],
        period_start=r["period_start"],
        period_end=r["period_end"],
        billing_npi=r["billing_npi"],
        rendering_npi=r["rendering_npi"],
        diagnosis_codes=tuple(x for x in r["diagnosis_codes"].split(";") if x),
        place_of_service=r["place_of_service"],
        modifiers=tuple(x for x in r["modifiers"].split(";") if x),
        charge=Decimal(str(r["charge"])).quantize(Decimal("0.01")),
        expected_payment=Decimal(str(r["expected_payment"])).quantize(Decimal("0.01")),
        run_id=r["run_id"] if run_id is None else run_id,
        enrollment_id=r["enrollment_id"],
        program=Program(r["program"]),
        payer=Payer(r["payer"]),
        member_id=r["member_id"],
    )


def decision_rows(text: bool = False) -> tuple[FromClause, ColumnElement[Any]]:
    """``run_decisions`` joined to the rows it refers to, and the decisions each row stands for.

    A carried patient's row of an incremental run holds no text of its own: ``stored_in``
    names the run whose row of the same patient does (always the row with the text, never
    another reference). Every reader selects the decisions through this, so a reference
    and a copy read the same. ``text``: the stored JSON text itself (what was digested).
    """
    d = schema.run_decisions
    source = d.alias("decisions_source")
    joined = d.outerjoin(
        source, and_(source.c.run_id == d.c.stored_in, source.c.patient_id == d.c.patient_id)
    )
    if text:
        value: ColumnElement[Any] = func.coalesce(cast(source.c.decisions, Text), cast(d.c.decisions, Text))
    else:
        value = func.coalesce(source.c.decisions, d.c.decisions, type_=d.c.decisions.type)
    return joined, value.label("decisions")


def stored_decisions(engine: Bind, run_id: str, patient_id: str | None = None) -> list[dict[str, Any]]:
    """The stored decisions of a run (of one patient), as :func:`decision_to_json` dicts.

    A month the columnar pass decided is stored as typed rows without reasons; its
    reasons are made now, by the engine on that patient's facts (:func:`_explain_columnar`).
    """
    d = schema.run_decisions
    joined, value = decision_rows()
    stmt = select(d.c.patient_id, d.c.facts_digest, value).select_from(joined).where(d.c.run_id == run_id)
    stmt = stmt.order_by(d.c.patient_id)
    if patient_id is not None:
        stmt = stmt.where(d.c.patient_id == patient_id)
    with _connected(engine) as conn:
        rows = conn.execute(stmt).all()
    columnar = {
        pid: (digest, value)
        for pid, digest, value in rows
        if isinstance(value, dict) and value.get("shape") == COLUMNAR_SHAPE
    }
    explained = _explain_columnar(engine, run_id, columnar) if columnar else {}
    out: list[dict[str, Any]] = []
    for pid, _, value in rows:
        out.extend(explained[pid] if pid in columnar else stored_decisions_json(value))
    return out


def _typed(d: Mapping[str, Any]) -> tuple[Any, ...]:
    """The fields a columnar row stores, from it or from a :func:`decision_to_json` dict."""
    return (
        d["enrollment_id"],
        d["code"],
        d["period"]["start"],
        d["period"]["end"],
        d["status"],
        d["units"],
        d["date_of_service"],
        d["expected_payment"],
        d["rendering_practitioner_id"],
    )


def _explain_columnar(
    bind: Bind, run_id: str, stored: Mapping[str, tuple[str, dict[str, Any]]]
) -> dict[str, list[dict[str, Any]]]:
    """The engine's decisions for months the columnar pass stored, made from their snapshots.

    Each snapshot must have the facts digest the run stored, the run's rules must be the
    ones installed now (``rules_changed`` otherwise), and every code must come out with
    the stored status, units, date of service, payment and rendering practitioner.
    """
    from caretally.columnar.snapshot import decode_facts
    from caretally.rules.engine import evaluate_patient_month

    r = schema.billing_runs
    with _connected(bind) as conn:
        run = conn.execute(
            select(r.c.org_id, r.c.month, r.c.settings, r.c.ruleset_hash).where(r.c.run_id == run_id)
        ).one()
    rules = PayerRules.load(dict((run.settings or {}).get("payer_overlays") or {}))
    if rules.content_hash != run.ruleset_hash:
        message = f"the rules of run {run_id} are not the ones installed now: its reasons cannot be made"
        hint = "explain the month live (caretally explain without --run)"
        raise RunError(run_problem("rules_changed", message, month=run.month, run_id=run_id, hint=hint))
    out: dict[str, list[dict[str, Any]]] = {}
    for patient_id, (digest, value) in stored.items():
        facts = decode_facts(value["facts"])
        if hashlib.sha256(repr(facts).encode()).hexdigest() != digest:
            message = f"the stored facts of patient {patient_id} in run {run_id} do not match their digest"
            raise RunError(run_problem("explain_mismatch", message, month=run.month, run_id=run_id))
        made = [decision_to_json(d) for d in evaluate_patient_month(facts, rules.for_payer(facts.payer))]
        if [_typed(m) for m in made] != [_typed(row) for row in value["decisions"]]:
            message = f"the engine does not reproduce the stored decisions of patient {patient_id}"
            raise RunError(run_problem("explain_mismatch", message, month=run.month, run_id=run_id))
        out[patient_id] = made
    return out


# ----------------------------------------------------------------------------------------
# The digests a run stores, so `caretally db verify` can recompute them
# ----------------------------------------------------------------------------------------


def line_digest_part(content: Mapping[str, Any]) -> bytes:
    """One line's share of ``lines_digest``: its content (:func:`line_content`) as sorted JSON."""
    return json.dumps(content, sort_keys=True).encode()


def decisions_digest_part(patient_id: str, billable: int, decisions_text: str) -> str:
    """One ``run_decisions`` row's share of ``decisions_digest``: its patient, count and stored text.

    The decisions are digested as the very text the row stores (:class:`JsonText`; both
    databases keep a JSON column's text byte for byte), so verifying needs no second
    serialization and any changed byte shows.
    """
    return hashlib.sha256(f"{patient_id}\0{billable}\0{decisions_text}".encode()).hexdigest()


#: How a run's three digests combine their parts (``billing_runs.digest_scheme``): runs
#: stored before it (NULL) chained SHA-256 over every part in order; :class:`DigestSum`
#: adds them, so a run that changes a few patients updates its base's digests in O(changed).
DIGEST_SCHEME = 2
_MODULUS = 1 << 256


class DigestSum:
    """A digest of a multiset of parts: the sum of their SHA-256 values modulo 2**256.

    Why a sum: an incremental run takes its base's digest, subtracts the parts of the
    patients it re-evaluates and adds their new ones, reading nothing of the patients it
    carries, and still stores the digest a full run of the same data stores. Order is not
    part of it (each part names its patient, and lines are stored in patient order anyway);
    any edited, added or removed part changes it. Like the chained digests before it, it
    catches edits of the rows, not someone who rewrites the stored digest too.
    """

    __slots__ = ("value",)

    def __init__(self, hexdigest: str | None = None) -> None:
        self.value = int(hexdigest, 16) if hexdigest else 0

    def update(self, part: bytes) -> None:
        """Add one part."""
        self.value = (self.value + int.from_bytes(hashlib.sha256(part).digest())) % _MODULUS

    def remove(self, part: bytes) -> None:
        """Take away a part added before (a re-evaluated patient's old share)."""
        self.value = (self.value - int.from_bytes(hashlib.sha256(part).digest())) % _MODULUS

    def hexdigest(self) -> str:
        return f"{self.value:064x}"


def input_digest_part(patient_id: str, facts_digest: str) -> bytes:
    """One patient's share of ``input_digest``: the patient and the digest of their facts."""
    return f"{patient_id}\0{facts_digest}".encode()


def _settings_part(settings_json: Mapping[str, Any]) -> int:
    return int(hashlib.sha256(json.dumps(settings_json, sort_keys=True).encode()).hexdigest(), 16)


def input_digest_of(facts_digests: str, settings_json: Mapping[str, Any]) -> str:
    """``input_digest``: the :class:`DigestSum` of the patients' facts parts plus the settings'.

    A sum again, so :func:`facts_sum_of` can take the settings back out of a stored one.
    """
    return f"{(int(facts_digests, 16) + _settings_part(settings_json)) % _MODULUS:064x}"


def facts_sum_of(input_digest: str, settings_json: Mapping[str, Any]) -> str:
    """The facts digests' sum inside a stored ``input_digest`` (inverse of :func:`input_digest_of`)."""
    return f"{(int(input_digest, 16) - _settings_part(settings_json)) % _MODULUS:064x}"


# ----------------------------------------------------------------------------------------
# The run itself
# ----------------------------------------------------------------------------------------


def _summarise(
    summary: RunSummary, facts: PatientMonthFacts, decisions: list[Decision], rules: PayerRules
) -> list[RunWarning]:
    """Count the patient into ``summary``; the patient's warnings, counted there, are returned
    to be stored with the patient's decisions."""
    summary.patients += 1
    summary.decisions += len(decisions)
    if facts.payer is not Payer.MEDICARE and not rules.has_overlay(facts.payer):
        summary.payers_on_medicare_rules[facts.payer.value] += 1
    _undecided(summary, facts, rules)
    summary.reachable += sum(1 for d in decisions if d.status is Status.REACHABLE)
    for d in decisions:
        if d.provisional and d.rule_year not in summary.provisional:
            why = next((r for r in d.reasons if r.rule_id == PROVISIONAL_RULE), None)
            summary.provisional[d.rule_year] = "" if why is None else why.citation
    seen: set[tuple[str, str]] = set()
    warnings: list[RunWarning] = []
    for d in decisions:
        for r in d.reasons:
            if r.rule_id not in WARNING_RULES:
                continue
            entry = dict(r.evidence.values).get("entry", "")
            if (r.rule_id, entry) not in seen:
                seen.add((r.rule_id, entry))
                warnings.append(RunWarning(r.rule_id, facts.patient_id, r.message, (entry,)))
                summary.warnings_by_code[r.rule_id] += 1
    for d in _lost(decisions, rules.for_payer(facts.payer)):
        r = next(r for r in d.reasons if r.blocking)
        summary.not_billable_reasons[r.rule_id] += 1
        summary.reason_examples.setdefault(r.rule_id, r.message)
    return warnings


def _undecided(summary: RunSummary, facts: PatientMonthFacts, rules: PayerRules) -> None:
    """Count the patient's enrollments whose program the judging rule-year has no code for."""
    try:
        year = rules.for_payer(facts.payer).for_date(facts.month.end)
    except MissingParameter:
        return  # no rule-year at all: the patient's problem already says so
    for p in facts.programs:
        program = p.enrollment.program
        if not year.codes_for(program):
            summary.undecided[program.value] += 1
            summary.undecided_by[program.value].add(layer_name(year))


#: Advisory reasons the run summary lists for an auditor: time that cannot all be true.
WARNING_RULES = frozenset({"time.overlap", "time.overlap_other_patient"})
#: The advisory every decision of a proposed rule-year carries.
PROVISIONAL_RULE = "rules.provisional"


def _amount_or_last(amount: Decimal | None) -> Decimal:
    """Unknown amounts sort after every known one."""
    return Decimal("1e9") if amount is None else amount


def _lost(decisions: list[Decision], book: RuleBook) -> list[Decision]:
    """One not-billable decision per either/or group of an enrollment that billed nothing.

    99454 failing because 99445 was billed, an add-on without minutes, the losing CCM
    lane, or an RTM code for another device kind are not lost revenue; counting them would
    bury the reasons that are. Of a group that billed nothing, the decision with the
    fewest failed checks is the one that came closest, and its first failure is reported.
    """
    groups: dict[tuple[str, frozenset[str]], list[Decision]] = defaultdict(list)
    for d in decisions:
        year = book.for_date(d.period.end)
        if d.code not in year.codes or year.is_add_on(d.code):
            continue
        groups[(d.enrollment_id, year.either_or_group(d.code))].append(d)
    out = []
    for ds in groups.values():
        if any(d.status is not Status.NOT_BILLABLE for d in ds):
            continue

        def failures(d: Decision) -> list[str]:
            return [r.rule_id for r in d.reasons if r.blocking]

        # A code for another device kind does not apply at all; of the rest, the entry-level
        # code (fewest failures, then the cheapest) is the one the team was closest to.
        candidates = [d for d in ds if failures(d) and not any(f.endswith(".kind") for f in failures(d))]
        if candidates:
            year = book.for_date(candidates[0].period.end)
            out.append(
                min(
                    candidates,
                    key=lambda d: (len(failures(d)), _amount_or_last(year.codes[d.code].amount), d.code),
                )
            )
    return out


def _lost_outcomes(outcomes: list[Outcome], book: RuleBook) -> list[Outcome]:
    """:func:`_lost` over the columnar pass's outcomes (their ``blocking`` rule ids)."""
    groups: dict[tuple[str, frozenset[str]], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        year = book.for_date(o.period_end)
        if o.code not in year.codes or year.is_add_on(o.code):
            continue
        groups[(o.enrollment_id, year.either_or_group(o.code))].append(o)
    out = []
    for os_ in groups.values():
        if any(o.status is not Status.NOT_BILLABLE for o in os_):
            continue
        candidates = [o for o in os_ if o.blocking and not any(f.endswith(".kind") for f in o.blocking)]
        if candidates:
            year = book.for_date(candidates[0].period_end)
            out.append(
                min(
                    candidates,
                    key=lambda o: (len(o.blocking), _amount_or_last(year.codes[o.code].amount), o.code),
                )
            )
    return out


def _summarise_columnar(
    summary: RunSummary,
    facts: PatientMonthFacts,
    outcomes: list[Outcome],
    rules: PayerRules,
    examples: set[str],
) -> list[RunWarning]:
    """:func:`_summarise` for a month the columnar pass decided.

    It never decides a month of a proposed rule-year (those are flagged); overlapping time
    gives the same warnings the engine's reasons would (``columnar.facts.overlap_warnings``),
    so what is left is counting. The one sentence the summary keeps per failed rule (its
    example) comes from the engine, run for a patient only when this process has not
    seen that rule fail yet: patients arrive in order, so the first example is the same.
    """
    summary.patients += 1
    summary.decisions += len(outcomes)
    if facts.payer is not Payer.MEDICARE and not rules.has_overlay(facts.payer):
        summary.payers_on_medicare_rules[facts.payer.value] += 1
    _undecided(summary, facts, rules)
    summary.reachable += sum(1 for o in outcomes if o.status is Status.REACHABLE)
    book = rules.for_payer(facts.payer)
    from caretally.columnar.facts import overlap_warnings

    warnings = [
        RunWarning(rule_id, facts.patient_id, message, (entry,))
        for rule_id, message, entry in overlap_warnings(facts, book)
    ]
    summary.warnings_by_code.update(w.code for w in warnings)
    lost = [o.blocking[0] for o in _lost_outcomes(outcomes, book)]
    summary.not_billable_reasons.update(lost)
    if any(rule_id not in examples for rule_id in lost):
        from caretally.rules.engine import evaluate_patient_month

        for d in _lost(evaluate_patient_month(facts, book), book):
            r = next(r for r in d.reasons if r.blocking)
            summary.reason_examples.setdefault(r.rule_id, r.message)
        examples.update(lost)
    return warnings


def _reloadable(rules: PayerRules, settings: BillingSettings) -> bool:
    """Whether the run's rules can be loaded again from its stored settings (its overlays).

    Reasons of a columnar month are made later, with those rules; rules handed in from
    elsewhere (a rules folder of a test, an edited rule-year) could not be, so such a run
    is judged wholly by the engine.
    """
    try:
        return PayerRules.load(dict(settings.payer_overlays)).content_hash == rules.content_hash
    except (ValueError, KeyError, OSError, MissingParameter):
        return False


def columnar_stored_text(outcomes: list[Outcome], facts: PatientMonthFacts) -> str:
    """A columnar month's stored decisions: one typed row per code and a snapshot of the facts.

    ``stored_decisions`` runs the engine on the snapshot when a reader asks for the
    reasons (so they are the run's, whatever was imported since), and checks that the
    snapshot has the stored facts digest and that every status comes out as stored.
    """
    from caretally.columnar.snapshot import encode

    rows = [
        {
            "enrollment_id": o.enrollment_id,
            "code": o.code,
            "period": {"start": o.period_start.isoformat(), "end": o.period_end.isoformat()},
            "status": o.status.value,
            "units": o.units,
            "date_of_service": o.date_of_service.isoformat() if o.date_of_service else None,
            "expected_payment": None if o.expected_payment is None else str(o.expected_payment),
            "rendering_practitioner_id": o.rendering_practitioner_id,
            "blocking": list(o.blocking),
        }
        for o in outcomes
    ]
    return orjson.dumps({"shape": COLUMNAR_SHAPE, "decisions": rows, "facts": encode(facts)}).decode()


#: The stored form of a month the columnar pass decided (see :func:`columnar_stored_text`).
COLUMNAR_SHAPE = "columnar/1"
#: ``bill --engine``: the full engine for every month, or the columnar pass with the engine
#: for the months it flags.
ENGINES = ("full", "columnar")


def bill_month(
    engine: Engine,
    org_id: str,
    month: Period,
    rules: PayerRules,
    settings: BillingSettings | None = None,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    progress: Callable[[int, int], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
    ranges: Callable[[RangeRun], Iterable[_PatientResult]] | None = None,
    engine_choice: str = "full",
) -> RunResult:
    """Bill ``month``: evaluate every patient, price the lines, store the run.

    ``engine_choice`` ``full`` (the default) uses the engine for every patient-month;
    ``columnar`` decides the patient-months the columnar pass can decide exactly in bulk
    (:mod:`caretally.columnar`) and the rest with the engine. The claim lines are the same either way, and
    a columnar month's reasons are made on demand from its stored facts snapshot.

    Same data, rules and settings as the month's current run → nothing is stored and the
    result says ``unchanged``. A changed current draft is superseded by the new run; a
    locked month is never touched — the new run amends it and lists the changes.

    Patients stream through in batches: each batch's decisions and lines are written
    inside one open transaction as soon as they exist, so memory does not grow with the
    practice; the result's ``lines`` are read back from the store when a caller asks
    (:class:`StoredLines`), and forked workers are given a few ranges at a time. If the
    finished run turns out identical to the current one, the transaction is rolled back
    and nothing was stored.

    The run holds the month (:func:`hold_month`) from before its first read to its commit,
    and every read — practitioners, the stored runs it compares with, the facts, the billed
    history, in forked workers too — sees one snapshot, so an import committing meanwhile
    is wholly in the run or wholly out of it. ``progress(done, total)`` counts patients;
    ``progress(0, total)`` comes once the snapshot is taken, before any facts are read.
    ``on_wait`` hears when another run holds the month; ``RunError`` if it held it too long.

    ``ranges`` replaces :func:`map_month` as the source of patient results (in patient
    order): ``caretally.jobs.ranges`` has other worker processes evaluate the ranges with
    :func:`patient_result`, and this run stores what they made exactly as its own.
    """
    require_json_text(engine)
    settings = settings or BillingSettings()
    month_text = month.start.strftime("%Y-%m")
    run_id = str(uuid.uuid4())
    summary = RunSummary()
    contents: dict[str, dict[str, Any]] = {}
    lines_hash = DigestSum()
    input_hash = DigestSum()
    decisions_hash = DigestSum()
    ruleset_hash = rules.content_hash
    settings_json = settings.to_json()
    decision_rows: list[dict[str, Any]] = []
    warning_rows: list[dict[str, Any]] = []
    line_rows: list[dict[str, Any]] = []
    with (
        hold_month(engine, org_id, month_text, on_wait=on_wait) as held,
        _reading(held) as reader,
        _quiet_gc(),
        _small_cache(held.conn),
    ):
        conn = held.conn
        directory = _directory(reader, org_id)
        previous = current_run(reader, org_id, month_text)
        locked = latest_locked(reader, org_id, month_text)
        amends = locked.run_id if locked is not None else None
        conn.execute(
            insert(schema.billing_runs).values(
                run_id=run_id,
                org_id=org_id,
                month=month_text,
                status=DRAFT,
                engine_version=engine_version(),
                ruleset_hash=ruleset_hash,
                input_digest="",
                lines_digest="",
                created_at=now(),
                locked_at=None,
                amends_run_id=amends,
                settings=settings_json,
                digest_scheme=DIGEST_SCHEME,
            )
        )

        def flush() -> None:
            if decision_rows:
                conn.execute(insert(schema.run_decisions), decision_rows)
                decision_rows.clear()
            if warning_rows:
                conn.execute(insert(schema.run_warnings), warning_rows)
                warning_rows.clear()
            if line_rows:
                conn.execute(insert(schema.claim_lines), line_rows)
                line_rows.clear()

        def evaluate(facts: PatientMonthFacts, decisions: list[Decision]) -> _PatientResult:
            return patient_result(facts, decisions, rules, settings, directory, run_id)

        examples: set[str] = set()

        def columnar(facts: PatientMonthFacts, outcomes: list[Outcome]) -> _PatientResult:
            part = RunSummary()
            warnings = _summarise_columnar(part, facts, outcomes, rules, examples)
            decisions_text = JsonText(columnar_stored_text(outcomes, facts))
            billable = sum(1 for o in outcomes if o.status is Status.BILLABLE)
            return _PatientResult(
                patient_id=facts.patient_id,
                facts_digest=hashlib.sha256(repr(facts).encode()).hexdigest(),
                decisions_json=decisions_text,
                billable=billable,
                lines=columnar_claim_lines(facts, outcomes, rules, settings, directory, run_id),
                summary=part,
                decisions_digest=decisions_digest_part(facts.patient_id, billable, decisions_text),
                warnings_json=warnings_text(warnings),
            )

        if engine_choice not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}")
        if engine_choice == "columnar" and not _reloadable(rules, settings):
            engine_choice = "full"  # reasons on demand need the run's rules again: judge it all now
        problems: list[Problem] = []
        counted = _PatientCount(progress)
        results = (
            map_month(
                reader,
                org_id,
                month,
                rules,
                evaluate,
                problems=problems,
                snapshot=held.snapshot,
                progress=counted.seen,
                columnar=columnar if engine_choice == "columnar" else None,
            )
            if ranges is None
            else ranges(RangeRun(reader, held.snapshot, org_id, month, run_id, problems, counted.seen))
        )
        for result in results:
            input_hash.update(input_digest_part(result.patient_id, result.facts_digest))
            decisions_hash.update(result.decisions_digest.encode())
            summary.absorb(result.summary)
            for line in result.lines:
                key, content = line_key(line), line_content(line)
                lines_hash.update(line_digest_part(content))
                if amends is not None:
                    contents[key] = content
                line_rows.append(_line_row(run_id, org_id, key, line))
                summary.lines += 1
                summary.lines_by_code[line.code] += 1
                summary.units_by_code[line.code] += line.units
                summary.payment_by_code[line.code] += line.expected_payment
            decision_rows.append(
                {
                    "run_id": run_id,
                    "org_id": org_id,
                    "patient_id": result.patient_id,
                    "facts_digest": result.facts_digest,
                    "billable_count": result.billable,
                    "decisions": result.decisions_json,
                }
            )
            if result.warnings_json is not None:
                warning_rows.append(warning_row(run_id, org_id, result))
            if len(decision_rows) >= FLUSH_EVERY:
                flush()
            counted.one()
        flush()
        summary.problems = sorted(problems, key=lambda p: (p.field or "", p.message))
        summary.readings_through = conn.execute(
            select(func.coalesce(func.max(schema.readings.c.id), 0)).where(schema.readings.c.org_id == org_id)
        ).scalar_one()
        digest = lines_hash.hexdigest()
        input_digest = input_digest_of(input_hash.hexdigest(), settings_json)
        version = engine_version()
        if previous is not None and _same_run(previous, digest, input_digest, ruleset_hash, version):
            changes = (
                _amendments(reader, previous.amends_run_id, stored_lines(reader, previous.run_id))
                if previous.amends_run_id is not None
                else []
            )
            conn.rollback()  # after the last read: on PostgreSQL the snapshot ends with it
            return RunResult(
                previous.run_id,
                month_text,
                "unchanged",
                previous.status,
                StoredLines(engine, previous.run_id),
                summary,
                previous.run_id,
                previous.amends_run_id,
                changes,
            )
        changes = diff_lines(stored_line_contents(reader, amends), contents) if amends else []
        mark_run(conn, org_id, month_text, run_id)
        runs = schema.billing_runs
        conn.execute(
            update(runs)
            .where(runs.c.run_id == run_id)
            .values(
                input_digest=input_digest,
                lines_digest=digest,
                decisions_digest=decisions_hash.hexdigest(),
                engine_version=version,
                summary=summary.to_json(),
            )
        )
        if previous is not None and previous.status == DRAFT:
            conn.execute(
                update(runs)
                .where(runs.c.run_id == previous.run_id, runs.c.status == DRAFT)
                .values(status=SUPERSEDED)
            )
    return RunResult(
        run_id,
        month_text,
        "created",
        DRAFT,
        StoredLines(engine, run_id),
        summary,
        previous.run_id if previous else None,
        amends,
        changes,
    )


class _PatientCount:
    """``progress(done, total)`` once per patient stored; the total comes from ``map_month``."""

    def __init__(self, progress: Callable[[int, int], None] | None):
        self.progress, self.done, self.total = progress, 0, 0

    def seen(self, done: int, total: int) -> None:
        self.total = total
        if done == 0 and self.progress is not None:
            self.progress(0, total)

    def one(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _amendments(bind: Bind, amends: str | None, lines: Iterable[ClaimLine]) -> list[LineChange]:
    """What ``lines`` change against the locked run ``amends`` (nothing when it amends none)."""
    if amends is None:
        return []
    return diff_lines(stored_line_contents(bind, amends), {line_key(x): line_content(x) for x in lines})


def month_lock_name(org_id: str, month: str) -> str:
    return f"month/{org_id}/{month}"


@contextmanager
def hold_month(
    engine: Engine, org_id: str, month: str, *, on_wait: Callable[[str], None] | None = None
) -> Iterator[SerialTransaction]:
    """The one transaction that may store, lock or void a run of ``org_id``'s ``month`` now.

    PostgreSQL: an advisory lock per organization and month, then one REPEATABLE READ
    snapshot. SQLite: the database's write lock (one writer at a time). A second caller
    waits — ``on_wait`` hears it — up to ``$CARETALLY_LOCK_TIMEOUT`` seconds, then gets
    ``RunError`` (``month_busy``) and nothing was done.
    """
    acquired = False
    try:
        with serial_transaction(engine, month_lock_name(org_id, month), on_wait=on_wait) as held:
            acquired = True
            yield held
    except LockTimeout as exc:
        if acquired:
            raise
        holder = (
            "another caretally command held the database's write lock"
            if exc.dialect == "sqlite"
            else f"another caretally run of {month} (organization {org_id}) held the month"
        )
        waited = f" for {exc.waited:g} s" if exc.waited else ""
        raise RunError(
            run_problem(
                "month_busy",
                f"{holder}{waited}; nothing was stored",
                month=month,
                hint=f"try again when it has finished, or wait longer with ${LOCK_TIMEOUT_ENV} (seconds)",
            )
        ) from None


@contextmanager
def _reading(held: SerialTransaction) -> Iterator[Engine]:
    """An engine reading ``held``'s snapshot, disposed of when the run ends."""
    reader = held.reader()
    try:
        yield reader
    finally:
        if reader is not held.engine:
            reader.dispose()


def _same_run(previous: StoredRun, lines: str, inputs: str, ruleset: str, version: str) -> bool:
    """A rerun is "unchanged" only when data, settings, rules and engine are all the same.

    Equal lines are not enough: one more reading may leave every claim line as it was
    while the stored evidence (17 days, not 16) would be stale.
    """
    return (
        previous.lines_digest == lines
        and previous.input_digest == inputs
        and previous.ruleset_hash == ruleset
        and previous.engine_version == version
    )


_ENGINE_VERSION: list[str] = []
#: The code whose behaviour a run's decisions depend on.
_ENGINE_PACKAGES = ("rules", "facts", "billing")


def engine_version() -> str:
    """The package version plus a digest of the deciding code, so an upgraded engine re-bills.

    A release that fixes a rule but keeps its version number would otherwise let a
    rerun call stale decisions "unchanged".
    """
    if not _ENGINE_VERSION:
        root = Path(__file__).resolve().parent.parent
        digest = hashlib.sha256()
        for package in _ENGINE_PACKAGES:
            for path in sorted((root / package).rglob("*.py")):
                digest.update(path.relative_to(root).as_posix().encode())
                digest.update(path.read_bytes())
        _ENGINE_VERSION.append(f"{__version__}+{digest.hexdigest()[:16]}")
    return _ENGINE_VERSION[0]


#: Patients whose decisions are written in one insert.
FLUSH_EVERY = 1000


@dataclass(frozen=True)
class _PatientResult:
    """Everything the writer needs about one patient, made where the patient was evaluated."""

    patient_id: str
    facts_digest: str
    decisions_json: JsonText  # the patient's decisions as stored: a JSON array, serialized once
    billable: int
    lines: list[ClaimLine]
    summary: RunSummary
    decisions_digest: str = ""
    #: The patient's warnings as stored (:func:`warnings_text`); counted in ``summary``.
    warnings_json: JsonText | None = None


def patient_result(
    facts: PatientMonthFacts,
    decisions: list[Decision],
    rules: PayerRules,
    settings: BillingSettings,
    directory: _Directory,
    run_id: str,
) -> _PatientResult:
    """One patient's share of a run, made wherever the patient was evaluated (this
    process, a forked worker, or another ``caretally worker``), stored and digested as is."""
    part = RunSummary()
    warnings = _summarise(part, facts, decisions, rules)
    decisions_text = JsonText(stored_text(decisions))
    billable = sum(1 for d in decisions if d.status is Status.BILLABLE)
    return _PatientResult(
        patient_id=facts.patient_id,
        facts_digest=hashlib.sha256(repr(facts).encode()).hexdigest(),
        decisions_json=decisions_text,
        billable=billable,
        lines=claim_lines_for(facts, decisions, rules, settings, directory, run_id),
        summary=part,
        decisions_digest=decisions_digest_part(facts.patient_id, billable, decisions_text),
        warnings_json=warnings_text(warnings),
    )


@dataclass(frozen=True)
class RangeRun:
    """What a run hands its ``ranges`` source: its snapshot, its id, where problems go."""

    reader: Engine
    snapshot: str | None
    org_id: str
    month: Period
    run_id: str
    problems: list[Problem]
    progress: Callable[[int, int], None]


def warning_row(run_id: str, org_id: str, result: _PatientResult) -> dict[str, Any]:
    """The ``run_warnings`` row of a patient with warnings."""
    return {
        "run_id": run_id,
        "org_id": org_id,
        "patient_id": result.patient_id,
        "warning_count": result.summary.warnings_total,
        "stored_in": None,
        "warnings": result.warnings_json,
    }


def _line_row(run_id: str, org_id: str, key: str, line: ClaimLine) -> dict[str, Any]:
    content = line_content(line)
    return {
        "run_id": run_id,
        "org_id": org_id,
        "line_key": key,
        **{k: v for k, v in content.items() if k not in {"charge", "expected_payment"}},
        "date_of_service": line.date_of_service,
        "period_start": line.period_start,
        "period_end": line.period_end,
        "charge": line.charge,
        "expected_payment": line.expected_payment,
    }


#: SQLite page cache (KiB) of the run's writing connection while the run holds it.
RUN_CACHE_KIB = 8_000


@contextmanager
def _small_cache(conn: Connection) -> Iterator[None]:
    """A small SQLite page cache for the run's one long write transaction.

    The run writes about 1.7 GB of decisions at 100,000 patients, appended and never read
    back, inside one transaction; with the store's 200 MB cache every page written stayed
    cached until the cache was full (20,000 patients: 711 MB peak, 476 MB with a 2 MB
    cache). Dirty pages beyond the cache go to the WAL file, which commit needs anyway.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    import sqlite3

    # On the driver's connection, as ``begin_write`` does: a pragma is no statement of the
    # transaction, and the pooled connection gets its cache back after the run's rollback too.
    driver = conn.connection.driver_connection
    assert driver is not None
    (before,) = driver.execute("PRAGMA cache_size").fetchone()
    driver.execute(f"PRAGMA cache_size = -{RUN_CACHE_KIB}")
    try:
        yield
    finally:
        with suppress(sqlite3.Error):  # a connection that broke is not returned to the pool
            driver.execute(f"PRAGMA cache_size = {int(before)}")


@contextmanager
def _quiet_gc() -> Iterator[None]:
    """Keep the cyclic collector from rescanning a growing heap on every allocation burst.

    A run allocates millions of short-lived, acyclic objects (decisions, reasons); the
    collector's full passes over everything alive made the run superlinear in patients.
    Objects alive before the run (rules, caches) are frozen out of collection, and the
    young-generation threshold is raised for the duration.
    """
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def lock_month(
    engine: Engine,
    org_id: str,
    month: str,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    on_wait: Callable[[str], None] | None = None,
    accept_provisional: bool = False,
) -> StoredRun:
    """Lock the month's current draft; a locked run is never changed again.

    Refusals are ``RunError`` with a ``Problem``: no run, already locked, a run with
    problems, a run judged by a proposed (not final) rule-year unless
    ``accept_provisional`` (``provisional_rules``; the acceptance is then recorded in the
    run's summary, and its 837P may be exported), or the month held by a run in progress
    for too long.
    """
    with hold_month(engine, org_id, month, on_wait=on_wait) as held:
        run = current_run(held.conn, org_id, month)
        if run is None:
            raise RunError(
                run_problem(
                    "no_run",
                    f"{month} has no run to lock",
                    month=month,
                    hint=f"bill it first: caretally bill --month {month}",
                )
            )
        if run.status == LOCKED:
            raise RunError(
                run_problem(
                    "already_locked",
                    f"{month} is already locked (run {run.run_id})",
                    month=month,
                    run_id=run.run_id,
                    hint="a later `caretally bill` makes an amendment run, which can be locked in turn",
                )
            )
        if run.problems:
            raise RunError(
                run_problem(
                    "run_has_problems",
                    f"{month}: run {run.run_id} has {len(run.problems)} problem(s) (patients not judged)",
                    month=month,
                    run_id=run.run_id,
                    hint="fix the rules or data and bill again before locking",
                )
            )
        provisional = run.provisional
        if provisional and not accept_provisional:
            years = ", ".join(provisional.get("rule_years") or [])
            raise RunError(
                run_problem(
                    "provisional_rules",
                    f"{month}: run {run.run_id} was judged by a proposed rule-year ({years}), not final",
                    month=month,
                    run_id=run.run_id,
                    hint="bill the month again once the final rule is loaded, or lock it as it is with "
                    "--accept-provisional",
                )
            )
        runs = schema.billing_runs
        when = now()
        values: dict[str, Any] = {"status": LOCKED, "locked_at": when}
        if provisional:
            values["summary"] = {
                **(run.summary or {}),
                "provisional": {**provisional, "accepted_at": when.isoformat()},
            }
        held.conn.execute(
            update(runs).where(runs.c.run_id == run.run_id, runs.c.status == DRAFT).values(**values)
        )
        locked = latest_locked(held.conn, org_id, month)
    assert locked is not None
    return locked

"""Pieces every code family shares: the view a family sees, checks, and decision assembly.

A family never sets a status by hand. It produces ``Check`` values (a reason plus a
verdict) and hands them to :func:`finish`, which derives the status the same way for
every code:

* any check ``FAIL`` → ``not_billable`` (units 0, no date of service, no payment);
* otherwise, if the period is still open (it ends after ``facts.as_of``) or a check is
  ``PENDING`` (not met yet but still reachable with the days or time left) →
  ``reachable``; units and expected payment then show what the data *already* supports
  (0 while any requirement is still pending), the date of service stays empty because it
  is not final, and a ``period.open`` reason says when the period closes;
* otherwise → ``billable`` with units > 0 and a date of service.

So a threshold that is already met in an open period is ``reachable``, never
``billable``: more days may still upgrade 99445 to 99454 and more minutes may add add-on
units. Only the final picture is billed. One exception keeps a closed period
``reachable``: when it loses a conflict (one CCM lane, 99091 against 99457 …) to a
service whose own period is still open, the choice waits until that period closes (see
:func:`demote`).

Reasons whose rule id starts with ``docs.``, ``pricing.`` or ``time.`` are advisory: they
name a documentation gap, a missing price, or how time entries were credited (including
entries left unused), and never change the status.

Evidence convention: ``Evidence.time_entry_ids`` lists only the entries a decision
*counts*; entries that were looked at and excluded are named in ``values`` under
``excluded_entries``. An add-on code counts no entries of its own — its minutes are the
part of its base code's pool beyond the base threshold, and the base decision lists the
pool — so an entry id appears in at most one billable decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from caretally.model import (
    Decision,
    EnrollmentFact,
    Evidence,
    Measures,
    ParameterUse,
    PatientMonthFacts,
    PerformerClass,
    Period,
    Program,
    ProgramFacts,
    Reason,
    ReasonKind,
    Status,
    TimeFact,
    Verdict,
    kind_of,
)
from caretally.rules.params import CodeRule, MissingParameter, Param, RuleYear

YearFor = Callable[[date], RuleYear]


class UnsupportedOption(ValueError):
    """An option carries a value no family knows how to apply."""


@dataclass(frozen=True, slots=True)
class Check:
    """A reason with its verdict, and the typed numbers it judged (folded into the decision)."""

    reason: Reason
    verdict: Verdict
    measures: Measures | None = None

    @staticmethod
    def of(
        rule_id: str,
        verdict: Verdict,
        message: str,
        citation: str,
        evidence: Evidence | None = None,
        measures: Measures | None = None,
    ) -> Check:
        return Check(
            Reason(
                rule_id,
                verdict is Verdict.PASS,
                message,
                citation,
                evidence or _NO_EVIDENCE,
                verdict=verdict,
                kind=reason_kind(rule_id),
            ),
            verdict,
            measures,
        )


_NO_EVIDENCE = Evidence()
_KINDS: dict[str, ReasonKind] = {}


def reason_kind(rule_id: str) -> ReasonKind:
    """``kind_of`` once per rule id: hundreds of thousands of reasons share a few dozen ids."""
    kind = _KINDS.get(rule_id)
    if kind is None:
        kind = _KINDS[rule_id] = kind_of(rule_id)
    return kind


@dataclass(frozen=True, slots=True)
class EnrollmentView:
    """What a family may see of one enrollment in one patient-month.

    ``entries`` are the time entries credited to this enrollment (named for its program
    or allocated to it); ``time_reasons`` explain that crediting and are attached to every
    time-based decision of the enrollment.

    ``payment_only`` is for the allocation search, which only sums expected payments over
    thousands of trial allocations: :func:`finish` then leaves out what no status, unit,
    payment or conflict depends on (see :func:`_explaining_notes`). Never for a decision
    that is stored or shown.
    """

    facts: PatientMonthFacts
    program: ProgramFacts
    entries: tuple[TimeFact, ...]
    time_reasons: tuple[Reason, ...]
    year_for: YearFor
    time_params: tuple[Param, ...] = ()
    payment_only: bool = False

    @property
    def enrollment(self) -> EnrollmentFact:
        return self.program.enrollment


# --------------------------------------------------------------------------------------
# Citations and parameters
# --------------------------------------------------------------------------------------


_CITES: dict[tuple[str, int, str], str] = {}


def cite_text(year: RuleYear, citation: str) -> str:
    """Resolve source keys to their titles so a reason reads without the YAML at hand."""
    if not citation:
        return ""
    key = (year.content_hash, id(year.sources), citation)
    hit = _CITES.get(key)
    if hit is not None:
        return hit
    keys = [k.strip() for k in citation.replace(";", ",").split(",") if k.strip()]
    found = keys and all(k in year.sources for k in keys)
    text = "; ".join(year.sources[k] for k in keys) if found else citation
    if len(_CITES) < 4096:
        _CITES[key] = text
    return text


def cite(year: RuleYear, param: Param) -> str:
    return cite_text(year, param.citation)


@dataclass(slots=True)
class Used:
    """Collects the rule values a decision read, in first-use order, without repeats."""

    year: RuleYear
    params: list[Param] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def add(self, param: Param) -> Param:
        if id(param) not in self.seen:  # Params live as long as their cached rule-year
            self.seen.add(id(param))
            self.params.append(param)
        return param

    def extend(self, params: Iterable[Param]) -> None:
        seen, out = self.seen, self.params
        for param in params:
            if id(param) not in seen:
                seen.add(id(param))
                out.append(param)

    def code(self, rule: CodeRule, name: str) -> Any:
        return self.add(rule.param(name)).value

    def code_opt(self, rule: CodeRule, name: str) -> Any:
        if name not in rule.params:
            return None
        return self.add(rule.params[name]).value

    def option(self, name: str) -> Any:
        return self.add(self.year.option(name)).value

    def uses(self) -> tuple[ParameterUse, ...]:
        # The same code reads the same values for every patient: one tuple per list of
        # values. The memo holds the params, so the ids in a key cannot be reused.
        key = tuple(map(id, self.params))
        hit = _USES_OF.get(key)
        if hit is None:
            hit = (tuple(self.params), tuple(p.use() for p in self.params))
            _remember(_USES_OF, key, hit)
        return hit[1]


_USES_OF: dict[tuple[int, ...], tuple[tuple[Param, ...], tuple[ParameterUse, ...]]] = {}


def option_value(year: RuleYear, name: str, allowed: Sequence[str]) -> str:
    value = str(year.option(name).value)
    if value not in allowed:
        raise UnsupportedOption(f"option {name}={value!r}; supported: {', '.join(allowed)}")
    return value


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MissingParameter(f"{what} must be an integer, got {value!r}")
    return value


def strings(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


# --------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------


def money(amount: Decimal | None) -> str:
    return "no price" if amount is None else f"${amount:,.2f}"


def span(first: date, last: date) -> str:
    return f"{first.isoformat()}..{last.isoformat()}"


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"{n} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{n} {word[:-1]}ies"
    return f"{n} {word}s"


def ids(entries: Iterable[TimeFact]) -> tuple[str, ...]:
    return tuple(e.entry_id for e in entries)


def clock(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def minutes_phrase(minutes: int, seconds: int) -> str:
    return f"{plural(minutes, 'minute')} ({seconds:,} s)"


# --------------------------------------------------------------------------------------
# Windows: which days of a period can still count
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """The part of a period in which data or time may count.

    Days before the enrollment starts or the consent is dated, or after the enrollment
    ends, are outside: nothing furnished then can be billed under this enrollment.
    ``first > last`` means nothing can count.
    """

    first: date
    last: date

    def contains(self, day: date) -> bool:
        return self.first <= day <= self.last

    def days_left(self, as_of: date) -> int:
        start = max(self.first, as_of + timedelta(days=1))
        return max(0, (self.last - start).days + 1)


def window(view: EnrollmentView, period: Period) -> Window:
    e = view.enrollment
    first = max(period.start, e.start_date)
    if e.consent_date is not None:
        first = max(first, e.consent_date)
    last = period.end if e.end_date is None else min(period.end, e.end_date)
    return Window(first, last)


def is_open(view: EnrollmentView, period: Period) -> bool:
    return period.end > view.facts.as_of


def clamp_to_enrollment(view: EnrollmentView, day: date) -> date:
    """A date of service may not fall after the enrollment ends."""
    end = view.enrollment.end_date
    return day if end is None or day <= end else end


# --------------------------------------------------------------------------------------
# Checks shared by every code
# --------------------------------------------------------------------------------------


def requirement(year: RuleYear, name: str, used: Used, program: Program | None = None) -> tuple[bool, str]:
    """Whether a structural rule applies (to ``program``), and its citation.

    The rule-year says which programs each rule covers (``consent``, ``established_patient``,
    ``order``, ``initiating_visit`` are lists of programs; an overlay may shorten them to
    waive a rule) or, for rules without programs, ``true``/``false``.
    """
    key = (id(year), name, program)
    hit = _REQUIREMENTS.get(key)
    if hit is None or hit[0] is not year:
        p = year.rule_global(name)
        if isinstance(p.value, list | tuple):
            needed = program is not None and str(program) in {str(v) for v in p.value}
        else:
            needed = bool(p.value)
        hit = (year, p, needed, cite(year, p))
        _REQUIREMENTS[key] = hit
    used.add(hit[1])
    return hit[2], hit[3]


#: (id(RuleYear), global, program) → (RuleYear, Param, applies, citation); rule-years are cached.
_REQUIREMENTS: dict[tuple[int, str, Program | None], tuple[RuleYear, Param, bool, str]] = {}


def common_checks(view: EnrollmentView, year: RuleYear, period: Period, used: Used) -> list[Check]:
    """Enrollment, consent, billing practitioner and (RPM) established patient.

    They depend on the enrollment, the rule-year and the period only, and every code of
    an enrollment asks for them (the allocation search asks again for every trial), so
    each answer is made once and replayed: the same checks, and the same rule values
    added to ``used`` in the same order.
    """
    program = view.program
    key = (id(program), period, id(year))
    hit = _COMMON.get(key)
    if hit is None or hit[0] is not program or hit[1] is not year:
        probe = Used(year)
        checks = tuple(_common_checks(view, year, period, probe))
        hit = (program, year, checks, tuple(probe.params))
        _remember(_COMMON, key, hit)
    used.extend(hit[3])
    return list(hit[2])


#: Per-patient answers, keyed by object ids; each value holds the keyed objects, so an id
#: is never reused while its entry lives. Small: cleared whenever it outgrows one practice.
_Params = tuple[Param, ...]
_COMMON: dict[tuple[int, Period, int], tuple[ProgramFacts, RuleYear, tuple[Check, ...], _Params]] = {}
_DOCS: dict[tuple[int, int], tuple[ProgramFacts, RuleYear, tuple[Reason, ...], tuple[str, ...], _Params]] = {}
_OVERLAPS: dict[tuple[int, Period], tuple[tuple[TimeFact, ...], tuple[Reason, ...]]] = {}
_ORDER: dict[int, tuple[TimeFact, tuple[date, str, str]]] = {}
_MEMO_LIMIT = 2048


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _common_checks(view: EnrollmentView, year: RuleYear, period: Period, used: Used) -> list[Check]:
    """See :func:`common_checks`.

    Consent: it must be dated on or before the date of service. Because data and time
    before the consent date are left out of every count, a met threshold always lands on
    or after the consent; the check can only fail when consent is missing or dated after
    the period (and thus after any possible date of service).
    """
    e = view.enrollment
    checks: list[Check] = []
    _, c_enrolled = requirement(year, "enrollment_active", used)
    ends = "open-ended" if e.end_date is None else f"ending {e.end_date}"
    overlaps = e.start_date <= period.end and (e.end_date is None or e.end_date >= period.start)
    where = span(period.start, period.end)
    if overlaps:
        inside = e.start_date <= period.start and (e.end_date is None or e.end_date >= period.end)
        note = "" if inside else "; days outside the enrollment do not count"
        msg = f"enrollment {e.enrollment_id} (from {e.start_date}, {ends}) covers {where}{note}"
        checks.append(Check.of("common.enrollment_active", Verdict.PASS, msg, c_enrolled))
    else:
        msg = f"enrollment {e.enrollment_id} (from {e.start_date}, {ends}) does not cover any day of {where}"
        checks.append(Check.of("common.enrollment_active", Verdict.FAIL, msg, c_enrolled))

    needed, c = requirement(year, "consent", used, e.program)
    if not needed:
        msg = f"consent not required for {e.program} by this rule-year"
        checks.append(Check.of("common.consent", Verdict.PASS, msg, c))
    elif e.consent_date is None:
        checks.append(Check.of("common.consent", Verdict.FAIL, "no consent on file", c))
    elif e.consent_date > period.end:
        msg = (
            f"consent dated {e.consent_date} is after the period ends ({period.end}): the service came first"
        )
        checks.append(Check.of("common.consent", Verdict.FAIL, msg, c, Evidence(dates=(e.consent_date,))))
    else:
        later = e.consent_date > period.start
        note = "; data and time before it do not count" if later else ""
        msg = f"consent dated {e.consent_date}, on or before the date of service{note}"
        checks.append(Check.of("common.consent", Verdict.PASS, msg, c, Evidence(dates=(e.consent_date,))))

    needed, c = requirement(year, "billing_practitioner", used)
    if e.billing_practitioner_id:
        msg = f"billing practitioner {e.billing_practitioner_id} ({e.billing_credential})"
        checks.append(Check.of("common.billing_practitioner", Verdict.PASS, msg, c))
    elif needed:
        checks.append(Check.of("common.billing_practitioner", Verdict.FAIL, "no billing practitioner", c))

    needed, c = established_needed(year, used, e.program)
    if needed:
        checks.append(_established(e, year, used, c))
    visit = _initiating_visit(view, year, period, used)
    if visit is not None:
        checks.append(visit)
    return checks


#: Programs the CY2027 remote-monitoring proposals (CMS-1848-P) would change.
REMOTE_MONITORING = frozenset({Program.RPM, Program.RTM})


def _proposal(year: RuleYear, name: str, program: Program, used: Used) -> Param | None:
    """A CY2027 proposal option that applies to ``program`` in ``year``, recorded as used.

    Years before the proposal do not define the option: it then neither applies nor
    shows in the evidence. Where it is defined it is recorded whether on or off, so a
    decision shows that the proposal was considered.
    """
    p = year.options.get(name)
    if p is None or program not in REMOTE_MONITORING:
        return None
    used.add(p)
    return p


def established_needed(year: RuleYear, used: Used, program: Program) -> tuple[bool, str]:
    """Whether the established-patient rule applies: the global's programs, and RTM too
    when the option ``rtm_requires_established_patient`` (CY2027 proposal) is on."""
    needed, c = requirement(year, "established_patient", used, program)
    if not needed and program is Program.RTM:
        p = _proposal(year, "rtm_requires_established_patient", program, used)
        if p is not None and p.value is True:
            return True, cite(year, p)
    return needed, c


def _initiating_visit(view: EnrollmentView, year: RuleYear, period: Period, used: Used) -> Check | None:
    """The CY2027 proposal ``initiating_visit_required``: RPM/RTM start with a visit.

    The visit is the enrollment's ``initiating_visit_date`` (attested) or, with the option
    ``initiating_visit_source: from_visits``, a visit in visits.csv (:func:`initiating_visit`).
    It must fall on or before the period's last day: a visit after the service cannot
    have initiated it.
    """
    e = view.enrollment
    p = _proposal(year, "initiating_visit_required", e.program, used)
    if p is None or p.value is not True:
        return None
    rule_id = f"{e.program.lower()}.initiating_visit"
    c = cite(year, p)
    visit, how, ev = initiating_visit(view, year, used)
    if visit is None:
        msg = (
            f"no initiating visit {how}: with the option initiating_visit_required (CY2027 "
            f"proposal) {e.program} needs a separately reportable initiating visit at its start"
        )
        return Check.of(rule_id, Verdict.FAIL, msg, c, ev)
    if visit > period.end:
        msg = f"initiating visit on {visit} is after the period ends ({period.end}): it did not initiate it"
        return Check.of(rule_id, Verdict.FAIL, msg, c, ev)
    msg = (
        f"initiating visit on {visit} {how}, on or before the period's end (option initiating_visit_required)"
    )
    return Check.of(rule_id, Verdict.PASS, msg, c, ev)


INITIATING_SOURCES = ("attested", "from_visits")


def initiating_visit(view: EnrollmentView, year: RuleYear, used: Used) -> tuple[date | None, str, Evidence]:
    """The episode's initiating visit: its date, how it is known, and the evidence.

    With the option ``initiating_visit_source`` missing or ``attested`` it is the
    enrollment's ``initiating_visit_date``. With ``from_visits`` it is read from the
    visits: a code of ``initiating_visit_codes`` by the billing practitioner, no earlier
    than ``initiating_visit_lookback_days`` before the episode starts — the last such
    visit on or before the start, else the first one after it (among the visits known up
    to the month's end). The attested date is then not used, so a practice cannot pass
    the check with a date its own records do not show.
    """
    e = view.enrollment
    p = year.options.get("initiating_visit_source")
    source = "attested" if p is None else str(p.value)
    if p is not None:
        used.add(p)
    if source not in INITIATING_SOURCES:
        supported = ", ".join(INITIATING_SOURCES)
        raise UnsupportedOption(f"option initiating_visit_source={source!r}; supported: {supported}")
    if source == "attested":
        day = e.initiating_visit_date
        return day, "on file (attested on the enrollment)", Evidence(dates=(day,) if day else ())
    codes = set(strings(used.add(year.rule_global("initiating_visit_codes")).value))
    lookback = as_int(used.add(year.rule_global("initiating_visit_lookback_days")).value, "lookback")
    earliest = e.start_date - timedelta(days=lookback)
    found = [
        v
        for v in view.facts.visits
        if v.code in codes and v.practitioner_id == e.billing_practitioner_id and v.local_date >= earliest
    ]
    if not found:
        who = e.billing_practitioner_id
        how = f"in the visits by {who} since {earliest} (initiating_visit_source: from_visits)"
        return None, how, Evidence()
    before = [v for v in found if v.local_date <= e.start_date]
    v = before[-1] if before else found[0]
    how = f"(visit {v.visit_id}, {v.code} by {v.practitioner_id}{', telehealth' if v.telehealth else ''})"
    ev = Evidence(dates=(v.local_date,), values=(("visit_id", v.visit_id), ("visit_code", v.code)))
    return v.local_date, how, ev


def employed_staff_only(year: RuleYear, program: Program, used: Used) -> bool:
    """The CY2027 proposal ``staff_minutes_employed_only`` applies to this code's minutes."""
    p = _proposal(year, "staff_minutes_employed_only", program, used)
    return p is not None and p.value is True


ESTABLISHED_WHEN_MISSING = ("assume_established", "assume_not")


def _established(e: EnrollmentFact, year: RuleYear, used: Used, c: str) -> Check:
    """The established-patient rule; a missing attestation follows a documented option."""
    rule_id = f"{e.program.lower()}.established_patient"
    known = e.established_patient
    if known is None:
        choice = option_value(year, "established_patient_when_missing", ESTABLISHED_WHEN_MISSING)
        used.add(year.option("established_patient_when_missing"))
        c = cite(year, year.option("established_patient_when_missing"))
        if choice == "assume_established":
            msg = (
                "the enrollment does not say whether the patient is established: assumed established "
                "(option established_patient_when_missing); record it to close the gap"
            )
            return Check.of(rule_id, Verdict.PASS, msg, c)
        msg = (
            "the enrollment does not say whether the patient is established, and the option "
            "established_patient_when_missing is assume_not: record it to bill"
        )
        return Check.of(rule_id, Verdict.FAIL, msg, c)
    if known:
        msg = "established patient of the billing practitioner (enrollment attestation)"
        return Check.of(rule_id, Verdict.PASS, msg, c)
    msg = f"not an established patient: {e.program} needs a prior relationship with the billing practitioner"
    return Check.of(rule_id, Verdict.FAIL, msg, c)


def documentation(view: EnrollmentView, year: RuleYear, used: Used) -> tuple[list[Reason], tuple[str, ...]]:
    """Named documentation gaps: they never block, but an auditor will ask for them.

    Like the common checks, made once per enrollment and rule-year and replayed.
    """
    program = view.program
    key = (id(program), id(year))
    hit = _DOCS.get(key)
    if hit is None or hit[0] is not program or hit[1] is not year:
        probe = Used(year)
        reasons, gaps = _documentation(view, year, probe)
        hit = (program, year, tuple(reasons), gaps, tuple(probe.params))
        _remember(_DOCS, key, hit)
    used.extend(hit[4])
    return list(hit[2]), hit[3]


def _documentation(view: EnrollmentView, year: RuleYear, used: Used) -> tuple[list[Reason], tuple[str, ...]]:
    e = view.enrollment
    reasons: list[Reason] = []
    gaps: list[str] = []
    needed, c = requirement(year, "order", used, e.program)
    if needed:
        if e.order_date is None:
            gaps.append("order_date: no dated practitioner order for the monitoring on file")
            msg = "documentation gap (does not block): no dated order naming the device and condition"
            reasons.append(Reason("docs.order_date", False, msg, c))
        else:
            msg = f"order dated {e.order_date}"
            ev = Evidence(dates=(e.order_date,) if e.order_date else ())
            reasons.append(Reason("docs.order_date", True, msg, c, ev))
    needed, c = established_needed(year, used, e.program)
    if needed and e.established_patient is None:
        gaps.append("established_patient: the enrollment does not record whether the patient is established")
    needed, c = requirement(year, "initiating_visit", used, e.program)
    if needed:
        visit, how, ev = initiating_visit(view, year, used)
        if visit is None:
            gaps.append("initiating_visit_date: no initiating visit (E/M, AWV or IPPE) on file")
            msg = f"documentation gap (does not block): no initiating visit {how}"
            reasons.append(Reason("docs.initiating_visit", False, msg, c, ev))
        else:
            msg = f"initiating visit on {visit} {how}"
            reasons.append(Reason("docs.initiating_visit", True, msg, c, ev))
    return reasons, tuple(gaps)


# --------------------------------------------------------------------------------------
# Time entries
# --------------------------------------------------------------------------------------


def performers_of(value: Any) -> frozenset[str]:
    return frozenset(strings(value))


@dataclass(frozen=True, slots=True)
class TimePool:
    counted: tuple[TimeFact, ...]
    excluded: tuple[tuple[TimeFact, str], ...]  # entry, why
    seconds: int = 0  # of the counted entries; set by :func:`pool`

    @property
    def minutes(self) -> int:
        return self.seconds // 60

    def excluded_value(self) -> tuple[tuple[str, str], ...]:
        if not self.excluded:
            return ()
        text = "; ".join(f"{e.entry_id} ({why})" for e, why in self.excluded)
        return (("excluded_entries", text),)


def time_order(entry: TimeFact) -> tuple[date, str, str]:
    """Date, start instant as text, id: the one order every family walks entries in."""
    hit = _ORDER.get(id(entry))
    if hit is not None and hit[0] is entry:
        return hit[1]
    started = "" if entry.started_at is None else entry.started_at.isoformat()
    key = (entry.local_date, started, entry.entry_id)
    _remember(_ORDER, id(entry), (entry, key))
    return key


def pool(
    entries: Iterable[TimeFact],
    period: Period,
    win: Window,
    performers: frozenset[str],
    skip: frozenset[str],
    employed_only: bool = False,
    barred: Mapping[str, str] | None = None,
) -> TimePool:
    """The entries that count toward a code in ``period``, and why the others do not.

    ``employed_only`` (the CY2027 proposal ``staff_minutes_employed_only``) leaves out
    clinical staff who are not employed by the practice. ``barred`` maps entries that do
    not count for a reason of the code's own (99091 work on an E/M day) to that reason.
    """
    counted: list[TimeFact] = []
    excluded: list[tuple[TimeFact, str]] = []
    for e in sorted(entries, key=time_order):
        if not period.contains(e.local_date):
            continue
        if e.entry_id in skip:
            excluded.append((e, "its month's time is already billed"))
        elif barred and e.entry_id in barred:
            excluded.append((e, barred[e.entry_id]))
        elif not win.contains(e.local_date):
            excluded.append((e, "outside the enrollment or before consent"))
        elif str(e.performer) not in performers:
            excluded.append((e, f"performer {e.performer} does not count for this code"))
        elif employed_only and e.performer is PerformerClass.STAFF and e.employment != "employee":
            excluded.append((e, f"clinical staff {e.practitioner_id} is a {e.employment}, not employed"))
        else:
            counted.append(e)
    return TimePool(tuple(counted), tuple(excluded), sum(e.seconds for e in counted))


def overlap_reasons(view: EnrollmentView, period: Period) -> list[Reason]:
    """Say which entries were cut because the same performer logged those minutes already,
    and flag entries whose interval collides with another patient's (a compliance warning).

    Every time-based code of the enrollment carries the same notes: made once per set of
    entries (one view's) and period.
    """
    entries = view.entries
    if not entries:
        return []
    key = (id(entries), period)
    hit = _OVERLAPS.get(key)
    if hit is None or hit[0] is not entries:
        hit = (entries, tuple(_overlap_reasons(view, period)))
        _remember(_OVERLAPS, key, hit)
    return list(hit[1])


def _overlap_reasons(view: EnrollmentView, period: Period) -> list[Reason]:
    if not any(e.logged_seconds is not None or e.other_patient_overlaps for e in view.entries):
        return []
    out: list[Reason] = []
    c = ""
    for e in sorted(view.entries, key=time_order):
        if not period.contains(e.local_date):
            continue
        if e.logged_seconds is None and not e.other_patient_overlaps:
            continue
        if not c:
            year = view.year_for(period.end)
            c = cite(year, year.rule_global("time_counts_once"))
        out.extend(_entry_notes(e, c))
    return out


_NOTES: dict[tuple[int, str], tuple[TimeFact, tuple[Reason, ...]]] = {}


def _entry_notes(e: TimeFact, c: str) -> tuple[Reason, ...]:
    """The overlap notes of one entry (the same whichever code counts it), cited ``c``."""
    key = (id(e), c)
    hit = _NOTES.get(key)
    if hit is not None and hit[0] is e:
        return hit[1]
    out: list[Reason] = []
    if e.logged_seconds is not None:
        cut = e.logged_seconds - e.seconds
        msg = (
            f"entry {e.entry_id} repeats {clock(cut)} already logged by {e.practitioner_id} in entry "
            f"{', '.join(e.overlaps)}: those minutes count once, so it counts {clock(e.seconds)} "
            f"of its {clock(e.logged_seconds)}"
        )
        ev = Evidence(
            dates=(e.local_date,),
            time_entry_ids=(),
            values=(
                ("entry", e.entry_id),
                ("overlaps", ", ".join(e.overlaps)),
                ("seconds_cut", str(cut)),
            ),
        )
        out.append(Reason("time.overlap", True, msg, c, ev))
    if e.other_patient_overlaps:
        msg = (
            f"compliance warning: entry {e.entry_id} by {e.practitioner_id} overlaps in time with "
            f"{', '.join(e.other_patient_overlaps)} for another patient; one performer cannot serve "
            "both at once — review the documentation (billing is unchanged)"
        )
        ev = Evidence(
            dates=(e.local_date,),
            values=(
                ("entry", e.entry_id),
                ("other_patient_entries", ", ".join(e.other_patient_overlaps)),
            ),
        )
        out.append(Reason("time.overlap_other_patient", False, msg, c, ev))
    _remember(_NOTES, key, (e, tuple(out)))
    return tuple(out)


def threshold_day(entries: Sequence[TimeFact], minutes: int) -> date | None:
    """The local date on which the running total first reached ``minutes``."""
    total = 0
    for e in sorted(entries, key=time_order):
        total += e.seconds
        if total // 60 >= minutes:
            return e.local_date
    return None


def rendering_of(view: EnrollmentView, counted: Sequence[TimeFact]) -> str | None:
    """Who furnished most of the counted time, when that person bills under their own NPI.

    Clinical staff work incident to the billing practitioner, so their time renders under
    the billing practitioner; a practitioner or therapist renders their own service.
    Ties go to the lowest id so reruns agree.
    """
    if not counted:
        return None
    by_person: dict[str, int] = {}
    klass: dict[str, str] = {}
    for e in counted:
        by_person[e.practitioner_id] = by_person.get(e.practitioner_id, 0) + e.seconds
        klass[e.practitioner_id] = str(e.performer)
    top = min(by_person, key=lambda p: (-by_person[p], p))
    if klass[top] == "staff":
        return view.enrollment.billing_practitioner_id
    return top


# --------------------------------------------------------------------------------------
# Assembling a decision
# --------------------------------------------------------------------------------------


def status_of(checks: Sequence[Check], open_: bool) -> Status:
    verdicts = {c.verdict for c in checks}
    if Verdict.FAIL in verdicts:
        return Status.NOT_BILLABLE
    if open_ or Verdict.PENDING in verdicts:
        return Status.REACHABLE
    return Status.BILLABLE


def payment(rule: CodeRule, units: int, used: Used) -> tuple[Decimal | None, list[Reason]]:
    """amount × units; a code without a national amount is priced at $0.00 and flagged."""
    if units <= 0:
        return None, []
    param = rule.params.get("amount")
    if param is not None:
        used.add(param)
    amount = rule.amount
    if amount is None:
        c = "" if param is None else cite(used.year, param)
        msg = (
            f"no national amount for {rule.code} in this rule-year (contractor-priced or unknown): "
            "shown as $0.00"
        )
        return Decimal("0.00"), [Reason("pricing.amount", False, msg, c)]
    return amount * units, []


@dataclass(slots=True)
class Draft:
    """A decision under construction; :func:`finish` turns it into a ``Decision``."""

    view: EnrollmentView
    year: RuleYear
    rule: CodeRule
    period: Period
    used: Used
    checks: list[Check] = field(default_factory=list)
    units: int = 0
    dos: date | None = None
    open_note: str = ""
    rendering: str | None = None
    time_based: bool = False


def finish(d: Draft) -> Decision:
    view = d.view
    if d.year.coverage:  # a payer overlay's coverage policy: covered diagnoses, prior authorization
        from caretally.rules.families.coverage import coverage_checks

        d.checks.extend(coverage_checks(view, d.year, d.rule, d.period, d.used))
    if view.facts.death_date is not None:
        death = death_check(d)
        if death is not None:
            d.checks.append(death)
    open_ = is_open(view, d.period)
    status = status_of(d.checks, open_)
    if status is Status.BILLABLE and d.units <= 0:
        status = Status.NOT_BILLABLE
    pending = any(c.verdict is Verdict.PENDING for c in d.checks)
    units = 0 if status is Status.NOT_BILLABLE or pending else d.units
    reasons: list[Reason] = [c.reason for c in d.checks]
    explain = not view.payment_only
    gaps: tuple[str, ...] = ()
    if explain:
        reasons.extend(_explaining_notes(d, open_, status))
        docs, gaps = documentation(view, d.year, d.used)
        reasons.extend(docs)
    pay, price_reasons = payment(d.rule, units, d.used)
    reasons.extend(price_reasons)
    measures: Measures | None = None
    if explain:
        if d.year.provisional:
            reasons.append(provisional_reason(d.year, d.rule))
        for c in d.checks:
            if c.measures is not None:
                # Measures().merged(m) == m: the first one is taken as it is.
                measures = c.measures if measures is None else measures.merged(c.measures)
    e = view.enrollment
    return Decision(
        patient_id=view.facts.patient_id,
        enrollment_id=e.enrollment_id,
        program=e.program,
        code=d.rule.code,
        status=status,
        units=units,
        date_of_service=d.dos if status is Status.BILLABLE else None,
        period=d.period,
        reasons=tuple(reasons),
        parameters=d.used.uses() if explain else (),
        billing_practitioner_id=e.billing_practitioner_id or None,
        rendering_practitioner_id=d.rendering if units > 0 else None,
        expected_payment=pay,
        documentation_gaps=gaps,
        rule_year=layer_name(d.year),
        measures=Measures() if measures is None else measures,
        provisional=d.year.provisional,
    )


def _explaining_notes(d: Draft, open_: bool, status: Status) -> list[Reason]:
    """The ``period.open``, time and overlap notes: they explain a decision and change no
    status, unit or payment, so the allocation search's payment-only trials leave them out
    (with the documentation and provisional notes, the parameters read and the measures).
    The checks' reasons stay in a trial: the concurrency pass reads the entries they count
    and an add-on quotes its base's failed check; so does the ``pricing.amount`` note,
    which care management and APCM read."""
    view = d.view
    reasons: list[Reason] = []
    if open_ and status is Status.REACHABLE:
        if any(c.verdict is Verdict.PENDING for c in d.checks):
            msg = f"period closes on {d.period.end}; data known through {view.facts.as_of}"
        else:
            note = f": {d.open_note}" if d.open_note else ""
            msg = f"requirements met so far; the period closes on {d.period.end}{note}"
        c = cite(d.year, d.rule.params["descriptor"]) if "descriptor" in d.rule.params else ""
        reasons.append(Reason("period.open", True, msg, c, Evidence(dates=(d.period.end, view.facts.as_of))))
    if d.time_based:
        # Notes about particular entries only concern decisions whose period holds them.
        reasons.extend(
            r
            for r in view.time_reasons
            if not r.evidence.dates or any(d.period.contains(x) for x in r.evidence.dates)
        )
        for p in view.time_params:
            d.used.add(p)
        reasons.extend(overlap_reasons(view, d.period))
    return reasons


def death_check(d: Draft) -> Check | None:
    """Nothing is billed for a date of service after the patient's death (global
    ``no_service_after_death``). A period that starts after the death fails whatever its
    date; otherwise the decision's own date of service is compared (under
    ``device_dos: threshold_day`` a line dated before the death may still bill)."""
    p = d.year.globals.get("no_service_after_death")
    death = d.view.facts.death_date
    if p is None or p.value is not True or death is None:
        return None
    d.used.add(p)
    c = cite(d.year, p)
    ev = Evidence(dates=(death,))
    if d.period.start > death:
        msg = f"the patient died on {death}, before this period ({span(d.period.start, d.period.end)}) began"
        return Check.of("patient.death", Verdict.FAIL, msg, c, ev)
    if d.dos is not None and d.dos > death:
        msg = f"date of service {d.dos} is after the patient's death on {death}: nothing is billed after it"
        return Check.of("patient.death", Verdict.FAIL, msg, c, ev)
    if d.dos is None:
        return None
    msg = f"date of service {d.dos} is on or before the patient's death on {death}"
    return Check.of("patient.death", Verdict.PASS, msg, c, ev)


def same_day_em(view: EnrollmentView, year: RuleYear, rule: CodeRule, used: Used) -> dict[str, str]:
    """Entries that do not count toward ``rule``: logged by a practitioner on a day that
    practitioner billed an E/M visit with the patient (global ``em_same_day_excludes``,
    which names the codes, e.g. 99091; ``em_visit_codes`` says which visits are E/M)."""
    p = year.globals.get("em_same_day_excludes")
    if p is None or rule.code not in strings(p.value) or not view.facts.visits:
        return {}
    used.add(p)
    em_codes = set(strings(used.add(year.rule_global("em_visit_codes")).value))
    days = {(v.practitioner_id, v.local_date): v for v in view.facts.visits if v.code in em_codes}
    barred: dict[str, str] = {}
    for e in view.entries:
        v = days.get((e.practitioner_id, e.local_date))
        if v is not None:
            barred[e.entry_id] = (
                f"{e.practitioner_id} billed an E/M ({v.code}, visit {v.visit_id}) with the patient on "
                f"{v.local_date}: {rule.code} work that day is not separately payable"
            )
    return barred


def provisional_reason(year: RuleYear, rule: CodeRule) -> Reason:
    """The advisory every decision of a proposed year carries: which year, why, and the source.

    It never changes a status; it is how explain, the stored run and every export can
    say that the figures may change when the final rule is published.
    """
    amount = rule.params.get("amount")
    how = f"; its amount is {amount.derivation}" if amount is not None and amount.derivation else ""
    msg = (
        f"judged by the proposed rule-year {year.payer} {year.year} ({layer_name(year)}), not final{how}; "
        "bill again when the final rule is loaded, or lock with --accept-provisional"
    )
    return Reason("rules.provisional", False, msg, cite_text(year, year.status_citation))


def layer_name(year: RuleYear) -> str:
    """The rule-year layers as one name (``medicare/2026`` or ``medicare/2026+payers/x``)."""
    return "+".join(year.layers)


def counts(decision: Decision) -> bool:
    """Whether a decision currently claims money: billable, or reachable with units."""
    return decision.status is Status.BILLABLE or (decision.status is Status.REACHABLE and decision.units > 0)


def demote(
    decision: Decision, reason: Reason, winner_final: bool, params: Sequence[Param | None] = ()
) -> Decision:
    """Take a decision out of the claim because another service wins a conflict.

    ``params`` are the rule values that decided the conflict; they are added to the
    decision's parameters. When the winner is final the loser is ``not_billable``. When the winner is itself
    still open the outcome is not settled, so the loser stays ``reachable`` with the
    failed reason attached: the choice is made again when the period closes.
    """
    reasons = _insert(decision.reasons, replace(reason, kind=ReasonKind.CONFLICT))
    uses = list(decision.parameters)
    for p in params:
        if p is not None and p.use() not in uses:
            uses.append(p.use())  # the deciding value, with its citation, joins the evidence
    decision = replace(decision, parameters=tuple(uses))
    if winner_final:
        return replace(
            decision,
            status=Status.NOT_BILLABLE,
            units=0,
            date_of_service=None,
            expected_payment=None,
            rendering_practitioner_id=None,
            reasons=reasons,
        )
    return replace(decision, status=Status.REACHABLE, date_of_service=None, reasons=reasons)


def with_reason(decision: Decision, reason: Reason) -> Decision:
    return replace(decision, reasons=_insert(decision.reasons, reason))


def _insert(reasons: tuple[Reason, ...], reason: Reason) -> tuple[Reason, ...]:
    """Add a reason after the checks and before the advisory notes, so the first failed
    reason of a decision is always the one that decided it."""
    at = next((i for i, r in enumerate(reasons) if r.kind is ReasonKind.ADVISORY), len(reasons))
    return (*reasons[:at], reason, *reasons[at:])


def codes_of(year: RuleYear, program: Program, family: str) -> list[CodeRule]:
    key = (id(year), program, family)
    hit = _CODES.get(key)
    if hit is None or hit[0] is not year:
        found = sorted((c for c in year.codes_for(program) if c.family == family), key=lambda c: c.code)
        hit = (year, tuple(found))
        _remember(_CODES, key, hit)
    return list(hit[1])


_CODES: dict[tuple[int, Program, str], tuple[RuleYear, tuple[CodeRule, ...]]] = {}


# --------------------------------------------------------------------------------------
# Claim-line helpers
# --------------------------------------------------------------------------------------


def service_parts(
    decision: Decision, decisions: Sequence[Decision], facts: PatientMonthFacts, year: RuleYear
) -> tuple[str, ...]:
    """Credentials of everyone who furnished a counted minute of ``decision``'s service.

    The service is the line's base code and its add-ons in the same enrollment and period:
    an add-on counts its base's pool, so an assistant's minutes on 98980 are part of 98981
    too. Modifier rules whose ``when`` is ``any_part`` read these (CQ/CO when an assistant
    furnished the service in whole or in part).
    """
    bases = set(year.bases_of(decision.code))
    mates = [
        d
        for d in decisions
        if d.enrollment_id == decision.enrollment_id
        and d.period == decision.period
        and (d.code in bases or bases & set(year.bases_of(d.code)))
    ]
    counted = {i for d in (decision, *mates) for r in d.reasons for i in r.evidence.time_entry_ids}
    people = {t.credential.upper() for t in facts.time if t.entry_id in counted and t.seconds > 0}
    return tuple(sorted(people))

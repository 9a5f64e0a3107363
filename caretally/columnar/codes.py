"""Each rule-year compiled once into rows of a code table, for the columnar pass.

The full engine reads a rule-year value by value for every patient; the columnar pass
reads each value once, here, and joins the rows against facts for every patient at
once. Only what the columnar pass decides is compiled (set-up, device supply, treatment
management, data interpretation); a rule-year the compiler cannot read exactly (a
missing parameter, an option value no family supports) is not compiled and its
patient-months are flagged for the full engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from caretally.model import Program
from caretally.rules.families.common import strings
from caretally.rules.params import MissingParameter, RuleYear

#: The families the columnar pass decides; a program with any other family is flagged.
FAMILIES = ("setup", "device_supply", "treatment_management", "data_interpretation", "care_management")
#: Programs the columnar pass decides.
PROGRAMS = (Program.RPM, Program.RTM, Program.CCM, Program.PCM)
#: Time-based families judged over the calendar month (the others: per 30-day period).
MONTHLY = ("treatment_management", "care_management")


class NotCompilable(ValueError):
    """A rule-year value the columnar pass does not model exactly: its months go to the engine."""


@dataclass(frozen=True, slots=True)
class CodeRow:
    year: int
    program: str
    family: str
    code: str
    min_days: int | None
    max_days: int | None
    max_units: int | None
    amount: Decimal | None
    min_minutes: int | None
    max_minutes: int | None
    step_minutes: int | None
    base_code: str | None
    base_min: int | None
    first_minutes: int | None  # an add-on's first unit: max(base min + step, own min)
    rtm_kind: str | None
    performers: tuple[str, ...]
    requires_interactive: bool
    modalities: tuple[str, ...]
    #: Care management: the lane (its base's), the diagnoses needed and the complexity
    #: required (``care_management.eligibility``); None where the code does not say.
    lane: str | None = None
    min_conditions: int | None = None
    complexity: str | None = None


@dataclass(frozen=True, slots=True)
class YearRow:
    year: int
    device_dos: str
    setup_dos: str
    time_dos: str
    established_missing_fails: bool
    visit_required: bool
    employed_only: bool
    coverage: bool
    allocate_unassigned: bool
    #: ``ccm_lane_order``: when money cannot choose a care-management lane (last words).
    lane_order: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RequirementRow:
    year: int
    program: str
    consent: bool
    billing_practitioner: bool
    established: bool


def _int(v: Any, what: str, nullable: bool = False) -> int | None:
    if v is None and nullable:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise NotCompilable(f"{what} is not an integer: {v!r}")
    return v


def _choice(year: RuleYear, name: str, allowed: tuple[str, ...]) -> str:
    value = str(year.option(name).value)
    if value not in allowed:
        raise NotCompilable(f"option {name}={value!r}")
    return value


def _applies(year: RuleYear, name: str, program: Program | None) -> bool:
    """As ``common.requirement``: a list names programs (none when asked without one)."""
    value = year.rule_global(name).value
    if isinstance(value, list | tuple):
        return program is not None and str(program) in {str(v) for v in value}
    return bool(value)


def compile_year(year_id: int, year: RuleYear) -> tuple[list[CodeRow], YearRow, list[RequirementRow]]:
    """The code, option and requirement rows of one rule-year (``NotCompilable`` if it cannot)."""
    try:
        return _compile(year_id, year)
    except MissingParameter as exc:
        raise NotCompilable(str(exc)) from None


def _compile(year_id: int, year: RuleYear) -> tuple[list[CodeRow], YearRow, list[RequirementRow]]:
    rows: list[CodeRow] = []
    for program in PROGRAMS:
        for rule in sorted(year.codes_for(program), key=lambda r: r.code):
            if rule.family not in FAMILIES:
                raise NotCompilable(f"{rule.code}: family {rule.family}")
            code = rule.code
            base = year.base_of(code) if year.is_add_on(code) else None
            base_min = first = step = None
            if base is not None:
                base_min = _int(year.code(base).value("min_minutes"), f"{base} min_minutes")
                step = _int(rule.value("step_minutes"), f"{code} step_minutes")
                assert base_min is not None and step is not None
                first = base_min + step
                if "min_minutes" in rule.params:
                    first = max(first, _int(rule.value("min_minutes"), f"{code} min_minutes") or 0)
            timed = rule.family in ("treatment_management", "data_interpretation", "care_management")
            care = rule.family == "care_management"
            lane = str(year.code(base or code).value("lane")) if care else None
            requires = (
                bool(rule.get("requires_interactive")) if "requires_interactive" in rule.params else False
            )
            rows.append(
                CodeRow(
                    year=year_id,
                    program=str(program),
                    family=rule.family,
                    code=code,
                    min_days=_int(rule.value("min_days"), f"{code} min_days") if not timed else None,
                    max_days=_int(rule.get("max_days"), f"{code} max_days", True) if not timed else None,
                    max_units=_int(rule.value("max_units"), f"{code} max_units", base is not None),
                    amount=rule.amount,
                    min_minutes=(
                        _int(rule.value("min_minutes"), f"{code} min_minutes") if timed and not base else None
                    ),
                    max_minutes=(
                        _int(rule.get("max_minutes"), f"{code} max_minutes", True)
                        if timed and not base
                        else None
                    ),
                    step_minutes=step,
                    base_code=base,
                    base_min=base_min,
                    first_minutes=first,
                    rtm_kind=None if rule.get("rtm_kind") is None else str(rule.get("rtm_kind")),
                    performers=strings(rule.get("performers")) if timed else (),
                    requires_interactive=requires,
                    modalities=strings(rule.value("interactive_modalities")) if requires else (),
                    lane=lane,
                    min_conditions=(
                        _int(rule.value("min_chronic_conditions"), f"{code} min_chronic_conditions")
                        if care and "min_chronic_conditions" in rule.params
                        else None
                    ),
                    complexity=(
                        str(rule.value("requires_complexity"))
                        if care and rule.has("requires_complexity")
                        else None
                    ),
                )
            )
    employed = year.options.get("staff_minutes_employed_only")
    visit = year.options.get("initiating_visit_required")
    rtm_est = year.options.get("rtm_requires_established_patient")
    yrow = YearRow(
        year=year_id,
        device_dos=_choice(year, "device_dos", ("period_end", "threshold_day")),
        setup_dos=_choice(year, "setup_dos", ("with_device_period", "setup_date")),
        time_dos=_choice(year, "time_dos", ("month_end", "threshold_day")),
        established_missing_fails=_choice(
            year, "established_patient_when_missing", ("assume_established", "assume_not")
        )
        == "assume_not",
        visit_required=visit is not None and visit.value is True,
        employed_only=employed is not None and employed.value is True,
        coverage=bool(year.coverage),
        allocate_unassigned=bool(year.option("allocate_unassigned_time").value),
        lane_order=strings(year.option("ccm_lane_order").value),
    )
    reqs = [
        RequirementRow(
            year=year_id,
            program=str(program),
            consent=_applies(year, "consent", program),
            billing_practitioner=_applies(year, "billing_practitioner", None),
            established=_applies(year, "established_patient", program)
            or (program is Program.RTM and rtm_est is not None and rtm_est.value is True),
        )
        for program in PROGRAMS
    ]
    # Touch the globals the engine reads for every decision, so a gap fails here too.
    year.rule_global("enrollment_active")
    year.rule_global("time_counts_once")
    return rows, yrow, reqs

"""What a rule file may say, and the check of one file against it.

This module is the executable form of docs/rules-format.md: the closed vocabularies
(families, programs, period kinds, performers, options, parameter names and their
types) and :class:`FileChecker`, which walks one composed YAML document and returns a
:class:`RuleFile` plus every problem it saw. It never stops at the first problem: a
rule author fixing a file wants the whole list in one pass.

Checks that need more than one file (overlapping spans, overlays, references into a
base year) live in :mod:`caretally.rules.loader`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import yaml

from caretally.errors import Problem
from caretally.model import CREDENTIAL_CLASS, Modality, PerformerClass, PeriodKind, Program, RtmKind
from caretally.rules.loader_yaml import (
    TAG_BOOL,
    TAG_FLOAT,
    TAG_INT,
    TAG_STR,
    TAG_TIMESTAMP,
    Entry,
    entries,
    is_null,
    kind_of,
    line_of,
)
from caretally.rules.params import CREDENTIAL_OF, MODIFIER_WHEN

# --------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------

FAMILIES = (
    "setup",
    "device_supply",
    "treatment_management",
    "data_interpretation",
    "care_management",
    "apcm",
    "behavioral_health",
)

#: Sentinel for "the node was wrong; a problem has been recorded".
BAD: Any = object()

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PLAIN_INT = re.compile(r"^-?\d+$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
MONEY = re.compile(r"^\d+\.\d{2}$")
CODE = re.compile(r"^[0-9A-Z]\d{3}[0-9A-Z]$")
IDENT = re.compile(r"^[a-z][a-z0-9_]*$")
SOURCE_KEY = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

RVU_PARTS = ("work", "pe_nonfacility", "mp", "total")


@dataclass(frozen=True, slots=True)
class Cited:
    """One checked value with the citation keys and the line it was written on.

    ``option`` is set for ``{option: name}`` parameters, whose value is filled in only
    when the rule-year is assembled (the option may come from another layer).
    """

    name: str
    value: Any
    cite: tuple[str, ...]
    line: int
    option: str | None = None
    doc: str | None = None


@dataclass(slots=True)
class CodeSpec:
    code: str
    line: int
    family: str | None = None
    program: Program | None = None
    descriptor: str | None = None
    period: PeriodKind | None = None
    cite: tuple[str, ...] = ()
    params: dict[str, Cited] = field(default_factory=dict)
    #: Only parameters of a code defined elsewhere (an overlay, an imported layer, or a
    #: year that extends another changing an inherited code).
    change: bool = False


@dataclass(frozen=True, slots=True)
class ModifierSpec:
    """One checked ``modifiers:`` rule (see :class:`caretally.rules.params.ModifierRule`)."""

    name: str
    line: int
    programs: tuple[Program, ...]
    codes: tuple[str, ...] | None
    codes_line: int
    credential_of: tuple[str, ...]
    add: MappingProxyType[str, tuple[str, ...]]
    cite: tuple[str, ...]
    doc: str | None
    when: str = "any_part"


@dataclass(frozen=True, slots=True)
class CoverageSpec:
    """One checked ``coverage:`` rule of a payer overlay (see ``params.CoverageRule``)."""

    name: str
    line: int
    programs: tuple[Program, ...]
    codes: tuple[str, ...] | None
    codes_line: int
    diagnoses: Cited | None
    prior_authorization: Cited | None
    max_units_per_year: Cited | None
    doc: str | None


@dataclass(slots=True)
class RuleFile:
    """One checked rule file: a Medicare-style base year or a payer overlay.

    ``file`` is how problems name it; ``source_name`` is how ``Param.source`` names it
    (stable across machines, e.g. ``medicare/2026.yaml``); ``layer`` is the evidence
    label (``medicare/2026`` or ``payers/example-commercial``).
    """

    file: str
    source_name: str
    layer: str
    data: bytes
    ruleset: str | None = None
    ruleset_line: int = 1
    year: int | None = None
    year_line: int = 1
    base: str | None = None
    base_line: int = 1
    effective_from: date | None = None
    effective_to: date | None = None
    from_line: int = 1
    sources: dict[str, str] = field(default_factory=dict)
    globals: dict[str, Cited] = field(default_factory=dict)
    options: dict[str, Cited] = field(default_factory=dict)
    concurrency: dict[str, list[Cited]] = field(default_factory=dict)
    codes: dict[str, CodeSpec] = field(default_factory=dict)
    modifiers: dict[str, ModifierSpec] = field(default_factory=dict)
    remove_codes: Cited | None = None
    overlay: bool = False
    #: ``final`` or ``proposed`` (a year built from a proposed rule: every decision it
    #: judges is flagged provisional); ``status_cite`` names the sources of the proposal.
    status: str = "final"
    status_line: int = 1
    status_cite: tuple[str, ...] = ()
    #: A base year written as "that year plus these differences" (``extends: 2026``).
    extends: int | None = None
    extends_line: int = 1
    #: In a year that extends another: amounts not written in this file are its inherited
    #: total RVU × its own conversion factor (``{value: true, cite, doc}``).
    amounts_from_rvu: Cited | None = None
    #: An imported layer (``caretally rules import-rvu``): amounts and RVUs from a CMS file.
    imported: bool = False
    layer_kind: str | None = None
    release: str | None = None
    title: str | None = None
    imported_from: dict[str, str] = field(default_factory=dict)
    #: Citations of a year that extends another which name a source of the year below:
    #: (key, line, field), checked once the sources are stacked.
    deferred_cites: list[tuple[str, int, str]] = field(default_factory=list)
    diagnosis_sets: dict[str, Cited] = field(default_factory=dict)
    coverage: dict[str, CoverageSpec] = field(default_factory=dict)

    @property
    def spans(self) -> bool:
        return self.effective_from is not None and self.effective_to is not None

    @property
    def is_diff(self) -> bool:
        """A base year declared as another year plus differences."""
        return self.extends is not None and not self.overlay and not self.imported


# --------------------------------------------------------------------------------------
# Value types: each a function (checker, node, field) -> value or BAD
# --------------------------------------------------------------------------------------

Validator = Callable[["FileChecker", yaml.Node, str], Any]


def v_int(minimum: int = 0) -> Validator:
    def check(c: FileChecker, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != TAG_INT or not PLAIN_INT.match(node.value):
            return c.bad(node, where, "wrong_type", f"expected a whole number, got {kind_of(node)}")
        value = int(node.value)
        if value < minimum:
            return c.bad(node, where, "bad_value", f"must be at least {minimum}, got {value}")
        return value

    return check


def v_bool(c: FileChecker, node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode) or node.tag != TAG_BOOL or node.value not in ("true", "false"):
        return c.bad(node, where, "wrong_type", f"expected true or false, got {kind_of(node)} {_raw(node)}")
    return node.value == "true"


def v_decimal(pattern: re.Pattern[str], what: str) -> Validator:
    def check(c: FileChecker, node: yaml.Node, where: str) -> Any:
        if isinstance(node, yaml.ScalarNode) and node.tag == TAG_FLOAT:
            return c.bad(
                node,
                where,
                "float_not_decimal",
                f'{what} written as a float literal {node.value}; quote it ("...")',
            )
        if not isinstance(node, yaml.ScalarNode) or node.tag != TAG_STR:
            return c.bad(
                node, where, "wrong_type", f"expected {what} as a quoted decimal, got {kind_of(node)}"
            )
        if not pattern.match(node.value):
            return c.bad(
                node, where, "wrong_type", f"'{node.value}' is not {what} (e.g. \"{_example(pattern)}\")"
            )
        return Decimal(node.value)

    return check


def _example(pattern: re.Pattern[str]) -> str:
    return "47.43" if pattern is MONEY else "33.4009"


v_money = v_decimal(MONEY, "an amount in dollars and cents")
v_number = v_decimal(DECIMAL, "a decimal number")


def v_text(c: FileChecker, node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.ScalarNode) or node.tag != TAG_STR or not node.value.strip():
        return c.bad(node, where, "wrong_type", f"expected non-empty text, got {kind_of(node)}")
    return node.value


def v_ident(c: FileChecker, node: yaml.Node, where: str) -> Any:
    value = v_text(c, node, where)
    if value is not BAD and not IDENT.match(value):
        return c.bad(node, where, "bad_value", f"'{value}' must be lower_snake_case")
    return value


def v_choice(enum: type[StrEnum] | tuple[str, ...], code: str, what: str) -> Validator:
    allowed = tuple(e.value for e in enum) if isinstance(enum, type) else enum

    def check(c: FileChecker, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag != TAG_STR:
            return c.bad(node, where, "wrong_type", f"expected {what} as text, got {kind_of(node)}")
        if node.value not in allowed:
            return c.bad(node, where, code, f"unknown {what} '{node.value}'; one of: {', '.join(allowed)}")
        return enum(node.value) if isinstance(enum, type) else node.value

    return check


def v_code(c: FileChecker, node: yaml.Node, where: str) -> Any:
    if isinstance(node, yaml.ScalarNode) and node.tag == TAG_INT:
        return c.bad(
            node, where, "wrong_type", f'code {node.value} is read as a number; quote it ("{node.value}")'
        )
    value = v_text(c, node, where)
    if value is not BAD and not CODE.match(value):
        return c.bad(node, where, "bad_value", f"'{value}' is not a CPT/HCPCS code")
    return value


def v_list(item: Validator, *, non_empty: bool = False, unique: bool = True) -> Validator:
    def check(c: FileChecker, node: yaml.Node, where: str) -> Any:
        if not isinstance(node, yaml.SequenceNode):
            return c.bad(node, where, "wrong_type", f"expected a list, got {kind_of(node)}")
        values = [item(c, n, where) for n in node.value]
        if any(v is BAD for v in values):
            return BAD
        if non_empty and not values:
            return c.bad(node, where, "bad_value", "the list may not be empty")
        if unique and len(set(values)) != len(values):
            return c.bad(node, where, "bad_value", "the list repeats an item")
        return tuple(values)

    return check


def v_nullable(inner: Validator) -> Validator:
    def check(c: FileChecker, node: yaml.Node, where: str) -> Any:
        return None if is_null(node) else inner(c, node, where)

    return check


def v_rvu(c: FileChecker, node: yaml.Node, where: str) -> Any:
    if not isinstance(node, yaml.MappingNode):
        return c.bad(
            node, where, "wrong_type", f"expected a mapping of {', '.join(RVU_PARTS)}, got {kind_of(node)}"
        )
    out: dict[str, Decimal] = {}
    ok = True
    for e in entries(node, c.file, where, c.problems):
        if e.name not in RVU_PARTS:
            c.problem(
                e.line,
                f"{where}.{e.name}",
                "unknown_key",
                f"unknown RVU part '{e.name}'; one of: {', '.join(RVU_PARTS)}",
            )
            ok = False
            continue
        value = v_number(c, e.value, f"{where}.{e.name}")
        ok = ok and value is not BAD
        out[e.name] = value
    if ok and not out:
        return c.bad(node, where, "bad_value", "name at least one RVU part")
    return MappingProxyType(out) if ok else BAD


def v_code_or_codes(c: FileChecker, node: yaml.Node, where: str) -> Any:
    """One code, or a list of codes (an add-on billed with any of several bases)."""
    if isinstance(node, yaml.SequenceNode):
        value = v_list(v_code, non_empty=True)(c, node, where)
        if value is not BAD and len(value) == 1:
            return value[0]
        return value
    return v_code(c, node, where)


def v_icd10_prefix(c: FileChecker, node: yaml.Node, where: str) -> Any:
    value = v_text(c, node, where)
    if value is not BAD and not ICD10_PREFIX.match(value):
        return c.bad(node, where, "bad_value", f"'{value}' is not an ICD-10-CM code or prefix (e.g. I50)")
    return value


def v_code_counts(c: FileChecker, node: yaml.Node, where: str) -> Any:
    """``{"99454": 12, …}``: a count per code."""
    if not isinstance(node, yaml.MappingNode):
        return c.bad(node, where, "wrong_type", f"expected a mapping of code to count, got {kind_of(node)}")
    out: dict[str, int] = {}
    ok = True
    for e in entries(node, c.file, where, c.problems):
        if not CODE.match(e.name):
            c.problem(e.line, f"{where}.{e.name}", "bad_value", f"'{e.name}' is not a CPT/HCPCS code")
            ok = False
            continue
        n = v_int(0)(c, e.value, f"{where}.{e.name}")
        ok = ok and n is not BAD
        out[e.name] = n
    if ok and not out:
        return c.bad(node, where, "bad_value", "name at least one code")
    return MappingProxyType(out) if ok else BAD


def v_pair_of_programs(c: FileChecker, node: yaml.Node, where: str) -> Any:
    value = v_list(v_choice(Program, "unknown_program", "program"), non_empty=True)(c, node, where)
    if value is not BAD and len(value) != 2:
        return c.bad(node, where, "bad_value", f"expected two programs, got {len(value)}")
    return value


PERFORMERS = v_list(v_choice(PerformerClass, "unknown_performer", "performer"), non_empty=True)
PROGRAMS = v_list(v_choice(Program, "unknown_program", "program"), non_empty=True)
MODALITIES = v_list(v_choice(Modality, "bad_value", "modality"), non_empty=True)

#: Parameter name → validator. The family table below says which a code may carry.
PARAMS: dict[str, Validator] = {
    "min_days": v_int(0),
    "max_days": v_nullable(v_int(1)),
    "min_minutes": v_int(1),
    "max_minutes": v_nullable(v_int(1)),
    "step_minutes": v_int(1),
    "max_units": v_nullable(v_int(1)),
    "add_on_to": v_nullable(v_code_or_codes),
    "exclusive_with": v_list(v_code),
    "requires_interactive": v_bool,
    "interactive_modalities": MODALITIES,
    "performers": PERFORMERS,
    "amount": v_nullable(v_money),
    "rvu": v_nullable(v_rvu),
    "rtm_kind": v_choice(RtmKind, "bad_value", "RTM device kind"),
    "lane": v_ident,
    "requires_complexity": v_nullable(v_choice(("complex",), "bad_value", "complexity")),
    "min_chronic_conditions": v_int(0),
    "max_chronic_conditions": v_int(0),
    "requires_qmb": v_bool,
    "episode_month": v_choice(("first", "later"), "bad_value", "episode month"),
    "full_minutes": v_int(1),
    "min_step_minutes": v_int(1),
    "with_base": v_list(v_code, non_empty=True),
}

_COMMON = {"max_units", "performers", "exclusive_with", "amount", "rvu"}
#: Device and set-up codes are judged on days of data, not on anyone's minutes: a
#: ``performers`` list there would change nothing, so it is not accepted.
_DEVICE_COMMON = _COMMON - {"performers"}


@dataclass(frozen=True, slots=True)
class FamilyParams:
    """Which parameters a family reads, for its base codes and for its add-ons.

    An add-on is judged on its base's pool of minutes and is billed or excluded together
    with its base, so every value the base decides for both (whose minutes count, the
    interactive call, the exclusions, the lane) is refused on the add-on: written there it
    would change nothing. Families without add-ons have an empty ``add_on`` set.
    """

    base: frozenset[str]
    add_on: frozenset[str]
    required_base: frozenset[str]
    required_add_on: frozenset[str]

    @property
    def allowed(self) -> frozenset[str]:
        return self.base | self.add_on


_ADD_ON_TIME = frozenset({"min_minutes", "add_on_to", "step_minutes", "max_units", "amount", "rvu"})

FAMILY_PARAMS: dict[str, FamilyParams] = {
    "setup": FamilyParams(
        frozenset({"min_days", *_DEVICE_COMMON}),
        frozenset(),
        frozenset({"min_days", "max_units", "amount"}),
        frozenset(),
    ),
    "device_supply": FamilyParams(
        frozenset({"min_days", "max_days", "rtm_kind", *_DEVICE_COMMON}),
        frozenset(),
        frozenset({"min_days", "max_days", "max_units", "exclusive_with", "amount"}),
        frozenset(),
    ),
    "treatment_management": FamilyParams(
        frozenset(
            {
                "min_minutes",
                "max_minutes",
                "add_on_to",
                "requires_interactive",
                "interactive_modalities",
                *_COMMON,
            }
        ),
        _ADD_ON_TIME,
        frozenset(
            {
                "min_minutes",
                "max_minutes",
                "max_units",
                "requires_interactive",
                "performers",
                "exclusive_with",
                "amount",
            }
        ),
        frozenset({"min_minutes", "add_on_to", "step_minutes", "max_units", "amount"}),
    ),
    "data_interpretation": FamilyParams(
        frozenset({"min_minutes", *_COMMON}),
        frozenset(),
        frozenset({"min_minutes", "max_units", "performers", "exclusive_with", "amount"}),
        frozenset(),
    ),
    "care_management": FamilyParams(
        frozenset(
            {"lane", "min_minutes", "add_on_to", "requires_complexity", "min_chronic_conditions", *_COMMON}
        ),
        _ADD_ON_TIME | {"requires_complexity", "min_chronic_conditions"},
        frozenset(
            {
                "lane",
                "min_minutes",
                "max_units",
                "performers",
                "requires_complexity",
                "min_chronic_conditions",
                "exclusive_with",
                "amount",
            }
        ),
        frozenset(
            {
                "min_minutes",
                "add_on_to",
                "step_minutes",
                "max_units",
                "requires_complexity",
                "min_chronic_conditions",
                "amount",
            }
        ),
    ),
}

FAMILY_PARAMS["apcm"] = FamilyParams(
    frozenset({"min_chronic_conditions", "max_chronic_conditions", "requires_qmb", *_DEVICE_COMMON}),
    frozenset(),
    frozenset({"max_units", "exclusive_with", "amount"}),
    frozenset(),
)
FAMILY_PARAMS["behavioral_health"] = FamilyParams(
    frozenset({"min_minutes", "full_minutes", "episode_month", "with_base", *_COMMON}),
    frozenset({"add_on_to", "step_minutes", "min_step_minutes", "max_units", "amount", "rvu"}),
    frozenset({"min_minutes", "max_units", "performers", "amount"}),
    frozenset({"add_on_to", "step_minutes", "min_step_minutes", "max_units", "amount"}),
)

#: Why a base code's value decides for its add-ons (the loader's message when an add-on
#: carries one of these).
ADD_ON_USES_BASE = {
    "performers": "the add-on counts its base's pool of minutes, so the base's performers apply",
    "requires_interactive": "the call that qualifies the base covers its add-ons, so the base's rule applies",
    "interactive_modalities": "the call that qualifies the base covers its add-ons, so the base's "
    "modalities apply",
    "max_minutes": "an add-on has no ceiling of its own: its units stop at max_units",
    "exclusive_with": "an add-on is billed or excluded together with its base, so the base's "
    "exclusive_with applies",
    "lane": "an add-on belongs to its base's lane",
}


def unread_reason(family: str, add_on: str | None, name: str) -> str | None:
    """Why ``name`` would be an unread value on this code, or None when the family reads it.

    ``add_on`` is the code's ``add_on_to`` (None for a base code).
    """
    spec = FAMILY_PARAMS[family]
    if add_on is not None:
        if name in spec.add_on:
            return None
        why = ADD_ON_USES_BASE.get(name, "the family does not read it on an add-on")
        return f"an add-on to {add_on} does not read '{name}': {why}"
    if name in spec.base:
        return None
    if name == "step_minutes":
        return "a base code does not read 'step_minutes': only add-ons add units in steps"
    return f"a base code of family {family} does not read '{name}'"


#: A list of programs a structural rule applies to; may be empty (an overlay waiving it).
PROGRAM_LIST = v_list(v_choice(Program, "unknown_program", "program"))

#: family → the period kind its codes are judged over; any other ``period:`` is refused,
#: so the value is checked rather than silently ignored.
FAMILY_PERIOD: dict[str, PeriodKind] = {
    "setup": PeriodKind.EPISODE,
    "device_supply": PeriodKind.THIRTY_DAY,
    "data_interpretation": PeriodKind.THIRTY_DAY,
    "treatment_management": PeriodKind.CALENDAR_MONTH,
    "care_management": PeriodKind.CALENDAR_MONTH,
    "apcm": PeriodKind.CALENDAR_MONTH,
    "behavioral_health": PeriodKind.CALENDAR_MONTH,
}

#: Option name → validator. Every base rule-year defines all of them, except the
#: :data:`OPTIONAL_OPTIONS`, which exist only from the year that introduces them.
OPTIONS: dict[str, Validator] = {
    "setup_min_days": v_int(0),
    "rpm_addon_max_units": v_nullable(v_int(1)),
    "rtm_addon_max_units": v_nullable(v_int(1)),
    "interactive_modalities": MODALITIES,
    "device_dos": v_choice(("period_end", "threshold_day"), "bad_value", "device_dos choice"),
    "device_period_anchor": v_choice(("enrollment_start", "first_reading"), "bad_value", "anchor"),
    "time_dos": v_choice(("month_end", "threshold_day"), "bad_value", "time_dos choice"),
    "setup_dos": v_choice(("with_device_period", "setup_date"), "bad_value", "setup_dos choice"),
    "rtm_multiple_kinds": v_choice(("highest_paying", "most_days"), "bad_value", "rtm_multiple_kinds choice"),
    "ccm_pcm_different_practitioners": v_choice(("allowed", "blocked"), "bad_value", "choice"),
    "apcm_bundle_different_practitioners": v_choice(("allowed", "blocked"), "bad_value", "choice"),
    "bhi_cocm_different_practitioners": v_choice(("allowed", "blocked"), "bad_value", "choice"),
    "allocate_unassigned_time": v_bool,
    "device_period_days": v_int(1),
    "ccm_lane_order": v_list(v_ident, non_empty=True),
    "established_patient_when_missing": v_choice(("assume_established", "assume_not"), "bad_value", "choice"),
    # CY2027 proposals (CMS-1848-P), off until final: RPM/RTM need an initiating visit on
    # file; RTM needs an established patient; RPM/RTM clinical-staff minutes count only
    # from staff the practice employs.
    "initiating_visit_required": v_bool,
    "rtm_requires_established_patient": v_bool,
    "staff_minutes_employed_only": v_bool,
    # Where the initiating visit comes from: the enrollment's initiating_visit_date
    # (attested) or a visit in visits.csv with an initiating code (from_visits).
    "initiating_visit_source": v_choice(("attested", "from_visits"), "bad_value", "choice"),
}

#: Options a year may leave out: the rule they name did not exist before that year, and
#: a year without the option behaves as if it were false.
OPTIONAL_OPTIONS = frozenset(
    {
        "initiating_visit_required",
        "rtm_requires_established_patient",
        "staff_minutes_employed_only",
        "initiating_visit_source",  # missing = attested
    }
)

#: Values of the top-level ``status`` of a base rule-year.
STATUSES = ("final", "proposed")

#: Options that were renamed or moved, and where their meaning lives now.
MOVED_OPTIONS = {
    "rtm_count_manual_readings": "the global 'manual_readings_count' (the programs whose "
    "patient-reported readings count as data days)",
}

#: Global name → (validator, required in a base year). The requirement globals carry
#: only a citation for a structural rule the engine checks (consent, orders …).
GLOBALS: dict[str, tuple[Validator, bool]] = {
    "conversion_factor": (v_number, True),
    "conversion_factor_qp": (v_number, False),
    # Structural rules, each the list of programs it applies to (an overlay may shorten it):
    "consent": (PROGRAM_LIST, True),
    "established_patient": (PROGRAM_LIST, True),
    "order": (PROGRAM_LIST, True),
    "initiating_visit": (PROGRAM_LIST, True),
    # Rules whose value is the rule itself; cited so every reason that applies them is.
    "enrollment_active": (v_bool, True),
    "billing_practitioner": (v_bool, True),
    "time_counts_once": (v_bool, True),
    # The programs whose patient-reported (manual) readings count as days of data.
    "manual_readings_count": (PROGRAM_LIST, True),
    # Visits (visits.csv, issue 14): which codes are an E/M visit, which an initiating
    # visit (E/M, AWV, IPPE) and how far before the episode it may lie; the codes whose
    # time logged on the day of an E/M by the same practitioner does not count (99091);
    # and whether a service dated after the patient's death is refused.
    "em_visit_codes": (v_list(v_code, non_empty=True), False),
    "initiating_visit_codes": (v_list(v_code, non_empty=True), False),
    "initiating_visit_lookback_days": (v_int(0), False),
    "em_same_day_excludes": (v_list(v_code), False),
    "no_service_after_death": (v_bool, False),
}

#: Option → the code parameters it may stand in for (``{option: name}``).
OPTION_PARAMS: dict[str, frozenset[str]] = {
    "setup_min_days": frozenset({"min_days"}),
    "rpm_addon_max_units": frozenset({"max_units"}),
    "rtm_addon_max_units": frozenset({"max_units"}),
    "interactive_modalities": frozenset({"interactive_modalities"}),
}

CONCURRENCY = ("never_together", "not_same_practitioner", "one_practitioner")
#: Options a ``not_same_practitioner`` pair may name for *different* practitioners.
DIFFERENT_PRACTITIONER_OPTIONS = (
    "ccm_pcm_different_practitioners",
    "apcm_bundle_different_practitioners",
    "bhi_cocm_different_practitioners",
)

BASE_KEYS = {
    "ruleset": True,
    "year": True,
    "effective_from": True,
    "effective_to": True,
    "sources": True,
    "globals": True,
    "options": True,
    "concurrency": False,
    "modifiers": True,
    "codes": True,
    "doc": False,
    "status": False,
    "status_cite": False,
    "extends": False,
    "amounts_from_rvu": False,
    "remove_codes": False,
}
#: A year that ``extends`` another needs only what makes it a year and what it changes.
DIFF_KEYS = {
    **{k: False for k in BASE_KEYS},
    "ruleset": True,
    "year": True,
    "effective_from": True,
    "effective_to": True,
    "sources": True,
    "extends": True,
}
#: An imported layer: amounts and RVU parts from a CMS file, written by ``rules import-rvu``.
IMPORT_KEYS = {
    "layer": True,
    "ruleset": True,
    "year": True,
    "release": True,
    "title": True,
    "imported_from": True,
    "sources": True,
    "codes": True,
    "doc": False,
}
#: Kinds of imported layer, and the code parameters each may set.
IMPORT_LAYERS: dict[str, frozenset[str]] = {"pprrvu": frozenset({"amount", "rvu"})}
OVERLAY_KEYS = {
    "ruleset": True,
    "base": True,
    "effective_from": True,
    "effective_to": True,
    "sources": True,
    "globals": False,
    "options": False,
    "modifiers": False,
    "codes": False,
    "remove_codes": False,
    "diagnosis_sets": False,
    "coverage": False,
    "doc": False,
}
CODE_KEYS = {"family", "program", "descriptor", "period", "cite", "params", "doc"}
#: Keys of one ``coverage:`` rule of an overlay → required. At least one of diagnoses,
#: prior_authorization and max_units_per_year must be given.
COVERAGE_KEYS = {
    "programs": True,
    "codes": True,
    "diagnoses": False,
    "prior_authorization": False,
    "max_units_per_year": False,
    "doc": False,
}
COVERAGE_LIMITS = ("diagnoses", "prior_authorization", "max_units_per_year")
#: An ICD-10-CM code or the start of one (a category at least): I50, I11.0, O13.
ICD10_PREFIX = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")
#: Keys of one ``modifiers:`` rule → required.
MODIFIER_KEYS = {
    "programs": True,
    "codes": True,
    "credential_of": True,
    "add": True,
    "when": False,
    "cite": True,
    "doc": False,
}
MODIFIER_CODE = re.compile(r"^[A-Z0-9]{2}$")
CREDENTIALS = v_list(v_choice(tuple(CREDENTIAL_CLASS), "unknown_credential", "credential"), non_empty=True)
PEOPLE = v_list(v_choice(CREDENTIAL_OF, "bad_value", "person (whose credential decides)"), non_empty=True)
OVERLAY_CODE_KEYS = {"params", "doc"}


def _raw(node: yaml.Node) -> str:
    return f"'{node.value}'" if isinstance(node, yaml.ScalarNode) else ""


# --------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------


class FileChecker:
    """Checks one composed document; collects problems instead of raising."""

    def __init__(self, file: str, source_name: str, layer: str, data: bytes) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.out = RuleFile(file=file, source_name=source_name, layer=layer, data=data)
        self._seen: dict[str, set[str]] = {"globals": set(), "options": set()}
        self._lines: dict[str, int] = {}
        self._diff = False

    # -- reporting ---------------------------------------------------------------------

    def problem(self, line: int | None, where: str | None, code: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, where or None, code, message))

    def bad(self, node: yaml.Node, where: str, code: str, message: str) -> Any:
        self.problem(line_of(node), where, code, message)
        return BAD

    def mapping(self, node: yaml.Node, where: str) -> list[Entry] | None:
        if not isinstance(node, yaml.MappingNode):
            self.bad(node, where, "wrong_type", f"expected a mapping, got {kind_of(node)}")
            return None
        return list(entries(node, self.file, where, self.problems))

    # -- the file ----------------------------------------------------------------------

    def check(self, root: yaml.Node) -> RuleFile:
        top = self.mapping(root, "")
        if top is None:
            return self.out
        by_name = {e.name: e for e in top}
        self._lines = {e.name: e.line for e in top}
        self.out.overlay = "base" in by_name
        self.out.imported = "layer" in by_name and not self.out.overlay
        diff = "extends" in by_name and not self.out.overlay and not self.out.imported
        self._diff = diff
        if self.out.overlay:
            allowed, kind = OVERLAY_KEYS, "an overlay"
        elif self.out.imported:
            allowed, kind = IMPORT_KEYS, "an imported layer"
        elif diff:
            allowed, kind = DIFF_KEYS, "a rule-year that extends another"
        else:
            allowed, kind = BASE_KEYS, "a base rule-year"
        for e in top:
            if e.name not in allowed:
                self.problem(
                    e.line,
                    e.name,
                    "unknown_key",
                    f"unknown key '{e.name}' in {kind}; allowed: {', '.join(allowed)}",
                )
        for name, required in allowed.items():
            if required and name not in by_name:
                self.problem(line_of(root), name, "missing_key", f"{kind} needs '{name}'")

        # Sources first: every citation below is checked against them.
        if (e := by_name.get("sources")) is not None:
            self._sources(e)
        if (e := by_name.get("ruleset")) is not None:
            value = v_ident_or_name(self, e.value, "ruleset")
            self.out.ruleset = None if value is BAD else value
            self.out.ruleset_line = e.line
        if (e := by_name.get("base")) is not None and self.out.overlay:
            value = v_ident_or_name(self, e.value, "base")
            self.out.base = None if value is BAD else value
            self.out.base_line = e.line
        if (e := by_name.get("year")) is not None and not self.out.overlay:
            value = v_int(1900)(self, e.value, "year")
            self.out.year = None if value is BAD else value
            self.out.year_line = e.line
        if self.out.imported:
            self._import_header(by_name)
        else:
            self._span(by_name)
        if not self.out.overlay and not self.out.imported:
            self._status(by_name)
        if (e := by_name.get("doc")) is not None:
            v_text(self, e.value, "doc")
        if (e := by_name.get("globals")) is not None:
            self._globals(e)
        if (e := by_name.get("options")) is not None:
            self._options(e)
        if (e := by_name.get("concurrency")) is not None and not self.out.overlay:
            self._concurrency(e)
        if (e := by_name.get("codes")) is not None:
            self._codes(e)
        if (e := by_name.get("modifiers")) is not None:
            self._modifiers(e)
        if (e := by_name.get("remove_codes")) is not None:
            if self.out.overlay or self.out.is_diff:
                self.out.remove_codes = self.cited(e, v_list(v_code, non_empty=True), "remove_codes")
            else:
                self.problem(
                    e.line,
                    "remove_codes",
                    "unread_value",
                    "only an overlay or a year that extends another removes codes; leave the code out",
                )
        if (e := by_name.get("diagnosis_sets")) is not None and self.out.overlay:
            self._diagnosis_sets(e)
        if (e := by_name.get("coverage")) is not None and self.out.overlay:
            self._coverage(e)
        if not self.out.overlay and not self.out.imported and not self.out.is_diff:
            self._base_completeness()
            self._references()
        return self.out

    def _status(self, by_name: dict[str, Entry]) -> None:
        """``status``, ``status_cite``, ``extends`` and ``amounts_from_rvu`` of a base year."""
        if (e := by_name.get("status")) is not None:
            value = v_choice(STATUSES, "bad_value", "status")(self, e.value, "status")
            if value is not BAD:
                self.out.status = value
            self.out.status_line = e.line
        if (e := by_name.get("status_cite")) is not None:
            self.out.status_cite = self.cites(e.value, "status_cite")
        if self.out.status == "proposed" and not self.out.status_cite:
            line = by_name["status"].line if "status" in by_name else None
            self.problem(
                line,
                "status_cite",
                "missing_citation",
                "a proposed rule-year names the proposal in 'status_cite' (source keys)",
            )
        if (e := by_name.get("extends")) is not None:
            value = v_int(1900)(self, e.value, "extends")
            if value is not BAD:
                if value == self.out.year:
                    self.problem(e.line, "extends", "bad_value", f"year {value} cannot extend itself")
                else:
                    self.out.extends = value
            self.out.extends_line = e.line
        if (e := by_name.get("amounts_from_rvu")) is not None:
            c = self.cited(e, v_bool, "amounts_from_rvu", need_doc=True)
            if "extends" not in by_name:
                self.problem(
                    e.line,
                    "amounts_from_rvu",
                    "unread_value",
                    "only a year that extends another derives amounts from the RVUs it inherits",
                )
            elif c is not None:
                self.out.amounts_from_rvu = c

    def _import_header(self, by_name: dict[str, Entry]) -> None:
        """What an imported layer says about itself: its kind, release, title and origin."""
        if (e := by_name.get("layer")) is not None:
            value = v_choice(tuple(IMPORT_LAYERS), "bad_value", "imported layer kind")(self, e.value, "layer")
            self.out.layer_kind = None if value is BAD else value
        for name in ("release", "title"):
            if (e := by_name.get(name)) is not None:
                value = v_text(self, e.value, name)
                setattr(self.out, name, None if value is BAD else value)
        if (e := by_name.get("imported_from")) is not None:
            for item in self.mapping(e.value, "imported_from") or []:
                text = v_text(self, item.value, f"imported_from.{item.name}")
                if text is not BAD:
                    self.out.imported_from[item.name] = text

    def _span(self, by_name: dict[str, Entry]) -> None:
        dates: dict[str, date | None] = {}
        for name in ("effective_from", "effective_to"):
            e = by_name.get(name)
            dates[name] = None if e is None else self._date(e.value, name)
        self.out.effective_from, self.out.effective_to = dates["effective_from"], dates["effective_to"]
        if (e := by_name.get("effective_from")) is not None:
            self.out.from_line = e.line
        start, end = self.out.effective_from, self.out.effective_to
        if start is not None and end is not None and end < start:
            self.problem(
                by_name["effective_to"].line,
                "effective_to",
                "bad_span",
                f"effective_to {end} is before effective_from {start}",
            )
        year = self.out.year
        if year is not None and start is not None and start.year != year:
            self.problem(
                by_name["year"].line, "year", "year_mismatch", f"year {year} but effective_from is {start}"
            )

    def _date(self, node: yaml.Node, where: str) -> date | None:
        raw = node.value if isinstance(node, yaml.ScalarNode) else None
        if raw is None or node.tag not in (TAG_TIMESTAMP, TAG_STR) or not ISO_DATE.match(raw):
            self.bad(
                node, where, "bad_date", f"expected an ISO date YYYY-MM-DD, got {kind_of(node)} {_raw(node)}"
            )
            return None
        try:
            return date.fromisoformat(raw)
        except ValueError:
            self.bad(node, where, "bad_date", f"'{raw}' is not a calendar date")
            return None

    def _sources(self, e: Entry) -> None:
        items = self.mapping(e.value, "sources")
        if items is None:
            return
        for item in items:
            where = f"sources.{item.name}"
            if not SOURCE_KEY.match(item.name):
                self.problem(
                    item.line,
                    where,
                    "bad_value",
                    "source keys are lower-case words joined by '-', '.' or '_'",
                )
            text = v_text(self, item.value, where)
            if text is not BAD:
                self.out.sources[item.name] = text
        if not items and not self.out.overlay:
            self.problem(e.line, "sources", "missing_key", "a rule-year needs at least one source")

    # -- cited values ------------------------------------------------------------------

    def cites(self, node: yaml.Node, where: str) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode) and node.tag == TAG_STR:
            keys: list[tuple[str, yaml.Node]] = [(node.value, node)]
        elif isinstance(node, yaml.SequenceNode):
            keys = []
            for n in node.value:
                if isinstance(n, yaml.ScalarNode) and n.tag == TAG_STR:
                    keys.append((n.value, n))
                else:
                    self.bad(n, where, "wrong_type", f"a citation names a source key, got {kind_of(n)}")
        else:
            self.bad(
                node,
                where,
                "wrong_type",
                f"'cite' must be a source key or a list of them, got {kind_of(node)}",
            )
            return ()
        if not keys and isinstance(node, yaml.SequenceNode) and not node.value:
            self.bad(node, where, "missing_citation", "'cite' is empty; name at least one source")
        out: list[str] = []
        for key, n in keys:
            if key not in self.out.sources and self._diff:
                # A year that extends another may cite the sources it inherits.
                self.out.deferred_cites.append((key, line_of(n), where))
                if key not in out:
                    out.append(key)
            elif key not in self.out.sources:
                self.bad(n, where, "unknown_source", f"cites '{key}', which is not in this file's sources")
            elif key not in out:
                out.append(key)
        return tuple(out)

    def cited(
        self,
        e: Entry,
        validator: Validator,
        where: str,
        *,
        allow_option: bool = False,
        need_doc: bool = False,
    ) -> Cited | None:
        """A ``{value, cite[, doc]}`` (or ``{option[, doc]}``) mapping; None when unusable."""
        if not isinstance(e.value, yaml.MappingNode):
            if isinstance(e.value, yaml.ScalarNode | yaml.SequenceNode):
                self.problem(
                    e.line,
                    where,
                    "missing_citation",
                    f"'{e.name}' has a bare value; write {{value: …, cite: …}}",
                )
            else:
                self.problem(e.line, where, "wrong_type", f"expected {{value, cite}}, got {kind_of(e.value)}")
            return None
        items = {i.name: i for i in entries(e.value, self.file, where, self.problems)}
        uses_option = "option" in items
        allowed = {"option", "doc"} if uses_option and allow_option else {"value", "cite", "doc"}
        for i in items.values():
            if i.name not in allowed:
                if i.name == "option" and not allow_option:
                    msg = "only code parameters may point at an option"
                elif uses_option:
                    msg = f"'{i.name}' cannot sit beside 'option' (the option carries value and citation)"
                else:
                    msg = f"unknown key '{i.name}'; allowed: value, cite, doc"
                self.problem(i.line, f"{where}.{i.name}", "unknown_key", msg)
        doc = None
        if "doc" in items:
            d = v_text(self, items["doc"].value, f"{where}.doc")
            doc = None if d is BAD else d
        elif need_doc:
            self.problem(e.line, where, "missing_doc", f"'{e.name}' needs a 'doc' saying why this default")
        if uses_option and allow_option:
            name = v_text(self, items["option"].value, f"{where}.option")
            if name is BAD:
                return None
            if name not in OPTIONS:
                self.problem(items["option"].line, where, "unknown_option", f"no option named '{name}'")
                return None
            return Cited(e.name, None, (), e.line, option=name, doc=doc)
        if "value" not in items:
            self.problem(e.line, where, "missing_key", f"'{e.name}' needs 'value' (use null for none)")
            return None
        if "cite" not in items:
            self.problem(e.line, where, "missing_citation", f"'{e.name}' has a value but no 'cite'")
            cite: tuple[str, ...] = ()
        else:
            cite = self.cites(items["cite"].value, f"{where}.cite")
        value = validator(self, items["value"].value, where)
        if value is BAD or not cite:
            return None
        return Cited(e.name, value, cite, e.line, doc=doc)

    # -- sections ----------------------------------------------------------------------

    def _globals(self, e: Entry) -> None:
        for item in self.mapping(e.value, "globals") or []:
            where = f"globals.{item.name}"
            self._seen["globals"].add(item.name)
            spec = GLOBALS.get(item.name)
            if spec is None:
                self.problem(
                    item.line,
                    where,
                    "unknown_key",
                    f"unknown global '{item.name}'; one of: {', '.join(GLOBALS)}",
                )
                continue
            c = self.cited(item, spec[0], where)
            if c is not None:
                self.out.globals[item.name] = c

    def _options(self, e: Entry) -> None:
        for item in self.mapping(e.value, "options") or []:
            where = f"options.{item.name}"
            self._seen["options"].add(item.name)
            validator = OPTIONS.get(item.name)
            if validator is None:
                moved = MOVED_OPTIONS.get(item.name)
                msg = (
                    f"option '{item.name}' is now {moved}"
                    if moved
                    else f"no option named '{item.name}'; one of: {', '.join(OPTIONS)}"
                )
                self.problem(item.line, where, "unknown_option", msg)
                continue
            c = self.cited(item, validator, where, need_doc=not self.out.overlay)
            if c is not None:
                self.out.options[item.name] = c

    def _concurrency(self, e: Entry) -> None:
        for item in self.mapping(e.value, "concurrency") or []:
            where = f"concurrency.{item.name}"
            if item.name not in CONCURRENCY:
                self.problem(
                    item.line,
                    where,
                    "unknown_key",
                    f"unknown concurrency rule '{item.name}'; one of: {', '.join(CONCURRENCY)}",
                )
                continue
            if not isinstance(item.value, yaml.SequenceNode):
                self.bad(
                    item.value,
                    where,
                    "wrong_type",
                    f"expected a list of {{value, cite}}, got {kind_of(item.value)}",
                )
                continue
            rules: list[Cited] = []
            # one_practitioner lists the programs the rule covers; the others name pairs.
            shape = PROGRAMS if item.name == "one_practitioner" else v_pair_of_programs
            for n in item.value.value:
                option, n = self._pair_option(item.name, n, where)
                c = self.cited(Entry(item.name, n, n), shape, where)
                if c is not None:
                    rules.append(Cited(c.name, c.value, c.cite, c.line, option=option, doc=c.doc))
            self.out.concurrency[item.name] = rules

    def _pair_option(self, name: str, node: yaml.Node, where: str) -> tuple[str | None, yaml.Node]:
        """A ``not_same_practitioner`` pair may name the option that rules on *different*
        practitioners (``option: ccm_pcm_different_practitioners``); the rest is ``{value, cite}``."""
        if name != "not_same_practitioner" or not isinstance(node, yaml.MappingNode):
            return None, node
        kept, option = [], None
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == "option":
                named = v_choice(DIFFERENT_PRACTITIONER_OPTIONS, "unknown_option", "option")(
                    self, value, f"{where}.option"
                )
                option = None if named is BAD else named
                continue
            kept.append((key, value))
        if len(kept) == len(node.value):
            return None, node
        return option, yaml.MappingNode(node.tag, kept, node.start_mark, node.end_mark, node.flow_style)

    # -- payer coverage policies (overlays only) -----------------------------------------

    def _diagnosis_sets(self, e: Entry) -> None:
        """Named lists of ICD-10-CM prefixes a coverage rule may cite by name."""
        for item in self.mapping(e.value, "diagnosis_sets") or []:
            where = f"diagnosis_sets.{item.name}"
            if not IDENT.match(item.name):
                self.problem(item.line, where, "bad_value", f"'{item.name}' must be lower_snake_case")
                continue
            c = self.cited(item, v_list(v_icd10_prefix, non_empty=True), where)
            if c is not None:
                self.out.diagnosis_sets[item.name] = c

    def _coverage(self, e: Entry) -> None:
        for item in self.mapping(e.value, "coverage") or []:
            where = f"coverage.{item.name}"
            if not IDENT.match(item.name):
                self.problem(item.line, where, "bad_value", f"'{item.name}' must be lower_snake_case")
                continue
            spec = self._coverage_rule(item, where)
            if spec is not None:
                self.out.coverage[item.name] = spec

    def _coverage_rule(self, item: Entry, where: str) -> CoverageSpec | None:
        """Programs and codes it governs; diagnoses, prior authorization, yearly unit caps."""
        fields = self.mapping(item.value, where)
        if fields is None:
            return None
        by = {f.name: f for f in fields}
        ok = True
        for f in fields:
            if f.name not in COVERAGE_KEYS:
                allowed = ", ".join(COVERAGE_KEYS)
                self.problem(
                    f.line, f"{where}.{f.name}", "unknown_key", f"unknown key '{f.name}'; allowed: {allowed}"
                )
                ok = False
        for name, required in COVERAGE_KEYS.items():
            if required and name not in by:
                self.problem(
                    item.line, f"{where}.{name}", "missing_key", f"coverage rule '{item.name}' needs '{name}'"
                )
                ok = False
        if not any(name in by for name in COVERAGE_LIMITS):
            self.problem(
                item.line,
                where,
                "missing_key",
                f"coverage rule '{item.name}' needs at least one of {', '.join(COVERAGE_LIMITS)}",
            )
            ok = False
        if not ok:
            return None
        programs = PROGRAM_LIST(self, by["programs"].value, f"{where}.programs")
        codes_node = by["codes"].value
        codes: Any
        if (
            isinstance(codes_node, yaml.ScalarNode)
            and codes_node.tag == TAG_STR
            and codes_node.value == "all"
        ):
            codes = None
        else:
            codes = v_list(v_code, non_empty=True)(self, codes_node, f"{where}.codes")
        diagnoses = prior = caps = None
        if "diagnoses" in by:
            diagnoses = self.cited(
                by["diagnoses"], v_list(self._diagnosis_item, non_empty=True), f"{where}.diagnoses"
            )
        if "prior_authorization" in by:
            prior = self.cited(by["prior_authorization"], v_bool, f"{where}.prior_authorization")
        if "max_units_per_year" in by:
            caps = self.cited(by["max_units_per_year"], v_code_counts, f"{where}.max_units_per_year")
        doc = None
        if "doc" in by:
            d = v_text(self, by["doc"].value, f"{where}.doc")
            doc = None if d is BAD else d
        limits = [x for x in (diagnoses, prior, caps) if x is not None]
        if (
            programs is BAD
            or codes is BAD
            or not limits
            or len(limits) < sum(n in by for n in COVERAGE_LIMITS)
        ):
            return None
        return CoverageSpec(
            item.name, item.line, programs, codes, by["codes"].line, diagnoses, prior, caps, doc
        )

    def _diagnosis_item(self, c: FileChecker, node: yaml.Node, where: str) -> Any:
        """An ICD-10-CM prefix (upper case: ``I50``) or the name of a ``diagnosis_sets`` entry."""
        value = v_text(c, node, where)
        if value is BAD:
            return BAD
        if IDENT.match(value):
            if value not in self.out.diagnosis_sets:
                return c.bad(node, where, "unknown_key", f"no diagnosis set named '{value}' in this file")
            return value
        if not ICD10_PREFIX.match(value):
            return c.bad(
                node,
                where,
                "bad_value",
                f"'{value}' is neither an ICD-10-CM prefix (e.g. I50) nor a set name",
            )
        return value

    def _modifiers(self, e: Entry) -> None:
        for item in self.mapping(e.value, "modifiers") or []:
            where = f"modifiers.{item.name}"
            if not IDENT.match(item.name):
                self.problem(item.line, where, "bad_value", f"'{item.name}' must be lower_snake_case")
                continue
            spec = self._modifier(item, where)
            if spec is not None:
                self.out.modifiers[item.name] = spec

    def _modifier(self, item: Entry, where: str) -> ModifierSpec | None:
        """One rule: which programs and codes, whose credential, which modifier for which."""
        fields = self.mapping(item.value, where)
        if fields is None:
            return None
        by = {f.name: f for f in fields}
        ok = True
        for f in fields:
            if f.name not in MODIFIER_KEYS:
                allowed = ", ".join(MODIFIER_KEYS)
                self.problem(
                    f.line, f"{where}.{f.name}", "unknown_key", f"unknown key '{f.name}'; allowed: {allowed}"
                )
                ok = False
        for name, required in MODIFIER_KEYS.items():
            if required and name not in by:
                code = "missing_citation" if name == "cite" else "missing_key"
                self.problem(
                    item.line, f"{where}.{name}", code, f"modifier rule '{item.name}' needs '{name}'"
                )
                ok = False
        doc = None
        if "doc" in by:
            d = v_text(self, by["doc"].value, f"{where}.doc")
            doc = None if d is BAD else d
        elif not self.out.overlay:
            self.problem(
                item.line,
                where,
                "missing_doc",
                f"modifier rule '{item.name}' needs a 'doc' saying when it applies",
            )
        if not ok:
            return None
        programs = PROGRAM_LIST(self, by["programs"].value, f"{where}.programs")
        codes_node = by["codes"].value
        codes: Any
        if (
            isinstance(codes_node, yaml.ScalarNode)
            and codes_node.tag == TAG_STR
            and codes_node.value == "all"
        ):
            codes = None
        elif isinstance(codes_node, yaml.SequenceNode):
            codes = v_list(v_code, non_empty=True)(self, codes_node, f"{where}.codes")
        else:
            codes = self.bad(
                codes_node,
                f"{where}.codes",
                "wrong_type",
                f"expected 'all' or a list of codes, got {kind_of(codes_node)}",
            )
        people = PEOPLE(self, by["credential_of"].value, f"{where}.credential_of")
        add = self._modifier_add(by["add"], f"{where}.add")
        cite = self.cites(by["cite"].value, f"{where}.cite")
        when: Any = "any_part"
        if "when" in by:
            when = v_choice(MODIFIER_WHEN, "bad_value", "'when' (whose minutes decide)")(
                self, by["when"].value, f"{where}.when"
            )
            if when is not BAD and "rendering" not in (people if people is not BAD else ()):
                self.problem(
                    by["when"].line,
                    f"{where}.when",
                    "unread_value",
                    "'when' says how the rendering practitioner is read; credential_of does not "
                    "name rendering",
                )
        if any(v is BAD for v in (programs, codes, people, add, when)) or not cite:
            return None
        return ModifierSpec(
            item.name, item.line, programs, codes, by["codes"].line, people, add, cite, doc, when
        )

    def _modifier_add(self, e: Entry, where: str) -> Any:
        """``{MODIFIER: [credential, …]}``; a credential may earn only one modifier of a rule."""
        items = self.mapping(e.value, where)
        if items is None:
            return BAD
        if not items:
            return self.bad(e.value, where, "bad_value", "name at least one modifier")
        out: dict[str, tuple[str, ...]] = {}
        owner: dict[str, str] = {}
        ok = True
        for i in items:
            if not MODIFIER_CODE.match(i.name):
                self.problem(
                    i.line, f"{where}.{i.name}", "bad_value", f"'{i.name}' is not a two-character modifier"
                )
                ok = False
                continue
            creds = CREDENTIALS(self, i.value, f"{where}.{i.name}")
            if creds is BAD:
                ok = False
                continue
            for c in creds:
                if c in owner:
                    self.problem(
                        i.line,
                        f"{where}.{i.name}",
                        "bad_value",
                        f"credential {c} is listed under both {owner[c]} and {i.name}",
                    )
                    ok = False
                owner.setdefault(c, i.name)
            out[i.name] = creds
        return MappingProxyType(out) if ok else BAD

    def _codes(self, e: Entry) -> None:
        for item in self.mapping(e.value, "codes") or []:
            where = f"codes.{item.name}"
            if not CODE.match(item.name):
                self.problem(item.line, where, "bad_value", f"'{item.name}' is not a CPT/HCPCS code")
                continue
            spec = self._code(item, where)
            if spec is not None:
                self.out.codes[item.name] = spec

    def _code(self, item: Entry, where: str) -> CodeSpec | None:
        fields = self.mapping(item.value, where)
        if fields is None:
            return None
        spec = CodeSpec(item.name, item.line)
        by_name = {f.name: f for f in fields}
        # A year that extends another either adds a code (written in full, with its
        # family) or changes parameters of an inherited one, as an overlay would.
        change = self.out.overlay or self.out.imported or (self.out.is_diff and "family" not in by_name)
        spec.change = change
        allowed = OVERLAY_CODE_KEYS if change else CODE_KEYS
        for f in fields:
            if f.name not in allowed:
                who = "an imported layer" if self.out.imported else "an overlay"
                if self.out.is_diff:
                    who = "a change to an inherited code"
                msg = (
                    f"{who} may only change 'params' of a code, not '{f.name}'"
                    if change and f.name in CODE_KEYS
                    else f"unknown key '{f.name}' in a code; allowed: {', '.join(sorted(allowed))}"
                )
                self.problem(f.line, f"{where}.{f.name}", "unknown_key", msg)
        if not change:
            for name in ("family", "program", "descriptor", "period", "params"):
                if name not in by_name:
                    self.problem(
                        item.line, f"{where}.{name}", "missing_key", f"code {item.name} needs '{name}'"
                    )
            if "cite" in by_name:
                spec.cite = self.cites(by_name["cite"].value, f"{where}.cite")
            else:
                self.problem(
                    item.line, f"{where}.cite", "missing_citation", f"code {item.name} has no 'cite'"
                )
            if (f := by_name.get("family")) is not None:
                value = v_choice(FAMILIES, "unknown_family", "family")(self, f.value, f"{where}.family")
                spec.family = None if value is BAD else value
            if (f := by_name.get("program")) is not None:
                value = v_choice(Program, "unknown_program", "program")(self, f.value, f"{where}.program")
                spec.program = None if value is BAD else value
            if (f := by_name.get("period")) is not None:
                value = v_choice(PeriodKind, "unknown_period", "period kind")(
                    self, f.value, f"{where}.period"
                )
                spec.period = None if value is BAD else value
                expected = FAMILY_PERIOD.get(spec.family or "")
                if spec.period is not None and expected is not None and spec.period != expected:
                    self.problem(
                        f.line,
                        f"{where}.period",
                        "period_not_in_family",
                        f"{spec.family} codes are judged per {expected.value}, not per {spec.period.value}",
                    )
            if (f := by_name.get("descriptor")) is not None:
                value = v_text(self, f.value, f"{where}.descriptor")
                spec.descriptor = None if value is BAD else value
        if (f := by_name.get("doc")) is not None:
            v_text(self, f.value, f"{where}.doc")
        if (f := by_name.get("params")) is not None:
            for p in self.mapping(f.value, f"{where}.params") or []:
                if self.out.imported and p.name not in IMPORT_LAYERS.get(self.out.layer_kind or "", ()):
                    sets = ", ".join(sorted(IMPORT_LAYERS.get(self.out.layer_kind or "", ()))) or "nothing"
                    self.problem(
                        p.line,
                        f"{where}.params.{p.name}",
                        "unknown_key",
                        f"an imported {self.out.layer_kind or ''} layer sets only {sets}, not '{p.name}'",
                    )
                    continue
                c = self.param(p, f"{where}.params.{p.name}", spec.family)
                if c is not None:
                    spec.params[p.name] = c
                elif p.name in PARAMS:
                    spec.params.setdefault(p.name, Cited(p.name, BAD, (), p.line))
        if not change:
            self._required(spec, where)  # a value written but wrong is not also "missing"
        spec.params = {k: v for k, v in spec.params.items() if v.value is not BAD}
        if not change:
            self._unread(spec, where)
        return spec

    def param(self, p: Entry, where: str, family: str | None) -> Cited | None:
        validator = PARAMS.get(p.name)
        if validator is None:
            self.problem(p.line, where, "unknown_key", f"unknown parameter '{p.name}'")
            return None
        if family is not None and p.name not in FAMILY_PARAMS[family].allowed:
            self.problem(p.line, where, "param_not_in_family", f"family {family} does not read '{p.name}'")
            return None
        c = self.cited(p, validator, where, allow_option=True)
        if c is not None and c.option is not None and p.name not in OPTION_PARAMS.get(c.option, ()):
            self.problem(
                p.line, where, "wrong_type", f"option '{c.option}' cannot stand in for parameter '{p.name}'"
            )
            return None
        return c

    def _unread(self, spec: CodeSpec, where: str) -> None:
        """Values the family would never read on this code: refused, so no edit is without effect.

        Whether the code is a base or an add-on decides (see :class:`FamilyParams`);
        ``interactive_modalities`` is read only where ``requires_interactive`` is true.
        """
        if spec.family is None:
            return
        add_on = spec.params.get("add_on_to")
        if add_on is not None and add_on.value is None and add_on.option is None:
            self.problem(
                add_on.line,
                f"{where}.params.add_on_to",
                "unread_value",
                "a base code leaves 'add_on_to' out (null is what its absence already says)",
            )
        base = None if add_on is None else add_on.value
        for name, c in spec.params.items():
            if name == "add_on_to":
                continue
            why = unread_reason(spec.family, base, name)
            if why is not None:
                self.problem(c.line, f"{where}.params.{name}", "unread_value", why)
        interactive = spec.params.get("requires_interactive")
        modalities = spec.params.get("interactive_modalities")
        if base is None and interactive is not None and interactive.value is False and modalities is not None:
            self.problem(
                modalities.line,
                f"{where}.params.interactive_modalities",
                "unread_value",
                "'interactive_modalities' is read only where requires_interactive is true",
            )

    def _required(self, spec: CodeSpec, where: str) -> None:
        """Parameters a family cannot work without; a gap here would surface mid-run."""
        if spec.family is None:
            return
        params = spec.params
        add_on = params.get("add_on_to")
        is_add_on = add_on is not None and add_on.value is not None
        family = FAMILY_PARAMS[spec.family]
        required = set(family.required_add_on if is_add_on else family.required_base)
        interactive = params.get("requires_interactive")
        if not is_add_on and interactive is not None and interactive.value is True:
            required.add("interactive_modalities")
        if spec.family == "device_supply" and spec.program == Program.RTM:
            required.add("rtm_kind")
        for name in sorted(required - set(params)):
            self.problem(
                spec.line,
                f"{where}.params.{name}",
                "missing_param",
                f"code {spec.code} ({spec.family}) needs '{name}'",
            )

    # -- whole-file checks of a base rule-year -----------------------------------------

    def _base_completeness(self) -> None:
        """Reported on the section's line (or None if the section itself is missing)."""
        for name, (_, required) in GLOBALS.items():
            if required and name not in self._seen["globals"]:
                self.problem(
                    self._lines.get("globals"),
                    f"globals.{name}",
                    "missing_key",
                    f"a base rule-year needs global '{name}'",
                )
        for name in OPTIONS:
            if name not in self._seen["options"] and name not in OPTIONAL_OPTIONS:
                self.problem(
                    self._lines.get("options"),
                    f"options.{name}",
                    "missing_option",
                    f"a base rule-year must set option '{name}'",
                )

    def _references(self) -> None:
        """References inside one base year; overlays are checked once merged."""
        codes = self.out.codes
        for problem in modifier_code_problems(self.out.modifiers.values(), codes, self.file):
            self.problems.append(problem)
        manual = self.out.globals.get("manual_readings_count")
        if manual is not None:
            with_days = {c.program for c in codes.values() if c.family in ("setup", "device_supply")}
            for program in manual.value:
                if program not in with_days:
                    self.problem(
                        manual.line,
                        "globals.manual_readings_count",
                        "unread_value",
                        f"{program} has no device-supply or set-up code in this rule-year: it has no "
                        "readings whose days could count",
                    )
        for spec in codes.values():
            for c in spec.params.values():
                for target in referenced_codes(c):
                    if target not in codes:
                        self.problem(
                            c.line,
                            f"codes.{spec.code}.params.{c.name}",
                            "unknown_code",
                            f"names code {target}, which this rule-year does not define",
                        )


def v_ident_or_name(c: FileChecker, node: yaml.Node, where: str) -> Any:
    value = v_text(c, node, where)
    if value is not BAD and not re.match(r"^[a-z0-9][a-z0-9-]*$", value):
        return c.bad(node, where, "bad_value", f"'{value}' must be lower-case words joined by '-'")
    return value


def modifier_code_problems(
    rules: Any, codes: dict[str, CodeSpec] | dict[str, Any], file: str
) -> list[Problem]:
    """A modifier rule's codes must be codes of the rule-year, of one of the rule's programs."""
    out: list[Problem] = []
    for rule in rules:
        for code in rule.codes or ():
            target = codes.get(code)
            where = f"modifiers.{rule.name}.codes"
            if target is None:
                out.append(
                    Problem(
                        file,
                        rule.codes_line,
                        where,
                        "unknown_code",
                        f"names code {code}, which this rule-year does not define",
                    )
                )
            elif target.program is not None and target.program not in rule.programs:
                out.append(
                    Problem(
                        file,
                        rule.codes_line,
                        where,
                        "bad_value",
                        f"code {code} is {target.program}, not one of the rule's programs",
                    )
                )
    return out


def coverage_code_problems(rules: Any, codes: dict[str, Any], file: str) -> list[Problem]:
    """A coverage rule's codes (listed or capped) must be codes of the rule-year, of its programs."""
    out: list[Problem] = []
    for rule in rules:
        named = list(rule.codes or ())
        if rule.max_units_per_year is not None:
            named += [c for c in rule.max_units_per_year.value if c not in named]
        for code in named:
            target = codes.get(code)
            where = f"coverage.{rule.name}.codes"
            if target is None:
                out.append(
                    Problem(
                        file,
                        rule.codes_line,
                        where,
                        "unknown_code",
                        f"names code {code}, which this rule-year does not define",
                    )
                )
            elif target.program is not None and target.program not in rule.programs:
                out.append(
                    Problem(
                        file,
                        rule.codes_line,
                        where,
                        "bad_value",
                        f"code {code} is {target.program}, not one of the rule's programs",
                    )
                )
            elif rule.codes is not None and code not in rule.codes:
                out.append(
                    Problem(
                        file,
                        rule.max_units_per_year.line,
                        f"coverage.{rule.name}.max_units_per_year",
                        "unread_value",
                        f"caps {code}, which the rule's codes do not include",
                    )
                )
    return out


def referenced_codes(c: Cited) -> tuple[str, ...]:
    if c.name in ("exclusive_with", "with_base") and c.value:
        return tuple(c.value)
    if c.name == "add_on_to" and c.value:
        return (c.value,) if isinstance(c.value, str) else tuple(c.value)
    return ()

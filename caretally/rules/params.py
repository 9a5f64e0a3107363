"""The loaded, resolved form of a rule-year: every value with its citation and layer.

The loader (``caretally.rules.loader``) turns YAML files into these records; the code
families read them. Values never carry defaults in Python: a family that needs a value
the rule-year lacks raises ``MissingParameter`` so the gap shows up in tests, not claims.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from caretally.model import ParameterUse, PeriodKind, Program


class MissingParameter(KeyError):
    """A family asked for a value the rule-year does not define."""


@dataclass(frozen=True, slots=True)
class Param:
    """One rule value and where it came from.

    ``layer`` names the file layer that supplied it (``medicare/2026``,
    ``payers/example-commercial``, ``cms/pprrvu26-b``); ``source`` is ``file:line`` for
    reviewers; ``option`` is set when the value came through a named, configurable option;
    ``derivation`` says how a value the maintainers did not write was computed (a
    proposed year's amount: its inherited total RVU × its own conversion factor).
    """

    name: str
    value: Any
    citation: str
    layer: str
    source: str
    option: str | None = None
    derivation: str | None = None

    def use(self) -> ParameterUse:
        """The value as a decision records it; built once per Param (rule-years are cached)."""
        found = _USES.get(id(self))
        if found is not None and found[0] is self:
            return found[1]
        shown = self.name if self.option is None else f"{self.name} (option {self.option})"
        if self.derivation:
            shown = f"{shown} ({self.derivation})"
        made = ParameterUse(name=shown, value=_show(self.value), layer=self.layer, citation=self.citation)
        _USES[id(self)] = (self, made)
        return made


#: (id(RuleYear), code) → (RuleYear, either/or group); rule-years are cached, so this is small.
_GROUPS: dict[tuple[int, str], tuple[RuleYear, frozenset[str]]] = {}
#: id(RuleYear) → (RuleYear, add-on → its bases, base → its add-ons).
_LINKS: dict[int, tuple[RuleYear, dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]] = {}
#: id(Param) → (Param, its ParameterUse). Holding the Param keeps its id from being reused.
_USES: dict[int, tuple[Param, ParameterUse]] = {}


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if value is None:
        return "none"
    return str(value)


@dataclass(frozen=True, slots=True)
class CodeRule:
    """One billable code's rule in one rule-year.

    ``family`` picks the pure function that evaluates it; ``params`` hold the family's
    inputs (thresholds, caps, performers, exclusions, amount …), each cited.
    """

    code: str
    family: str
    program: Program
    descriptor: str
    period_kind: PeriodKind
    params: Mapping[str, Param]

    def has(self, name: str) -> bool:
        return name in self.params and self.params[name].value is not None

    def param(self, name: str) -> Param:
        try:
            return self.params[name]
        except KeyError:
            raise MissingParameter(f"{self.code}: rule-year has no '{name}'") from None

    def value(self, name: str) -> Any:
        return self.param(name).value

    def get(self, name: str, default: Any = None) -> Any:
        p = self.params.get(name)
        return default if p is None else p.value

    @property
    def amount(self) -> Decimal | None:
        p = self.params.get("amount")
        return None if p is None or p.value is None else Decimal(str(p.value))


#: The people on a claim line whose credential a modifier rule may look at.
CREDENTIAL_OF = ("rendering", "billing")
#: How a modifier rule reads "rendering": ``any_part`` — every performer of a counted minute
#: of the line's service (the base code and its add-ons), the rendering practitioner first;
#: ``rendering`` — only the rendering practitioner (who furnished most of the minutes).
MODIFIER_WHEN = ("any_part", "rendering")


@dataclass(frozen=True, slots=True)
class ModifierRule:
    """When a claim line carries a procedure modifier, as a rule-year states it.

    A rule applies to billable lines of ``programs`` (and, when ``codes`` is not None,
    only to those codes). It looks at the credentials of the people named in
    ``credential_of``, in that order; the first credential listed under one of the
    rule's modifiers (``add``: modifier → credentials) gives the line that modifier. A
    rule adds at most one modifier; a line collects the modifiers of every rule, in the
    order the rule-year lists them.

    ``when`` says who "rendering" is: with ``any_part`` (the default) every performer who
    furnished a counted minute of the line's service counts, the rendering practitioner
    first — CQ/CO apply when an assistant furnished the service "in whole or in part";
    with ``rendering`` only the rendering practitioner does.
    """

    name: str
    programs: tuple[Program, ...]
    codes: tuple[str, ...] | None
    credential_of: tuple[str, ...]
    add: Mapping[str, tuple[str, ...]]
    citation: str
    layer: str
    source: str
    doc: str | None = None
    when: str = "any_part"

    def applies_to(self, program: Program, code: str) -> bool:
        return program in self.programs and (self.codes is None or code in self.codes)

    def modifier_for(self, credentials: Mapping[str, str], parts: Sequence[str] = ()) -> str | None:
        """The modifier the first listed person's credential earns, if any.

        ``parts`` are the credentials of everyone who furnished a counted minute of the
        line's service; they stand beside the rendering practitioner when ``when`` is
        ``any_part``.
        """
        for who in self.credential_of:
            people = [credentials.get(who, "")]
            if who == "rendering" and self.when == "any_part":
                people.extend(sorted(set(parts)))
            for credential in people:
                for modifier, listed in self.add.items():
                    if credential and credential in listed:
                        return modifier
        return None


@dataclass(frozen=True, slots=True)
class CoverageRule:
    """A payer's coverage policy for some programs (and codes), from an overlay.

    Each limit is its own cited value, ``None`` when the policy sets none:
    ``diagnoses`` — the codes are covered only for a patient whose enrollment carries a
    diagnosis starting with one of these ICD-10-CM prefixes (items naming a ``sets`` entry
    stand for its prefixes); ``prior_authorization`` — the enrollment must record a prior
    authorization covering the service; ``max_units_per_year`` — code → units payable per
    patient per calendar year.
    """

    name: str
    programs: tuple[Program, ...]
    codes: tuple[str, ...] | None
    diagnoses: Param | None
    sets: Mapping[str, Param]
    prior_authorization: Param | None
    max_units_per_year: Param | None
    layer: str
    source: str
    doc: str | None = None

    def applies_to(self, program: Program, code: str) -> bool:
        return program in self.programs and (self.codes is None or code in self.codes)

    def prefixes(self) -> tuple[tuple[str, str], ...]:
        """(what the policy names, ICD-10-CM prefix) pairs: a set's name or the prefix itself."""
        out: list[tuple[str, str]] = []
        for item in () if self.diagnoses is None else self.diagnoses.value:
            named = self.sets.get(str(item))
            for prefix in (str(item),) if named is None else named.value:
                out.append((str(item), str(prefix)))
        return tuple(out)


@dataclass(frozen=True, slots=True)
class RuleYear:
    """A payer's rules for one effective span, after overlays are applied.

    ``layers`` lists the files stacked to make it, base first (a year that extends
    another lists that year's layers first, and imported CMS layers follow the year they
    belong to); ``content_hash`` is a digest of their bytes, stored with every billing run
    so a rerun can prove it used the same rules.

    ``status`` is ``final`` or ``proposed``: a proposed year (built from a proposed rule)
    judges provisionally, and ``status_citation`` names the proposal's source keys.
    """

    payer: str
    year: int
    effective_from: date
    effective_to: date
    codes: Mapping[str, CodeRule]
    options: Mapping[str, Param]
    globals: Mapping[str, Param]
    layers: tuple[str, ...]
    content_hash: str
    sources: Mapping[str, str] = field(default_factory=dict)
    modifiers: Mapping[str, ModifierRule] = field(default_factory=dict)
    coverage: Mapping[str, CoverageRule] = field(default_factory=dict)
    status: str = "final"
    status_citation: str = ""

    @property
    def provisional(self) -> bool:
        """Judged by a proposed rule: every decision says so, and a lock needs consent."""
        return self.status != "final"

    @property
    def label(self) -> str:
        """The layers as one name (``medicare/2026+payers/x``): how decisions record it."""
        return "+".join(self.layers)

    def code(self, code: str) -> CodeRule:
        try:
            return self.codes[code]
        except KeyError:
            raise MissingParameter(f"{self.payer}/{self.year}: no rule for code {code}") from None

    def option(self, name: str) -> Param:
        try:
            return self.options[name]
        except KeyError:
            raise MissingParameter(f"{self.payer}/{self.year}: no option '{name}'") from None

    def rule_global(self, name: str) -> Param:
        """A global (conversion factor, structural rule …), like :meth:`option` for options."""
        try:
            return self.globals[name]
        except KeyError:
            raise MissingParameter(f"{self.payer}/{self.year}: no global '{name}'") from None

    # -- add-ons and their bases: the one reader of ``add_on_to`` -------------------------

    def _links(self) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
        found = _LINKS.get(id(self))
        if found is not None and found[0] is self:
            return found[1], found[2]
        bases: dict[str, tuple[str, ...]] = {}
        add_ons: dict[str, list[str]] = {}
        for code, rule in sorted(self.codes.items()):
            p = rule.params.get("add_on_to")
            if p is not None and p.value is not None:
                named = (str(p.value),) if isinstance(p.value, str) else tuple(str(v) for v in p.value)
                bases[code] = named
                for base in named:
                    add_ons.setdefault(base, []).append(code)
        made = {k: tuple(v) for k, v in add_ons.items()}
        _LINKS[id(self)] = (self, bases, made)
        return bases, made

    def base_of(self, code: str) -> str:
        """The base code ``code`` is billed with: its ``add_on_to``, or itself for a base code.

        A base code and its add-ons are one service (billed, excluded and valued together),
        so every reader that needs "the service of this code" asks here. An add-on that
        may ride on several bases (99494 with 99492 or 99493) answers its first listed
        base; code that knows the month's decisions asks :meth:`bases_of` and picks the
        base actually billed.
        """
        return self.bases_of(code)[0]

    def bases_of(self, code: str) -> tuple[str, ...]:
        """Every base ``code`` may be billed with (in the order written), or ``(code,)``."""
        return self._links()[0].get(code, (code,))

    def is_add_on(self, code: str) -> bool:
        return code in self._links()[0]

    def rides_on(self, code: str) -> tuple[str, ...]:
        """The codes of *another* program ``code`` is billed with (its ``with_base``): the
        APCM behavioral-health add-ons ride on the same practitioner's APCM code."""
        rule = self.codes.get(code)
        p = None if rule is None else rule.params.get("with_base")
        return () if p is None or not p.value else tuple(str(v) for v in p.value)

    def add_ons_of(self, code: str) -> tuple[str, ...]:
        """The add-on codes whose ``add_on_to`` names ``code`` (sorted)."""
        return self._links()[1].get(code, ())

    def exclusion(self, code: str) -> Param | None:
        """The ``exclusive_with`` value that governs ``code``: its base's (add-ons carry none)."""
        rule = self.codes.get(self.base_of(code))
        return None if rule is None else rule.params.get("exclusive_with")

    def excludes(self, code: str) -> frozenset[str]:
        """Codes never billed with ``code``'s service: its base's ``exclusive_with``, with
        the add-ons of every code named there (99470 excludes 99457 and so 99458)."""
        p = self.exclusion(code)
        if p is None or not p.value:
            return frozenset()
        named = [str(c) for c in p.value]
        return frozenset(named + [a for c in named for a in self.add_ons_of(c)])

    def either_or_group(self, code: str) -> frozenset[str]:
        """Every code linked to ``code`` through ``exclusive_with``, itself included.

        Tiers (99445/99454), ladders (99470/99457/99458), 99091 and the CCM lanes form
        such groups: at most one arrangement of a group is billed for an enrollment. An
        add-on belongs to its base's group.
        """
        key = (id(self), code)
        found = _GROUPS.get(key)
        if found is not None and found[0] is self:
            return found[1]
        starts = self.bases_of(code)
        seen = {code, *starts, *(a for b in starts for a in self.add_ons_of(b))}
        todo = list(starts)
        while todo:
            for other in self.excludes(todo.pop()):
                if other not in seen and other in self.codes:
                    seen.add(other)
                    todo.append(self.base_of(other))
                    seen.update(self.add_ons_of(self.base_of(other)))
        group = frozenset(seen)
        _GROUPS[key] = (self, group)
        return group

    def modifiers_for(
        self, program: Program, code: str, credentials: Mapping[str, str], parts: Sequence[str] = ()
    ) -> tuple[str, ...]:
        """The procedure modifiers of a billable line, by the ``modifiers:`` rules in order.

        ``credentials`` maps ``rendering`` / ``billing`` to that person's credential
        (upper case; missing or empty when there is no such person); ``parts`` are the
        credentials of everyone who furnished a counted minute of the line's service (read
        by rules whose ``when`` is ``any_part``).
        """
        out: list[str] = []
        for rule in self.modifiers.values():
            if rule.applies_to(program, code):
                found = rule.modifier_for(credentials, parts)
                if found is not None and found not in out:
                    out.append(found)
        return tuple(out)

    def coverage_for(self, program: Program, code: str) -> tuple[CoverageRule, ...]:
        """The payer coverage policies that govern ``code`` of ``program`` (overlay order)."""
        return tuple(r for r in self.coverage.values() if r.applies_to(program, code))

    def codes_for(self, program: Program) -> list[CodeRule]:
        return [c for c in self.codes.values() if c.program == program]

    def covers(self, day: date) -> bool:
        return self.effective_from <= day <= self.effective_to


@dataclass(frozen=True, slots=True)
class RuleBook:
    """All rule-years of one payer chain; picks the one in force on a date.

    The engine asks by date of service, so a 30-day period that starts in December and
    ends in January is judged by the January rules — the year the service is billed in.
    """

    name: str  # e.g. "medicare" or "example-commercial"
    years: tuple[RuleYear, ...]

    def for_date(self, day: date) -> RuleYear:
        for year in self.years:
            if year.covers(day):
                return year
        spans = ", ".join(f"{y.effective_from}..{y.effective_to}" for y in self.years)
        raise MissingParameter(f"{self.name}: no rule-year in force on {day} (have {spans})")

    def for_year(self, number: int) -> RuleYear:
        """The rule-year numbered ``number``; of a year an overlay splits, the layered part."""
        found = [y for y in self.years if y.year == number]
        if not found:
            have = ", ".join(str(y) for y in sorted({y.year for y in self.years}))
            raise MissingParameter(f"{self.name}: no rule-year {number} (have {have})")
        return max(found, key=lambda y: len(y.layers))

    def add_on_bases(self) -> dict[str, frozenset[str]]:
        """Add-on code → the base codes it may accompany, from every year's ``add_on_to``
        (and ``with_base``, for an add-on whose base belongs to another program).

        The one source for "an add-on goes on the claim with its base": exporters read it
        here rather than keeping a second list of codes.
        """
        out: dict[str, set[str]] = {}
        for year in self.years:
            for code in year.codes:
                if year.is_add_on(code):
                    out.setdefault(code, set()).update(year.bases_of(code))
                if year.rides_on(code):
                    out.setdefault(code, set()).update(year.rides_on(code))
        return {code: frozenset(bases) for code, bases in out.items()}

    @property
    def content_hash(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for year in self.years:
            digest.update(year.content_hash.encode())
        return digest.hexdigest()

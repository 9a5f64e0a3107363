"""The loaded, resolved form of a rule-year: every value with its citation and layer.

The loader (``caretally.rules.loader``) turns YAML files into these records; the code
families read them. Values never carry defaults in Python: a family that needs a value
the rule-year lacks raises ``MissingParameter`` so the gap shows up in tests, not claims.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    ``payers/example-commercial``); ``source`` is ``file:line`` for reviewers;
    ``option`` is set when the value came through a named, configurable option.
    """

    name: str
    value: Any
    citation: str
    layer: str
    source: str
    option: str | None = None

    def use(self) -> ParameterUse:
        """The value as a decision records it; built once per Param (rule-years are cached)."""
        found = _USES.get(id(self))
        if found is not None and found[0] is self:
            return found[1]
        shown = self.name if self.option is None else f"{self.name} (option {self.option})"
        made = ParameterUse(name=shown, value=_show(self.value), layer=self.layer, citation=self.citation)
        _USES[id(self)] = (self, made)
        return made


#: (id(RuleYear), code) → (RuleYear, either/or group); rule-years are cached, so this is small.
_GROUPS: dict[tuple[int, str], tuple[RuleYear, frozenset[str]]] = {}
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


@dataclass(frozen=True, slots=True)
class RuleYear:
    """A payer's rules for one effective span, after overlays are applied.

    ``layers`` lists the files stacked to make it, base first; ``content_hash`` is a
    digest of their bytes, stored with every billing run so a rerun can prove it used
    the same rules.
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

    def either_or_group(self, code: str) -> frozenset[str]:
        """Every code linked to ``code`` through ``exclusive_with``, itself included.

        Tiers (99445/99454), ladders (99470/99457/99458), 99091 and the CCM lanes form
        such groups: at most one arrangement of a group is billed for an enrollment.
        """
        key = (id(self), code)
        found = _GROUPS.get(key)
        if found is not None and found[0] is self:
            return found[1]
        seen, todo = {code}, [code]
        while todo:
            rule = self.codes.get(todo.pop())
            for other in (rule.get("exclusive_with") or ()) if rule else ():
                if other not in seen and other in self.codes:
                    seen.add(other)
                    todo.append(other)
        group = frozenset(seen)
        _GROUPS[key] = (self, group)
        return group

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

    def add_on_bases(self) -> dict[str, frozenset[str]]:
        """Add-on code → the base codes it may accompany, from every year's ``add_on_to``.

        The one source for "an add-on goes on the claim with its base": exporters read it
        here rather than keeping a second list of codes.
        """
        out: dict[str, set[str]] = {}
        for year in self.years:
            for rule in year.codes.values():
                base = rule.get("add_on_to")
                if base is not None:
                    out.setdefault(rule.code, set()).add(str(base))
        return {code: frozenset(bases) for code, bases in out.items()}

    @property
    def content_hash(self) -> str:
        import hashlib

        digest = hashlib.sha256()
        for year in self.years:
            digest.update(year.content_hash.encode())
        return digest.hexdigest()

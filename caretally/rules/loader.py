"""Rule files → resolved rule-years: strict, every problem at once, every value traced.

Pipeline: read bytes → compose YAML (:mod:`loader_yaml`) → check each file against the
contract (:mod:`loader_schema`) → checks across files (overlapping spans, overlay
targets) → assemble :class:`RuleYear` values in which every :class:`Param` names its
citation, the layer that supplied it and its ``file:line``.

A payer overlay is "the Medicare year in force, plus these differences": inside the
overlay's effective span its options, code parameters and removals are applied on top
of each base year; outside it the payer simply follows the base. Because options are
resolved only after layering, a code that reads ``{option: setup_min_days}`` picks up
the payer's value and is attributed to the payer's layer.

Public entry points: :func:`load_rulebook` (cached; raises :class:`RuleLoadError`),
:func:`load_rule_files` (returns years and problems) and :func:`check_rulesets` (the
CLI-free checker behind ``caretally rules check``).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from caretally.errors import Problem, ProblemsError
from caretally.model import Program
from caretally.rules.layers import layers_fingerprint, resolve_rules_dir
from caretally.rules.loader_schema import (
    FAMILY_PARAMS,
    Cited,
    CodeSpec,
    FileChecker,
    ModifierSpec,
    RuleFile,
    coverage_code_problems,
    modifier_code_problems,
    referenced_codes,
    unread_reason,
)
from caretally.rules.loader_yaml import parse
from caretally.rules.params import CodeRule, CoverageRule, ModifierRule, Param, RuleBook, RuleYear

RULESETS_ROOT = Path(__file__).resolve().parent.parent / "rulesets"
PAYERS_DIR = "payers"


class RuleLoadError(ProblemsError):
    """The rule files needed for a rulebook have problems; ``problems`` lists them all."""


# --------------------------------------------------------------------------------------
# Reading one file
# --------------------------------------------------------------------------------------


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_rule_file(path: Path) -> tuple[RuleFile | None, list[Problem]]:
    """Check one file on its own. ``None`` only when there is nothing to check."""
    display = _display(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, [
            Problem(display, None, None, "unreadable", f"cannot read the file: {exc.strerror or exc}")
        ]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(display, None, None, "unreadable", f"not UTF-8 text: {exc.reason}")]
    node, problems = parse(text, display)
    if node is None:
        return None, problems
    checker = FileChecker(display, f"{path.parent.name}/{path.name}", "", data)
    rule_file = checker.check(node)
    if rule_file.overlay:
        rule_file.layer = f"{PAYERS_DIR}/{rule_file.ruleset or path.stem}"
    elif rule_file.imported:
        # <rules dir>/<ruleset>/<year>/<kind>.yaml, named as CMS names the file and release.
        rule_file.source_name = f"{path.parent.parent.name}/{path.parent.name}/{path.name}"
        rule_file.layer = import_label(rule_file)
    else:
        rule_file.layer = f"{rule_file.ruleset or path.parent.name}/{rule_file.year or path.stem}"
    return rule_file, problems + checker.problems


def import_label(f: RuleFile) -> str:
    """An imported layer's evidence label: ``cms/pprrvu26-b`` for PPRRVU26 release B."""
    year = "" if f.year is None else f"{f.year % 100:02d}"
    release = (f.release or "").lower()
    return f"cms/{f.layer_kind or 'import'}{year}-{release}" if release else f"cms/{f.layer_kind}{year}"


# --------------------------------------------------------------------------------------
# Layering: a base year, optionally with an overlay on top
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Held:
    """A checked value and the file it came from, so problems and params point at it."""

    cited: Cited
    origin: RuleFile
    derivation: str | None = None


@dataclass(slots=True)
class _Code:
    spec: CodeSpec
    origin: RuleFile
    params: dict[str, _Held]


class _Assembler:
    """Builds one RuleYear from a chain of files and an optional overlay, reporting problems.

    ``chain`` is the year's own stack, root first: a base year, the layers imported for
    it, then each year that extends it with its own imported layers — "2026 + its CMS
    file + the 2027 differences". The payer overlay, if any, goes on top.
    """

    def __init__(self, chain: Sequence[RuleFile], overlay: RuleFile | None, problems: list[Problem]) -> None:
        self.chain = list(chain)
        self.base = self.chain[0]
        self.top = next(f for f in reversed(self.chain) if not f.imported)
        self.overlay = overlay
        self.problems = problems
        self.removed: dict[str, RuleFile] = {}

    def problem(self, origin: RuleFile, line: int | None, where: str, code: str, message: str) -> None:
        self.problems.append(Problem(origin.file, line, where, code, message))

    def build(self, start: date, end: date, payer: str) -> RuleYear:
        base, overlay = self.base, self.overlay
        layers = [*self.chain] if overlay is None else [*self.chain, overlay]
        options = {n: _Held(c, base) for n, c in base.options.items()}
        globals_ = {n: _Held(c, base) for n, c in base.globals.items()}
        modifiers = {n: (m, base) for n, m in base.modifiers.items()}
        concurrency = {n: (rules, base) for n, rules in base.concurrency.items()}
        sources = dict(base.sources)
        codes = {
            k: _Code(s, base, {n: _Held(c, base) for n, c in s.params.items()}) for k, s in base.codes.items()
        }
        below = base
        for layer in self.chain[1:]:
            self._sources(layer, below, sources)
            for key, line, where in layer.deferred_cites:
                if key not in sources:
                    self.problem(
                        layer,
                        line,
                        where,
                        "unknown_source",
                        f"cites '{key}', which is neither in this file's sources nor in {below.layer}'s",
                    )
            cf_below = globals_.get("conversion_factor")
            if not layer.imported:  # a year that extends the one below
                options.update({n: _Held(c, layer) for n, c in layer.options.items()})
                globals_.update({n: _Held(c, layer) for n, c in layer.globals.items()})
                modifiers.update({n: (m, layer) for n, m in layer.modifiers.items()})
                concurrency.update({n: (rules, layer) for n, rules in layer.concurrency.items()})
            self._apply(layer, below, codes)
            if not layer.imported:
                self.problems.extend(
                    modifier_code_problems(
                        layer.modifiers.values(), {k: c.spec for k, c in codes.items()}, layer.file
                    )
                )
                self._derive(layer, codes, globals_, cf_below)
                below = layer
        if overlay is not None:
            options.update({n: _Held(c, overlay) for n, c in overlay.options.items()})
            globals_.update({n: _Held(c, overlay) for n, c in overlay.globals.items()})
            self._sources(overlay, self.top, sources)
            self._apply(overlay, self.top, codes)
            modifiers.update({n: (m, overlay) for n, m in overlay.modifiers.items()})
            self.problems.extend(
                modifier_code_problems(
                    overlay.modifiers.values(), {k: c.spec for k, c in codes.items()}, overlay.file
                )
            )
        resolved = {code: self._resolve(c, options) for code, c in sorted(codes.items())}
        self._consistency(codes)
        top = self.top
        return RuleYear(
            payer=payer,
            year=top.year or start.year,
            effective_from=start,
            effective_to=end,
            codes=MappingProxyType({k: v for k, v in resolved.items() if v is not None}),
            options=MappingProxyType({n: _param(n, h) for n, h in sorted(options.items())}),
            globals=MappingProxyType(self._globals(globals_, concurrency)),
            layers=tuple(f.layer for f in layers),
            content_hash=content_hash(layers),
            sources=MappingProxyType(sources),
            modifiers=MappingProxyType({n: _modifier(m, f) for n, (m, f) in modifiers.items()}),
            status=top.status,
            status_citation=", ".join(top.status_cite),
            coverage=MappingProxyType(self._coverage(codes)),
        )

    def _coverage(self, codes: dict[str, _Code]) -> dict[str, CoverageRule]:
        """The overlay's coverage policies, checked against the layered codes."""
        overlay = self.overlay
        if overlay is None or not overlay.coverage:
            return {}
        self.problems.extend(
            coverage_code_problems(
                overlay.coverage.values(), {k: c.spec for k, c in codes.items()}, overlay.file
            )
        )
        sets = {n: _param(n, _Held(c, overlay)) for n, c in overlay.diagnosis_sets.items()}
        out: dict[str, CoverageRule] = {}
        for name, spec in overlay.coverage.items():

            def held(c: Cited | None) -> Param | None:
                return None if c is None else _param(c.name, _Held(c, overlay))

            named = {
                str(i): sets[str(i)]
                for i in (spec.diagnoses.value if spec.diagnoses else ())
                if str(i) in sets
            }
            out[name] = CoverageRule(
                name=name,
                programs=spec.programs,
                codes=spec.codes,
                diagnoses=held(spec.diagnoses),
                sets=MappingProxyType(named),
                prior_authorization=held(spec.prior_authorization),
                max_units_per_year=held(spec.max_units_per_year),
                layer=overlay.layer,
                source=f"{overlay.source_name}:{spec.line}",
                doc=spec.doc,
            )
        return out

    def _sources(self, layer: RuleFile, below: RuleFile, sources: dict[str, str]) -> None:
        for key, text in layer.sources.items():
            if key in sources and sources[key] != text:
                self.problem(
                    layer,
                    None,
                    f"sources.{key}",
                    "source_conflict",
                    f"source '{key}' means something else in {below.layer}",
                )
            sources[key] = text

    def _apply(self, layer: RuleFile, below: RuleFile, codes: dict[str, _Code]) -> None:
        """A layer's code changes: parameters of existing codes, new codes, removals."""
        removed: set[str] = set()
        if layer.remove_codes is not None:
            for code in layer.remove_codes.value:
                if code not in codes:
                    self.problem(
                        layer,
                        layer.remove_codes.line,
                        "remove_codes",
                        "unknown_code",
                        f"removes code {code}, which {below.layer} does not define",
                    )
                removed.add(code)
                self.removed[code] = layer
        for code, spec in layer.codes.items():
            where = f"codes.{code}"
            target = codes.get(code)
            if not spec.change:  # a year that extends another adds a code of its own
                if target is not None:
                    self.problem(
                        layer,
                        spec.line,
                        where,
                        "bad_value",
                        f"code {code} is already defined in {below.layer}: write only the params it changes",
                    )
                    continue
                codes[code] = _Code(spec, layer, {n: _Held(c, layer) for n, c in spec.params.items()})
                continue
            if target is None or code in removed:
                why = "is removed by this file" if code in removed else f"is not defined in {below.layer}"
                self.problem(layer, spec.line, where, "unknown_code", f"changes code {code}, which {why}")
                continue
            family = target.spec.family
            held_base = target.params.get("add_on_to")
            base_code = None if held_base is None else held_base.cited.value
            for name, cited in spec.params.items():
                if family is not None and name not in _family_params(family):
                    self.problem(
                        layer,
                        cited.line,
                        f"{where}.params.{name}",
                        "param_not_in_family",
                        f"family {family} does not read '{name}'",
                    )
                    continue
                if name == "add_on_to" and (base_code is None or cited.value is None):
                    self.problem(
                        layer,
                        cited.line,
                        f"{where}.params.{name}",
                        "unread_value",
                        "an overlay may point an add-on at another base, not make a code an add-on or a base",
                    )
                    continue
                why = (
                    None if family is None or name == "add_on_to" else unread_reason(family, base_code, name)
                )
                if why is not None:
                    self.problem(layer, cited.line, f"{where}.params.{name}", "unread_value", why)
                    continue
                target.params[name] = _Held(cited, layer)
        for code in removed:
            codes.pop(code, None)

    def _derive(
        self,
        layer: RuleFile,
        codes: dict[str, _Code],
        globals_: dict[str, _Held],
        cf_below: _Held | None,
    ) -> None:
        """``amounts_from_rvu``: each amount this year does not write, from the year below.

        Where the inherited total RVU is known (hand-entered parts, or a CMS file imported
        for the year below): total RVU × this year's conversion factor. Where only an
        amount is known (a secondary source gave a price but no RVU): that amount ×
        this year's factor / the factor it was priced at — the same RVU implied. A code
        the year below left unpriced stays unpriced. The value is attributed to this
        year's layer, cites the derivation and the sources of what it was derived from,
        and says how it was computed.
        """
        flag = layer.amounts_from_rvu
        held_cf = globals_.get("conversion_factor")
        if flag is None or flag.value is not True or held_cf is None:
            return
        cf = Decimal(str(held_cf.cited.value))
        old_cf = None if cf_below is None else Decimal(str(cf_below.cited.value))
        for c in codes.values():
            own = c.params.get("amount")
            if own is not None and own.origin is layer:
                continue  # the year wrote this amount itself
            rvu = c.params.get("rvu")
            total = None if rvu is None else rvu_total(rvu.cited.value)
            keys = list(flag.cite)
            if total is not None and rvu is not None:
                value: Decimal | None = cents_of(total * cf)
                how = f"derived: {total} total RVU × CF {cf}"
                keys += [k for k in rvu.cited.cite if k not in keys]
            elif own is not None and own.cited.value is not None and old_cf:
                value = cents_of(Decimal(str(own.cited.value)) * cf / old_cf)
                how = f"derived: no RVU known; {own.cited.value} × CF {cf} / {old_cf}"
                keys += [k for k in own.cited.cite if k not in keys]
            else:
                value, how = None, "no national amount known below this year: unpriced"
                keys += [k for k in (() if own is None else own.cited.cite) if k not in keys]
            keys += [k for k in held_cf.cited.cite if k not in keys]
            cited = Cited("amount", value, tuple(keys), flag.line, doc=how)
            c.params["amount"] = _Held(cited, layer, derivation=how)

    def _resolve(self, code: _Code, options: dict[str, _Held]) -> CodeRule | None:
        spec = code.spec
        if spec.family is None or spec.program is None or spec.period is None or spec.descriptor is None:
            return None  # already reported by the file check
        params: dict[str, Param] = {
            "descriptor": Param(
                "descriptor",
                spec.descriptor,
                ", ".join(spec.cite),
                code.origin.layer,
                f"{code.origin.source_name}:{spec.line}",
            )
        }
        for name, held in code.params.items():
            if held.cited.option is None:
                params[name] = _param(name, held)
                continue
            option = options.get(held.cited.option)
            if option is None:
                self.problem(
                    held.origin,
                    held.cited.line,
                    f"codes.{spec.code}.params.{name}",
                    "missing_option",
                    f"points at option '{held.cited.option}', which no layer sets",
                )
                continue
            params[name] = _param(name, option, option=held.cited.option)
        return CodeRule(
            code=spec.code,
            family=spec.family,
            program=spec.program,
            descriptor=spec.descriptor,
            period_kind=spec.period,
            params=MappingProxyType(params),
        )

    def _globals(
        self, globals_: dict[str, _Held], concurrency: dict[str, tuple[list[Cited], RuleFile]]
    ) -> dict[str, Param]:
        out = {n: _param(n, h) for n, h in sorted(globals_.items())}
        for name, (rules, origin) in concurrency.items():
            out.update(concurrency_globals(name, rules, origin))
        return out

    # -- checks that only make sense on the layered result ------------------------------

    def _consistency(self, codes: dict[str, _Code]) -> None:
        for code, c in sorted(codes.items()):
            where = f"codes.{code}.params"
            values = {n: h.cited.value for n, h in c.params.items()}
            for name, held in c.params.items():
                for target in referenced_codes(held.cited):
                    remover = self.removed.get(target)
                    if target == code:
                        self.problem(
                            held.origin,
                            held.cited.line,
                            f"{where}.{name}",
                            "bad_value",
                            f"{code} names itself",
                        )
                    elif remover is not None and target not in codes:
                        rc = remover.remove_codes
                        self.problem(
                            remover,
                            None if rc is None else rc.line,
                            "remove_codes",
                            "unknown_code",
                            f"removes {target}, but {code} still names it in '{name}'",
                        )
                    elif target not in codes:
                        self.problem(
                            held.origin,
                            held.cited.line,
                            f"{where}.{name}",
                            "unknown_code",
                            f"names code {target}, which this rule-year does not define",
                        )
            exclusive = c.params.get("exclusive_with")
            if exclusive is not None:
                for target in exclusive.cited.value:
                    other = codes.get(target)
                    other_base = None if other is None else other.params.get("add_on_to")
                    if other_base is not None and other_base.cited.value is not None:
                        self.problem(
                            exclusive.origin,
                            exclusive.cited.line,
                            f"{where}.exclusive_with",
                            "bad_value",
                            f"{target} is an add-on: name its base {other_base.cited.value}, whose "
                            "add-ons are excluded with it",
                        )
                        continue
                    other_excl = None if other is None else other.params.get("exclusive_with")
                    if other is not None and (other_excl is None or code not in other_excl.cited.value):
                        self.problem(
                            exclusive.origin,
                            exclusive.cited.line,
                            f"{where}.exclusive_with",
                            "asymmetric_exclusion",
                            f"{code} excludes {target}, but {target} does not exclude {code}",
                        )
            for low, high in (("min_days", "max_days"), ("min_minutes", "max_minutes")):
                if (
                    isinstance(values.get(low), int)
                    and isinstance(values.get(high), int)
                    and values[high] < values[low]
                ):
                    held = c.params[high]
                    self.problem(
                        held.origin,
                        held.cited.line,
                        f"{where}.{high}",
                        "bad_value",
                        f"{high} {values[high]} is below {low} {values[low]}",
                    )
            self._add_on(code, c, codes)

    def _add_on(self, code: str, c: _Code, codes: dict[str, _Code]) -> None:
        held = c.params.get("add_on_to")
        if held is None or held.cited.value is None:
            return
        named = (held.cited.value,) if isinstance(held.cited.value, str) else tuple(held.cited.value)
        for base_code in named:
            if base_code in codes:
                self._add_on_base(code, c, held, codes[base_code])

    def _add_on_base(self, code: str, c: _Code, held: _Held, base: _Code) -> None:
        where = f"codes.{code}.params"
        if base.spec.program != c.spec.program or base.spec.family != c.spec.family:
            self.problem(
                held.origin,
                held.cited.line,
                f"{where}.add_on_to",
                "bad_value",
                f"{code} adds to {base.spec.code} of another family",
            )
        base_add_on = base.params.get("add_on_to")
        if base_add_on is not None and base_add_on.cited.value is not None:
            self.problem(
                held.origin,
                held.cited.line,
                f"{where}.add_on_to",
                "bad_value",
                f"{base.spec.code} is itself an add-on",
            )
        step = c.params.get("step_minutes")
        own_min = c.params.get("min_minutes")
        base_min = base.params.get("min_minutes")
        if c.spec.family == "behavioral_health":
            self._midpoint_add_on(code, c, base)
        if step is None:
            self.problem(
                c.origin,
                c.spec.line,
                f"{where}.step_minutes",
                "missing_param",
                f"add-on {code} needs 'step_minutes'",
            )
        elif own_min is not None and base_min is not None:
            expected = base_min.cited.value + step.cited.value
            if own_min.cited.value != expected:
                self.problem(
                    own_min.origin,
                    own_min.cited.line,
                    f"{where}.min_minutes",
                    "inconsistent_addon",
                    f"first unit of {code} needs {base.spec.code}'s {base_min.cited.value} + "
                    f"{step.cited.value} = {expected} minutes, but min_minutes is {own_min.cited.value}",
                )

    def _midpoint_add_on(self, code: str, c: _Code, base: _Code) -> None:
        """Collaborative-care add-on time counts beyond the base's full time (99492's 70,
        99493's 60), and a unit bills from more than half a step: both values must say so."""
        where = f"codes.{code}.params"
        full = base.params.get("full_minutes")
        if full is None:
            self.problem(
                base.origin,
                base.spec.line,
                f"codes.{base.spec.code}.params.full_minutes",
                "missing_param",
                f"{base.spec.code} has the add-on {code}, whose time counts beyond its 'full_minutes'",
            )
        else:
            low = base.params.get("min_minutes")
            if low is not None and full.cited.value < low.cited.value:
                self.problem(
                    full.origin,
                    full.cited.line,
                    f"codes.{base.spec.code}.params.full_minutes",
                    "bad_value",
                    f"full_minutes {full.cited.value} is below min_minutes {low.cited.value}",
                )
        step, part = c.params.get("step_minutes"), c.params.get("min_step_minutes")
        if step is not None and part is not None and part.cited.value > step.cited.value:
            self.problem(
                part.origin,
                part.cited.line,
                f"{where}.min_step_minutes",
                "inconsistent_addon",
                f"min_step_minutes {part.cited.value} is more than a whole step ({step.cited.value})",
            )


def concurrency_globals(name: str, rules: Sequence[Cited], origin: RuleFile) -> dict[str, Param]:
    """A ``concurrency:`` rule as globals: one Param for ``never_together`` and
    ``one_practitioner`` (value = the program groups), one per pair for
    ``not_same_practitioner`` (``not_same_practitioner#1`` …), whose ``option`` names the
    option that rules on different practitioners (None: they are free)."""
    if not rules:
        return {}
    if name == "not_same_practitioner":
        return {
            f"{name}#{i}": Param(
                f"{name}#{i}",
                (tuple(r.value),),
                ", ".join(r.cite),
                origin.layer,
                f"{origin.source_name}:{r.line}",
                option=r.option,
            )
            for i, r in enumerate(rules, start=1)
        }
    keys: list[str] = []
    for r in rules:
        keys.extend(k for k in r.cite if k not in keys)
    return {
        name: Param(
            name,
            tuple(tuple(r.value) for r in rules),
            ", ".join(keys),
            origin.layer,
            f"{origin.source_name}:{rules[0].line}",
        )
    }


def _family_params(family: str) -> frozenset[str]:
    return FAMILY_PARAMS[family].allowed


def _modifier(spec: ModifierSpec, origin: RuleFile) -> ModifierRule:
    return ModifierRule(
        name=spec.name,
        programs=spec.programs,
        codes=spec.codes,
        credential_of=spec.credential_of,
        add=spec.add,
        citation=", ".join(spec.cite),
        layer=origin.layer,
        source=f"{origin.source_name}:{spec.line}",
        doc=spec.doc,
        when=spec.when,
    )


def _param(name: str, held: _Held, option: str | None = None) -> Param:
    c = held.cited
    return Param(
        name=name,
        value=c.value,
        citation=", ".join(c.cite),
        layer=held.origin.layer,
        source=f"{held.origin.source_name}:{c.line}",
        option=option,
        derivation=held.derivation,
    )


def cents_of(amount: Decimal) -> Decimal:
    """Money rounding of the rule files: half-up to the cent (as ``billing.pricing.cents``)."""
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def rvu_total(rvu: Any) -> Decimal | None:
    """A code's total non-facility RVU: its ``total``, else the sum of work + PE + MP."""
    if not isinstance(rvu, Mapping):
        return None
    if rvu.get("total") is not None:
        return Decimal(str(rvu["total"]))
    if {"work", "pe_nonfacility", "mp"} <= set(rvu):
        return sum((Decimal(str(rvu[k])) for k in ("work", "pe_nonfacility", "mp")), Decimal(0))
    return None


def content_hash(files: Iterable[RuleFile]) -> str:
    """sha256 over each file's name and bytes, base first: same files, same hash."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.source_name.encode())
        digest.update(b"\0")
        digest.update(f.data)
        digest.update(b"\0")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Across files
# --------------------------------------------------------------------------------------


def _overlaps(files: Sequence[RuleFile]) -> list[Problem]:
    """Spans of one payer (base years, or one payer's overlay files) must not overlap."""
    problems: list[Problem] = []
    groups: dict[tuple[bool, str], list[RuleFile]] = {}
    for f in files:
        if f.ruleset and f.spans:
            groups.setdefault((f.overlay, f.ruleset), []).append(f)
    for group in groups.values():
        ordered = sorted(group, key=lambda f: (f.effective_from, f.effective_to, f.file))
        for before, after in itertools.pairwise(ordered):
            assert before.effective_to is not None and after.effective_from is not None
            if after.effective_from <= before.effective_to:
                problems.append(
                    Problem(
                        after.file,
                        after.from_line,
                        "effective_from",
                        "overlapping_dates",
                        f"{after.layer} starts {after.effective_from}, inside {before.layer} "
                        f"({before.effective_from}..{before.effective_to}, {before.file})",
                    )
                )
    return problems


def _uncovered(start: date, end: date, bases: Sequence[RuleFile]) -> list[tuple[date, date]]:
    gaps: list[tuple[date, date]] = []
    cursor = start
    for b in sorted(bases, key=lambda f: f.effective_from or date.min):
        assert b.effective_from is not None and b.effective_to is not None
        if b.effective_to < cursor:
            continue
        if b.effective_from > cursor:
            gaps.append((cursor, min(end, b.effective_from - timedelta(days=1))))
        cursor = max(cursor, b.effective_to + timedelta(days=1))
        if cursor > end:
            return gaps
    if cursor <= end:
        gaps.append((cursor, end))
    return [g for g in gaps if g[0] <= g[1]]


def _overlay_years(
    overlay: RuleFile, bases: Sequence[tuple[RuleFile, list[RuleFile]]], problems: list[Problem]
) -> list[RuleYear]:
    assert overlay.effective_from is not None and overlay.effective_to is not None and overlay.ruleset
    payer = overlay.ruleset
    if not bases:
        problems.append(
            Problem(
                overlay.file,
                overlay.base_line,
                "base",
                "unknown_base",
                f"no rule-years for base '{overlay.base}'",
            )
        )
        return []
    for lo, hi in _uncovered(overlay.effective_from, overlay.effective_to, [b for b, _ in bases]):
        problems.append(
            Problem(
                overlay.file,
                overlay.from_line,
                "effective_from",
                "no_base_year",
                f"{lo}..{hi} lies in the overlay's span but no {overlay.base} rule-year covers it",
            )
        )
    years: list[RuleYear] = []
    for b, chain in sorted(bases, key=lambda fc: fc[0].effective_from or date.min):
        assert b.effective_from is not None and b.effective_to is not None
        lo, hi = max(b.effective_from, overlay.effective_from), min(b.effective_to, overlay.effective_to)
        plain = _Assembler(chain, None, problems)
        if lo > hi:
            years.append(plain.build(b.effective_from, b.effective_to, payer))
            continue
        if b.effective_from < lo:
            years.append(plain.build(b.effective_from, lo - timedelta(days=1), payer))
        years.append(_Assembler(chain, overlay, problems).build(lo, hi, payer))
        if hi < b.effective_to:
            years.append(plain.build(hi + timedelta(days=1), b.effective_to, payer))
    return years


def _dedupe(problems: Iterable[Problem]) -> list[Problem]:
    seen: set[tuple[Any, ...]] = set()
    out: list[Problem] = []
    for p in problems:
        key = (p.file, p.line, p.field, p.code, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def _check_files(paths: Sequence[Path]) -> tuple[list[RuleFile], list[Problem]]:
    files: list[RuleFile] = []
    problems: list[Problem] = []
    for path in paths:
        f, found = read_rule_file(Path(path))
        problems.extend(found)
        if f is not None:
            files.append(f)
    problems.extend(_overlaps(files))
    return files, problems


def _chains(files: Sequence[RuleFile], problems: list[Problem]) -> list[tuple[RuleFile, list[RuleFile]]]:
    """Each base year with the stack of files that makes it, root first.

    A year that ``extends`` another stacks on that year's whole chain (its imported
    layers included), so "2027 = 2026 + its CMS file + the 2027 differences". A year whose
    chain cannot be made (an unknown or later year, a loop) is left out, with a problem.
    """
    bases = [f for f in files if not f.overlay and not f.imported and f.ruleset and f.spans]
    by_year: dict[tuple[str, int], RuleFile] = {}
    for f in bases:
        if f.year is not None:
            by_year.setdefault((f.ruleset or "", f.year), f)
    imports: dict[tuple[str, int], list[RuleFile]] = {}
    for f in files:
        if f.imported and f.ruleset and f.year is not None:
            if (f.ruleset, f.year) not in by_year:
                problems.append(
                    Problem(
                        f.file,
                        f.year_line,
                        "year",
                        "unknown_base",
                        f"an imported layer for {f.ruleset} {f.year}, which no rule-year defines",
                    )
                )
                continue
            imports.setdefault((f.ruleset, f.year), []).append(f)

    made: dict[int, list[RuleFile] | None] = {}

    def chain(f: RuleFile) -> list[RuleFile] | None:
        if id(f) in made:
            return made[id(f)]
        own = [f, *sorted(imports.get((f.ruleset or "", f.year or 0), []), key=lambda x: x.file)]
        result: list[RuleFile] | None = own
        if f.extends is not None:
            parent = by_year.get((f.ruleset or "", f.extends))
            if parent is None:
                problems.append(
                    Problem(
                        f.file,
                        f.extends_line,
                        "extends",
                        "unknown_base",
                        f"extends {f.extends}, but no {f.ruleset} rule-year {f.extends} is loaded",
                    )
                )
                result = None
            elif f.year is not None and f.extends >= f.year:
                problems.append(
                    Problem(
                        f.file,
                        f.extends_line,
                        "extends",
                        "bad_value",
                        f"year {f.year} may extend only an earlier year, not {f.extends}",
                    )
                )
                result = None
            else:
                made[id(f)] = None  # a loop through this year ends here
                up = chain(parent)
                result = None if up is None else [*up, *own]
        made[id(f)] = result
        return result

    out: list[tuple[RuleFile, list[RuleFile]]] = []
    for f in bases:
        c = chain(f)
        if c is not None:
            out.append((f, c))
    return out


def _years(files: Sequence[RuleFile], problems: list[Problem]) -> list[RuleYear]:
    bases = _chains(files, problems)
    years = [
        _Assembler(chain, None, problems).build(b.effective_from, b.effective_to, b.ruleset)  # type: ignore[arg-type]
        for b, chain in bases
    ]
    for o in files:
        if o.overlay and o.ruleset and o.base and o.spans:
            years.extend(_overlay_years(o, [(b, c) for b, c in bases if b.ruleset == o.base], problems))
    return sorted(years, key=lambda y: (y.payer, y.effective_from))


def load_rule_files(paths: Sequence[Path]) -> tuple[list[RuleYear], list[Problem]]:
    """Check and assemble the given files; returns what could be built and every problem.

    Base files become one rule-year each (payer = their ``ruleset``); a base file that
    ``extends`` another year stacks on it (both must be among the paths), and imported
    layers among the paths go on the year they name. Each overlay among the paths is
    applied to the base files it names, giving one rule-year per base year under the
    overlay's name. Years built from files with problems may be incomplete; callers that
    bill must refuse them (:func:`load_rulebook` does).
    """
    files, problems = _check_files(paths)
    years = _years(files, problems)
    return years, _dedupe(problems)


# --------------------------------------------------------------------------------------
# The rulesets folder, and the rules folder of imported layers
# --------------------------------------------------------------------------------------


def _layout(files: Sequence[RuleFile]) -> list[Problem]:
    """File placement must agree with content, so a path tells a reviewer what it holds."""
    problems: list[Problem] = []
    for f in files:
        folder, _, name = f.source_name.partition("/")
        stem = name.removesuffix(".yaml")
        if f.imported:
            continue  # checked by _import_layout, where imported layers live
        if folder == PAYERS_DIR:
            if not f.overlay:
                problems.append(
                    Problem(
                        f.file,
                        1,
                        "base",
                        "layout_mismatch",
                        "files under payers/ must be overlays with 'base'",
                    )
                )
            elif f.ruleset and f.ruleset != stem:
                problems.append(
                    Problem(
                        f.file,
                        f.ruleset_line,
                        "ruleset",
                        "layout_mismatch",
                        f"ruleset '{f.ruleset}' but the file is {name}",
                    )
                )
        elif f.overlay:
            problems.append(
                Problem(f.file, f.base_line, "base", "layout_mismatch", "overlays belong under payers/")
            )
        else:
            if f.ruleset and f.ruleset != folder:
                problems.append(
                    Problem(
                        f.file,
                        f.ruleset_line,
                        "ruleset",
                        "layout_mismatch",
                        f"ruleset '{f.ruleset}' but the folder is {folder}/",
                    )
                )
            if f.year is not None and stem != str(f.year):
                problems.append(
                    Problem(
                        f.file,
                        f.year_line,
                        "year",
                        "layout_mismatch",
                        f"year {f.year} but the file is {name}",
                    )
                )
    return problems


def _import_layout(files: Sequence[RuleFile], rulesets: Sequence[RuleFile]) -> list[Problem]:
    """Imported layers live in the rules folder as ``<ruleset>/<year>/<kind>.yaml``; nothing else does."""
    problems: list[Problem] = []
    for f in rulesets:
        if f.imported:
            problems.append(
                Problem(
                    f.file,
                    1,
                    "layer",
                    "layout_mismatch",
                    "imported layers live in the rules folder ($CARETALLY_RULES_DIR), not among the rulesets",
                )
            )
    for f in files:
        if not f.imported:
            problems.append(
                Problem(
                    f.file,
                    1,
                    None,
                    "layout_mismatch",
                    "the rules folder holds only imported layers (caretally rules import-rvu writes them)",
                )
            )
            continue
        expected = f"{f.ruleset}/{f.year}/{f.layer_kind}.yaml"
        if f.source_name != expected:
            problems.append(
                Problem(f.file, 1, "layer", "layout_mismatch", f"this layer belongs at {expected}")
            )
    return problems


def _root(root: Path | str | None) -> Path:
    return RULESETS_ROOT if root is None else Path(root)


def import_files(rules_dir: Path | None, ruleset: str | None = None) -> list[Path]:
    """The imported layer files under ``rules_dir`` (of one ruleset, or all), sorted."""
    if rules_dir is None or not rules_dir.is_dir():
        return []
    pattern = f"{ruleset}/*/*.yaml" if ruleset else "*/*/*.yaml"
    return sorted(p for p in rules_dir.glob(pattern) if p.is_file() and p.parent.parent.name != "gpci")


def check_rulesets(root: Path | None = None, rules_dir: Path | None = None) -> list[Problem]:
    """Every problem in every rule file under ``root`` (default: the shipped rulesets),
    and in every layer imported into ``rules_dir`` (default: :func:`rules_dir`).

    Meant for ``caretally rules check``: an empty list means every base year, every
    overlay and every imported layer loads. Problems are ordered by file and line.
    """
    base = _root(root)
    imports_dir = resolve_rules_dir(rules_dir)
    problems: list[Problem] = []
    for stray in sorted(base.rglob("*.yml")):
        problems.append(
            Problem(
                _display(stray), None, None, "wrong_extension", "rule files end in .yaml; this one is ignored"
            )
        )
    imported = import_files(imports_dir)
    paths = sorted(p for p in base.rglob("*.yaml") if p not in set(imported))
    files, found = _check_files([*paths, *imported])
    problems.extend(found)
    shipped = [f for f in files if not _under(f, imports_dir)]
    layers = [f for f in files if _under(f, imports_dir)]
    problems.extend(_layout(shipped))
    problems.extend(_import_layout(layers, shipped))
    _years(files, problems)
    return sorted(_dedupe(problems), key=lambda p: (p.file, p.line or 0))


def _under(f: RuleFile, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        Path(f.file).resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _overlay_path(overlay: str | Path, root: Path) -> Path:
    if isinstance(overlay, Path) or "/" in overlay or overlay.endswith(".yaml"):
        return Path(overlay)
    return root / PAYERS_DIR / f"{overlay}.yaml"


def load_rulebook(
    payer: str = "medicare",
    *,
    overlay: str | Path | None = None,
    root: Path | None = None,
    rules_dir: Path | None = None,
) -> RuleBook:
    """The rule-years of ``payer`` (a base folder such as ``medicare``), ready to bill.

    ``overlay`` names a file under ``rulesets/payers`` (``"example-commercial"``) or is
    a path; ``payer`` may also name an overlay directly, which then brings its base.
    Layers imported from CMS files (``caretally rules import-rvu``) are read from
    ``rules_dir`` (default: ``$CARETALLY_RULES_DIR``, else ``./caretally-rules``) and
    stacked on the years they name. Any problem in any file used raises
    :class:`RuleLoadError` with all of them. Results are cached per arguments and per
    content of the imported layers, so an import is seen by the next call.
    """
    where = resolve_rules_dir(rules_dir)
    fingerprint = layers_fingerprint(where)
    # One loader at a time: the server's first requests arrive together, and without the
    # lock each of them parsed every rule file before the cache held the result.
    with _LOADING:
        return _load_rulebook(payer, overlay, root, where, fingerprint)


_LOADING = threading.RLock()


@functools.lru_cache(maxsize=32)
def _load_rulebook(
    payer: str, overlay: str | Path | None, root: Path | None, rules_dir: Path | None, fingerprint: str
) -> RuleBook:
    base_root = _root(root)
    if (
        overlay is None
        and not (base_root / payer).is_dir()
        and (base_root / PAYERS_DIR / f"{payer}.yaml").is_file()
    ):
        overlay = payer
        peek, _ = read_rule_file(base_root / PAYERS_DIR / f"{payer}.yaml")
        payer = peek.base if peek is not None and peek.base else "medicare"
    folder = base_root / payer
    if payer == PAYERS_DIR or not folder.is_dir():
        raise RuleLoadError(
            [Problem(str(base_root), None, "payer", "unknown_payer", f"no rule-years for payer '{payer}'")]
        )
    paths = sorted(folder.glob("*.yaml"))
    layers = import_files(rules_dir, payer)
    overlay_file: Path | None = None
    if overlay is not None:
        overlay_file = _overlay_path(overlay, base_root)
        paths.append(overlay_file)
    files, problems = _check_files([*paths, *layers])
    shipped = [f for f in files if not _under(f, rules_dir)]
    problems.extend(p for p in _layout(shipped) if overlay_file is None or p.file != _display(overlay_file))
    problems.extend(_import_layout([f for f in files if _under(f, rules_dir)], shipped))
    years = _years(files, problems)
    problems = _dedupe(problems)
    if problems:
        raise RuleLoadError(problems)
    name = payer
    if overlay_file is not None:
        chosen = next((f for f in files if f.overlay), None)
        name = chosen.ruleset if chosen is not None and chosen.ruleset else overlay_file.stem
    picked = tuple(y for y in years if y.payer == name)
    if not picked:
        raise RuleLoadError(
            [Problem(str(folder), None, "payer", "no_rule_years", f"no rule-years found for '{name}'")]
        )
    return RuleBook(name=name, years=picked)


#: ``load_rulebook.cache_clear()`` empties the cache (tests that edit rule files use it).
load_rulebook.cache_clear = _load_rulebook.cache_clear  # type: ignore[attr-defined]


def programs_never_together(year: RuleYear) -> tuple[tuple[Program, ...], ...]:
    """Convenience for the engine: the ``never_together`` pairs (empty if none)."""
    p = year.globals.get("never_together")
    return () if p is None else tuple(tuple(pair) for pair in p.value)

"""Two rule-years side by side, value by value: ``caretally rules diff 2026 2027``.

A reviewer of a new rule-year (or of a payer overlay, or of an imported CMS file) needs
to see exactly what changes: which codes come and go, which parameter of which code
moves from what to what, and on whose authority. :func:`diff_years` is that comparison
of two resolved :class:`RuleYear` values; :func:`resolve` turns what a person types
(``2026``, ``example-commercial``, ``example-commercial@2026``) into rule-years.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from caretally.rules.loader import load_rulebook
from caretally.rules.params import MissingParameter, ModifierRule, Param, RuleYear


def show(value: Any) -> str:
    """A value as a reviewer reads it: lists joined, RVU parts named, null as ``none``."""
    if value is None:
        return "none"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={show(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


@dataclass(frozen=True)
class Change:
    """One difference. ``kind``: status, global, option, code_added, code_removed, param, modifier."""

    kind: str
    code: str | None
    name: str | None
    old: str | None
    new: str | None
    old_citation: str | None = None
    new_citation: str | None = None
    old_layer: str | None = None
    new_layer: str | None = None
    new_source: str | None = None

    @property
    def value_changed(self) -> bool:
        return self.old != self.new

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "code": self.code,
            "name": self.name,
            "old": self.old,
            "new": self.new,
            "value_changed": self.value_changed,
            "old_citation": self.old_citation,
            "new_citation": self.new_citation,
            "old_layer": self.old_layer,
            "new_layer": self.new_layer,
            "new_source": self.new_source,
        }


def _param_change(
    kind: str, code: str | None, name: str, old: Param | None, new: Param | None
) -> Change | None:
    """A change when the value, or the authority for it, differs (same value, new source counts)."""
    if old is not None and new is not None and old.value == new.value and old.citation == new.citation:
        return None
    shown_new = None if new is None else show(new.value)
    if new is not None and new.derivation:
        shown_new = f"{shown_new} ({new.derivation})"
    return Change(
        kind,
        code,
        name,
        None if old is None else show(old.value),
        shown_new,
        None if old is None else old.citation,
        None if new is None else new.citation,
        None if old is None else old.layer,
        None if new is None else new.layer,
        None if new is None else new.source,
    )


def _modifier_text(rule: ModifierRule) -> str:
    codes = "all" if rule.codes is None else show(rule.codes)
    adds = "; ".join(f"{m}: {show(c)}" for m, c in rule.add.items())
    return (
        f"programs {show(rule.programs)}, codes {codes}, credential of {show(rule.credential_of)}, add {adds}"
    )


def diff_years(old: RuleYear, new: RuleYear) -> list[Change]:
    """Every difference from ``old`` to ``new``, in reading order: status, globals,
    options, codes added and removed, then each code's parameters, then modifier rules."""
    out: list[Change] = []
    if (old.status, old.status_citation) != (new.status, new.status_citation):
        out.append(
            Change("status", None, "status", old.status, new.status, old.status_citation or None,
                   new.status_citation or None, old.label, new.label)
        )  # fmt: skip
    for kind, before, after in (("global", old.globals, new.globals), ("option", old.options, new.options)):
        for name in sorted(before.keys() | after.keys()):
            change = _param_change(kind, None, name, before.get(name), after.get(name))
            if change is not None:
                out.append(change)
    for code in sorted(new.codes.keys() - old.codes.keys()):
        rule = new.codes[code]
        d = rule.params["descriptor"]
        out.append(
            Change("code_added", code, None, None, f"{rule.program} {rule.family}: {rule.descriptor}",
                   None, d.citation, None, d.layer, d.source)
        )  # fmt: skip
    for code in sorted(old.codes.keys() - new.codes.keys()):
        rule = old.codes[code]
        d = rule.params["descriptor"]
        out.append(
            Change("code_removed", code, None, f"{rule.program} {rule.family}: {rule.descriptor}", None,
                   d.citation, None, d.layer, None)
        )  # fmt: skip
    for code in sorted(old.codes.keys() & new.codes.keys()):
        a, b = old.codes[code].params, new.codes[code].params
        for name in sorted(a.keys() | b.keys()):
            change = _param_change("param", code, name, a.get(name), b.get(name))
            if change is not None:
                out.append(change)
    for name in sorted(old.modifiers.keys() | new.modifiers.keys()):
        m_old, m_new = old.modifiers.get(name), new.modifiers.get(name)
        t_old = None if m_old is None else _modifier_text(m_old)
        t_new = None if m_new is None else _modifier_text(m_new)
        c_old = None if m_old is None else m_old.citation
        c_new = None if m_new is None else m_new.citation
        if t_old == t_new and c_old == c_new:
            continue
        out.append(
            Change(
                "modifier",
                None,
                name,
                t_old,
                t_new,
                c_old,
                c_new,
                None if m_old is None else m_old.layer,
                None if m_new is None else m_new.layer,
                None if m_new is None else m_new.source,
            )
        )
    return out


class UnknownRules(ValueError):
    """What was typed names no rule-year; the message says what exists."""


def resolve(spec: str, partner: str | None = None, *, rules_dir: Path | None = None) -> RuleYear:
    """``2026`` → Medicare 2026; ``example-commercial`` → that overlay on the partner's year
    (or on the first year it layers); ``example-commercial@2026`` → that overlay on 2026."""
    text = spec.strip()
    name, _, at = text.partition("@")
    try:
        if name.isdigit() and not at:
            return load_rulebook("medicare", rules_dir=rules_dir).for_year(int(name))
        book = load_rulebook("medicare", overlay=name, rules_dir=rules_dir)
        if at:
            return book.for_year(int(at))
        if partner is not None and partner.strip().isdigit():
            return book.for_year(int(partner))
        layered = [y for y in book.years if any(layer.startswith("payers/") for layer in y.layers)]
        return (layered or list(book.years))[0]
    except MissingParameter as exc:
        raise UnknownRules(str(exc.args[0]) if exc.args else spec) from None
    except ValueError as exc:
        raise UnknownRules(f"{spec!r}: {exc}") from None

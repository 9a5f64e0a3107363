"""Invisible characters, NUL bytes and length limits: what every text value is held to.

Control and format characters (Unicode categories Cc and Cf, which include the
bidirectional overrides U+202A–U+202E and isolates U+2066–U+2069) cannot be seen on
screen or on a claim, yet they make ``P1`` and ``P1\u200b`` two patients and can reorder
what a reviewer reads. They are removed with a warning; tab, line feed and carriage
return keep the meaning they always had. A NUL byte is refused outright: PostgreSQL
cannot store it, and a bundle must not import on one database and fail on the other.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Characters of categories Cc/Cf that are kept: the whitespace fields already allow.
KEPT = frozenset("\t\n\r")
#: Named in the issue; all are Cf, listed so the rule does not hang on a Unicode version.
BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
NUL = "\0"
_SURROGATE = re.compile("[\ud800-\udfff]")

#: Documented limits (docs/formats.md). Ids and codes come from the schema's column
#: lengths; these cover the columns the schema stores as unbounded text.
VALUE_MAX = 64
TEXT_MAX = 4000


@dataclass(frozen=True, slots=True)
class Cleaned:
    """What cleaning did to one field: the code points removed, or why it is refused."""

    field: str
    removed: tuple[str, ...] = ()
    nul: bool = False
    emptied: bool = False
    surrogate: bool = False


def is_invisible(char: str) -> bool:
    if char in KEPT:
        return False
    return char in BIDI_CONTROLS or unicodedata.category(char) in ("Cc", "Cf")


def clean_text(value: str) -> tuple[str, tuple[str, ...]]:
    """``value`` without its invisible characters, and the ones removed (in order met)."""
    if value.isprintable():  # false for every Cc and Cf character: the common case costs one call
        return value, ()
    removed: list[str] = []
    kept: list[str] = []
    for char in value:
        if is_invisible(char):
            removed.append(char)
        else:
            kept.append(char)
    return ("".join(kept), tuple(removed)) if removed else (value, ())


def clean_record(raw: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[Cleaned]]:
    """The record with every text value cleaned, and one ``Cleaned`` per field touched.

    A record with nothing to clean is returned as the same object, so clean input pays
    for one ``isprintable`` per value and no copy.
    """
    notes: list[Cleaned] = []
    out: dict[str, Any] | None = None
    for name, value in raw.items():
        if NUL in name:
            notes.append(Cleaned(name, nul=True))
        if not isinstance(value, str) or value.isprintable():
            continue
        if NUL in value:
            notes.append(Cleaned(name, nul=True))
            continue
        if _SURROGATE.search(value):  # only a JSON escape can make one; no database stores it
            notes.append(Cleaned(name, surrogate=True))
            continue
        text, removed = clean_text(value)
        if not removed:
            continue
        if out is None:
            out = dict(raw)
        out[name] = text
        notes.append(Cleaned(name, removed, emptied=bool(value.strip()) and not text.strip()))
    return (raw if out is None else out), notes


def code_points(chars: tuple[str, ...]) -> str:
    """``U+200B, U+202E`` for a message (distinct, in order, at most four)."""
    seen = list(dict.fromkeys(chars))
    named = ", ".join(f"U+{ord(c):04X}" for c in seen[:4])
    return named + (" …" if len(seen) > 4 else "")

"""Pure parsers for the scalar values a bundle may carry.

Each parser takes what a CSV cell or a JSON value holds (text, a number, a boolean, or a
Python ``date``/``datetime`` handed in by an API caller) and returns the one canonical
Python value the store keeps, or raises ``FieldError`` with a stable code. Keeping them
free of I/O lets the validators, the synthetic generator and the tests share them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

MAX_SECONDS = 12 * 3600
EARLIEST_BIRTH = date(1900, 1, 1)

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT_RE = re.compile(r"[+-]?\d+")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})

# MBI positions: C A AN N A AN N A A N N. Letters exclude S, L, O, I, B and Z so an MBI
# never reads as a digit (CMS MBI format specification).
_MBI_ALPHA = "ACDEFGHJKMNPQRTUVWXY"
_A = f"[{_MBI_ALPHA}]"
_AN = f"[{_MBI_ALPHA}0-9]"
_MBI_RE = re.compile(f"[1-9]{_A}{_AN}[0-9]{_A}{_AN}[0-9]{_A}{_A}[0-9][0-9]")
_STATE_RE = re.compile(r"[A-Z]{2}")
_POSTAL_RE = re.compile(r"\d{5}(\d{4})?")


class FieldError(ValueError):
    """A value that cannot be accepted; ``code`` is the stable machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def is_blank(value: Any) -> bool:
    if type(value) is str:  # the common case first: every CSV cell is checked
        return not value.strip()
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Any, *, max_len: int | None = None) -> str:
    """Free text; numbers from JSON become their decimal spelling so CSV and JSON agree."""
    if type(value) is str:  # nearly every call (CSV cells): one test instead of three
        result = value.strip()
    elif isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise FieldError("bad_text", f"expected text, got {type(value).__name__}")
    else:
        result = value.strip() if isinstance(value, str) else str(value)
    if max_len is not None and len(result) > max_len:
        raise FieldError("too_long", f"{len(result)} characters, at most {max_len} allowed")
    return result


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise FieldError("bad_boolean", f"{value!r} is not a boolean (true/false, yes/no, 1/0)")


def integer(value: Any) -> int:
    if isinstance(value, bool):
        raise FieldError("bad_integer", f"{value!r} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float | Decimal) and value == int(value):
        return int(value)
    if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
        return int(value.strip())
    raise FieldError("bad_integer", f"{value!r} is not an integer")


def iso_date(value: Any) -> date:
    """A calendar date written YYYY-MM-DD; anything else is refused rather than guessed."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise FieldError("bad_date", f"{value!r} is not a date in YYYY-MM-DD form")


def instant(value: Any) -> datetime:
    """An ISO 8601 timestamp carrying its offset, returned as aware UTC.

    A wall-clock time without an offset is ambiguous across zones and DST, so it is an
    error of its own (``naive_timestamp``) instead of being read as UTC or local time.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        raw = value.strip()
        if len(raw) < 16 or raw[10] not in "Tt ":
            raise FieldError("bad_timestamp", f"{value!r} is not an ISO 8601 timestamp with a time of day")
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise FieldError("bad_timestamp", f"{value!r} is not an ISO 8601 timestamp") from None
    else:
        raise FieldError("bad_timestamp", f"{value!r} is not an ISO 8601 timestamp")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise FieldError("naive_timestamp", f"{value!r} has no UTC offset; add one such as -05:00 or Z")
    return parsed.astimezone(UTC)


def normalise_mbi(value: str) -> str:
    return value.strip().replace("-", "").upper()


def is_valid_mbi(value: str) -> bool:
    """True for a Medicare Beneficiary Identifier in the CMS format (dashes allowed)."""
    return bool(_MBI_RE.fullmatch(normalise_mbi(value)))


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        number = int(char)
        if index % 2 == 1:
            number *= 2
            if number > 9:
                number -= 9
        total += number
    return total % 10 == 0


def is_valid_npi(value: str) -> bool:
    """Ten digits whose last is the Luhn check digit over the 80840-prefixed number."""
    return len(value) == 10 and value.isdigit() and luhn_ok("80840" + value)


def icd10_billable(value: str) -> str:
    """A billable ICD-10-CM code in dotted form; a category such as ``E11`` is refused.

    Claims must carry the most specific code, so a valid but non-leaf code gets its own
    error code (``icd10_not_billable``) apart from a code that does not exist at all.
    """
    found = _icd10_lookup(value.strip().upper().replace(".", ""))
    if found == _NOT_A_CODE:
        raise FieldError("bad_icd10", f"{value.strip()!r} is not an ICD-10-CM code")
    if found == _CATEGORY:
        raise FieldError(
            "icd10_not_billable",
            f"{value.strip()!r} is a category, not a billable code; use a more specific code",
        )
    return found


_NOT_A_CODE, _CATEGORY = "", "-"


@lru_cache(maxsize=8192)
def _icd10_lookup(bare: str) -> str:
    """The dotted code, or ``_NOT_A_CODE`` / ``_CATEGORY``: a practice's enrollments repeat
    a few hundred codes, and the library's lookups were a tenth of a bulk import's CPU."""
    icd = _icd10()
    if not bare or "-" in bare or not icd.is_valid_item(bare):
        return _NOT_A_CODE
    if not icd.is_leaf(bare):
        return _CATEGORY
    return dotted_icd10(bare)


def dotted_icd10(bare: str) -> str:
    """ICD-10-CM's dot goes after the category's three characters (``E1165`` → ``E11.65``).

    Written here because the library's ``add_dot`` first lists all 98,000 codes of the
    tree and then finds the code by a linear scan: 0.3 s the first time in a process and
    7 ms per distinct code after, a tenth of a 10,000-patient import's CPU. A test holds
    this to the library's own spelling for every code.
    """
    return bare if len(bare) <= 3 else f"{bare[:3]}.{bare[3:]}"


@cache
def _icd10() -> ModuleType:
    """The ICD-10-CM tables, loaded on first use: parsing them takes seconds, and only
    enrollments' diagnoses need them, so commands and bundles without them never wait."""
    import simple_icd_10_cm

    return simple_icd_10_cm


def us_state(value: str) -> str:
    upper = value.strip().upper()
    if not _STATE_RE.fullmatch(upper):
        raise FieldError("bad_state", f"{value!r} is not a two-letter state code")
    return upper


def postal_code(value: str) -> str:
    """ZIP or ZIP+4; stored as bare digits because claim formats want them that way."""
    digits = value.strip().replace("-", "")
    if not _POSTAL_RE.fullmatch(digits):
        raise FieldError("bad_postal_code", f"{value!r} is not a 5- or 9-digit ZIP code")
    return digits


def utc_now() -> datetime:
    return datetime.now(UTC)

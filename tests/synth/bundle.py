"""Reading a generated bundle back, and format checks written independently of the generator.

The validators here deliberately do not import ``caretally.synth.identifiers``: a bug in
the generator's check-digit code must not be able to approve its own output.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

STEMS = ("practitioners", "patients", "enrollments", "devices", "readings", "time_entries")

_MBI_LETTER = "[AC-HJKMNP-RT-Y]"  # A–Z without B, I, L, O, S, Z
_MBI_RE = re.compile(
    rf"^[1-9]{_MBI_LETTER}[AC-HJKMNP-RT-Y0-9][0-9]{_MBI_LETTER}[AC-HJKMNP-RT-Y0-9][0-9]{_MBI_LETTER}{{2}}[0-9]{{2}}$"
)


def valid_mbi(value: str) -> bool:
    return bool(_MBI_RE.match(value))


def valid_npi(value: str) -> bool:
    """Ten digits whose Luhn sum, with the 80840 issuer prefix in front, is a multiple of 10."""
    if len(value) != 10 or not value.isdigit() or value[0] not in "12":
        return False
    digits = [int(c) for c in "80840" + value]
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2 == 1:
            digit = digit * 2
            digit = digit - 9 if digit > 9 else digit
        total += digit
    return total % 10 == 0


@dataclass
class Bundle:
    path: Path
    rows: dict[str, list[dict[str, str]]]

    def by_id(self, stem: str, key: str) -> dict[str, dict[str, str]]:
        return {row[key]: row for row in self.rows[stem]}


def read_bundle(path: Path) -> Bundle:
    rows: dict[str, list[dict[str, str]]] = {}
    for stem in STEMS:
        with (path / f"{stem}.csv").open(encoding="utf-8", newline="") as handle:
            rows[stem] = list(csv.DictReader(handle))
    return Bundle(path, rows)


def instant(text: str) -> datetime:
    """An ISO 8601 instant that must carry an offset (``Z`` accepted)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert value.tzinfo is not None, text
    return value


def day(text: str) -> date | None:
    return date.fromisoformat(text) if text else None


def file_bytes(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}

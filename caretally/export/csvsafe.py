"""Spreadsheet-safe CSV cells, for every CSV caretally writes.

Billing offices open our CSVs in Excel or LibreOffice, which run a cell that begins with
``=``, ``+``, ``-`` or ``@`` as a formula (and also treat a leading tab or carriage return
as a way into one). A patient name or note imported from a partner system could carry
``=HYPERLINK(...)``, so every writer passes its cells through :func:`safe_cell`, which
prefixes such a cell with a single quote as the OWASP CSV-injection guidance recommends.

A cell that is just a number (``-5.00``, ``+1``) is left alone: a spreadsheet reads it as
that number, never as a formula, and quoting it would turn money into text that no longer
adds up. Anything more (``-5+cmd``, ``-A1``, ``-1e3``) is neutralised.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import Any, TextIO

#: Characters that make a spreadsheet treat the cell as a formula (OWASP list).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def safe_cell(value: Any) -> str:
    """The cell as text that no spreadsheet will evaluate; ``None`` becomes empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_START) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


class SafeWriter:
    """A ``csv.writer`` whose every cell goes through :func:`safe_cell` first."""

    def __init__(self, out: TextIO, **options: Any):
        self._writer = csv.writer(out, **options)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([safe_cell(v) for v in row])

    def writerows(self, rows: Iterable[Iterable[Any]]) -> None:
        for row in rows:
            self.writerow(row)


class SafeDictWriter(csv.DictWriter):  # type: ignore[type-arg]
    """A ``csv.DictWriter`` whose every value goes through :func:`safe_cell`.

    Header names are ours, never user data, so they are written unchanged.
    """

    def writeheader(self) -> Any:
        return super().writerow(dict(zip(self.fieldnames, self.fieldnames, strict=True)))

    def writerow(self, rowdict: Any) -> Any:
        return super().writerow({k: safe_cell(v) for k, v in rowdict.items()})

    def writerows(self, rowdicts: Iterable[Any]) -> None:
        for row in rowdicts:
            self.writerow(row)


def safe_writer(out: TextIO, **options: Any) -> SafeWriter:
    """Drop-in for ``csv.writer(out, **options)``."""
    return SafeWriter(out, **options)

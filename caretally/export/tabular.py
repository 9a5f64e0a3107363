"""Claim lines as CSV and JSON for billers, spreadsheets and practice-management imports.

Both writers share one column order (``CLAIM_FIELDS`` first, then the bookkeeping columns)
and one rendering of each value, so a CSV row and its JSON object always agree: dates
ISO 8601, money with exactly two decimals, lists ``;``-joined in CSV and arrays in JSON.
Money is a string in JSON too, because a JSON number would be read back as a float.

A run judged (in whole or in part) by a proposed rule-year — CY2027 before its final
rule — says so in both: a trailing ``provisional_rules`` column (CSV) or field (JSON)
names, on each line, the proposed rule-year that judged it (empty for a line judged by
final rules). Runs judged only by final rules keep the columns above, unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from enum import Enum
from pathlib import Path
from typing import Any, TextIO

from caretally.export.csvsafe import safe_writer
from caretally.model import ClaimLine

CLAIM_FIELDS = (
    "patient_id",
    "code",
    "units",
    "date_of_service",
    "period_start",
    "period_end",
    "billing_npi",
    "rendering_npi",
    "diagnosis_codes",
    "place_of_service",
    "modifiers",
    "charge",
    "expected_payment",
    "run_id",
)
EXTRA_FIELDS = ("enrollment_id", "program", "payer", "member_id")
ALL_FIELDS = CLAIM_FIELDS + EXTRA_FIELDS
#: Only in exports of a run a proposed rule-year judged: which one, per line.
PROVISIONAL_FIELD = "provisional_rules"
#: line → the proposed rule-year that judged it ("" for final rules).
Provisional = Callable[[ClaimLine], str]

CENT = Decimal("0.01")


def money_text(amount: Decimal) -> str:
    return str(amount.quantize(CENT, rounding=ROUND_HALF_UP))


def _value(value: Any) -> Any:
    """One field in its JSON shape; CSV flattens lists and ``None`` afterwards."""
    if isinstance(value, Decimal):
        return money_text(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    return value


def line_record(line: ClaimLine) -> dict[str, Any]:
    """A claim line as an ordered dict of JSON-ready values (field order = ``ALL_FIELDS``)."""
    return {name: _value(getattr(line, name)) for name in ALL_FIELDS}


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return str(value)


@contextmanager
def _text_out(out: Path | TextIO) -> Iterator[TextIO]:
    if isinstance(out, Path):
        with out.open("w", encoding="utf-8", newline="") as fh:
            yield fh
    else:
        yield out


def write_csv(lines: Sequence[ClaimLine], out: Path | TextIO, provisional: Provisional | None = None) -> None:
    """Header plus one row per line. A stream passed in should be opened with ``newline=""``.

    Cells go through :func:`caretally.export.csvsafe.safe_cell`: ids and codes come from the
    practice's own files, and one starting with ``=`` must not run as a spreadsheet formula.
    ``provisional`` (for a run a proposed rule-year judged) adds the ``provisional_rules`` column.
    """
    with _text_out(out) as fh:
        writer = safe_writer(fh, lineterminator="\r\n")
        writer.writerow(ALL_FIELDS if provisional is None else (*ALL_FIELDS, PROVISIONAL_FIELD))
        for line in lines:
            record = line_record(line)
            row = [_csv_cell(record[name]) for name in ALL_FIELDS]
            writer.writerow(row if provisional is None else [*row, provisional(line)])


def write_json(
    lines: Sequence[ClaimLine], out: Path | TextIO, provisional: Provisional | None = None
) -> None:
    """A JSON array of objects in ``ALL_FIELDS`` order, money as strings like ``"47.43"``;
    with ``provisional``, each object ends with ``provisional_rules`` (null for final rules)."""
    records = []
    for line in lines:
        record = line_record(line)
        if provisional is not None:
            record[PROVISIONAL_FIELD] = provisional(line) or None
        records.append(record)
    with _text_out(out) as fh:
        json.dump(records, fh, indent=2, ensure_ascii=False)
        fh.write("\n")

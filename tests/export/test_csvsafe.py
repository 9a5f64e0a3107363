"""Spreadsheet safety: cells a spreadsheet would run as formulas are neutralised, numbers are not."""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import pytest

from caretally.export.csvsafe import SafeDictWriter, safe_cell, safe_writer
from caretally.export.tabular import ALL_FIELDS, write_csv
from tests.export.factories import line

DANGEROUS = [
    '=HYPERLINK("http://example.invalid","x")',
    "+SUM(A1:A2)",
    "-2+3",
    "@SUM(A1)",
    "\t=1+1",
    "\r=1+1",
    "-",
    "=",
]


@pytest.mark.parametrize("value", DANGEROUS)
def test_formula_starts_are_prefixed_with_a_quote(value):
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["-5.00", "+1", "-0.5", ".5", "47.43", "0"])
def test_plain_numbers_stay_numbers(value):
    assert safe_cell(value) == value


@pytest.mark.parametrize("value", ["Smith", "E11.9;I10", "", "a=b", "O'Brien"])
def test_ordinary_text_is_unchanged(value):
    assert safe_cell(value) == value


def test_none_is_an_empty_cell_and_other_values_become_text():
    assert safe_cell(None) == "" and safe_cell(Decimal("-5.00")) == "-5.00" and safe_cell(3) == "3"


def test_writer_and_dict_writer_neutralise_every_cell_but_not_the_header():
    out = io.StringIO(newline="")
    writer = safe_writer(out)
    writer.writerow(["name", "note"])
    writer.writerows([["=cmd", "-10.25"], ["@x", "ok"]])
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [
        ["name", "note"],
        ["'=cmd", "-10.25"],
        ["'@x", "ok"],
    ]
    out = io.StringIO(newline="")
    dict_writer = SafeDictWriter(out, fieldnames=["=head", "b"])
    dict_writer.writeheader()
    dict_writer.writerow({"=head": "+1+1", "b": "\t"})
    assert list(csv.reader(io.StringIO(out.getvalue()))) == [["=head", "b"], ["'+1+1", "'\t"]]


def test_claims_csv_read_back_shows_no_formula(tmp_path: Path):
    hostile = [
        line(patient_id='=HYPERLINK("http://example.invalid")', enrollment_id="@E1", member_id="-1+2"),
        line(patient_id="+P2", enrollment_id="\tE2", member_id="\rM"),
    ]
    path = tmp_path / "claims.csv"
    write_csv(hostile, path)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(ALL_FIELDS)
    for row in rows:
        for name, cell in row.items():
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), (name, cell)
            if cell.startswith("-"):
                Decimal(cell)  # only a plain number may start with a minus sign
    assert rows[0]["patient_id"] == '\'=HYPERLINK("http://example.invalid")'
    assert rows[0]["member_id"] == "'-1+2" and rows[1]["enrollment_id"] == "'\tE2"
    assert rows[0]["charge"] == "47.43", "numbers are written as numbers"

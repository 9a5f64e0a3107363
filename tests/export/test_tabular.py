"""CSV and JSON claim-line exports, read back with the standard csv and json parsers."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from caretally.export.tabular import CLAIM_FIELDS, write_csv, write_json
from caretally.model import Payer, Program
from tests.export.factories import OTHER_NPI, line

LINES = [
    line(
        "99458",
        units=2,
        charge=Decimal("82.8"),
        expected_payment=Decimal("82.845"),
        diagnosis_codes=("E11.9", "I10"),
        modifiers=("GP", "CQ"),
        rendering_npi=OTHER_NPI,
        member_id="1EG4TE5MK73",
        date_of_service=date(2026, 3, 9),
    ),
    line("99490", "P002", program=Program.CCM, payer=Payer.COMMERCIAL, charge=Decimal("66")),
]

EXPECTED_HEADER = [*CLAIM_FIELDS, "enrollment_id", "program", "payer", "member_id"]


def test_claim_fields_are_the_agreed_columns_in_order():
    assert CLAIM_FIELDS == (
        "patient_id", "code", "units", "date_of_service", "period_start", "period_end",
        "billing_npi", "rendering_npi", "diagnosis_codes", "place_of_service", "modifiers", "charge",
        "expected_payment", "run_id",
    )  # fmt: skip


def test_csv_round_trips_through_the_csv_reader(tmp_path: Path):
    target = tmp_path / "claims.csv"
    write_csv(LINES, target)
    rows = list(csv.reader(target.open(newline="", encoding="utf-8")))
    assert rows[0] == EXPECTED_HEADER
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["units"] == "2"
    assert first["date_of_service"] == "2026-03-09"
    assert first["diagnosis_codes"] == "E11.9;I10"
    assert first["modifiers"] == "GP;CQ"
    assert first["charge"] == "82.80"
    assert first["expected_payment"] == "82.85"  # half-up to the cent
    assert first["rendering_npi"] == OTHER_NPI
    second = dict(zip(rows[0], rows[2], strict=True))
    assert second["rendering_npi"] == "" and second["modifiers"] == "" and second["member_id"] == ""
    assert (second["program"], second["payer"], second["charge"]) == ("CCM", "commercial", "66.00")
    assert len(rows) == 3


def test_csv_to_a_stream_and_an_empty_export_has_only_the_header():
    buffer = io.StringIO(newline="")
    write_csv([], buffer)
    assert buffer.getvalue() == ",".join(EXPECTED_HEADER) + "\r\n"


def test_json_is_an_array_of_objects_in_field_order_with_money_as_strings(tmp_path: Path):
    target = tmp_path / "claims.json"
    write_json(LINES, target)
    data = json.loads(target.read_text(encoding="utf-8"))
    assert [list(obj) for obj in data] == [EXPECTED_HEADER, EXPECTED_HEADER]
    first = data[0]
    assert first["charge"] == "82.80" and first["expected_payment"] == "82.85"
    assert first["units"] == 2
    assert first["diagnosis_codes"] == ["E11.9", "I10"] and first["modifiers"] == ["GP", "CQ"]
    assert first["period_start"] == "2026-03-01"
    assert data[1]["rendering_npi"] is None and data[1]["program"] == "CCM"


def test_csv_and_json_agree_value_for_value():
    csv_out, json_out = io.StringIO(newline=""), io.StringIO()
    write_csv(LINES, csv_out)
    write_json(LINES, json_out)
    rows = list(csv.DictReader(io.StringIO(csv_out.getvalue(), newline="")))
    for row, obj in zip(rows, json.loads(json_out.getvalue()), strict=True):
        for name, value in obj.items():
            flat = ";".join(value) if isinstance(value, list) else "" if value is None else str(value)
            assert row[name] == flat, name

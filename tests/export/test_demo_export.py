"""``caretally demo``: its own practice settings route the mixed-payer practice's claims."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caretally.cli.main import build_app
from tests.export.x12check import segments, validate_x12

EXPECTED_SBR09 = {"medicare": "MB", "medicaid": "MC", "commercial": "CI", "medicare_advantage": "16"}


@pytest.mark.slow
def test_demo_837p_sends_each_claim_to_its_patients_payer(tmp_path: Path):
    out = tmp_path / "demo"
    args = ["demo", "--patients", "120", "--months", "2", "--start", "2026-01", "--out", str(out)]
    result = CliRunner().invoke(build_app(), args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "claims by payer" in result.output
    with (out / "bundle" / "patients.csv").open(newline="") as fh:
        people = {r["patient_id"]: r for r in csv.DictReader(fh)}
    text = (out / "claims-2026-02.837p.x12").read_text(encoding="ascii")
    check = validate_x12(text)
    assert check.accepted, check.errors
    sbr09 = payer = ""
    seen: dict[str, int] = {}
    for s in segments(text):
        if s[0] == "SBR":
            sbr09 = s[9]
        elif s[:2] == ["NM1", "PR"]:
            payer = s[3]
        elif s[0] == "CLM":
            person = people[s[1].rsplit("-", 1)[0]]
            expected = EXPECTED_SBR09[person["payer"]]
            if person["member_id"].startswith("HUM"):  # the demo's named MA plan
                expected = "HM"
            assert sbr09 == expected, (s[1], person["payer"], sbr09)
            seen[payer] = seen.get(payer, 0) + 1
    assert len(seen) >= 3, f"a mixed-payer practice reaches several payers: {seen}"

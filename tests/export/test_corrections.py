"""Corrections against a locked run, claim by claim, and the practice's claim-number file."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretally.errors import ProblemsError
from caretally.export.corrections import corrections, load_claim_numbers
from caretally.export.routing import plan_interchanges
from caretally.export.x12_837p import render_837p, routed_claims
from caretally.model import Payer
from caretally.settings_practice import demo_practice
from tests.export.factories import line, patient
from tests.export.x12check import segments, validate_x12

DEMO = demo_practice()


def claims(lines, **patients):
    people = {ln.patient_id: patients.get(ln.patient_id, patient(ln.patient_id)) for ln in lines}
    return routed_claims(lines, people, DEMO)


def summary(result):
    return [(c.claim_id, c.frequency, c.original_reference, c.payer) for c in result]


def test_unchanged_claims_are_left_out_and_the_run_id_does_not_count():
    locked = claims([line("99454", "P001"), line("99454", "P002")])
    again = claims([line("99454", "P001", run_id="other"), line("99454", "P002", run_id="other")])
    assert corrections(locked, again, {}) == []


def test_new_changed_and_gone_claims_become_original_replacement_and_void():
    locked = claims([line("99454", "P001"), line("99454", "P002")])
    current = claims(
        [
            line("99454", "P001"),
            line("99457", "P001", charge=Decimal("51.77")),
            line("99454", "P003"),
        ]
    )
    result = corrections(locked, current, {"P002-202603": "ICN-2"})
    assert summary(result) == [
        ("P001-202603", "7", "P001-202603", Payer.MEDICARE),
        ("P002-202603", "8", "ICN-2", Payer.MEDICARE),
        ("P003-202603", "1", None, Payer.MEDICARE),
    ]
    assert [ln.code for ln in result[0].lines] == ["99454", "99457"]
    assert [ln.code for ln in result[1].lines] == ["99454"], "the void repeats what was sent"
    text = render_837p(
        plan_interchanges(result)[0], DEMO, control_number=5, created=datetime(2026, 4, 2, tzinfo=UTC)
    )
    assert validate_x12(text).accepted, validate_x12(text).errors
    body = segments(text)
    clm = [i for i, s in enumerate(body) if s[0] == "CLM"]
    assert [body[i][5] for i in clm] == ["11:B:7", "11:B:8", "11:B:1"]
    assert [body[i + 1][:3] for i in clm[:2]] == [["REF", "F8", "P001-202603"], ["REF", "F8", "ICN-2"]]
    assert body[clm[2] + 1][0] == "HI", "an original has no REF*F8"


def test_a_new_payer_is_a_void_to_the_old_one_and_an_original_to_the_new():
    locked = claims([line("99454", "P001")])
    commercial = replace(patient("P001"), payer=Payer.COMMERCIAL, member_id="BCB0123456789")
    current = claims(
        [line("99454", "P001", payer=Payer.COMMERCIAL, member_id="BCB0123456789")], P001=commercial
    )
    result = corrections(locked, current, {})
    assert summary(result) == [
        ("P001-202603", "8", "P001-202603", Payer.MEDICARE),
        ("P001-202603", "1", None, Payer.COMMERCIAL),
    ]
    text = render_837p(
        plan_interchanges(result)[0], DEMO, control_number=6, created=datetime(2026, 4, 2, tzinfo=UTC)
    )
    assert validate_x12(text).accepted
    assert [s[9] for s in segments(text) if s[0] == "SBR"] == ["MB", "CI"]


def test_claim_numbers_file_last_row_wins_and_faults_are_listed(tmp_path: Path):
    path = tmp_path / "numbers.csv"
    path.write_text("\ufeffclaim_id,payer_claim_number\nA-202603,111\nB-202603,222\nA-202603,333\n")
    assert load_claim_numbers(path) == {"A-202603": "333", "B-202603": "222"}
    path.write_text("claim_id,payer_claim_number\n,111\nB-202603,\nC-202603,1*2\n")
    with pytest.raises(ProblemsError) as err:
        load_claim_numbers(path)
    assert [(p.line, p.field, p.code) for p in err.value.problems] == [
        (2, "claim_id", "missing"),
        (3, "payer_claim_number", "missing"),
        (4, "payer_claim_number", "invalid"),
    ]
    path.write_text("claim,number\nA,1\n")
    with pytest.raises(ProblemsError) as err:
        load_claim_numbers(path)
    assert err.value.problems[0].code == "missing_column"
    with pytest.raises(ProblemsError) as err:
        load_claim_numbers(tmp_path / "absent.csv")
    assert err.value.problems[0].code == "not_found"


def test_an_unreadable_claim_numbers_file_is_one_problem(tmp_path: Path):
    with pytest.raises(ProblemsError) as err:
        load_claim_numbers(tmp_path)  # a folder, not a file
    assert [p.code for p in err.value.problems] == ["unreadable"]
    binary = tmp_path / "numbers.csv"
    binary.write_bytes(b"claim_id,payer_claim_number\n\xff\xfe\n")
    with pytest.raises(ProblemsError) as err:
        load_claim_numbers(binary)
    assert [p.code for p in err.value.problems] == ["unreadable"]


CODES = ["99454", "99453", "99490", "99091"]


@st.composite
def month_lines(draw):
    lines = []
    for pid in draw(st.lists(st.sampled_from(["P001", "P002", "P003", "P004"]), max_size=4, unique=True)):
        for code in draw(st.lists(st.sampled_from(CODES), min_size=1, max_size=3, unique=True)):
            units = draw(st.integers(1, 2))
            lines.append(line(code, pid, units=units, charge=Decimal(draw(st.integers(1, 9000))) / 100))
    return lines


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=month_lines(), after=month_lines())
def test_any_pair_of_runs_gives_valid_corrections_that_reach_the_new_state(before, after):
    locked = claims(before) if before else []
    current = claims(after) if after else []
    result = corrections(locked, current, {})
    old = {c.claim_id: c for c in locked}
    new = {c.claim_id: c for c in current}
    sent = {(c.claim_id, c.frequency) for c in result}
    assert sent == (
        {(cid, "1") for cid in new.keys() - old.keys()}
        | {(cid, "8") for cid in old.keys() - new.keys()}
        | {(cid, "7") for cid in new.keys() & old.keys() if old[cid].lines != new[cid].lines}
    )
    if result:
        (plan,) = plan_interchanges(result)
        text = render_837p(plan, DEMO, control_number=8, created=datetime(2026, 4, 2, tzinfo=UTC))
        check = validate_x12(text)
        assert check.accepted, check.errors
        refs = [s[2] for s in segments(text) if s[:2] == ["REF", "F8"]]
        assert sorted(refs) == sorted(cid for cid, f in sent if f != "1")

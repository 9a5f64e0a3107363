"""The compiled snapshot encoder writes exactly what the generic walk writes.

A columnar month run stores ``encode(facts)`` for every month it decides, and the stored
facts digest is checked against the decoded snapshot whenever a reader asks for reasons;
so the fast encoder (one generated function per model dataclass) must give the very same
JSON as :func:`encode_any` — byte for byte, on the engine's and the columnar generators'
patient-months and on months built from a real store — and decode to facts with the
same digest (``sha256(repr(facts))``), or every stored columnar month would fail its
check on explain.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caretally.billing.evaluate import facts_options
from caretally.billing.payers import PayerRules
from caretally.columnar.snapshot import _compiled, decode_facts, encode, encode_any
from caretally.dates import parse_month
from caretally.facts import build_month_facts
from caretally.ingest import import_bundle
from caretally.model import DeviceFact, PatientMonthFacts, Payer, PerformerClass, Program, TimeFact
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize
from tests.columnar.test_columnar_agreement import simple_months
from tests.rules.test_engine_properties import patient_months


def _same(facts: PatientMonthFacts) -> None:
    fast, walked = orjson.dumps(encode(facts)), orjson.dumps(encode_any(facts))
    assert fast == walked
    back = decode_facts(orjson.loads(fast))
    assert hashlib.sha256(repr(back).encode()).digest() == hashlib.sha256(repr(facts).encode()).digest()


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(st.one_of(simple_months(), patient_months()))
def test_compiled_encoder_equals_the_walk_on_generated_months(facts: PatientMonthFacts) -> None:
    _same(facts)


def test_compiled_encoder_keeps_what_the_walk_keeps_in_odd_values() -> None:
    """None in every optional field, a plain string where an enum is hinted, overlaps."""
    entry = TimeFact(
        "T1",
        date(2026, 3, 2),
        600,
        "P1",
        PerformerClass.STAFF,
        "rn",
        None,
        True,
        None,
        datetime(2026, 3, 2, 9, 0, tzinfo=UTC),
        logged_seconds=900,
        overlaps=("T0",),
        other_patient_overlaps=("X9", "X8"),
    )
    odd = replace(entry, performer="staff", started_at=None)  # type: ignore[arg-type]
    device = DeviceFact("D1", Program.RPM, "blood_pressure", True, None, date(2026, 2, 1), None)
    listed = replace(entry, overlaps=["T0"], other_patient_overlaps=("X1",))  # type: ignore[arg-type]
    for value in (entry, odd, device, listed):
        assert orjson.dumps(encode(value)) == orjson.dumps(encode_any(value))
    assert _compiled(int) is None and encode(3) == 3 and encode("x") == "x"


def test_compiled_encoder_equals_the_walk_on_stored_months(db_url: str, tmp_path: Path) -> None:
    """Months built by ``build_month_facts`` from an imported practice (both databases)."""
    url = db_url
    bundle = tmp_path / "bundle"
    synthesize(SynthConfig(patients=120, start=date(2026, 3, 1), months=1, seed=3), bundle)
    engine = open_database(url, "org")
    try:
        assert import_bundle(engine, "org", bundle).ok()
        month = parse_month("2026-03")
        options = facts_options(PayerRules.load().for_payer(Payer.MEDICARE), month)
        months = list(build_month_facts(engine, "org", month, options=options))
        assert len(months) > 50
        for facts in months:
            _same(facts)
    finally:
        engine.dispose()

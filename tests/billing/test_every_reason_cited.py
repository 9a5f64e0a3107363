"""Every reason the month run stores names its source: no empty citation anywhere.

A biller or auditor reading why a code was (not) billed must be able to follow each
reason to the rule behind it — common checks, concurrency demotions, time notes and open
periods included. The demo-like practice exercises every family, lanes, allocation and
overlapping time.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, stored_decisions
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize


def test_every_stored_reason_has_a_citation(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    synthesize(SynthConfig(patients=150, start=date(2026, 2, 1), months=2, seed=5, lead_in_days=29), bundle)
    engine = open_database(f"sqlite:///{tmp_path / 'c.db'}")
    assert import_bundle(engine, "default", bundle).ok()
    result = bill_month(engine, "default", parse_month("2026-03"), PayerRules.load())
    decisions = stored_decisions(engine, result.run_id)
    reasons = [(d["patient_id"], d["code"], r) for d in decisions for r in d["reasons"]]
    assert len({r["rule_id"] for _, _, r in reasons}) > 20, "the practice should reach most rules"
    empty = sorted({(r["rule_id"], f"{p} {c}") for p, c, r in reasons if not r["citation"].strip()})
    assert not empty, f"{len(empty)} reasons without a citation, e.g. {empty[:8]}"
    unparsed = [r for _, _, r in reasons if r["verdict"] not in ("passed", "failed", "pending")]
    assert not unparsed

"""Stored decisions read back exactly as the engine made them, in either stored form.

The month run stores each patient's decisions in a compact form (citations, rule values
and shared reasons once per row). Every reader goes through ``stored_decisions``, which
must give the very dicts ``decision_to_json`` makes — and rows written before the compact
form (a plain list of those dicts) must read, and render in ``explain --run``, the same.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, stored_decisions
from caretally.billing.serialize import decision_to_json, stored_form
from caretally.cli.main import build_app
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store import schema
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize

MONTH = "2026-03"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stored")
    synthesize(SynthConfig(patients=40, start=date(2026, 3, 1), months=1, seed=7, lead_in_days=29), out)
    return out


def test_stored_decisions_are_the_decisions_made(db_url: str, bundle: Path) -> None:
    engine = open_database(db_url, "default")
    assert import_bundle(engine, "default", bundle).ok()
    rules = PayerRules.load()
    run = bill_month(engine, "default", parse_month(MONTH), rules)
    live = [
        decision_to_json(d)
        for _, ds in evaluate_month(engine, "default", parse_month(MONTH), rules)
        for d in ds
    ]
    stored = stored_decisions(engine, run.run_id)
    assert stored == live
    assert len({r["rule_id"] for d in stored for r in d["reasons"]}) > 10
    # Each dict is the reader's own: changing one changes no other decision.
    stored[0]["reasons"][0]["message"] = "changed"
    stored[0]["reasons"][0]["evidence"]["x"] = 1
    assert stored_decisions(engine, run.run_id) == live
    engine.dispose()


def test_rows_of_the_plain_form_read_and_render_the_same(db_url: str, bundle: Path) -> None:
    """A run stored before the compact form (one JSON list per patient) reads the same."""
    engine = open_database(db_url, "default")
    assert import_bundle(engine, "default", bundle).ok()
    # The engine's compact form is what this reads back (a columnar month stores typed rows).
    run = bill_month(engine, "default", parse_month(MONTH), PayerRules.load(), engine_choice="full")
    table = schema.run_decisions
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.patient_id, table.c.decisions)).all()
    assert all(isinstance(value, dict) and value["shape"] == 2 for _, value in rows)
    patient = next(pid for pid, value in rows if len(value["decisions"]) > 3)
    before = stored_decisions(engine, run.run_id)
    app, runner = build_app(), CliRunner()
    args = ["explain", "--patient", patient, "--month", MONTH, "--run", run.run_id]
    args += ["--db", db_url, "--json"]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output

    # Rewrite every row as the code before the compact form wrote it: the plain list.
    with engine.begin() as conn:
        for pid, _ in rows:
            plain = stored_decisions(engine, run.run_id, pid)
            conn.execute(
                update(table)
                .where(table.c.run_id == run.run_id, table.c.patient_id == pid)
                .values(decisions=plain)
            )
    with engine.connect() as conn:
        values = [value for (value,) in conn.execute(select(table.c.decisions))]
    assert all(isinstance(value, list) for value in values)
    assert stored_decisions(engine, run.run_id) == before
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == json.loads(shown.output)
    engine.dispose()


def test_the_compact_form_keeps_each_citation_once(bundle: Path, tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'c.db'}", "default")
    assert import_bundle(engine, "default", bundle).ok()
    for _, decisions in evaluate_month(engine, "default", parse_month(MONTH), PayerRules.load()):
        form = stored_form(decisions)
        assert len(form["citations"]) == len(set(form["citations"]))
        texts = {r.citation for d in decisions for r in d.reasons}
        assert set(form["citations"]) == texts
        assert len(form["reasons"]) <= sum(len(d.reasons) for d in decisions)
    engine.dispose()

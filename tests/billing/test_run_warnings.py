"""A run's warnings live with each patient's decisions row; its summary keeps their counts.

A synthesized practice has overlapping time entries (about three warnings a patient), so
the warnings the run stores can be compared with the ones the engine's reasons carry,
patient by patient, and read back page by page, on both databases.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caretally.billing.evaluate import evaluate_month
from caretally.billing.payers import PayerRules
from caretally.billing.run import RunWarning, bill_month, run_by_id, stored_warnings
from caretally.cli.main import build_app
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.store.db import open_database
from caretally.synth.config import SynthConfig
from caretally.synth.generate import synthesize
from tests.columnar.agreement import engine_warnings

ORG = "default"
MONTH = "2026-04"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("warn-practice")
    synthesize(SynthConfig(patients=40, start=date(2026, 3, 1), months=2, seed=5, lead_in_days=29), out)
    return overlapping(out)


def overlapping(bundle: Path, month: str = MONTH) -> Path:
    """The bundle with overlapping time added: a small practice's staff are never busy enough.

    Every other patient's first entry after the 9th of ``month`` is logged again by the same performer at the
    same minute for the next patient (time overlapping another patient's) and, five
    seconds later, for the same patient (minutes logged twice).
    """
    path = bundle / "time_entries.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    patients = sorted({r["patient_id"] for r in rows})
    first = {}
    for r in rows:
        if r["started_at"].startswith(f"{month}-1"):
            first.setdefault(r["patient_id"], r)
    added = []
    for i, patient in enumerate(patients[:-1:2]):
        entry = first.get(patient)
        if entry is None:
            continue
        other = patients[patients.index(patient) + 1]
        added.append(entry | {"entry_id": f"X{i}-other", "patient_id": other, "program": ""})
        later = entry["started_at"].replace(":00-", ":05-", 1).replace(":00+", ":05+", 1)
        added.append(entry | {"entry_id": f"X{i}-again", "started_at": later})
    with path.open("a", newline="") as f:
        csv.DictWriter(f, fields).writerows(added)
    return bundle


def _engine_warnings(db_url: str) -> list[RunWarning]:
    """The warnings the engine's reasons carry, each (rule, entry) once a patient, in patient order."""
    engine = open_database(db_url, ORG)
    out: list[RunWarning] = []
    for facts, decisions in evaluate_month(engine, ORG, parse_month(MONTH), PayerRules.load()):
        for rule_id, message, entry in engine_warnings(decisions):
            out.append(RunWarning(rule_id, facts.patient_id, message, (entry,)))
    engine.dispose()
    return sorted(out, key=lambda w: w.patient_id)


def test_the_run_stores_each_patients_warnings_and_counts_them_in_its_summary(
    db_url: str, bundle: Path
) -> None:
    engine = open_database(db_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    run = bill_month(engine, ORG, parse_month(MONTH), PayerRules.load())
    expected = _engine_warnings(db_url)
    assert len(expected) > 20 and len({w.patient_id for w in expected}) > 5, "the practice has overlaps"

    stored = run_by_id(engine, ORG, run.run_id)
    assert stored is not None and stored.summary is not None
    assert "warnings" not in stored.summary
    assert stored.summary["warnings_total"] == len(expected) == run.summary.warnings_total
    assert stored.summary["warnings_by_code"] == dict(sorted(Counter(w.code for w in expected).items()))

    every = stored_warnings(engine, run.run_id)
    assert every.items == expected and every.total == len(expected)
    # Pages cut anywhere (inside a patient's warnings too) put back together make the whole.
    for size in (1, 4, 7, 100):
        pages = [stored_warnings(engine, run.run_id, start, size) for start in range(0, len(expected), size)]
        assert [w for p in pages for w in p.items] == expected
        assert {p.total for p in pages} == {len(expected)}
    assert stored_warnings(engine, run.run_id, len(expected) + 5, 10).items == []
    assert run.warnings(3).items == expected[:3]
    engine.dispose()


def test_bill_prints_counts_by_kind_and_lists_every_warning_with_json(sqlite_url: str, bundle: Path) -> None:
    engine = open_database(sqlite_url, ORG)
    assert import_bundle(engine, ORG, bundle).ok()
    engine.dispose()
    runner = CliRunner()
    done = runner.invoke(build_app(), ["bill", "--month", MONTH, "--db", sqlite_url, "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.stdout)["warnings"]
    assert listed == [w.to_json() for w in _engine_warnings(sqlite_url)]
    again = runner.invoke(build_app(), ["bill", "--month", MONTH, "--db", sqlite_url])
    assert again.exit_code == 0, again.output
    text = " ".join(again.stdout.split())
    kinds = Counter(w["code"] for w in listed)
    assert "warnings:" in text and f"{kinds['time.overlap']} " in text
    first = listed[0]
    assert f"{first['patient_id']}: {' '.join(first['message'].split())}" in text

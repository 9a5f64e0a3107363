"""The commands that read PHI (explain, worklist, export) leave audit events too."""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.cli.main import run
from caretally.dates import parse_month
from caretally.ingest import import_records
from caretally.services import audit
from caretally.services.context import Actor
from caretally.store.db import open_database
from tests.ingest.bundles import valid_bundle


def test_explain_worklist_and_export_are_recorded(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = open_database(db_url, "clinic")
    assert import_records(engine, "clinic", valid_bundle(), now=datetime(2026, 4, 1, tzinfo=UTC)).ok()
    bill_month(engine, "clinic", parse_month("2026-03"), PayerRules.load())
    common = ["--db", db_url, "--org", "clinic"]
    run(["explain", "--patient", "P1", "--month", "2026-03", "--json", *common])
    run(["worklist", "--as-of", "2026-03-20", "--json", *common])
    run(["export", "--month", "2026-03", "--format", "csv", "--out", str(tmp_path / "claims.csv"), *common])
    capsys.readouterr()

    auditor = Actor(org_id="clinic", actor="user:1", role=None)
    events, _ = audit.list_events(engine, auditor, audit.EventFilter(actor=f"cli:{getpass.getuser()}"))
    by_action = {e.action: e for e in events}
    assert by_action["patient_month.read"].patient_ids == ("P1",)
    assert by_action["patient_month.read"].resource == "patients/P1/months/2026-03"
    assert set(by_action["worklist.read"].patient_ids) == {"P1", "P2"}
    export = by_action["claims.export"]
    assert export.detail == {"format": "csv"} and export.patient_ids
    assert all(e.client_address == "local" for e in events)
    assert audit.verify_chain(engine, "clinic").ok

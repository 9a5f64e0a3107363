"""The audit trail is append-only, chained per organization, and tampering is caught."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

from caretally.cli.main import build_app
from caretally.services import accounts, audit
from caretally.services.context import Actor
from caretally.store import schema
from caretally.store.db import open_database

runner = CliRunner()


def _actor(org: str, n: int = 1) -> Actor:
    return Actor(org_id=org, actor=f"user:{n}", role=None, name=f"u{n}@x.example", request_id=f"req-{n:08d}")


def _engine(url: str) -> Engine:
    engine = open_database(url)
    for org in ("north", "south"):
        accounts.add_org(engine, org, org)
    return engine


def _fill(engine: Engine, count: int = 6) -> None:
    for i in range(count):
        audit.record(
            engine,
            _actor("north", i),
            "patient.read",
            f"patients/P{i}",
            patient_ids=[f"P{i}", "P-common"],
            detail={"n": i},
        )
        audit.record(engine, _actor("south", i), "patients.list", "patients", patient_ids=[f"S{i}"])


def _unguard(engine: Engine) -> None:
    """What an attacker with database access would do first: remove the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            for table in ("audit_events", "audit_event_patients"):
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only"))
        else:
            for table in ("audit_events", "audit_event_patients"):
                for verb in ("update", "delete"):
                    conn.execute(text(f"DROP TRIGGER {table}_no_{verb}"))


def _event_id(engine: Engine, org: str, seq: int) -> int:
    e = schema.audit_events
    with engine.connect() as conn:
        return conn.execute(select(e.c.event_id).where(e.c.org_id == org, e.c.seq == seq)).scalar_one()


def test_an_untouched_chain_verifies_per_organization(db_url: str) -> None:
    engine = _engine(db_url)
    _fill(engine)
    for org in ("north", "south"):
        check = audit.verify_chain(engine, org)
        assert check.ok, check.problem
        assert (check.events, check.head_seq) == (6, 6)
    assert audit.chain_orgs(engine) == ["north", "south"]


def test_the_triggers_refuse_update_and_delete(db_url: str) -> None:
    engine = _engine(db_url)
    _fill(engine, 2)
    e, p = schema.audit_events, schema.audit_event_patients
    for statement in (
        update(e).where(e.c.org_id == "north").values(outcome="denied"),
        delete(e).where(e.c.org_id == "north"),
        delete(p).where(p.c.org_id == "north"),
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    assert audit.verify_chain(engine, "north").ok


@pytest.mark.parametrize(
    "tamper, problem",
    [
        ("edit", "event 3 was altered"),
        ("edit_patient", "event 3 was altered"),
        ("delete_middle", "before number 4 are missing"),
        ("delete_newest", "newest 1 event(s) after number 5 are missing"),
        ("relink", "event 3 does not link to event 2"),
        ("orphan_patient", "belong to no event"),
    ],
)
def test_tampering_is_caught_at_the_first_broken_link(db_url: str, tamper: str, problem: str) -> None:
    engine = _engine(db_url)
    _fill(engine)
    _unguard(engine)
    e, p = schema.audit_events, schema.audit_event_patients
    third = _event_id(engine, "north", 3)
    with engine.begin() as conn:
        if tamper == "edit":
            conn.execute(update(e).where(e.c.event_id == third).values(actor="user:999"))
        elif tamper == "edit_patient":
            conn.execute(
                update(p).where(p.c.event_id == third, p.c.patient_id == "P2").values(patient_id="P-other")
            )
        elif tamper == "delete_middle":
            conn.execute(delete(p).where(p.c.event_id == third))
            conn.execute(delete(e).where(e.c.event_id == third))
        elif tamper == "delete_newest":
            newest = _event_id(engine, "north", 6)
            conn.execute(delete(p).where(p.c.event_id == newest))
            conn.execute(delete(e).where(e.c.event_id == newest))
        elif tamper == "relink":
            conn.execute(update(e).where(e.c.event_id == third).values(prev_hash="f" * 64))
        elif tamper == "orphan_patient":
            conn.execute(insert(p).values(event_id=987654, org_id="north", patient_id="P-ghost"))
    check = audit.verify_chain(engine, "north")
    assert not check.ok
    assert problem in (check.problem or "")
    if tamper in ("edit", "edit_patient", "relink"):
        assert (check.broken_at, check.event_id) == (3, third)
    assert audit.verify_chain(engine, "south").ok, "one organization's tampering is not another's"


def test_audit_verify_command_reports_the_break_and_exits_1(db_url: str) -> None:
    engine = _engine(db_url)
    _fill(engine, 4)
    app = build_app()
    ok = runner.invoke(app, ["audit", "verify", "--db", db_url])
    assert ok.exit_code == 0, ok.output
    assert "north: 4 event(s), chain intact" in ok.output
    _unguard(engine)
    e = schema.audit_events
    with engine.begin() as conn:
        conn.execute(
            update(e).where(e.c.event_id == _event_id(engine, "north", 2)).values(resource="patients/PX")
        )
    broken = runner.invoke(app, ["audit", "verify", "--db", db_url, "--org", "north"])
    assert broken.exit_code == 1
    assert (
        "audit chain broken at event 2" in str(broken.exception or broken.output)
        or "event 2" in broken.output
    )


def test_concurrent_appends_keep_one_gapless_chain(db_url: str) -> None:
    """Writers on separate connections are serialised by the chain head: no fork, no gap."""
    engine = _engine(db_url)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(15):
                audit.record(
                    engine, _actor("north", n), "patient.read", f"patients/P{n}-{i}", patient_ids=[f"P{n}"]
                )
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    check = audit.verify_chain(engine, "north")
    assert check.ok, check.problem
    assert check.events == 90
    e = schema.audit_events
    with engine.connect() as conn:
        seqs = sorted(conn.execute(select(e.c.seq).where(e.c.org_id == "north")).scalars())
    assert seqs == list(range(1, 91))


def test_a_failed_call_is_recorded_with_its_outcome(db_url: str, tmp_path: Path) -> None:
    from caretally.services import patients
    from caretally.services.errors import NotFound

    engine = _engine(db_url)
    with pytest.raises(NotFound):
        patients.get_patient(engine, _actor("north"), "nobody")
    events, _ = audit.list_events(engine, _actor("north"), audit.EventFilter(action="patient.read"))
    assert [(ev.outcome, ev.resource, ev.patient_ids) for ev in events] == [
        ("not_found", "patients/nobody", ())
    ]

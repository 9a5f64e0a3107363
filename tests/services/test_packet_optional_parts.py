"""The packet's optional parts: a performer's employment and the patient's visits appear once
the store has them (``practitioners.employment`` and ``visits`` come with issue 14 item 1).

The store here is given both, the way that migration adds them (a column with a default, a
table keyed by organization and visit id); the packet reads them through the ``tables`` the
service is given, as it reads ``store.schema``'s own once they are there.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from bs4 import BeautifulSoup
from sqlalchemy import Boolean, Column, Date, MetaData, PrimaryKeyConstraint, String, Table, text, update

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month
from caretally.dates import parse_month
from caretally.ingest import import_bundle
from caretally.services.context import cli_actor
from caretally.services.packets import line_packets
from caretally.store import schema
from caretally.store.db import DEFAULT_ORG, open_database
from caretally.synth import SynthConfig, synthesize
from caretally.web.packet_document import packet_html

MONTH = "2026-04"


def test_employment_and_visits_are_in_the_packet_when_the_store_has_them(db_url: str, tmp_path: Path) -> None:
    synthesize(
        SynthConfig(patients=8, start=date(2026, 3, 1), months=2, seed=3, lead_in_days=30), tmp_path / "b"
    )
    engine = open_database(db_url, DEFAULT_ORG)
    assert import_bundle(engine, DEFAULT_ORG, tmp_path / "b").ok()
    run = bill_month(engine, DEFAULT_ORG, parse_month(MONTH), PayerRules.load())
    line = next(x for x in run.lines if x.code in ("99457", "99490", "98980"))

    # Once issue 14 item 1 is merged the schema has both, and they are used as they are.
    md = MetaData()
    practitioners, visits = schema.practitioners, schema.metadata.tables.get("visits")
    with engine.begin() as conn:
        if "employment" not in practitioners.c:
            practitioners = schema.practitioners.to_metadata(md)
            practitioners.append_column(
                Column("employment", String(16), nullable=False, server_default="employee")
            )
            conn.execute(
                text(
                    "ALTER TABLE practitioners ADD COLUMN employment VARCHAR(16) NOT NULL DEFAULT 'employee'"
                )
            )
        if visits is None:
            visits = Table(
                "visits",
                md,
                Column("org_id", String(64), nullable=False),
                Column("visit_id", String(64), nullable=False),
                Column("patient_id", String(64), nullable=False),
                Column("practitioner_id", String(64), nullable=False),
                Column("visit_date", Date, nullable=False),
                Column("code", String(8), nullable=False),
                Column("place_of_service", String(2)),
                Column("telehealth", Boolean, nullable=False),
                PrimaryKeyConstraint("org_id", "visit_id"),
            )
            visits.create(conn)
    first = line_packets(
        engine, cli_actor(DEFAULT_ORG), run_id=run.run_id, patient_id=line.patient_id
    ).packets
    performer = next(p for p in first if p.line.code == line.code).time_entries[0].performer
    assert performer is not None
    with engine.begin() as conn:
        conn.execute(
            update(practitioners)
            .where(practitioners.c.practitioner_id == performer.practitioner_id)
            .values(employment="contractor")
        )
        who, pid, start = performer.practitioner_id, line.patient_id, line.period_start
        conn.execute(
            visits.insert(),
            [
                {"org_id": DEFAULT_ORG, "visit_id": "V-IN", "patient_id": pid, "practitioner_id": who,
                 "visit_date": start + timedelta(days=2), "code": "99214", "place_of_service": "11",
                 "telehealth": False},
                {"org_id": DEFAULT_ORG, "visit_id": "V-OUT", "patient_id": pid, "practitioner_id": who,
                 "visit_date": start - timedelta(days=40), "code": "99213", "place_of_service": "11",
                 "telehealth": True},
            ],
        )  # fmt: skip

    tables = {**schema.metadata.tables, "practitioners": practitioners, "visits": visits}
    found = line_packets(
        engine, cli_actor(DEFAULT_ORG), run_id=run.run_id, patient_id=line.patient_id, tables=tables
    )
    packet = next(p for p in found.packets if p.line.code == line.code)
    by_performer = {
        e.performer.practitioner_id: e.performer.employment for e in packet.time_entries if e.performer
    }
    assert by_performer[performer.practitioner_id] == "contractor"
    assert set(by_performer.values()) <= {"contractor", "employee"}
    assert packet.visits is not None
    assert [v.record["visit_id"] for v in packet.visits] == ["V-IN"]
    if "visits" not in schema.metadata.tables:
        assert first[0].visits is None  # without a visits table the packet says none is known

    soup = BeautifulSoup(packet_html(packet.model_dump(mode="json"), "x.json"), "html.parser")
    visits_section = soup.find("section", id="visits")
    assert (
        visits_section is not None
        and "99214" in visits_section.get_text()
        and "99213" not in visits_section.get_text()
    )
    performers = soup.find("section", id="performers")
    assert performers is not None and "contractor" in performers.get_text()
    engine.dispose()

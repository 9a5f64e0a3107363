"""Audit packets end to end: a synthetic practice billed and locked, every line's packet
written by ``caretally packet`` and checked against the stored run, on SQLite and PostgreSQL.

Every number a packet shows (units, payment, DOS, period, counted days, minutes,
thresholds) is compared with the stored line and the stored decision; the JSON is
validated against the documented shape (``services.packets.Packet``); the HTML is parsed
by a real parser. A later import that corrects a counted reading, adds a reading on a
counted day and adds time leaves the locked line's packet as it was — only naming the
correction.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from bs4 import BeautifulSoup
from sqlalchemy import select
from typer.testing import CliRunner

from caretally.billing.payers import PayerRules
from caretally.billing.run import bill_month, lock_month, stored_decisions, stored_lines
from caretally.cli.main import build_app
from caretally.dates import parse_month
from caretally.ingest import import_bundle, import_records
from caretally.services.packets import Packet
from caretally.store import schema
from caretally.store.db import DEFAULT_ORG, open_database
from caretally.synth import SynthConfig, synthesize
from caretally.web.phrasing import money

runner = CliRunner()
MONTH = "2026-04"
PRACTICE = SynthConfig(patients=14, start=date(2026, 3, 1), months=2, seed=14, lead_in_days=30)


def cli(*args: str) -> Any:
    return runner.invoke(build_app(), list(args))


@pytest.fixture
def billed(db_url: str, tmp_path: Path) -> tuple[str, str]:
    """The synthetic practice imported and April billed (a draft): (database URL, run id)."""
    synthesize(PRACTICE, tmp_path / "bundle")
    engine = open_database(db_url, DEFAULT_ORG)
    assert import_bundle(engine, DEFAULT_ORG, tmp_path / "bundle").ok()
    result = bill_month(engine, DEFAULT_ORG, parse_month(MONTH), PayerRules.load())
    assert result.lines and not result.problems
    engine.dispose()
    return db_url, result.run_id


@pytest.fixture
def locked(billed: tuple[str, str]) -> tuple[str, str]:
    """April billed and locked."""
    engine = open_database(billed[0], DEFAULT_ORG)
    lock_month(engine, DEFAULT_ORG, MONTH)
    engine.dispose()
    return billed


def read_zip(path: Path) -> dict[str, str]:
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name).decode() for name in z.namelist()}


def decision_for(decisions: list[dict[str, Any]], line: Any) -> dict[str, Any]:
    return next(
        d
        for d in decisions
        if d["status"] == "billable"
        and d["code"] == line.code
        and d["enrollment_id"] == line.enrollment_id
        and d["period"]["start"] == line.period_start.isoformat()
    )


def numbers_on_page(html: str) -> dict[str, str]:
    """The "Numbers the line was judged on" section, term → text, from the parsed HTML."""
    soup = BeautifulSoup(html, "html.parser")
    section = soup.find("section", id="numbers")
    assert section is not None
    return {
        dt.get_text(strip=True): dd.get_text(" ", strip=True)
        for dt, dd in zip(section.find_all("dt"), section.find_all("dd"), strict=True)
    }


def test_every_line_of_a_month_has_a_packet_that_matches_its_run(
    locked: tuple[str, str], tmp_path: Path
) -> None:
    url, run_id = locked
    done = cli("packet", "--db", url, "--month", MONTH, "--zip", "--out", str(tmp_path / "out"))
    assert done.exit_code == 0, done.output
    files = read_zip(next((tmp_path / "out").glob("*.zip")))

    engine = open_database(url, DEFAULT_ORG)
    lines = stored_lines(engine, run_id)
    decisions = stored_decisions(engine, run_id)
    run_row = (
        engine.connect()
        .execute(select(schema.billing_runs).where(schema.billing_runs.c.run_id == run_id))
        .one()
    )
    assert len(files) == 2 * len(lines)
    codes_with_days = codes_with_minutes = shortened = 0
    for number, line in enumerate(lines, start=1):
        stem = next(n for n in files if n.startswith(f"line-{number:04d}-") and n.endswith(".json"))[:-5]
        doc = json.loads(files[f"{stem}.json"])
        packet = Packet.model_validate(doc)  # the documented shape, nothing more or less
        decision = decision_for(decisions, line)

        # The line, the decision and the run, number for number.
        assert packet.line.number == number
        assert (packet.line.code, packet.line.units) == (line.code, line.units)
        assert packet.line.date_of_service == line.date_of_service.isoformat() == decision["date_of_service"]
        assert (packet.line.period_start, packet.line.period_end) == (
            line.period_start.isoformat(),
            line.period_end.isoformat(),
        )
        assert Decimal(packet.line.expected_payment) == line.expected_payment
        assert Decimal(packet.line.charge) == line.charge
        assert packet.decision == decision
        assert packet.run.run_id == run_id and packet.run.status == "locked"
        assert (packet.run.lines_digest, packet.run.input_digest, packet.run.ruleset_hash) == (
            run_row.lines_digest,
            run_row.input_digest,
            run_row.ruleset_hash,
        )
        assert packet.run.engine_version == run_row.engine_version
        assert packet.rule_values == decision["parameters"] and packet.rule_values
        assert all(p["citation"] for p in packet.rule_values)

        measures = decision["measures"]
        if "days" in measures:
            codes_with_days += 1
            assert len(packet.counted_days) == measures["days"] >= measures["min_days"]
            for day in packet.counted_days:
                assert day.readings, f"{stem}: counted day {day.date} without a reading"
                assert all(r.record["local_date"] == day.date for r in day.readings)
            assert {d.record["device_id"] for d in packet.devices} >= {
                x for c in packet.counted_days for x in c.device_ids
            }
        if "seconds" in measures:
            codes_with_minutes += 1
            seconds = sum(int(e.record["seconds"]) for e in packet.time_entries)
            assert (
                seconds == measures["seconds"]
                and seconds // 60 == measures["minutes"] >= measures["min_minutes"]
            )
            assert all(e.performer is not None and e.performer.credential for e in packet.time_entries)
            if measures.get("interactive"):
                assert packet.live_call_entry_ids
                assert {e.record["entry_id"] for e in packet.time_entries if e.live_call} == set(
                    packet.live_call_entry_ids
                )
        assert packet.patient.record["patient_id"] == line.patient_id
        assert packet.enrollment is not None and packet.enrollment.record["consent_date"]

        # The HTML: parses, one h1, fetches nothing, and shows the same numbers.
        html = files[f"{stem}.html"]
        soup = BeautifulSoup(html, "html.parser")
        assert len(soup.find_all("h1")) == 1
        assert not soup.find_all(["link", "script", "img", "iframe"])
        assert not [
            t for t in soup.find_all(True) if t.get("src") or (t.get("href") or "").startswith("http")
        ]
        assert soup.find("style", media="print") is not None
        shown = numbers_on_page(html)
        assert shown["Units"] == str(line.units)
        assert shown["Expected payment"] == money(line.expected_payment)
        assert shown["Charge"] == money(line.charge)
        assert shown["Date of service"].endswith(f"{line.date_of_service:%b %Y}")
        assert f" {line.date_of_service.day} " in f" {shown['Date of service']} "
        for label, key in (
            ("Days with data", "days"),
            ("Days required", "min_days"),
            ("Minutes counted", "minutes"),
            ("Minutes required", "min_minutes"),
            ("Minutes allowed at most", "max_minutes"),
        ):
            assert shown.get(label) == (str(measures[key]) if key in measures else None), (stem, label)
        days_table = soup.find("section", id="days")
        if "days" in measures:
            assert days_table is not None
            counts = [int(tr.find_all("td")[0].get_text()) for tr in days_table.find("tbody").find_all("tr")]
            assert counts == [len(d.readings) for d in packet.counted_days]
            if max(counts) > 4:  # the day table shortens a day; the packet then lists them all
                shortened += 1
                listed = soup.find("section", id="readings").find("tbody").find_all("tr")
                assert len(listed) == sum(counts)
        else:
            assert days_table is None
    assert codes_with_days and codes_with_minutes and shortened  # the month exercised each kind of page

    # Reading the packets was a PHI read, recorded with every patient it disclosed.
    events = schema.audit_events
    with engine.connect() as conn:
        event = conn.execute(select(events).where(events.c.action == "packet.read")).one()
        touched = set(
            conn.execute(
                select(schema.audit_event_patients.c.patient_id).where(
                    schema.audit_event_patients.c.event_id == event.event_id
                )
            ).scalars()
        )
    assert event.outcome == "success" and touched == {x.patient_id for x in lines}
    engine.dispose()


def test_a_later_import_leaves_a_locked_lines_packet_as_it_was_and_names_the_correction(
    locked: tuple[str, str], tmp_path: Path
) -> None:
    url, run_id = locked
    engine = open_database(url, DEFAULT_ORG)
    lines = list(enumerate(stored_lines(engine, run_id), start=1))
    days_n = next(n for n, x in lines if x.code in ("99454", "98977", "99445"))
    minutes_n = next(n for n, x in lines if x.code in ("99457", "99490", "98980"))

    def packet_of(number: int, folder: str) -> tuple[dict[str, Any], str]:
        done = cli(
            "packet", "--db", url, "--run", run_id, "--line", str(number), "--out", str(tmp_path / folder)
        )
        assert done.exit_code == 0, done.output
        (found,) = (tmp_path / folder).glob(f"line-{number:04d}-*.json")
        return json.loads(found.read_text()), found.with_suffix(".html").read_text()

    days_before, _ = packet_of(days_n, "before")
    minutes_before, _ = packet_of(minutes_n, "before")
    reading = days_before["counted_days"][0]["readings"][0]["record"]
    entry = minutes_before["time_entries"][0]["record"]

    # The later import: a corrected reading, another reading on a counted day, a corrected
    # time entry and a new one in the same month.
    fields = ("patient_id", "device_id", "measured_at", "type", "unit", "transmission", "reading_id")
    corrected = {k: reading[k] for k in fields} | {"value": "77" if reading["value"] != "77" else "78"}
    late = corrected | {"reading_id": "LATE-1", "measured_at": _later(reading["measured_at"])}
    keep = ("entry_id", "patient_id", "practitioner_id", "program", "started_at", "seconds", "modality")
    amended = {k: entry[k] for k in keep} | {
        "interactive": str(entry["interactive"]).lower(),
        "activity": "chart review (corrected)",
    }
    new_entry = amended | {"entry_id": "LATE-T1", "started_at": _later(entry["started_at"], 3 * 60)}
    report = import_records(
        engine, DEFAULT_ORG, {"readings": [corrected, late], "time_entries": [amended, new_entry]}
    )
    assert report.ok(), [str(p) for p in report.problems]
    with engine.connect() as conn:
        stored = conn.execute(
            select(schema.readings.c.value).where(schema.readings.c.reading_key == reading["reading_key"])
        ).scalar_one()
    assert stored == corrected["value"]  # the store now holds the correction

    days_after, days_html = packet_of(days_n, "after")
    minutes_after, _ = packet_of(minutes_n, "after")
    for doc in (days_after, minutes_after):
        Packet.model_validate(doc)
        assert "LATE-" not in json.dumps(doc)  # stored after the run: not the run's evidence

    # The run's view is unchanged: the same days, readings and minutes with the values the
    # run saw; only the correction is named beside it.
    assert _without_changes(days_after) == _without_changes(days_before)
    assert _without_changes(minutes_after) == _without_changes(minutes_before)
    changed = days_after["counted_days"][0]["readings"][0]
    assert changed["record"] == reading
    assert changed["after_run"][0]["kind"] == "changed"
    assert changed["after_run"][0]["fields"]["value"] == {
        "at_run": reading["value"],
        "now": corrected["value"],
    }
    first = minutes_after["time_entries"][0]
    assert first["record"] == entry
    assert first["after_run"][0]["fields"]["activity"]["now"] == "chart review (corrected)"
    assert any("changed after the run" in n for n in days_after["notes"])
    text = BeautifulSoup(days_html, "html.parser").get_text()
    assert f"value: {reading['value']} then, {corrected['value']} now" in text
    engine.dispose()


def test_a_reading_retracted_after_a_draft_run_stays_in_its_packet_marked_retracted(
    billed: tuple[str, str], tmp_path: Path
) -> None:
    url, run_id = billed
    engine = open_database(url, DEFAULT_ORG)
    number = next(
        n for n, x in enumerate(stored_lines(engine, run_id), start=1) if x.code in ("99454", "99445")
    )
    args = ("packet", "--db", url, "--run", run_id, "--line", str(number))
    assert cli(*args, "--out", str(tmp_path / "before")).exit_code == 0
    before = json.loads(next((tmp_path / "before").glob("*.json")).read_text())
    reading = before["counted_days"][-1]["readings"][0]["record"]
    retraction = {"file": "readings", "id": reading["reading_key"], "reason": "sent for the wrong patient"}
    report = import_records(engine, DEFAULT_ORG, {"retractions": [retraction]})
    assert report.ok(), [str(p) for p in report.problems]

    assert cli(*args, "--out", str(tmp_path / "after")).exit_code == 0
    after = json.loads(next((tmp_path / "after").glob("*.json")).read_text())
    Packet.model_validate(after)
    assert _without_changes(after) == _without_changes(before)
    (kept,) = [r for r in after["counted_days"][-1]["readings"] if r["record"] == reading]
    assert [(a["kind"], a["reason"]) for a in kept["after_run"]] == [
        ("retracted", "sent for the wrong patient")
    ]
    engine.dispose()


def _later(instant: str, seconds: int = 60) -> str:
    """A moment after ``instant`` (the same local day for these records)."""
    return (datetime.fromisoformat(instant) + timedelta(seconds=seconds)).isoformat()


def _without_changes(doc: dict[str, Any]) -> dict[str, Any]:
    """The packet minus what only says what changed after the run."""
    text = json.loads(json.dumps(doc))
    text["notes"] = []
    for day in text["counted_days"]:
        for r in day["readings"]:
            r["after_run"] = []
    for e in text["time_entries"]:
        e["after_run"] = []
    return text


def test_packet_refusals_are_one_line(locked: tuple[str, str], tmp_path: Path) -> None:
    url, run_id = locked
    out = str(tmp_path / "x")
    cases = [
        (("--run", "no-such-run", "--line", "1"), "no run no-such-run", 1),
        (("--org", "another-clinic", "--run", run_id, "--line", "1"), f"no run {run_id}", 1),  # tenants
        (("--run", run_id, "--line", "9999"), "has no line 9999", 1),
        (("--month", "2026-05", "--zip"), "2026-05 has no stored run", 1),
        (("--month", MONTH, "--patient", "NOBODY"), "patient NOBODY has no claim line", 1),
        (("--month", MONTH), "--month alone", 2),
        (("--line", "1"), "say which lines", 2),
    ]
    # Through the real entry point, each refusal is one line and a hint.
    for args, message, status in cases:
        proc = subprocess.run(
            [sys.executable, "-m", "caretally.cli.main", "packet", "--db", url, "--out", out, *args],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == status
        first, *rest = proc.stderr.strip().splitlines()
        assert message in first and first.startswith("caretally: ")
        assert all(x.startswith("hint: ") for x in rest) and len(rest) <= 1
    assert not Path(out).exists() or not any(Path(out).iterdir())

"""Synthetic devices carry vendor serials that live ingest finds them by."""

from __future__ import annotations

import csv
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from caretally.ingest import import_bundle
from caretally.ingest.tenovi import ingest_tenovi
from caretally.ingest.values import luhn_ok
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize
from caretally.synth.identifiers import APP_MODELS, CELLULAR_MODELS
from tests.ingest.live_practice import stored_readings

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
MAC = re.compile(r"02(:[0-9A-F]{2}){5}")


def test_serials_are_realistic_unique_and_stable(tmp_path: Path) -> None:
    config = SynthConfig(patients=60, start=date(2026, 3, 1), months=1, seed=5)
    synthesize(config, tmp_path / "a")
    synthesize(config, tmp_path / "b")
    rows = list(csv.DictReader((tmp_path / "a" / "devices.csv").open(encoding="utf-8")))
    assert (tmp_path / "a" / "devices.csv").read_bytes() == (tmp_path / "b" / "devices.csv").read_bytes()
    serials = [r["hardware_id"] for r in rows if r["hardware_id"]]
    assert len(serials) == len(set(serials)) and serials
    for row in rows:
        serial, model = row["hardware_id"], row["model"]
        if model in APP_MODELS:
            assert serial == ""
        elif model.startswith("Tenovi"):
            assert UUID.fullmatch(serial), serial
        elif model in CELLULAR_MODELS:
            assert len(serial) == 15 and serial.isdigit() and luhn_ok(serial), serial
        else:
            assert MAC.fullmatch(serial), serial


def test_a_tenovi_webhook_finds_a_synthetic_device(db_url: str, tmp_path: Path) -> None:
    config = SynthConfig(patients=60, start=date(2026, 3, 1), months=1, seed=5)
    synthesize(config, tmp_path / "bundle")
    engine = open_database(db_url, "synth")
    assert import_bundle(engine, "synth", tmp_path / "bundle").stored
    rows = list(csv.DictReader((tmp_path / "bundle" / "devices.csv").open(encoding="utf-8")))
    cuff = next(r for r in rows if r["model"] == "Tenovi BPM" and not r["returned_date"])
    when = datetime.fromisoformat(cuff["assigned_date"]).replace(hour=15, tzinfo=UTC) + timedelta(days=1)
    payload = [
        {
            "metric": "blood_pressure",
            "device_name": "Tenovi BPM - L",
            "hwi_device_id": cuff["hardware_id"],
            "patient_id": cuff["patient_id"],
            "hardware_uuid": "0A1B2C3D4E5F",
            "sensor_code": "10",
            "value_1": 131,
            "value_2": 84,
            "created": when.isoformat(),
            "timestamp": when.isoformat(),
            "timezone_offset": None,
            "estimated_timestamp": False,
        }
    ]
    result = ingest_tenovi(engine, "synth", payload, now=when + timedelta(hours=1))
    assert result.ok() and [i.status for i in result.items] == ["inserted"]
    found = [
        r for r in stored_readings(engine, "synth") if r["extra"] and r["extra"].get("source") == "tenovi"
    ]
    assert [(r["patient_id"], r["device_id"], r["value"]) for r in found] == [
        (cuff["patient_id"], cuff["device_id"], "131/84")
    ]

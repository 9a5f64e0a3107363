"""Times a readings-heavy import: ``python tests/ingest/bench_readings.py [N] [DB_URL]``.

Writes a bundle of 1,000 patients with one device each and N readings (default one
million) spread over them, imports it into a fresh SQLite file (or DB_URL), imports it a
second time (every row unchanged), and prints rows per second for both. Not collected
by pytest; the figures go into bench/RESULTS.md.
"""

from __future__ import annotations

import csv
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from caretally.ingest import import_bundle
from caretally.store.db import open_database

ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "Pacific/Honolulu")


def write_bundle(folder: Path, readings: int, patients: int = 1000) -> None:
    with (folder / "patients.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["patient_id", "birth_date", "timezone", "payer", "family_name", "given_name", "sex"])
        for n in range(patients):
            out.writerow([f"P{n}", "1950-01-01", ZONES[n % len(ZONES)], "commercial", "Doe", f"Pat{n}", "F"])
    with (folder / "devices.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["device_id", "patient_id", "program", "kind", "medical_device", "assigned_date"])
        for n in range(patients):
            out.writerow([f"D{n}", f"P{n}", "RPM", "blood_pressure", "true", "2026-01-01"])
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with (folder / "readings.csv").open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["patient_id", "device_id", "measured_at", "type", "value", "unit", "transmission"])
        for n in range(readings):
            p = n % patients
            at = start + timedelta(minutes=17 * (n // patients))
            out.writerow([f"P{p}", f"D{p}", at.isoformat(), "bp", "128/82", "mmHg", "auto"])


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_bundle(folder, count)
        url = sys.argv[2] if len(sys.argv) > 2 else f"sqlite:///{folder / 'bench.db'}"
        engine = open_database(url, "bench")
        for label in ("first import", "re-import"):
            began = time.perf_counter()
            report = import_bundle(engine, "bench", folder)
            took = time.perf_counter() - began
            assert report.ok(), report.problems[:5]
            c = report.counts["readings"]
            print(
                f"{label}: {count:,} readings in {took:.1f} s ({count / took:,.0f}/s); "
                f"inserted {c.inserted:,}, unchanged {c.unchanged:,}"
            )


if __name__ == "__main__":
    main()

"""Streaming writers for the bundle files (CSV or JSON Lines).

Rows arrive as tuples of text in header order, already formatted for CSV; the JSON Lines
writer turns the boolean and integer columns back into native JSON values and leaves out
empty optional fields, which is how a JSON export would naturally look.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from caretally.synth.config import FORMATS

COLUMNS: dict[str, tuple[str, ...]] = {
    "practitioners": ("practitioner_id", "npi", "name", "credential"),
    "patients": (
        "patient_id",
        "family_name",
        "given_name",
        "sex",
        "birth_date",
        "timezone",
        "payer",
        "member_id",
        "address_line",
        "city",
        "state",
        "postal_code",
    ),
    "enrollments": (
        "enrollment_id",
        "patient_id",
        "program",
        "start_date",
        "end_date",
        "consent_date",
        "billing_practitioner_id",
        "diagnoses",
        "complexity",
        "order_date",
        "established_patient",
        "initiating_visit_date",
    ),
    "devices": (
        "device_id",
        "patient_id",
        "program",
        "kind",
        "medical_device",
        "setup_date",
        "assigned_date",
        "returned_date",
        "hardware_id",  # the vendor serial live ingest finds the device by ("" for an app)
        "model",  # not a required column: the importer keeps it as an extra
    ),
    "readings": (
        "reading_id",
        "patient_id",
        "device_id",
        "measured_at",
        "type",
        "value",
        "unit",
        "transmission",
    ),
    "time_entries": (
        "entry_id",
        "patient_id",
        "practitioner_id",
        "program",
        "started_at",
        "seconds",
        "activity",
        "interactive",
        "modality",
        "note",
    ),
}

STEMS: tuple[str, ...] = tuple(COLUMNS)

BOOLEAN_COLUMNS = frozenset({"established_patient", "medical_device", "interactive"})
INTEGER_COLUMNS = frozenset({"seconds"})


class BundleWriter:
    """Opens one file per stem, writes headers, counts rows; use as a context manager."""

    def __init__(self, out: Path, fmt: str):
        self.out = out
        self.fmt = fmt
        self.counts: dict[str, int] = dict.fromkeys(STEMS, 0)
        self._files: dict[str, IO[str]] = {}
        self._csv: dict[str, Any] = {}  # csv writer objects have no public type

    def __enter__(self) -> BundleWriter:
        self.out.mkdir(parents=True, exist_ok=True)
        # A copy of the same stem in the other format would make the importer refuse the
        # folder (it cannot know which copy is right), so stale ones from an earlier run go.
        for stem in STEMS:
            for other in FORMATS:
                if other != self.fmt:
                    (self.out / f"{stem}.{other}").unlink(missing_ok=True)
        for stem in STEMS:
            path = self.out / f"{stem}.{self.fmt}"
            handle = path.open("w", encoding="utf-8", newline="", buffering=1 << 20)
            self._files[stem] = handle
            if self.fmt == "csv":
                writer = csv.writer(handle, lineterminator="\n")
                writer.writerow(COLUMNS[stem])
                self._csv[stem] = writer
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for handle in self._files.values():
            handle.close()

    def write(self, stem: str, rows: Sequence[tuple[str, ...]]) -> None:
        self.counts[stem] += len(rows)
        if self.fmt == "csv":
            self._csv[stem].writerows(rows)
            return
        columns = COLUMNS[stem]
        dumps = json.dumps
        self._files[stem].writelines(dumps(_native(columns, row), ensure_ascii=False) + "\n" for row in rows)


def _native(columns: tuple[str, ...], row: tuple[str, ...]) -> dict[str, object]:
    record: dict[str, object] = {}
    for name, text in zip(columns, row, strict=True):
        if text == "":
            continue
        if name in BOOLEAN_COLUMNS:
            record[name] = text == "true"
        elif name in INTEGER_COLUMNS:
            record[name] = int(text)
        else:
            record[name] = text
    return record

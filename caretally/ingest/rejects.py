"""Rejected rows written back as CSV, so a practice can fix them and send them again.

Rejects files are opened in spreadsheets, and a rejected row is by definition input
nobody has vetted, so cells go through ``cli.common.write_csv`` (formula triggers
neutralised) like every other CSV caretally writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from caretally.cli.common import write_csv
from caretally.ingest.report import RejectedRow

ERROR = "error"
SOURCE = "source"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def write_rejects(folder: Path, rows: list[RejectedRow]) -> list[Path]:
    """One ``<stem>.rejects.csv`` per file: the original columns, then ``source`` and ``error``.

    ``source`` is where the row came from (``readings.csv:12``); ``error`` joins every
    reason the row was refused with ``; ``. Files from an earlier run are replaced.
    """
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stems: dict[str, list[RejectedRow]] = {}
    for row in rows:
        stems.setdefault(row.stem, []).append(row)
    for stem, group in stems.items():
        columns: list[str] = []
        for row in group:
            columns.extend(name for name in row.raw if name not in columns)
        columns = [c for c in columns if c not in (SOURCE, ERROR)] + [SOURCE, ERROR]
        path = folder / f"{stem}.rejects.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            rows_out = (
                [*(_cell(row.raw.get(c)) for c in columns[:-2]), row.where, "; ".join(row.errors)]
                for row in group
            )
            write_csv(rows_out, columns, handle)
        written.append(path)
    return written

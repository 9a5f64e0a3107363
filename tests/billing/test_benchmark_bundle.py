"""The 10,000-patient benchmark bundle bills and ranks to the same bytes as before issue 13.

Issue 13 changed how a month run gets its answer (a columnar pass, incremental runs, the
bulk import, the worklist kept as state); it must not change the answer. The digests in
``benchmark_bundle_golden.json`` were made with the code of git 8aa3d35 — the last commit
before issue 13's first change — on the bundle ``bench/run.py`` bills (``caretally synth
--patients 10000 --seed 1``, March 2026) by the commands below, so this test compares the
code of today with the code of before, not with itself.

The claim lines are compared as ``caretally export --format csv`` writes them, without
the ``run_id`` column (a new id every run); the worklist as ``caretally worklist --as-of
2026-03-20 --all --csv`` writes it.

Should a rule change on purpose alter these bytes, the golden file is remade by running
the same commands and the reason goes in its ``why`` field — never by copying what this
test prints.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from caretally.ingest import import_bundle
from caretally.ingest.live import ingest_readings
from caretally.store.db import open_database
from caretally.synth import SynthConfig, synthesize

pytestmark = pytest.mark.slow

GOLDEN = json.loads((Path(__file__).with_name("benchmark_bundle_golden.json")).read_text())
MONTH = "2026-03"
AS_OF = "2026-03-20"
ORG = "default"
#: When the held-back readings arrive (after the month, as a late upload would).
POSTED_AT = datetime(2026, 4, 2, 12, 0, tzinfo=UTC)


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "caretally.cli.main", *args], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def lines_digest(db: str, out: Path) -> tuple[int, str]:
    """Rows and SHA-256 of the month's claim-line CSV without its ``run_id`` column."""
    cli("export", "--month", MONTH, "--format", "csv", "--out", str(out), "--db", db)
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    drop = rows[0].index("run_id")
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    for row in rows:
        writer.writerow(row[:drop] + row[drop + 1 :])
    return len(rows) - 1, hashlib.sha256(text.getvalue().encode()).hexdigest()


def worklist_digest(db: str) -> str:
    shown = cli("worklist", "--as-of", AS_OF, "--all", "--csv", "--db", db)
    return hashlib.sha256(shown.encode()).hexdigest()


@dataclass
class Bundle:
    full: Path  # the bundle as synthesized
    held_back: list[dict[str, str]]  # left out of ``partial``: the last day of 1% of patients
    partial: Path
    imported: Path  # SQLite file with the whole bundle imported, copied for each variant


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bundle]:
    root = tmp_path_factory.mktemp("benchmark-bundle")
    full = root / "bundle"
    synthesize(SynthConfig(patients=10_000, start=date(2026, 3, 1), months=1, seed=1), full)
    with (full / "readings.csv").open(newline="") as handle:
        readings = list(csv.DictReader(handle))
    days: dict[str, set[str]] = {}
    for r in readings:
        days.setdefault(r["patient_id"], set()).add(r["measured_at"][:10])
    # 1% of the patients, drawn from those one day either side of the 16-day threshold,
    # so that the day held back changes some of their codes (99454 becomes 99445).
    near = sorted(p for p, seen in days.items() if len(seen) in (16, 17))
    chosen = set(random.Random(13).sample(near, 10_000 // 100))
    last_day = {}
    for r in readings:
        if r["patient_id"] in chosen:
            last_day[r["patient_id"]] = max(last_day.get(r["patient_id"], ""), r["measured_at"][:10])
    held = [r for r in readings if last_day.get(r["patient_id"]) == r["measured_at"][:10]]
    partial = root / "partial"
    shutil.copytree(full, partial)
    keep = [r for r in readings if last_day.get(r["patient_id"]) != r["measured_at"][:10]]
    with (partial / "readings.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(readings[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(keep)
    imported = root / "imported.db"
    engine = open_database(f"sqlite:///{imported}", ORG)
    report = import_bundle(engine, ORG, full)
    engine.dispose()
    assert report.ok(), [str(p) for p in report.problems[:3]]
    yield Bundle(full, held, partial, imported)


def _copy(bundle: Bundle, tmp_path: Path) -> str:
    target = tmp_path / "db.sqlite"
    shutil.copyfile(bundle.imported, target)
    return f"sqlite:///{target}"


def test_golden_digests_come_from_before_issue_13() -> None:
    assert GOLDEN["computed_with"].startswith("8aa3d35")
    assert len(GOLDEN["claim_lines_csv_sha256_without_run_id"]) == 64


@pytest.mark.parametrize("engine_choice", ["full", "columnar"])
def test_month_run_lines_are_those_of_before(bundle: Bundle, tmp_path: Path, engine_choice: str) -> None:
    db = _copy(bundle, tmp_path)
    cli("bill", "--month", MONTH, "--engine", engine_choice, "--db", db)
    rows, digest = lines_digest(db, tmp_path / "lines.csv")
    assert rows == GOLDEN["claim_lines"]
    assert digest == GOLDEN["claim_lines_csv_sha256_without_run_id"]


def test_incremental_run_after_late_readings_gives_lines_of_before(bundle: Bundle, tmp_path: Path) -> None:
    """The month billed without one day of 1% of patients, then that day arrives through the
    live readings path and ``bill --incremental`` re-judges only those patients."""
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = open_database(db, ORG)
    assert import_bundle(engine, ORG, bundle.partial).ok()
    cli("bill", "--month", MONTH, "--db", db)
    _, without_the_day = lines_digest(db, tmp_path / "before.csv")
    assert without_the_day != GOLDEN["claim_lines_csv_sha256_without_run_id"]  # the day matters
    result = ingest_readings(engine, ORG, bundle.held_back, now=POSTED_AT)
    engine.dispose()
    assert result.ok(), [p.message for p in result.problems[:3]]
    shown = json.loads(cli("bill", "--month", MONTH, "--incremental", "--json", "--db", db))
    assert shown["incremental"]["mode"] == "incremental", shown["incremental"]
    assert shown["incremental"]["evaluated"] <= 2 * len({r["patient_id"] for r in bundle.held_back})
    rows, digest = lines_digest(db, tmp_path / "lines.csv")
    assert (rows, digest) == (GOLDEN["claim_lines"], GOLDEN["claim_lines_csv_sha256_without_run_id"])


def test_worklist_rows_are_those_of_before(bundle: Bundle, tmp_path: Path) -> None:
    db = _copy(bundle, tmp_path)
    assert worklist_digest(db) == GOLDEN["worklist_csv_sha256"]
